"""fetch_pendigits and its command: verified, atomic download of pendigits-orig.tra over real HTTP
from a local server (a tiny generated UNIPEN file, its checksum patched in), and where the site reads it."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import socket
import threading
import zipfile
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from recognizer import services
from recognizer.ml import pendigits as pdg
from recognizer.ml.mnist import FetchError

NAME = pdg.PENDIGITS_FILE


def tiny_unipen() -> bytes:
    """Three writers, one digit each, in the layout of pendigits-orig.tra."""
    lines = [".INCLUDE dene.doc", "", '.LEXICON "0" "1" "2" "3" "4" "5" "6" "7" "8" "9"', ".HIERARCHY DIGIT", ""]
    for i, (label, writer) in enumerate([(1, 7), (7, 9), (0, 11)]):
        lines += [f'.SEGMENT DIGIT    {i} ? "{label}"', f".COMMENT {label} {writer}  {i + 3}", ".PEN_DOWN"]
        lines += [f" {100 + 10 * j * (label != 1)}  {400 - 50 * j}" for j in range(5)]
        lines += [".PEN_UP", ""]
    return "\n".join(lines).encode("latin-1")


CONTENT = tiny_unipen()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        for member, data in members.items():
            archive.writestr(member, data)
    return buf.getvalue()


ROUTES = {
    f"/raw/{NAME}": CONTENT,
    f"/gz/{NAME}.gz": gzip.compress(CONTENT),
    "/zip/pendigits.zip": zip_bytes({"pendigits/pendigits.names": b"names", f"pendigits/{NAME}": CONTENT}),
    "/uci/pendigits.zip": zip_bytes({f"{NAME}.Z": b"\x1f\x9d\x90compressed", "pendigits-orig.tes.Z": b"\x1f\x9d\x90"}),
    f"/lzw/{NAME}.Z": b"\x1f\x9d\x90compressed",
    f"/bad/{NAME}": CONTENT + b"tampered",
    "/bad/pendigits.zip": zip_bytes({NAME: CONTENT[:-5]}),
}
TRUNCATED = f"/truncated/{NAME}"


class Handler(http.server.BaseHTTPRequestHandler):
    requests: list[str]

    def do_GET(self):  # noqa: N802 - the http.server API
        self.requests.append(self.path)
        if self.path == TRUNCATED:  # announces the whole file, sends half of it, closes
            self.send_response(200)
            self.send_header("Content-Length", str(len(CONTENT)))
            self.end_headers()
            self.wfile.write(CONTENT[: len(CONTENT) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        body = ROUTES.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    """A real HTTP server on 127.0.0.1; ``server.url(path)`` and ``server.requests`` (paths asked for)."""
    handler = type("RecordingHandler", (Handler,), {"requests": []})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    httpd.url = lambda path: f"http://127.0.0.1:{httpd.server_address[1]}{path}"
    httpd.requests = handler.requests
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


@pytest.fixture(autouse=True)
def tiny_checksum(monkeypatch):
    monkeypatch.setattr(pdg, "PENDIGITS_SHA256", hashlib.sha256(CONTENT).hexdigest())


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/{NAME}"  # nothing listens there any more


def fetch(dest, *urls, **kw):
    return pdg.fetch_pendigits(dest, mirrors=list(urls), timeout=10, **kw)


@pytest.mark.parametrize("route", [f"/raw/{NAME}", f"/gz/{NAME}.gz", "/zip/pendigits.zip"])
def test_it_downloads_the_file_served_plain_gzip_or_in_a_zip(server, tmp_path, route):
    progress = []
    path = fetch(tmp_path / "dest", server.url(route), progress=lambda s, f: progress.append((s, f)))
    assert path == tmp_path / "dest" / NAME
    assert path.read_bytes() == CONTENT
    assert [p.name for p in path.parent.iterdir()] == [NAME]  # no temporary file left
    assert progress[-1] == (f"download {NAME}", 1.0)
    assert [f for _, f in progress] == sorted(f for _, f in progress)


def test_the_downloaded_file_round_trips_through_load_pendigits(server, tmp_path):
    path = fetch(tmp_path, server.url("/zip/pendigits.zip"))
    digits = pdg.load_pendigits(path.parent)
    assert [(d.label, d.writer, len(d.strokes)) for d in digits] == [(1, 7, 1), (7, 9, 1), (0, 11, 1)]
    assert digits[0].strokes[0].shape == (5, 2)
    assert pdg.load_pendigits(path)[1].label == 7


def test_a_second_call_does_not_download_again(server, tmp_path):
    fetch(tmp_path, server.url(f"/raw/{NAME}"))
    mtime = (tmp_path / NAME).stat().st_mtime_ns
    progress = []
    fetch(tmp_path, server.url(f"/raw/{NAME}"), progress=lambda s, f: progress.append(f))
    assert server.requests == [f"/raw/{NAME}"]
    assert (tmp_path / NAME).stat().st_mtime_ns == mtime and progress == [1.0]


def test_an_existing_file_with_the_wrong_content_is_replaced(server, tmp_path):
    (tmp_path / NAME).write_bytes(b"half a file")
    fetch(tmp_path, server.url(f"/raw/{NAME}"))
    assert (tmp_path / NAME).read_bytes() == CONTENT


@pytest.mark.parametrize("route", [f"/bad/{NAME}", "/bad/pendigits.zip"])
def test_a_bad_checksum_is_an_error_and_leaves_nothing(server, tmp_path, route):
    with pytest.raises(FetchError, match="checksum mismatch"):
        fetch(tmp_path, server.url(route))
    assert list(tmp_path.iterdir()) == []


def test_a_truncated_download_is_an_error_and_leaves_nothing(server, tmp_path):
    with pytest.raises(FetchError, match=f"truncated download: received {len(CONTENT) // 2} of {len(CONTENT)}"):
        fetch(tmp_path, server.url(TRUNCATED))
    assert list(tmp_path.iterdir()) == []


def test_an_http_error_is_an_error_naming_the_url(server, tmp_path):
    url = server.url(f"/missing/{NAME}")
    with pytest.raises(FetchError, match="HTTP Error 404") as err:
        fetch(tmp_path, url)
    assert url in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_offline_every_mirror_is_tried_and_named(tmp_path):
    urls = [closed_port_url(), closed_port_url()]
    with pytest.raises(FetchError, match="any of the 2 mirror") as err:
        fetch(tmp_path, *urls)
    assert all(url in str(err.value) for url in urls)
    assert list(tmp_path.iterdir()) == []


def test_the_next_mirror_is_tried_when_the_first_is_down_or_wrong(server, tmp_path):
    path = fetch(tmp_path, closed_port_url(), server.url(TRUNCATED), server.url(f"/bad/{NAME}"),
                 server.url(f"/gz/{NAME}.gz"), server.url(f"/raw/{NAME}"))
    assert path.read_bytes() == CONTENT
    assert server.requests == [TRUNCATED, f"/bad/{NAME}", f"/gz/{NAME}.gz"]  # stops at the first good one
    assert [p.name for p in tmp_path.iterdir()] == [NAME]


@pytest.mark.parametrize("route", ["/uci/pendigits.zip", f"/lzw/{NAME}.Z"])
def test_lzw_compressed_copies_are_refused_with_how_to_unpack_them(server, tmp_path, route):
    with pytest.raises(FetchError, match=r"\.Z, LZW") as err:
        fetch(tmp_path, server.url(route))
    assert "gzip -dk" in str(err.value) and "--url" in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_only_the_training_file_is_ever_asked_for(server, tmp_path):
    fetch(tmp_path, server.url("/zip/pendigits.zip"))
    assert not any(".tes" in m for m in pdg.PENDIGITS_MIRRORS)
    assert all(".tes" not in p for p in server.requests)
    assert not any(".tes" in p.name for p in tmp_path.iterdir())


def test_the_canonical_checksum_is_the_sha256_of_the_uci_training_file(monkeypatch):
    monkeypatch.undo()  # the real checksum, not the tiny file's
    assert pdg.PENDIGITS_SHA256 == "a66225d68d7d68591e62944df1ad33b3f5aa608e2df2505844b41f5568a80da4"
    canonical = Path(__file__).resolve().parents[2] / "shared" / "data" / "pendigits" / NAME
    if canonical.is_file():
        assert hashlib.sha256(canonical.read_bytes()).hexdigest() == pdg.PENDIGITS_SHA256


# --- The command and where the site reads the file ----------------------------------------------


def run(*args) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("fetch_pendigits", "--verbosity", "0", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_the_command_downloads_from_url_into_dest(server, tmp_path, settings):
    settings.PENDIGITS_DIR = ""
    out, _ = run("--url", server.url("/zip/pendigits.zip"), "--dest", str(tmp_path / "pd"))
    assert (tmp_path / "pd" / NAME).read_bytes() == CONTENT
    assert "checksum verified" in out and str(tmp_path / "pd" / NAME) in out


def test_the_command_downloads_into_the_data_dir_by_default(server, tmp_path, settings):
    settings.PENDIGITS_DIR = ""
    settings.RECOGNIZER_DATA_DIR = tmp_path / "data"
    assert services.pendigits_path() is None
    run("--url", server.url(f"/raw/{NAME}"))
    assert (tmp_path / "data" / "pendigits" / NAME).read_bytes() == CONTENT
    assert services.pendigits_path() == tmp_path / "data" / "pendigits"
    assert len(pdg.load_pendigits(services.pendigits_path())) == 3


def test_the_command_fails_with_the_clear_message(server, tmp_path, settings):
    settings.PENDIGITS_DIR = ""
    with pytest.raises(CommandError, match="checksum mismatch"):
        run("--url", server.url(f"/bad/{NAME}"), "--dest", str(tmp_path))
    with pytest.raises(CommandError, match="any of the 2 mirror"):
        run("--url", closed_port_url(), "--url", server.url(f"/missing/{NAME}"), "--dest", str(tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_the_command_exits_non_zero_on_failure(tmp_path, settings):
    settings.PENDIGITS_DIR = ""
    from django.core.management import ManagementUtility

    with pytest.raises(SystemExit) as exit_info:
        ManagementUtility(["manage.py", "fetch_pendigits", "--verbosity", "0", "--url", closed_port_url(),
                           "--dest", str(tmp_path)]).execute()
    assert exit_info.value.code != 0


@pytest.mark.parametrize("as_file", [False, True])
def test_pendigits_dir_wins_when_it_holds_the_file(server, tmp_path, settings, as_file):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / NAME).write_bytes(b"my own copy")
    settings.PENDIGITS_DIR = str(mine / NAME if as_file else mine)
    out, _ = run("--url", server.url(f"/raw/{NAME}"), "--dest", str(tmp_path / "pd"))
    assert "PENDIGITS_DIR wins" in out
    assert server.requests == [] and not (tmp_path / "pd").exists()


def test_pendigits_dir_without_the_file_downloads_and_says_it_is_still_read(server, tmp_path, settings):
    settings.PENDIGITS_DIR = str(tmp_path / "empty")
    _, err = run("--url", server.url(f"/raw/{NAME}"), "--dest", str(tmp_path / "pd"))
    assert (tmp_path / "pd" / NAME).is_file()
    assert "PENDIGITS_DIR" in err and "holds no" in err


def test_pendigits_path_prefers_pendigits_dir_over_the_fetched_file(tmp_path, settings):
    settings.RECOGNIZER_DATA_DIR = tmp_path / "data"
    (tmp_path / "data" / "pendigits").mkdir(parents=True)
    settings.PENDIGITS_DIR = ""
    assert services.pendigits_path() is None  # the folder alone is not enough
    (tmp_path / "data" / "pendigits" / NAME).write_bytes(CONTENT)
    assert services.pendigits_path() == tmp_path / "data" / "pendigits"
    settings.PENDIGITS_DIR = str(tmp_path / "elsewhere")
    assert services.pendigits_path() == tmp_path / "elsewhere"
