"""fetch_pendigits and its command: verified, atomic download of pendigits-orig.tra over real HTTP
from a local server (a tiny generated UNIPEN file, its checksum patched in), and where the site reads it.
Also decompress_z (unlzw3 with the checks around it), which reads UCI's own archive: checked against a
small LZW encoder written here, against ``gzip -dc`` and, where installed (scripts/install-compress),
``compress`` itself."""

from __future__ import annotations

import base64
import gzip
import hashlib
import http.server
import io
import random
import shutil
import socket
import subprocess
import threading
import time
import zipfile
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from recognizer import training
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


def lzw_compress(data: bytes, maxbits: int = 16, block_mode: bool = True, clear_every: int = 0,
                 clear_when_full: bool = True) -> tuple[bytes, int, int]:
    """A small encoder of the Unix ``compress`` format (for the tests): returns the .Z bytes, the widest
    code width written and the number of CLEAR codes.  In block mode it writes CLEAR when the table is
    full (``clear_when_full``) and after every ``clear_every`` codes (if not 0).

    Codes are written at the width the decoder reads them with (it follows the decoder's next free
    code, one behind the encoder's), in groups of 8 codes (``nbits`` bytes), a partial group padded
    to its full size before each width change and after each CLEAR."""
    assert 10 <= maxbits <= 16
    out = bytearray((0x1F, 0x9D, maxbits | (0x80 if block_mode else 0)))
    maxmax = 1 << maxbits
    first_free = 257 if block_mode else 256
    state = {"nbits": 9, "maxcode": 511, "widest": 9, "clears": 0, "dec_free": first_free, "dec_first": True,
             "group": 0, "ngroup": 0}

    def put(code):
        assert code < 1 << state["nbits"]
        state["group"] |= code << (state["ngroup"] * state["nbits"])
        state["ngroup"] += 1
        if state["ngroup"] == 8:
            pad()

    def pad(final=False):
        if state["ngroup"]:
            size = (state["ngroup"] * state["nbits"] + 7) // 8 if final else state["nbits"]
            out.extend(state["group"].to_bytes(size, "little"))
            state["group"] = state["ngroup"] = 0

    def emit(code):
        put(code)
        if state["dec_first"]:
            state["dec_first"] = False
        elif state["dec_free"] < maxmax:
            state["dec_free"] += 1
        if state["dec_free"] > state["maxcode"]:
            pad()
            state["nbits"] += 1
            state["widest"] = max(state["widest"], state["nbits"])
            state["maxcode"] = maxmax if state["nbits"] == maxbits else (1 << state["nbits"]) - 1

    def clear():
        put(256)
        pad()
        state.update(nbits=9, maxcode=511, dec_free=256, clears=state["clears"] + 1)

    table: dict[tuple[int, int], int] = {}
    next_code, since_clear, w = first_free, 0, None
    for c in data:
        if w is None:
            w = c
            continue
        longer = table.get((w, c))
        if longer is not None:
            w = longer
            continue
        emit(w)
        if next_code < maxmax:
            table[w, c] = next_code
            next_code += 1
        since_clear += 1
        if block_mode and ((clear_every and since_clear >= clear_every)
                           or (clear_when_full and next_code >= maxmax)):
            clear()
            table, next_code, since_clear = {}, 257, 0
        w = c
    if w is not None:
        emit(w)
    pad(final=True)
    return bytes(out), state["widest"], state["clears"]


def lzw(data: bytes, **kw) -> bytes:
    return lzw_compress(data, **kw)[0]


def random_text(size: int, seed: int = 0) -> bytes:
    """Pseudo-random words (about half as long once compressed): fills a 16-bit table."""
    rng = random.Random(seed)
    words = ["".join(rng.choice("abcdefghij klmnop\n") for _ in range(rng.randint(2, 9))) for _ in range(3000)]
    text = " ".join(rng.choice(words) for _ in range(size // 5)).encode()
    return text[:size]


BIG = random_text(300_000)
GZIP = shutil.which("gzip")
COMPRESS = shutil.which("compress")
CANONICAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "pendigits" / NAME
REAL_SHA256 = "a66225d68d7d68591e62944df1ad33b3f5aa608e2df2505844b41f5568a80da4"


def gzip_d(packed: bytes) -> bytes:
    return subprocess.run([GZIP, "-dc"], input=packed, capture_output=True, check=True).stdout


def compress(data: bytes, *args: str) -> bytes:
    done = subprocess.run([COMPRESS, "-c", *args], input=data, capture_output=True)
    assert done.returncode in (0, 2), done.stderr  # 2: "not smaller", still written
    return done.stdout


# `compress -b10` of FIXTURE_TEXT (ncompress 4.2.4.6): codes grow from 9 to 10 bits and the table fills.
FIXTURE_TEXT = b"".join(b"%d %d\n" % (i % 10, i * i % 9973) for i in range(300))
FIXTURE_Z = base64.b64decode(
    "H52KMEDAUBADRAwFMkDQUDADRA4FNAzaUFADhIwaCmyAmDHxhsKHOEDYWJgDBI6DAWPAGFgwhoyDCWPQWNgwho2HEWPkmFhR"
    "xsWMFmt0tIgD5EYZJDfaQKlwJUGFNGAqxEETRA0ZOK3e4Cnyp0YbWxV4vIFVQcgbVBWUpMo0h9OCO6WqRMrQIIyiEA3GEErR"
    "oE+MGl3uFGuQo1GZM9UavMrU5luJJxEa3Fo1BtWsOjn2lQHDq8UYNgn7hGFUxgwYSZHCYHrxsQwbqyXLuIG6rgwcpPNiDV3x"
    "tOcZMTR7nIHU6AyOSWfQiByQ4+MZZKXOoFp1xs6sNEhzpfEXKI0ZfD3OxBuShg26JWlsZUrDLUurqKXWsFy1BvGsNdRzFeq5"
    "xo2wHtWQQ1khwZZWSedFpUBAIz1mg1BSgUVXQzbggFdEtPFVEVme3WDdUDcIZdR/iZV0w4BMnfQYDrdJRdVIdeEwUlYWalaR"
    "W56hOFQO2Rm1U20l5YAbazc85RMOkn13EIWaRUTVDH2pdBVQLtkApUcyhRWSTTkcVJJOdy342WxGKodkQhfdsKRFJ04UkW9Q"
    "9naRDECZeeVGak4UknXzKRaVhWLORGZB5lWYZJdrzsdXRPnBEKdVD9KpkYCOErYUXwVG5aVINhjK4IBFFqQmoAndQEOfDf0X"
    "GoZCPsrilBrhcNWdOLRplkMwqKlYDmaKudOgDrl15mdINlRDpawOVJFKJ1IJ3UBYdgrlljnUgGRJf2EU0EX5GSkrRgkBZ21d"
    "ylmZF3S09ZVdsxp95xZh6lUa0rGWKWYfeGIK1W1BAoYo2XlC1tWpaXnddGxfZLELwnrQLszjtCbNdq1Jl4pZ1L4OYQWuQ1YW"
    "a9e5/iEMw0SBwRAyllENtOVWGGHrEp3bLndQQbdxJxlxJpPr30Bv8lpkRd+N7B1YRQZosspWcdeyVbjBLJJlM4vE3788YpTq"
    "cTwvrObPJqlEskntFW1SUUgPKOuuFTqtEpL85pZQl3TWBFyROZG1UE/BQanRRYl5pHGRe0JHZ0nQ4RUQd2ESCrBkx05prHp0"
    "W+XW3SIdp7dIlBGmZg6AL2zl4CaN/FBAsiZuEo8PvW1d3A7hAN25oCEMG5UvHRQtjCHV/hC2/k3UnKMYFaTcYOFW+1BDgi4U"
    "0XJd9mXf7JO6bnvltRX43+4LX+S71vgWxGJoCcmYw/EO0ZfXTrouWytQYCGJZQy6btnpRC6bu+3ATwFnbrjz1xWVrsu377xl"
    "RU56k/tdxW79a4rZDWVA/533FIuuS2ah0A3xCtz5siIJtExAVU1YlkjmvhqUvB/8O17CWzlQQv9DifyoeV31oPMnLfQVRxh5"
    "dFO9Z6kH5VqODkS6tQ/BtddAb6sJZUOnYeQkWVHOdNDeq9Hpt7UY7emYYtC9frj+TzFfZEL54SbwyBhF1OmUGyJ1kEZoEUcY"
    "VT+FhONAQS5VJA=="
)


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
    # As UCI's archive: both files Unix-compressed, the test writers' first (it must never be read).
    "/uci/pendigits.zip": zip_bytes({"pendigits-orig.tes.Z": lzw(CONTENT.replace(b"DIGIT", b"TEST!")),
                                     "pendigits.names": b"names", f"{NAME}.Z": lzw(CONTENT)}),
    f"/lzw/{NAME}.Z": lzw(CONTENT),
    f"/corrupt/{NAME}.Z": b"\x1f\x9d\x90" + (300).to_bytes(2, "little"),  # the first code is not a byte
    "/corrupt/uci.zip": zip_bytes({f"{NAME}.Z": lzw(CONTENT)[:40] + b"\xff" * 40}),
    "/notlzw/uci.zip": zip_bytes({f"{NAME}.Z": CONTENT}),
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


@pytest.fixture
def opened_members(monkeypatch) -> list[str]:
    """The names of the zip members opened for reading, whatever reads them."""
    opened: list[str] = []
    real_open = zipfile.ZipFile.open

    def spy(self, name, mode="r", *args, **kwargs):
        if mode == "r":
            opened.append(getattr(name, "filename", name))
        return real_open(self, name, mode, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "open", spy)
    return opened


def test_the_uci_zip_gives_the_training_file_from_its_lzw_member_and_never_reads_the_test_one(
        server, tmp_path, opened_members):
    path = fetch(tmp_path / "dest", server.url("/uci/pendigits.zip"))
    assert path.read_bytes() == CONTENT
    assert opened_members == [f"{NAME}.Z"]  # the .tes.Z member is never opened, let alone decoded
    assert [p.name for p in path.parent.iterdir()] == [NAME]


def test_a_raw_lzw_copy_is_decoded(server, tmp_path):
    assert fetch(tmp_path, server.url(f"/lzw/{NAME}.Z")).read_bytes() == CONTENT
    assert [p.name for p in tmp_path.iterdir()] == [NAME]


@pytest.mark.parametrize("route,message", [
    (f"/corrupt/{NAME}.Z", "corrupt .Z data"),
    ("/corrupt/uci.zip", "corrupt .Z data"),
    ("/notlzw/uci.zip", "not Unix-compress"),
])
def test_a_corrupt_lzw_copy_is_an_error_and_leaves_nothing(server, tmp_path, route, message):
    with pytest.raises(FetchError, match=message):
        fetch(tmp_path, server.url(route))
    assert list(tmp_path.iterdir()) == []


def test_an_lzw_copy_unpacking_past_the_cap_is_refused(server, tmp_path, monkeypatch):
    monkeypatch.setattr(pdg, "_MAX_BYTES", 100_000)
    monkeypatch.setitem(ROUTES, "/bomb/uci.zip", zip_bytes({f"{NAME}.Z": lzw(b"0" * 1_000_000)}))
    with pytest.raises(FetchError, match="unpacks to more than 100,000 bytes"):
        fetch(tmp_path, server.url("/bomb/uci.zip"))
    assert list(tmp_path.iterdir()) == []


# --- decompress_z: the .Z (Unix compress, LZW) decoding ------------------------------------------


@pytest.mark.parametrize("kw", [
    {},  # 16 bits, block mode
    {"maxbits": 12, "clear_every": 3001},  # CLEARs at every offset in a group, at 9 to 12 bits
    {"maxbits": 12, "block_mode": False},  # no CLEAR: the table fills and stays full
    {"maxbits": 10, "clear_when_full": False},
])
def test_the_decoder_reverses_the_encoder_and_agrees_with_gzip(kw):
    for text in (b"", b"a", CONTENT, b"ab" * 5000, BIG):
        packed = lzw(text, **kw)
        assert pdg.decompress_z(packed) == text
        if GZIP:
            assert gzip_d(packed) == text  # the encoder writes the real format


def test_the_big_text_grows_the_codes_to_16_bits_and_is_cleared():
    packed, widest, clears = lzw_compress(BIG)
    assert (widest, clears) == (16, 1) and len(packed) < len(BIG)
    packed, widest, clears = lzw_compress(BIG, maxbits=12, clear_every=3001)
    assert widest == 12 and clears > 20
    assert pdg.decompress_z(packed) == BIG


def test_the_decoder_reads_what_compress_wrote():
    assert pdg.decompress_z(FIXTURE_Z) == FIXTURE_TEXT
    if GZIP:
        assert gzip_d(FIXTURE_Z) == FIXTURE_TEXT


@pytest.mark.skipif(COMPRESS is None, reason="`compress` (Debian: ncompress) is not installed")
@pytest.mark.parametrize("maxbits", ["10", "12", "16"])
def test_the_decoder_reads_what_compress_writes_now(maxbits):
    for text in (CONTENT, FIXTURE_TEXT, BIG):
        assert pdg.decompress_z(compress(text, "-b", maxbits)) == text
    if maxbits == "10":
        assert compress(FIXTURE_TEXT, "-b", maxbits) == FIXTURE_Z


@pytest.mark.parametrize("packed,message", [
    (b"", "no Unix-compress header"),
    (b"\x1f\x9d", "no Unix-compress header"),
    (b"\x1f\x8b\x90abc", "no Unix-compress header"),
    (b"\x1f\x9d\x88abc", "unsupported header flags 0x88"),  # at most 8 bits
    (b"\x1f\x9d\x91abc", "unsupported header flags 0x91"),  # 17 bits
    (b"\x1f\x9d\xd0abc", "unsupported header flags 0xd0"),  # a reserved bit
    # unlzw3's own reasons, after "corrupt .Z data: "
    (b"\x1f\x9d\x90" + (300).to_bytes(2, "little"), "corrupt .Z data: .*first code must be a literal"),
    (b"\x1f\x9d\x90" + (256).to_bytes(2, "little"), "corrupt .Z data: .*first code must be a literal"),
    (b"\x1f\x9d\x90" + (ord("a") | 300 << 9).to_bytes(3, "little"), "corrupt .Z data: .*invalid code"),  # undefined
    (lzw(BIG)[:5000] + b"\xff" * 64, "corrupt .Z data: .*invalid code"),
])
def test_a_corrupt_stream_is_a_fetch_error(packed, message):
    with pytest.raises(FetchError, match=f"(?i){message}"):
        pdg.decompress_z(packed)


def test_a_truncated_stream_decodes_to_a_prefix_the_checksum_then_refuses():
    packed = lzw(BIG)
    assert BIG.startswith(pdg.decompress_z(packed[: len(packed) // 2]))


def test_the_output_is_capped():
    packed = lzw(b"0" * 1_000_000)
    assert len(packed) < 3000
    with pytest.raises(FetchError, match="unpacks to more than 100,000 bytes"):
        pdg.decompress_z(packed, limit=100_000)
    assert len(pdg.decompress_z(packed)) == 1_000_000


@pytest.mark.skipif(not CANONICAL.is_file() or COMPRESS is None,
                    reason="needs ../shared/data/pendigits/pendigits-orig.tra and `compress`")
def test_the_real_training_file_round_trips_through_compress_and_a_uci_like_zip(server, tmp_path, monkeypatch,
                                                                              opened_members):
    monkeypatch.setattr(pdg, "PENDIGITS_SHA256", REAL_SHA256)
    packed = compress(CANONICAL.read_bytes())
    start = time.perf_counter()
    text = pdg.decompress_z(packed)
    took = time.perf_counter() - start
    assert hashlib.sha256(text).hexdigest() == REAL_SHA256
    assert took < 15, f"decoding the 3.6 MB file took {took:.1f} s"
    monkeypatch.setitem(ROUTES, "/real/uci.zip", zip_bytes({"pendigits-orig.tes.Z": b"\x1f\x9d\x90never read",
                                                            f"{NAME}.Z": packed}))
    path = fetch(tmp_path, server.url("/real/uci.zip"))
    assert hashlib.sha256(path.read_bytes()).hexdigest() == REAL_SHA256
    assert opened_members == [f"{NAME}.Z"]


def test_only_the_training_file_is_ever_asked_for(server, tmp_path):
    fetch(tmp_path, server.url("/zip/pendigits.zip"))
    assert not any(".tes" in m for m in pdg.PENDIGITS_MIRRORS)
    assert all(".tes" not in p for p in server.requests)
    assert not any(".tes" in p.name for p in tmp_path.iterdir())


def test_the_canonical_checksum_is_the_sha256_of_the_uci_training_file(monkeypatch):
    monkeypatch.undo()  # the real checksum, not the tiny file's
    assert pdg.PENDIGITS_SHA256 == REAL_SHA256
    if CANONICAL.is_file():
        assert hashlib.sha256(CANONICAL.read_bytes()).hexdigest() == pdg.PENDIGITS_SHA256


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
    assert training.pendigits_path() is None
    run("--url", server.url(f"/raw/{NAME}"))
    assert (tmp_path / "data" / "pendigits" / NAME).read_bytes() == CONTENT
    assert training.pendigits_path() == tmp_path / "data" / "pendigits"
    assert len(pdg.load_pendigits(training.pendigits_path())) == 3


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
    assert training.pendigits_path() is None  # the folder alone is not enough
    (tmp_path / "data" / "pendigits" / NAME).write_bytes(CONTENT)
    assert training.pendigits_path() == tmp_path / "data" / "pendigits"
    settings.PENDIGITS_DIR = str(tmp_path / "elsewhere")
    assert training.pendigits_path() == tmp_path / "elsewhere"
