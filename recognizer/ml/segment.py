"""Split a drawing of a whole number into its digits, left to right (plain Python, no Django).

1. ink from the drawing exactly as for one digit (``ink_array``);
2. connected components (8-connectivity) of the ink mask dilated by a pixel or two, so the faint
   anti-aliased rim of a stroke never cuts a digit in two;
3. components that overlap strongly in x are one digit: the two strokes of a 4 or a 5, a 7's bar;
4. specks (a stray click, far smaller than the digits around it) are dropped;
5. optionally, a piece much wider than tall (two touching digits) is cut at the column of least ink;
6. each segment's ink (its own components only, so a neighbour's overhang is not in it) goes through
   the very same MNIST-frame preprocessing as a single drawn digit (``segment_image28``).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

from .preprocess import (
    INK_THRESHOLD,
    MIN_INK_PIXELS,
    DrawingError,
    EmptyDrawing,
    ImageInput,
    ink_array,
    preprocess_ink,
)

__all__ = ["MAX_DIGITS", "Segment", "TooManyDigits", "segment_image28", "split_ink", "split_number"]

MAX_DIGITS = 12  # more pieces than this is a scribble or text, not a number
X_OVERLAP_MERGE = 0.5  # merge two pieces when their x-ranges overlap by this much of the narrower one
SPECK_INK = 0.06  # a piece with less ink than this fraction of the biggest one ...
SPECK_HEIGHT = 0.25  # ... and smaller than this fraction of the tallest one, is a speck
# Width / height above which a piece is taken for touching digits (bench/numbers.py: 1.2 cuts wide single digits).
TOUCHING_ASPECT = 1.4


class TooManyDigits(DrawingError):
    """More separate pieces than any number has digits."""


@dataclass
class Segment:
    """One digit of a number: its box in the drawing's pixels (x1, y1 exclusive) and its ink there."""

    box: tuple[int, int, int, int]
    ink: np.ndarray  # float32 in [0, 1], shape (y1 - y0, x1 - x0): this digit's ink only

    def png_padding(self, margin: float = 0.15) -> int:
        """The transparent margin ``png`` puts around the ink, in pixels on each side."""
        h, w = self.ink.shape
        return max(2, round(margin * max(h, w)))

    def png(self, margin: float = 0.15) -> bytes:
        """The digit as a canvas-like PNG (black ink on transparent, with a margin): re-reading it with
        ``preprocess_drawing`` gives the same 28x28 as ``segment_image28``."""
        pad = self.png_padding(margin)
        alpha = np.pad(np.clip(self.ink, 0, 1), pad)
        a = Image.fromarray((alpha * 255 + 0.5).astype(np.uint8), mode="L")
        black = Image.new("L", a.size, 0)
        buffer = io.BytesIO()
        Image.merge("RGBA", (black, black, black, a)).save(buffer, format="PNG")
        return buffer.getvalue()


def segment_image28(segment: Segment, **kw: Any) -> np.ndarray:
    """The segment in the MNIST frame, as ``preprocess_drawing`` frames a drawing (crop, scale, centre by mass,
    dot check, thickness normalisation): its ink is already ink, which reading it from an image again would
    leave as it is (``tests/test_ml_segment.py``)."""
    return preprocess_ink(segment.ink, **kw)


@dataclass
class _Piece:
    labels: list[int]
    x0: int
    y0: int
    x1: int
    y1: int
    ink: float

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    def merge(self, other: _Piece) -> _Piece:
        return _Piece(self.labels + other.labels, min(self.x0, other.x0), min(self.y0, other.y0),
                      max(self.x1, other.x1), max(self.y1, other.y1), self.ink + other.ink)


def _x_overlap(a: _Piece, b: _Piece) -> float:
    inter = min(a.x1, b.x1) - max(a.x0, b.x0)
    return inter / max(1, min(a.width, b.width))


def _merge_overlapping(pieces: list[_Piece]) -> list[_Piece]:
    merged = True
    while merged:
        merged = False
        pieces.sort(key=lambda p: p.x0)
        for i in range(len(pieces)):
            for j in range(i + 1, len(pieces)):
                if _x_overlap(pieces[i], pieces[j]) >= X_OVERLAP_MERGE:
                    pieces[i] = pieces[i].merge(pieces.pop(j))
                    merged = True
                    break
            if merged:
                break
    return pieces


def _cut_column(ink: np.ndarray, height: int) -> int | None:
    """Column of least ink in the middle of a too-wide piece (relative to its box), or None."""
    w = ink.shape[1]
    lo, hi = int(w * 0.3), int(np.ceil(w * 0.7))
    if hi - lo < 1:
        return None
    cols = ink[:, lo:hi].sum(axis=0)
    # prefer the middle among equally thin columns
    centre_penalty = np.abs(np.arange(lo, hi) - w / 2) * 1e-6
    return lo + int(np.argmin(cols + centre_penalty))


def split_number(image: ImageInput, *, split_touching: bool = True, dilate: int | None = None) -> list[Segment]:
    """Bytes / PIL image / array -> the digits' Segments, left to right.

    Raises EmptyDrawing when there is no ink, TooManyDigits for more than MAX_DIGITS pieces."""
    return split_ink(ink_array(image), split_touching=split_touching, dilate=dilate)


def split_ink(ink: np.ndarray, *, split_touching: bool = True, dilate: int | None = None) -> list[Segment]:
    """``split_number`` of an ink array already read from the image (``ink_array``)."""
    mask = ink > INK_THRESHOLD
    if int(np.count_nonzero(mask)) < MIN_INK_PIXELS:
        raise EmptyDrawing("the canvas is empty: draw a number first")
    h, w = mask.shape
    if dilate is None:
        dilate = max(1, round(min(h, w) / 140))  # 2 px on a 280 px canvas
    grown = ndimage.binary_dilation(mask, structure=np.ones((3, 3), bool), iterations=dilate) if dilate else mask
    labels, n = ndimage.label(grown, structure=np.ones((3, 3), int))
    if n == 0:
        raise EmptyDrawing("the canvas is empty: draw a number first")
    # Each component's own ink (the dilated label map also owns the anti-aliased rim of its strokes).
    ink_sums = ndimage.sum_labels(ink, labels, index=np.arange(1, n + 1))
    pieces = []
    for i, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None:
            continue
        own = (labels[sl] == i) & mask[sl]
        if not own.any():
            continue
        rows, cols = np.flatnonzero(own.any(axis=1)), np.flatnonzero(own.any(axis=0))
        pieces.append(_Piece([i], sl[1].start + int(cols[0]), sl[0].start + int(rows[0]),
                             sl[1].start + int(cols[-1]) + 1, sl[0].start + int(rows[-1]) + 1,
                             float(ink_sums[i - 1])))
    if not pieces:
        raise EmptyDrawing("the canvas is empty: draw a number first")
    pieces = _merge_overlapping(pieces)
    biggest = max(p.ink for p in pieces)
    tallest = max(p.height for p in pieces)
    pieces = [p for p in pieces if not (p.ink < SPECK_INK * biggest and p.height < SPECK_HEIGHT * tallest)]
    if len(pieces) > MAX_DIGITS:
        raise TooManyDigits(f"that is {len(pieces)} separate pieces: write at most {MAX_DIGITS} digits")

    segments: list[Segment] = []
    for p in pieces:
        own = np.isin(labels[p.y0:p.y1, p.x0:p.x1], p.labels)
        piece_ink = np.where(own, ink[p.y0:p.y1, p.x0:p.x1], 0.0).astype(np.float32)
        parts = [(p.x0, piece_ink)]
        if split_touching:
            parts = _split_wide(p.x0, piece_ink, max(p.height, int(0.5 * tallest)))
        for x0, part in parts:
            m = part > INK_THRESHOLD
            rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
            if len(rows) == 0:
                continue
            box = (x0 + int(cols[0]), p.y0 + int(rows[0]), x0 + int(cols[-1]) + 1, p.y0 + int(rows[-1]) + 1)
            crop = part[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
            segments.append(Segment(box=box, ink=np.ascontiguousarray(crop)))
    segments.sort(key=lambda s: (s.box[0] + s.box[2]) / 2)
    if len(segments) > MAX_DIGITS:
        raise TooManyDigits(f"that is {len(segments)} separate pieces: write at most {MAX_DIGITS} digits")
    return segments


def _split_wide(x0: int, ink: np.ndarray, height: int, depth: int = 0) -> list[tuple[int, np.ndarray]]:
    """Cut a piece much wider than tall at its column of least ink, recursively (at most 3 levels)."""
    w = ink.shape[1]
    if depth >= 3 or w <= TOUCHING_ASPECT * height:
        return [(x0, ink)]
    cut = _cut_column(ink, height)
    if cut is None or cut <= 0 or cut >= w:
        return [(x0, ink)]
    return (_split_wide(x0, ink[:, :cut], height, depth + 1)
            + _split_wide(x0 + cut, ink[:, cut:], height, depth + 1))
