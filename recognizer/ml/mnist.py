"""MNIST loading, verified download, and a clearly-labelled fallback data set.

Plain Python (no Django).  Data directories always come from arguments.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import tempfile
import urllib.request
import warnings
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

__all__ = [
    "MNIST_FILES",
    "MNIST_MIRRORS",
    "FetchError",
    "IdxFormatError",
    "MnistData",
    "download_to",
    "fetch_mnist",
    "load_fallback_digits",
    "load_idx",
    "load_mnist",
    "load_training_data",
    "verify_mnist",
]


class IdxFormatError(ValueError):
    """The bytes are not a well-formed IDX file."""


class FetchError(RuntimeError):
    """Every mirror failed for a file."""


# SHA-256 of the *uncompressed* content (gzip wrappers differ between mirrors).
MNIST_FILES: dict[str, str] = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

MNIST_MIRRORS: list[str] = [
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
]

_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

FALLBACK_WARNING = (
    "WARNING: MNIST was NOT found or is invalid; training on scikit-learn's tiny 8x8 'digits' "
    "set upscaled to 28x28 (source='sklearn-digits'). This is NOT MNIST: accuracy on real "
    "canvas drawings will be poor. Provide the MNIST files (see fetch_mnist)."
)


@dataclass
class MnistData:
    train_images: np.ndarray  # uint8 (n, 28, 28)
    train_labels: np.ndarray  # uint8 (n,)
    test_images: np.ndarray
    test_labels: np.ndarray
    source: str = "mnist"
    warning: str | None = None


def _read_bytes(path: Path) -> bytes:
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as exc:
            raise IdxFormatError(f"{path}: corrupt or truncated gzip data ({exc})") from exc
    return raw


def parse_idx(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Parse uncompressed IDX bytes into an array."""
    if len(data) < 4:
        raise IdxFormatError(f"{name}: file is truncated ({len(data)} bytes, no IDX header)")
    zero, code, ndim = data[0:2], data[2], data[3]
    if zero != b"\x00\x00" or code not in _IDX_DTYPES or ndim == 0:
        raise IdxFormatError(
            f"{name}: wrong magic number 0x{data[:4].hex()} (expected 0x0000TTNN with a known type "
            "code, e.g. 0x00000803 for images, 0x00000801 for labels)"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IdxFormatError(f"{name}: file is truncated inside the header ({ndim} dimensions declared)")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = _IDX_DTYPES[code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    actual = len(data) - header
    if actual < expected:
        raise IdxFormatError(
            f"{name}: file is truncated: dimensions {dims} need {expected} data bytes, found {actual}"
        )
    if actual > expected:
        raise IdxFormatError(
            f"{name}: dimension/size mismatch: dimensions {dims} need {expected} data bytes, "
            f"found {actual} ({actual - expected} extra)"
        )
    arr = np.frombuffer(data, dtype=dtype, offset=header, count=expected // dtype.itemsize)
    return arr.reshape(dims).astype(dtype.newbyteorder("="), copy=True)


def load_idx(path: str | os.PathLike) -> np.ndarray:
    """Read a gzip-compressed or plain IDX file."""
    path = Path(path)
    return parse_idx(_read_bytes(path), str(path))


def _find(directory: Path, name: str) -> Path | None:
    for candidate in (directory / name, directory / (name + ".gz")):
        if candidate.is_file():
            return candidate
    return None


def load_mnist(directory: str | os.PathLike) -> MnistData:
    """Load the four MNIST files (``name`` or ``name.gz``) from ``directory``."""
    directory = Path(directory)
    paths = {name: _find(directory, name) for name in MNIST_FILES}
    missing = [name for name, p in paths.items() if p is None]
    if missing:
        raise FileNotFoundError(
            f"MNIST files missing in {directory}: "
            + ", ".join(f"{m}[.gz]" for m in missing)
        )
    arrays = {name: load_idx(p) for name, p in paths.items()}
    out = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = arrays[f"{prefix}-images-idx3-ubyte"]
        labels = arrays[f"{prefix}-labels-idx1-ubyte"]
        if images.ndim != 3 or images.shape[1:] != (28, 28):
            raise IdxFormatError(f"{prefix}-images: expected (n, 28, 28), got {images.shape}")
        if labels.ndim != 1:
            raise IdxFormatError(f"{prefix}-labels: expected 1 dimension, got {labels.shape}")
        if len(images) != len(labels):
            raise IdxFormatError(
                f"{split} set: {len(images)} images but {len(labels)} labels (counts must agree)"
            )
        if labels.size and labels.max() > 9:
            raise IdxFormatError(f"{prefix}-labels: label {labels.max()} out of range 0-9")
        out[split] = (images.astype(np.uint8, copy=False), labels.astype(np.uint8, copy=False))
    return MnistData(out["train"][0], out["train"][1], out["test"][0], out["test"][1], "mnist")


def _content_sha256(path: Path) -> str:
    """SHA-256 of the uncompressed content of a (possibly gzip) file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    opener = gzip.open if gz else open
    with opener(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_mnist(directory: str | os.PathLike) -> dict[str, bool]:
    """name -> True if present and its uncompressed content matches the canonical checksum."""
    result = {}
    for name, sha in MNIST_FILES.items():
        p = _find(Path(directory), name)
        try:
            result[name] = p is not None and _content_sha256(p) == sha
        except (OSError, EOFError, zlib.error):
            result[name] = False
    return result


def download_to(
    url: str,
    out: BinaryIO,
    *,
    opener: Callable = urllib.request.urlopen,
    timeout: float = 60.0,
    progress: Callable[[float], None] | None = None,
) -> int:
    """Stream ``url`` into the open binary file ``out``, fsync it, and return the byte count.

    ``progress(fraction)`` follows the bytes received when the server sends a Content-Length.
    A body shorter than its Content-Length (a connection closed early) raises ``FetchError``.
    ``opener(url)`` must return a file-like response; ``timeout`` is passed only to the default
    ``urllib.request.urlopen``.
    """
    if opener is urllib.request.urlopen:
        resp = opener(url, timeout=timeout)
    else:
        resp = opener(url)
    try:
        total = None
        try:
            total = int(resp.headers.get("Content-Length"))  # type: ignore[union-attr]
        except (AttributeError, TypeError, ValueError):
            total = None
        done = 0
        while True:
            chunk = resp.read(1 << 16)
            if not chunk:
                break
            out.write(chunk)
            done += len(chunk)
            if progress and total:
                progress(min(done / total, 1.0))
    finally:
        close = getattr(resp, "close", None)
        if close:
            close()
    if total is not None and done < total:
        raise FetchError(f"truncated download: received {done} of {total} bytes")
    out.flush()
    os.fsync(out.fileno())
    return done


def fetch_mnist(
    dest_dir: str | os.PathLike,
    mirrors: Iterable[str] = MNIST_MIRRORS,
    progress: Callable[[str, float], None] | None = None,
    opener: Callable = urllib.request.urlopen,
    files: dict[str, str] | None = None,
    timeout: float = 60.0,
) -> Path:
    """Download MNIST into ``dest_dir`` with checksum verification and atomic renames.

    ``progress(stage, fraction)`` is called with stage ``"download <name>"`` and the overall
    fraction of the whole fetch (non-decreasing, 1.0 at the end).
    Files already present with the right content are skipped.  ``opener(url)`` must return a
    file-like response; ``timeout`` is passed only to the default ``urllib.request.urlopen``.
    """
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    mirrors = list(mirrors)
    files = MNIST_FILES if files is None else files
    n_files = max(len(files), 1)
    for file_no, (name, sha) in enumerate(files.items()):
        stage = f"download {name}"
        def overall(frac, _i=file_no):
            return (_i + frac) / n_files

        existing = _find(dest, name)
        if existing is not None:
            try:
                if _content_sha256(existing) == sha:
                    if progress:
                        progress(stage, overall(1.0))
                    continue
            except (OSError, EOFError, zlib.error):
                pass
        errors = []
        for base in mirrors:
            url = base.rstrip("/") + "/" + name + ".gz"
            fd, tmp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=dest)
            tmp = Path(tmp_name)
            try:
                with os.fdopen(fd, "wb") as out:
                    download_to(
                        url, out, opener=opener, timeout=timeout,
                        progress=(lambda frac, stage=stage, overall=overall: progress(stage, overall(frac)))
                        if progress else None,
                    )
                got = _content_sha256(tmp)
                if got != sha:
                    raise FetchError(f"checksum mismatch (got {got[:12]}..., expected {sha[:12]}...)")
                with open(tmp, "rb") as f:
                    is_gz = f.read(2) == b"\x1f\x8b"
                final = dest / (name + ".gz" if is_gz else name)
                os.replace(tmp, final)
                if existing is not None and existing != final and existing.exists():
                    existing.unlink()  # an invalid copy under the other name
                if progress:
                    progress(stage, overall(1.0))
                break
            except Exception as exc:  # noqa: BLE001 - any failure: try the next mirror
                errors.append(f"{url}: {exc}")
            finally:
                if tmp.exists():
                    tmp.unlink()
        else:
            raise FetchError(f"could not download {name} from any mirror:\n  " + "\n  ".join(errors))
    return dest


def _place_by_mass(box: np.ndarray) -> np.ndarray:
    """Paste a small float image into a 28x28 frame so its centre of mass is at (14, 14)."""
    h, w = box.shape
    out = np.zeros((28, 28), dtype=np.float32)
    total = box.sum()
    if total <= 0:
        cy, cx = (h - 1) / 2, (w - 1) / 2
    else:
        cy = float((box.sum(axis=1) * np.arange(h)).sum() / total)
        cx = float((box.sum(axis=0) * np.arange(w)).sum() / total)
    top = int(np.clip(round(13.5 - cy), 0, 28 - h))
    left = int(np.clip(round(13.5 - cx), 0, 28 - w))
    out[top : top + h, left : left + w] = box
    return out


def load_fallback_digits(test_fraction: float = 0.2, seed: int = 0) -> MnistData:
    """scikit-learn's bundled 8x8 digits upscaled into the MNIST 28x28 frame (NOT MNIST)."""
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    imgs = np.empty((len(d.images), 28, 28), dtype=np.uint8)
    for i, im in enumerate(d.images):
        small = Image.fromarray((im / 16.0).astype(np.float32), mode="F")
        big = np.asarray(small.resize((20, 20), Image.BILINEAR), dtype=np.float32)
        imgs[i] = np.clip(_place_by_mass(np.clip(big, 0, 1)) * 255 + 0.5, 0, 255).astype(np.uint8)
    labels = d.target.astype(np.uint8)
    order = np.random.default_rng(seed).permutation(len(labels))
    n_test = round(len(labels) * test_fraction)
    te, tr = order[:n_test], order[n_test:]
    return MnistData(imgs[tr], labels[tr], imgs[te], labels[te], "sklearn-digits", FALLBACK_WARNING)


def load_training_data(mnist_dir: str | os.PathLike | None, verify: bool = False) -> MnistData:
    """MNIST from ``mnist_dir`` if it holds valid files, else the fallback with a loud warning."""
    reason = "no MNIST directory configured"
    if mnist_dir:
        try:
            if verify:
                bad = [n for n, ok in verify_mnist(mnist_dir).items() if not ok]
                if bad:
                    raise IdxFormatError("checksum mismatch for " + ", ".join(bad))
            return load_mnist(mnist_dir)
        except (OSError, ValueError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
    data = load_fallback_digits()
    data.warning = f"{FALLBACK_WARNING} (reason: {reason})"
    warnings.warn(data.warning, RuntimeWarning, stacklevel=2)
    return data
