"""Over-segment a written number by its pen strokes (plain Python, no Django).

The strokes say where one digit ends and the next begins far better than the ink does: digits that touch
or overlap on the canvas are still separate pen-downs. So a number sent with its strokes is cut into
pieces of strokes (``PenPiece``: a whole stroke, or part of one that ran through two digits), and every
ink pixel belongs to the piece whose trajectory passes nearest (``InkOwners``): a group of pieces then has
its own ink only, however close its neighbours are. Which pieces make one digit is decided by
recognizer.ml.numbers, by reading them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy import ndimage

from .preprocess import INK_THRESHOLD, EmptyDrawing
from .segment import Segment

__all__ = ["DOT_SIZE", "InkOwners", "PenPiece", "PieceRuns", "align_strokes", "line_height", "pen_pieces"]

DOT_SIZE = 0.12  # a stroke whose box is smaller than this fraction of the line height is a dot, not a digit
ALIGN_HITS = 0.85  # share of stroke points that must fall on ink for the strokes to be the image's
ALIGN_REACH = 3  # px: how far from ink a point may be and still be "on" it (anti-aliasing, rounding)
ALIGN_POINTS = 256
OWNED_INK = 0.05  # ink level from which a pixel is given to a stroke


@dataclass(frozen=True)
class PenPiece:
    """Points ``start``..``stop - 1`` of stroke ``stroke`` (a cut piece shares its cut point with its twin)."""

    stroke: int
    start: int
    stop: int
    points: np.ndarray  # (m, 3): x, y, t in the image's pixels

    @cached_property
    def box(self) -> tuple[float, float, float, float]:
        lo, hi = self.points[:, :2].min(axis=0), self.points[:, :2].max(axis=0)
        return float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])

    @property
    def centre_x(self) -> float:
        x0, _y0, x1, _y1 = self.box
        return (x0 + x1) / 2

    @property
    def width(self) -> float:
        return float(np.ptp(self.points[:, 0]))

    @property
    def height(self) -> float:
        return float(np.ptp(self.points[:, 1]))

    def cut(self, at: int) -> tuple[PenPiece, PenPiece]:
        """Two pieces meeting at point ``at`` (relative to this piece)."""
        a = PenPiece(self.stroke, self.start, self.start + at + 1, self.points[: at + 1])
        b = PenPiece(self.stroke, self.start + at, self.stop, self.points[at:])
        return a, b


def line_height(strokes: Sequence[np.ndarray]) -> float:
    """The number's digit height: its tallest stroke (a digit's main stroke spans it; a bar or a dot does not)."""
    return max(1.0, max(float(np.ptp(s[:, 1])) for s in strokes))


def pen_pieces(strokes: Sequence[np.ndarray], height: float) -> list[PenPiece]:
    """Each stroke as a piece, dots (a tap, a full stop) left out, sorted left to right by centre."""
    pieces = []
    for i, s in enumerate(strokes):
        piece = PenPiece(i, 0, len(s), np.asarray(s, dtype=np.float64))
        if max(piece.width, piece.height) >= DOT_SIZE * height:
            pieces.append(piece)
    if not pieces:
        raise EmptyDrawing("that is only dots, not a number: write bigger digits")
    return sorted(pieces, key=lambda p: (p.centre_x, p.stroke, p.start))


def _hit_share(strokes: Sequence[np.ndarray], mask: np.ndarray) -> float:
    """The share of the strokes' points with ink within ALIGN_REACH px (a square around the point), over at most
    ALIGN_POINTS of them evenly spread."""
    xy = np.rint(np.concatenate([s[:, :2] for s in strokes])).astype(np.int64)
    if len(xy) > ALIGN_POINTS:
        xy = xy[np.linspace(0, len(xy) - 1, ALIGN_POINTS).astype(np.int64)]
    h, w = mask.shape
    reach = np.arange(-ALIGN_REACH, ALIGN_REACH + 1)
    dx, dy = np.meshgrid(reach, reach)
    x = xy[:, 0:1] + dx.ravel()  # (points, square): every pixel of each point's square at once
    y = xy[:, 1:2] + dy.ravel()
    inside = (x >= 0) & (x < w) & (y >= 0) & (y < h)
    on_ink = np.zeros(x.shape, dtype=bool)
    on_ink[inside] = mask[y[inside], x[inside]]
    return float(on_ink.any(axis=1).mean())


def align_strokes(strokes: Sequence[np.ndarray], ink: np.ndarray) -> list[np.ndarray] | None:
    """The strokes in the image's pixels, or None when they do not trace its ink.

    A client should send them in the image's pixels; one that sends them in its canvas's (CSS pixels, another
    scale) is mapped box onto box, the pen's width estimated from the ink's area over the strokes' length."""
    mask = ink > INK_THRESHOLD
    strokes = [np.asarray(s, dtype=np.float64) for s in strokes]
    if _hit_share(strokes, mask) >= ALIGN_HITS:
        return strokes
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    pts = np.concatenate([s[:, :2] for s in strokes])
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    ext = hi - lo
    length = sum(float(np.sqrt((np.diff(s[:, :2], axis=0) ** 2).sum(axis=1)).sum()) for s in strokes)
    ink_ext = np.array([cols[-1] - cols[0] + 1, rows[-1] - rows[0] + 1], dtype=np.float64)
    pen = min(float(mask.sum()) / max(length, 1.0), 0.5 * float(ink_ext.min()))
    axis = int(np.argmax(ext))
    if ext[axis] <= 0:
        return None
    scale = max(ink_ext[axis] - pen, 1.0) / ext[axis]
    centre_ink = np.array([(cols[0] + cols[-1]) / 2, (rows[0] + rows[-1]) / 2])
    shift = centre_ink - (lo + hi) / 2 * scale
    moved = []
    for s in strokes:
        m = s.copy()
        m[:, :2] = m[:, :2] * scale + shift
        moved.append(m)
    return moved if _hit_share(moved, mask) >= ALIGN_HITS else None


def _trajectory_samples(strokes: Sequence[np.ndarray], spacing: float = 1.5
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Points every ``spacing`` px along every stroke: (points (n, 2), stroke of each, segment of each)."""
    points, strokes_of, segments_of = [], [], []
    for i, s in enumerate(strokes):
        p = np.asarray(s, dtype=np.float64)[:, :2]
        if len(p) == 1:  # a tap: one point, "segment 0"
            points.append(p)
            strokes_of.append(np.array([i]))
            segments_of.append(np.array([0]))
            continue
        step = p[1:] - p[:-1]
        count = np.maximum(2, np.ceil(np.hypot(step[:, 0], step[:, 1]) / spacing).astype(np.int64) + 1)
        seg = np.repeat(np.arange(len(step)), count)
        first = np.concatenate([[0], np.cumsum(count)[:-1]])
        t = (np.arange(len(seg)) - first[seg]) / (count[seg] - 1)
        points.append(p[:-1][seg] + t[:, None] * step[seg])
        strokes_of.append(np.full(len(seg), i))
        segments_of.append(seg)
    return np.concatenate(points), np.concatenate(strokes_of), np.concatenate(segments_of)


class InkOwners:
    """Which stroke segment (point j to j + 1 of stroke i) each ink pixel is nearest to.

    The trajectories are sampled every 1.5 px and every ink pixel takes the nearest sample's segment (to 2 px): where two
    digits' strokes cross or touch, each keeps the ink around its own line."""

    def __init__(self, ink: np.ndarray, strokes: Sequence[np.ndarray]) -> None:
        self.ink = ink
        ys, xs = np.nonzero(ink > OWNED_INK)  # the anti-aliased rim too, as a digit drawn alone keeps it
        self.y, self.x = ys, xs
        samples, stroke_of, segment_of = _trajectory_samples(strokes)
        # Each sample marks its pixel of a half-size grid, and the exact distance transform hands every pixel its
        # nearest marked one: ownership to 2 px, in a fifth of the time a k-d tree took over a number's 30,000
        # ink pixels at full size.
        h, w = (ink.shape[0] + 1) // 2, (ink.shape[1] + 1) // 2
        marks = np.zeros((h, w), dtype=np.int64)
        xy = np.floor(samples / 2).astype(np.int64)
        inside = (xy[:, 0] >= 0) & (xy[:, 0] < w) & (xy[:, 1] >= 0) & (xy[:, 1] < h)
        if not inside.any():
            raise EmptyDrawing("the strokes lie outside the image")
        marks[xy[inside, 1], xy[inside, 0]] = np.flatnonzero(inside) + 1
        iy, ix = ndimage.distance_transform_edt(marks == 0, return_distances=False, return_indices=True)
        nearest = marks[iy[ys // 2, xs // 2], ix[ys // 2, xs // 2]] - 1
        self.stroke = stroke_of[nearest]
        self.segment = segment_of[nearest]

    def _owned(self, piece: PenPiece) -> np.ndarray:
        last = max(piece.start, piece.stop - 2)  # the piece's last segment; a single point owns "segment 0"
        return (self.stroke == piece.stroke) & (self.segment >= piece.start) & (self.segment <= last)

    def _crop(self, pixels: np.ndarray) -> Segment | None:
        if not len(pixels):
            return None
        xs, ys = self.x[pixels], self.y[pixels]
        x0, x1, y0, y1 = int(xs.min()), int(xs.max()) + 1, int(ys.min()), int(ys.max()) + 1
        crop = np.zeros((y1 - y0, x1 - x0), dtype=np.float32)
        crop[ys - y0, xs - x0] = self.ink[ys, xs]
        return Segment(box=(x0, y0, x1, y1), ink=crop)

    def segment_of(self, pieces: Sequence[PenPiece]) -> Segment | None:
        """The pieces' own ink as one Segment (None when no ink pixel is theirs)."""
        own = np.zeros(len(self.x), dtype=bool)
        for p in pieces:
            own |= self._owned(p)
        return self._crop(np.flatnonzero(own))

    def runs(self, pieces: Sequence[PenPiece]) -> PieceRuns:
        """The ink of runs of consecutive ``pieces`` (the candidate digits), each read off one sorted array."""
        piece_of = np.full(len(self.x), len(pieces))  # ink of no piece (a dot's) sorts last
        for k, p in enumerate(pieces):
            piece_of[self._owned(p)] = k
        order = np.argsort(piece_of, kind="stable")
        return PieceRuns(self, order, np.searchsorted(piece_of[order], np.arange(len(pieces) + 1)))


@dataclass(frozen=True)
class PieceRuns:
    owners: InkOwners
    order: np.ndarray  # ink pixels sorted by the piece they belong to
    bounds: np.ndarray  # piece k's pixels are order[bounds[k]:bounds[k + 1]]

    def segment(self, i: int, j: int) -> Segment | None:
        """Pieces i..j-1's own ink (None when they have none)."""
        return self.owners._crop(self.order[self.bounds[i]:self.bounds[j]])
