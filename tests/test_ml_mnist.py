"""MNIST IDX loading, verified fetching and the fallback data set (synthetic files only)."""

from __future__ import annotations

import gzip
import hashlib
import io
import struct

import numpy as np
import pytest

from recognizer.ml import mnist
from recognizer.ml.mnist import FetchError, IdxFormatError, fetch_mnist, load_idx, load_mnist


def idx_bytes(arr: np.ndarray) -> bytes:
    arr = np.asarray(arr, dtype=np.uint8)
    return struct.pack(">HBB", 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


def write_mnist(directory, n_train=6, n_test=4, gz=True, n_train_labels=None):
    rng = np.random.default_rng(0)
    files = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train_labels or n_train),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test),
    }
    for name, arr in files.items():
        data = idx_bytes(arr)
        if gz:
            (directory / (name + ".gz")).write_bytes(gzip.compress(data))
        else:
            (directory / name).write_bytes(data)
    return files


def test_it_reads_a_plain_idx_file(tmp_path):
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a").write_bytes(idx_bytes(arr))
    np.testing.assert_array_equal(load_idx(tmp_path / "a"), arr)


def test_it_reads_a_gzip_idx_file(tmp_path):
    arr = np.arange(10, dtype=np.uint8)
    (tmp_path / "a.gz").write_bytes(gzip.compress(idx_bytes(arr)))
    np.testing.assert_array_equal(load_idx(tmp_path / "a.gz"), arr)


def test_it_rejects_a_wrong_magic_number(tmp_path):
    (tmp_path / "a").write_bytes(b"\x12\x34\x08\x01" + struct.pack(">I", 1) + b"\x00")
    with pytest.raises(IdxFormatError, match="magic"):
        load_idx(tmp_path / "a")


def test_it_rejects_a_truncated_file(tmp_path):
    data = idx_bytes(np.zeros((3, 28, 28)))
    (tmp_path / "a").write_bytes(data[:-10])
    with pytest.raises(IdxFormatError, match="truncated"):
        load_idx(tmp_path / "a")


def test_it_rejects_a_truncated_gzip_stream(tmp_path):
    (tmp_path / "a.gz").write_bytes(gzip.compress(idx_bytes(np.zeros((50, 28, 28))))[:-30])
    with pytest.raises(IdxFormatError):
        load_idx(tmp_path / "a.gz")


def test_it_rejects_extra_bytes_after_the_declared_dimensions(tmp_path):
    (tmp_path / "a").write_bytes(idx_bytes(np.zeros(5)) + b"\x00\x00")
    with pytest.raises(IdxFormatError, match="mismatch"):
        load_idx(tmp_path / "a")


def test_it_loads_gzip_and_plain_mnist_directories(tmp_path):
    for gz in (True, False):
        d = tmp_path / str(gz)
        d.mkdir()
        files = write_mnist(d, gz=gz)
        data = load_mnist(d)
        assert data.train_images.shape == (6, 28, 28) and data.train_images.dtype == np.uint8
        assert data.source == "mnist"
        np.testing.assert_array_equal(data.test_labels, files["t10k-labels-idx1-ubyte"])


def test_it_rejects_disagreeing_image_and_label_counts(tmp_path):
    write_mnist(tmp_path, n_train=6, n_train_labels=5)
    with pytest.raises(IdxFormatError, match="6 images but 5 labels"):
        load_mnist(tmp_path)


def test_it_lists_the_missing_files(tmp_path):
    write_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        load_mnist(tmp_path)


class FakeResponse(io.BytesIO):
    def __init__(self, data):
        super().__init__(data)
        self.headers = {"Content-Length": str(len(data))}


def fake_files():
    contents = {f"f{i}": idx_bytes(np.full(i + 3, i)) for i in range(2)}
    return contents, {n: hashlib.sha256(c).hexdigest() for n, c in contents.items()}


def test_fetch_tries_the_next_mirror_after_a_bad_checksum(tmp_path):
    contents, sums = fake_files()
    calls = []

    def opener(url):
        calls.append(url)
        name = url.rsplit("/", 1)[1][:-3]
        if url.startswith("http://bad/"):
            return FakeResponse(gzip.compress(b"not the right content"))
        return FakeResponse(gzip.compress(contents[name]))

    progress = []
    fetch_mnist(tmp_path, mirrors=["http://bad/", "http://good/"], opener=opener, files=sums,
                progress=lambda s, f: progress.append((s, f)))
    for name, c in contents.items():
        assert gzip.decompress((tmp_path / (name + ".gz")).read_bytes()) == c
    assert [u.split("/")[2] for u in calls] == ["bad", "good", "bad", "good"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f0.gz", "f1.gz"]
    assert progress[-1][1] == 1.0 and [f for _, f in progress] == sorted(f for _, f in progress)
    assert 0.4 <= dict(progress)["download f0"] <= 0.5  # overall fraction: first of two files


def test_fetch_skips_files_already_present_and_valid(tmp_path):
    contents, sums = fake_files()
    for n, c in contents.items():
        (tmp_path / n).write_bytes(c)

    def opener(url):
        raise AssertionError("should not download")

    fetch_mnist(tmp_path, mirrors=["http://x/"], opener=opener, files=sums)


def test_fetch_raises_and_leaves_no_partial_file_when_all_mirrors_fail(tmp_path):
    _contents, sums = fake_files()

    def opener(url):
        if "m1" in url:
            raise OSError("connection refused")

        class Broken(FakeResponse):
            def read(self, n=-1):
                raise OSError("connection reset mid-download")

        return Broken(b"x" * 100)

    with pytest.raises(FetchError, match="f0"):
        fetch_mnist(tmp_path, mirrors=["http://m1/", "http://m2/"], opener=opener, files=sums)
    assert list(tmp_path.iterdir()) == []


def test_the_canonical_checksums_are_declared_for_all_four_files():
    assert len(mnist.MNIST_FILES) == 4 and all(len(v) == 64 for v in mnist.MNIST_FILES.values())
    assert all(m.endswith("/") for m in mnist.MNIST_MIRRORS)


def test_the_fallback_digits_are_in_the_mnist_frame_and_say_they_are_not_mnist():
    data = mnist.load_fallback_digits()
    assert data.source == "sklearn-digits"
    assert data.train_images.shape[1:] == (28, 28) and data.train_images.dtype == np.uint8
    assert len(data.train_images) + len(data.test_images) == 1797
    # each digit fits a 20x20 box and its centre of mass is near the frame centre
    for img in data.train_images[:50]:
        rows, cols = np.flatnonzero(img.max(axis=1)), np.flatnonzero(img.max(axis=0))
        assert rows[-1] - rows[0] < 20 and cols[-1] - cols[0] < 20
        r, c = np.mgrid[:28, :28]
        assert abs((r * img).sum() / img.sum() - 13.5) < 1 and abs((c * img).sum() / img.sum() - 13.5) < 1
    again = mnist.load_fallback_digits()
    np.testing.assert_array_equal(data.test_labels, again.test_labels)


def test_training_data_falls_back_loudly_when_mnist_is_missing(tmp_path):
    with pytest.warns(RuntimeWarning, match="NOT MNIST"):
        data = mnist.load_training_data(tmp_path)
    assert data.source == "sklearn-digits" and "NOT MNIST" in data.warning


def test_training_data_uses_mnist_when_present(tmp_path):
    write_mnist(tmp_path)
    data = mnist.load_training_data(tmp_path)
    assert data.source == "mnist" and data.warning is None


def test_fetch_downloads_over_real_http_from_a_local_server(tmp_path):
    import functools
    import http.server
    import threading

    contents, sums = fake_files()
    good = tmp_path / "srv" / "good"
    bad = tmp_path / "srv" / "bad"
    good.mkdir(parents=True)
    bad.mkdir(parents=True)
    for name, c in contents.items():
        (good / (name + ".gz")).write_bytes(gzip.compress(c))
        (bad / (name + ".gz")).write_bytes(gzip.compress(c + b"tampered"))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "srv"))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        dest = tmp_path / "dest"
        fetch_mnist(dest, mirrors=[f"{base}/missing/", f"{base}/bad/", f"{base}/good/"], files=sums)
    finally:
        server.shutdown()
        server.server_close()
    assert sorted(p.name for p in dest.iterdir()) == ["f0.gz", "f1.gz"]
    assert gzip.decompress((dest / "f1.gz").read_bytes()) == contents["f1"]
