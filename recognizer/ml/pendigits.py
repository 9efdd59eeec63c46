"""UCI pendigits (UNIPEN trajectories): verified download, parsing and browser-canvas-like replay.

Plain Python (no Django).  Paths always come from arguments.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tempfile
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import unlzw3
from PIL import Image

from .mnist import FetchError, download_to
from .strokes import draw_strokes

__all__ = [
    "PENDIGITS_FILE",
    "PENDIGITS_MIRRORS",
    "PENDIGITS_SHA256",
    "FetchError",
    "PenDigit",
    "decompress_z",
    "fetch_pendigits",
    "load_pendigits",
    "parse_unipen",
    "render_drawing",
    "render_png",
    "split_writers",
]

# Only the UCI *training* file (30 writers) is ever downloaded or read.  The UCI test file
# (pendigits-orig.tes, the 14 other writers) is never fetched: the project never trains on the UCI
# test writers, so they stay unseen by every model it makes.
PENDIGITS_FILE = "pendigits-orig.tra"

# SHA-256 of the uncompressed pendigits-orig.tra (3,641,673 bytes), whatever wrapper a mirror uses.
PENDIGITS_SHA256 = "a66225d68d7d68591e62944df1ad33b3f5aa608e2df2505844b41f5568a80da4"

# A mirror is a URL serving the file itself, gzip- or Unix-compress-compressed (``.Z``), or in a zip
# archive holding it plain or as ``pendigits-orig.tra.Z``.  UCI's zip holds the original files only
# as Unix-compress (LZW) members: fetch_pendigits extracts and decodes the training member
# (``decompress_z``) and never touches ``pendigits-orig.tes.Z`` beside it.
PENDIGITS_MIRRORS: list[str] = [
    "https://archive.ics.uci.edu/static/public/81/pen+based+recognition+of+handwritten+digits.zip",
]

_MAX_BYTES = 64 << 20  # the file is 3.6 MB; a mirror unpacking to more than this is not serving it
_LZW_MAGIC = b"\x1f\x9d"


@dataclass
class PenDigit:
    writer: int
    label: int
    strokes: list[np.ndarray] = field(default_factory=list)  # each (m, 2) float: x, y (y down)


def parse_unipen(text: str) -> list[PenDigit]:
    """Parse UNIPEN text; y is flipped so that it points down like canvas coordinates."""
    digits: list[PenDigit] = []
    cur: PenDigit | None = None
    stroke: list[tuple[float, float]] | None = None

    def end_stroke():
        nonlocal stroke
        if cur is not None and stroke:
            a = np.asarray(stroke, dtype=np.float64)
            a[:, 1] = -a[:, 1]
            cur.strokes.append(a)
        stroke = None

    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("."):
            parts = line.split()
            kw = parts[0]
            if kw == ".SEGMENT":
                end_stroke()
                if cur is not None:
                    digits.append(cur)
                cur = None
                if len(parts) >= 2 and parts[1] == "DIGIT":
                    label = parts[-1].strip('"')
                    if not label.isdigit():
                        raise ValueError(f"line {lineno}: bad digit label {parts[-1]!r}")
                    cur = PenDigit(writer=-1, label=int(label))
            elif kw == ".COMMENT" and cur is not None and len(parts) >= 3 and cur.writer < 0:
                try:
                    cur.writer = int(parts[2])
                except ValueError:
                    pass
            elif kw == ".PEN_DOWN":
                end_stroke()
                stroke = []
            elif kw == ".PEN_UP":
                end_stroke()
            continue
        if stroke is not None:
            xy = line.split()
            if len(xy) >= 2:
                stroke.append((float(xy[0]), float(xy[1])))
    end_stroke()
    if cur is not None:
        digits.append(cur)
    return [d for d in digits if d.strokes]


def _file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def decompress_z(data: bytes, limit: int | None = None) -> bytes:
    """Decode Unix ``compress`` (``.Z``, LZW) data with ``unlzw3``, as ``gzip -d`` and ncompress's
    ``uncompress`` do.

    Raises ``FetchError`` on data that is not ``.Z`` (no ``1f 9d`` header, or header flags that no
    ``compress`` writes), on a corrupt stream, and when the output is more than ``limit`` bytes
    (default: the module's 64 MB cap).  ``unlzw3`` decodes the whole input at once and cannot stop at
    ``limit``, so the output is measured once decoded: a stream unpacking past the cap is refused, but
    the memory used while decoding is bounded only by the compressed size the callers cap
    (``_read_capped``), times what LZW can expand it by.  A truncated stream decodes to a shorter text
    or is a ``FetchError``: the caller's checksum catches the former.
    """
    limit = _MAX_BYTES if limit is None else limit
    data = bytes(data)
    if len(data) < 3 or data[:2] != _LZW_MAGIC:
        raise FetchError("corrupt .Z data: no Unix-compress header")
    flags = data[2]  # low 5 bits: the widest code, 9-16; 0x80: block mode; 0x60: reserved
    if flags & 0x60 or not 9 <= flags & 0x1F <= 16:
        raise FetchError(f"corrupt .Z data: unsupported header flags 0x{flags:02x}")
    try:
        out = unlzw3.unlzw(data)
    except ValueError as exc:  # unlzw3 says "Invalid Data: ..." for a damaged stream
        raise FetchError(f"corrupt .Z data: {exc}") from exc
    if len(out) > limit:
        raise FetchError(f"unpacks to more than {limit:,} bytes: not {PENDIGITS_FILE}")
    return out


def _read_capped(src) -> bytes:
    data = src.read(_MAX_BYTES + 1)
    if len(data) > _MAX_BYTES:
        raise FetchError(f"more than {_MAX_BYTES:,} bytes of compressed data: not {PENDIGITS_FILE}")
    return data


def _write_synced(out, data: bytes) -> None:
    out.write(data)
    out.flush()
    os.fsync(out.fileno())


def _copy_capped(src, out) -> None:
    copied = 0
    for chunk in iter(lambda: src.read(1 << 16), b""):
        copied += len(chunk)
        if copied > _MAX_BYTES:
            raise FetchError(f"unpacks to more than {_MAX_BYTES >> 20} MB: not {PENDIGITS_FILE}")
        out.write(chunk)
    out.flush()
    os.fsync(out.fileno())


def _unpack(download: Path, out) -> bool:
    """Write the pendigits text held in ``download`` (zip, gzip, .Z or the file itself) into ``out``.

    From a zip, the member ``pendigits-orig.tra`` is used, else ``pendigits-orig.tra.Z`` (decoded);
    no other member is ever read.  Returns False when ``download`` is already the plain file
    (nothing written)."""
    with open(download, "rb") as f:
        magic = f.read(4)
    if magic == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(download) as archive:
                names = archive.namelist()
                plain, lzw = (
                    [n for n in names if n == wanted or n.endswith("/" + wanted)]
                    for wanted in (PENDIGITS_FILE, PENDIGITS_FILE + ".Z")
                )
                if plain:
                    with archive.open(plain[0]) as src:
                        _copy_capped(src, out)
                elif lzw:
                    with archive.open(lzw[0]) as src:
                        packed = _read_capped(src)
                    if packed[:2] != _LZW_MAGIC:
                        raise FetchError(f"{lzw[0]} in the zip archive is not Unix-compress (.Z) data")
                    _write_synced(out, decompress_z(packed))
                else:
                    raise FetchError(f"the zip archive holds no {PENDIGITS_FILE} (members: {', '.join(names[:10])})")
        except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
            raise FetchError(f"corrupt zip archive ({exc})") from exc
        return True
    if magic[:2] == b"\x1f\x8b":
        try:
            with gzip.open(download, "rb") as src:
                _copy_capped(src, out)
        except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
            raise FetchError(f"corrupt or truncated gzip data ({exc})") from exc
        return True
    if magic[:2] == _LZW_MAGIC:
        with open(download, "rb") as src:
            packed = _read_capped(src)
        _write_synced(out, decompress_z(packed))
        return True
    return False


def fetch_pendigits(
    dest: str | os.PathLike,
    mirrors: Iterable[str] = PENDIGITS_MIRRORS,
    timeout: float = 60.0,
    progress: Callable[[str, float], None] | None = None,
    opener: Callable = urllib.request.urlopen,
) -> Path:
    """Download ``pendigits-orig.tra`` into the directory ``dest``, verified, and return its path.

    Each mirror is tried in turn until one gives the file with the expected SHA-256
    (``PENDIGITS_SHA256``); a mirror may serve it plain, gzip- or Unix-compress-compressed (.Z), or
    inside a zip archive, plain or as ``pendigits-orig.tra.Z`` (as UCI's own archive does).
    The file is written through a temporary file in ``dest`` and an atomic rename, so ``dest`` never
    holds a partial or unverified file.  A verified file already there is not downloaded again.
    ``progress(stage, fraction)`` is called as in ``fetch_mnist`` (1.0 at the end); ``opener`` and
    ``timeout`` too.  Raises ``FetchError`` naming every mirror tried and why each failed.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    final = dest / PENDIGITS_FILE
    stage = f"download {PENDIGITS_FILE}"
    if final.is_file():
        try:
            if _file_sha256(final) == PENDIGITS_SHA256:
                if progress:
                    progress(stage, 1.0)
                return final
        except OSError:
            pass
    mirrors = list(mirrors)
    errors = []
    for url in mirrors:
        temps = []
        try:
            fd, name = tempfile.mkstemp(prefix=f".{PENDIGITS_FILE}.", suffix=".download", dir=dest)
            temps.append(Path(name))
            with os.fdopen(fd, "wb") as out:
                download_to(url, out, opener=opener, timeout=timeout,
                            progress=(lambda frac: progress(stage, frac)) if progress else None)
            fd, name = tempfile.mkstemp(prefix=f".{PENDIGITS_FILE}.", suffix=".part", dir=dest)
            temps.append(Path(name))
            with os.fdopen(fd, "wb") as out:
                unpacked = _unpack(temps[0], out)
            candidate = temps[1] if unpacked else temps[0]
            got = _file_sha256(candidate)
            if got != PENDIGITS_SHA256:
                raise FetchError(f"checksum mismatch (got {got[:12]}..., expected {PENDIGITS_SHA256[:12]}...)")
            os.replace(candidate, final)
            if progress:
                progress(stage, 1.0)
            return final
        except Exception as exc:  # noqa: BLE001 - any failure: try the next mirror
            errors.append(f"{url}: {exc}")
        finally:
            for tmp in temps:
                if tmp.exists():
                    tmp.unlink()
    stale = f" ({final} is there but fails the checksum)" if final.is_file() else ""
    if not errors:
        raise FetchError(f"could not download {PENDIGITS_FILE}: no mirror given{stale}")
    raise FetchError(
        f"could not download {PENDIGITS_FILE} from any of the {len(errors)} mirror(s) tried{stale}:\n  "
        + "\n  ".join(errors)
    )


def load_pendigits(path: str | os.PathLike) -> list[PenDigit]:
    """Load ``pendigits-orig.tra`` (``path`` is the file or its directory)."""
    p = Path(path)
    if p.is_dir():
        p = p / PENDIGITS_FILE
    if not p.is_file():
        raise FileNotFoundError(f"pendigits file not found: {p}")
    return parse_unipen(p.read_text(encoding="latin-1"))


def render_drawing(
    pen_digit: PenDigit,
    rng: np.random.Generator,
    size: int = 280,
    supersample: int = 4,
    pen_range: tuple[float, float] = (0.06, 0.09),
    height_range: tuple[float, float] = (0.35, 0.80),
) -> Image.Image:
    """Replay the trajectory like a browser canvas: RGBA, transparent background, black ink,
    round pen of 6-9 % of the width, digit 35-80 % of the height, anywhere inside, anti-aliased."""
    pts = np.concatenate(pen_digit.strokes, axis=0)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    ext = hi - lo
    pen = float(rng.uniform(*pen_range)) * size
    target_h = float(rng.uniform(*height_range)) * size
    scale = target_h / max(ext[1], 1e-6) if ext[1] > 0 else target_h / max(ext[0], 1.0)
    room = size - pen - 2.0
    if ext[0] * scale > room:  # very wide digit: shrink to fit (aspect kept)
        scale = room / max(ext[0], 1e-6)
    if ext[1] * scale > room:
        scale = room / max(ext[1], 1e-6)
    w, h = ext * scale
    x0 = float(rng.uniform(pen / 2 + 1, max(pen / 2 + 1, size - pen / 2 - 1 - w)))
    y0 = float(rng.uniform(pen / 2 + 1, max(pen / 2 + 1, size - pen / 2 - 1 - h)))
    return draw_strokes([(s - lo) * scale + (x0, y0) for s in pen_digit.strokes], size, size, pen, supersample)


def render_png(pen_digit: PenDigit, rng: np.random.Generator, size: int = 280, **kw: Any) -> bytes:
    """``render_drawing`` (``kw``: its keyword arguments) encoded as a PNG, as a browser uploads it."""
    buf = io.BytesIO()
    render_drawing(pen_digit, rng, size=size, **kw).save(buf, format="PNG")
    return buf.getvalue()


def split_writers(
    digits: list[PenDigit], test_fraction: float = 0.3, seed: int = 0
) -> tuple[list[PenDigit], list[PenDigit]]:
    """Split by writer (never by sample): returns (train, test)."""
    writers = sorted({d.writer for d in digits})
    if len(writers) < 2:
        raise ValueError("need at least two writers to split by writer")
    rng = np.random.default_rng(seed)
    order = list(rng.permutation(writers))
    n_test = min(len(writers) - 1, max(1, round(test_fraction * len(writers))))
    test_w = {int(w) for w in order[:n_test]}
    return [d for d in digits if d.writer not in test_w], [d for d in digits if d.writer in test_w]
