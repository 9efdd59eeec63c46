"""UCI pendigits (UNIPEN trajectories) parsing and browser-canvas-like replay rendering."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["PenDigit", "load_pendigits", "parse_unipen", "render_drawing", "render_png", "split_writers"]

PENDIGITS_FILE = "pendigits-orig.tra"


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
    ss = supersample
    big = Image.new("L", (size * ss, size * ss), 0)
    draw = ImageDraw.Draw(big)
    width = max(1, int(round(pen * ss)))
    r = pen * ss / 2
    for s in pen_digit.strokes:
        xy = ((s - lo) * scale + (x0, y0)) * ss
        pts_list = [tuple(p) for p in xy.tolist()]
        if len(pts_list) > 1:
            draw.line(pts_list, fill=255, width=width, joint="curve")
        for x, y in pts_list:  # round caps and joins
            draw.ellipse((x - r, y - r, x + r, y + r), fill=255)
    alpha = big.reduce(ss) if ss > 1 else big
    black = Image.new("L", (size, size), 0)
    return Image.merge("RGBA", (black, black, black, alpha))


def render_png(pen_digit: PenDigit, rng: np.random.Generator, size: int = 280, **kw) -> bytes:
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
    n_test = min(len(writers) - 1, max(1, int(round(test_fraction * len(writers)))))
    test_w = set(int(w) for w in order[:n_test])
    return [d for d in digits if d.writer not in test_w], [d for d in digits if d.writer in test_w]
