"""Reading a whole number (plain Python, no Django): over-segment it, then choose how the pieces join into
digits by reading them, as handwriting recognisers do.

With the pen strokes (recognizer.ml.pen_segment) the pieces are strokes, left to right; a stroke much wider
than the number's digits are tall (two digits written without lifting the pen) is first cut where both
halves read best. A candidate digit is a run of up to ``max_pieces`` neighbouring pieces, read by the model
exactly as a single drawn digit (its own ink and its own strokes). A segmentation scores

    the sum over its digits of  log p(digit) - penalties for a candidate far from every training digit,
                                too wide, or too small to be one
    + over each pair of neighbouring pieces, the log-probability of a boundary there (or of none) given
      their horizontal gap in line heights,

and the best path through that small lattice (recognizer.ml.lattice) is the answer; the best path that reads
another number is the alternative, and the margin to the best path with another segmentation says whether
the split is sure. Without strokes the pieces are recognizer.ml.segment's (ink components, too-wide ones
cut), each one digit, and only the digits' readings are weighed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from .common import Prediction
from .lattice import Path, alternative, best_paths, boundary_log_odds, log_probabilities, segmentation_margin
from .pen_segment import InkOwners, PenPiece, align_strokes, line_height, pen_pieces
from .preprocess import INK_THRESHOLD, MIN_INK_PIXELS, DrawingError, EmptyDrawing, ImageInput, ink_array
from .segment import MAX_DIGITS, Segment, TooManyDigits, segment_image28, split_ink

__all__ = ["NumberDigit", "NumberReading", "PenCandidates", "ReadingParams", "pen_candidates", "read_number"]


@dataclass(frozen=True)
class ReadingParams:
    """The lattice's weights, chosen by leave-writers-out validation over the 30 pendigits writers: numbers of 2-6
    digits in every placement of bench/numbers.py, their candidates read once by each fold's model, each weight in
    turn set to the value that reads the most whole numbers right (`bench.numbers --tune`: coordinate ascent, on
    numbers of another seed than the figures'). With them the split is the right one for 99.6% of the benchmark's
    numbers (bench/README.md), so that the numbers read wrong are nearly all a digit read wrong. Width costs nothing at the optimum (``width_weight``
    0): the recognition and the size of fragments decide."""

    gap_centre: float = 0.0  # gap, in line heights, at which a boundary and a join are as likely
    gap_scale: float = 0.2  # how fast the boundary's log-odds grow with the gap
    sure_gap: float = 0.2  # pieces further apart than this are never one digit (not read together)
    distance_weight: float = 2.0  # per unit of image distance beyond the model's typical one
    stroke_distance_weight: float = 2.0  # the same for the stroke k-NN
    max_width: float = 0.7  # a digit wider than this many line heights costs ...
    width_weight: float = 0.0  # ... this much per line height more
    min_size: float = 0.6  # a candidate whose box is smaller than this many line heights (a bar, a 4's stem) ...
    size_weight: float = 12.0  # ... costs this much per line height less
    max_pieces: int = 3  # pieces one digit can be made of (of pendigits' 7,494 digits, 9 have three strokes)
    max_tall_pieces: int = 2  # strokes as tall as half the line one digit can have (a 4's angle and stem; none has 3)
    max_group_width: float = 1.6  # line heights: a wider run of pieces is never read as one digit
    max_shape_penalty: float = 2.0  # a run of pieces this far from a digit's size is never read as one
    joined_width: float = 1.3  # line heights: a single stroke wider than this may run through two digits
    cut_candidates: int = 8  # points a joined stroke is tried at
    unsure_margin: float = 1.0  # a segmentation less than this far ahead of the next one is unsure


DEFAULT_PARAMS = ReadingParams()


# ---------------------------------------------------------------- the answer


@dataclass
class NumberDigit:
    segment: Segment  # its own ink, at the working scale (its box there)
    image28: np.ndarray  # that ink in the MNIST frame, as a single drawn digit's
    prediction: Prediction
    strokes: list[np.ndarray] | None = None  # its pen strokes in the image's pixels, in the order drawn
    scale: int = 1  # image pixels per working pixel

    @property
    def box(self) -> tuple[int, int, int, int]:
        """x0, y0, x1, y1 (exclusive) in the image's pixels."""
        return tuple(int(v) * self.scale for v in self.segment.box)

    def png(self) -> bytes:
        """The digit alone as a canvas-like PNG (``Segment.png``): read alone, it gives the same 28x28."""
        return self.segment.png()

    def png_strokes(self) -> list[np.ndarray] | None:
        """``strokes`` in the pixels of ``png()``, as a single drawing's strokes are in its image."""
        if not self.strokes:
            return None
        x0, y0, _x1, _y1 = self.segment.box
        shift = np.array([self.segment.png_padding() - x0, self.segment.png_padding() - y0], dtype=np.float64)
        out = []
        for stroke in self.strokes:
            moved = np.array(stroke, dtype=np.float64)
            moved[:, :2] = moved[:, :2] / self.scale + shift
            out.append(moved)
        return out


@dataclass
class NumberReading:
    digits: list[NumberDigit]
    method: str  # "strokes": grouped from the pen strokes; "image": split from the ink alone
    alternative: str | None  # the second-best reading of the whole number
    segmentation_uncertain: bool  # another split of the ink scored close to the chosen one

    @property
    def number(self) -> str:
        return "".join(str(d.prediction.digit) for d in self.digits)


def read_number(image: ImageInput, strokes: Sequence[np.ndarray] | None, model: Any,
                params: ReadingParams = DEFAULT_PARAMS, **predict_kwargs: Any) -> NumberReading:
    """A drawing of a number (and its pen strokes, validated by recognizer.ml.strokes.parse_strokes, or None)
    -> its digits left to right, each read by ``model`` as ``predict_one`` would read it drawn alone
    (``predict_kwargs``: the personalisation keyword arguments). Strokes that do not trace the image's ink
    are ignored: the image is split alone. Raises EmptyDrawing, TooManyDigits."""
    ink = ink_array(image)
    if int(np.count_nonzero(ink > INK_THRESHOLD)) < MIN_INK_PIXELS:
        raise EmptyDrawing("the canvas is empty: write a number first")
    candidates = pen_candidates(ink, strokes, model, params, **predict_kwargs) if strokes else None
    reading = candidates.reading(params) if candidates is not None else None
    return reading if reading is not None else _read_by_image(ink, model, predict_kwargs)


# A number's digits are read at a scale where they are about this many pixels tall: the MNIST frame brings a
# digit to 20 px, and every candidate digit's ink costs time at the size it was drawn (a 4-digit number of
# 150 px digits read at half size: measured in bench/numbers.py).
WORKING_HEIGHT = 64


def shrink(ink: np.ndarray, factor: int) -> np.ndarray:
    """``ink`` at 1 / ``factor`` of its size, each pixel the mean of a ``factor`` x ``factor`` block (Pillow's
    reduce: a fifth of NumPy's strided mean's time)."""
    if factor <= 1:
        return ink
    reduced = Image.fromarray(np.ascontiguousarray(ink, dtype=np.float32), mode="F").reduce(factor)
    return np.asarray(reduced, dtype=np.float32)


def _scaled(stroke: np.ndarray, factor: float) -> np.ndarray:
    out = np.array(stroke, dtype=np.float64)
    out[:, :2] *= factor
    return out


class _Reader:
    """The model reading candidate digits in batches, and their scores (log p + the penalties)."""

    def __init__(self, model: Any, height: float, kwargs: dict) -> None:
        self.model, self.height, self.kwargs = model, height, kwargs
        self.image_scale = getattr(model, "novelty_distance_", None)
        stroke_model = getattr(model, "stroke_model_", None)
        self.stroke_scale = stroke_model.typical_distance() if stroke_model is not None else None

    def read(self, segments: Sequence[Segment | None], strokes: Sequence[list[np.ndarray] | None]
             ) -> list[tuple[np.ndarray, Prediction] | None]:
        """(image28, Prediction) for each candidate, None for one with no readable ink (a dot, nothing)."""
        images, rows = [], []
        for i, segment in enumerate(segments):
            if segment is None:
                continue
            try:
                images.append(segment_image28(segment))
            except DrawingError:
                continue
            rows.append(i)
        out: list[tuple[np.ndarray, Prediction] | None] = [None] * len(segments)
        if not rows:
            return out
        predictions = predict_many(self.model, np.stack(images), [strokes[i] for i in rows], **self.kwargs)
        for i, image28, prediction in zip(rows, images, predictions):
            out[i] = (image28, prediction)
        return out

    def scores(self, prediction: Prediction, box: Sequence[float], p: ReadingParams) -> np.ndarray:
        """(10,) the candidate as each digit: log p less its penalties (the same for every digit)."""
        log_p = log_probabilities(prediction.probabilities)
        penalty = 0.0
        if self.image_scale and prediction.distance is not None:
            penalty += p.distance_weight * max(0.0, prediction.distance / self.image_scale - 1.0)
        if self.stroke_scale and prediction.stroke_distance is not None:
            penalty += p.stroke_distance_weight * max(0.0, prediction.stroke_distance / self.stroke_scale - 1.0)
        return log_p - penalty - self.shape_penalty(box, p)

    def shape_penalty(self, box: Sequence[float], p: ReadingParams) -> float:
        """What a candidate's box costs for being wider, or smaller, than a digit of this number."""
        width, height = (box[2] - box[0]) / self.height, (box[3] - box[1]) / self.height
        return p.width_weight * max(0.0, width - p.max_width) + p.size_weight * max(0.0, p.min_size - max(width, height))


def predict_many(model: Any, images: np.ndarray, strokes: Sequence[list[np.ndarray] | None],
                 **kwargs: Any) -> list[Prediction]:
    """A Prediction per image: in one search where the model can (the k-NN), else one by one; strokes go
    only to a model that reads them."""
    reads_strokes = bool(getattr(model, "reads_strokes", False))
    if hasattr(model, "predict_many"):
        return model.predict_many(images, list(strokes) if reads_strokes else None, **kwargs)
    out = []
    for image, s in zip(images, strokes):
        extra = {"strokes": s} if reads_strokes and s else {}
        out.append(model.predict_one(image, **extra, **kwargs))
    return out


# ---------------------------------------------------------------- by the pen


def _piece_strokes(pieces: Sequence[PenPiece]) -> list[np.ndarray]:
    return [p.points for p in sorted(pieces, key=lambda p: (p.stroke, p.start))]  # in the order drawn


def _span(pieces: Sequence[PenPiece]) -> tuple[float, float, float, float]:
    boxes = np.array([p.box for p in pieces])
    return float(boxes[:, 0].min()), float(boxes[:, 1].min()), float(boxes[:, 2].max()), float(boxes[:, 3].max())


def _gaps(pieces: Sequence[PenPiece], height: float) -> np.ndarray:
    """Between pieces k and k+1: how far piece k+1 starts right of everything before it, in line heights."""
    right = np.maximum.accumulate([p.box[2] for p in pieces])
    return np.array([(pieces[k + 1].box[0] - right[k]) / height for k in range(len(pieces) - 1)])


def _cut_points(piece: PenPiece, count: int) -> list[int]:
    """Where a joined stroke may pass from one digit into the next, in the middle of its width: its turning
    points (the bottom of a ligature, the top of an arch) and points evenly spaced along it, ``count`` at most."""
    x, y = piece.points[:, 0], piece.points[:, 1]
    lo, hi = x.min() + 0.2 * piece.width, x.max() - 0.2 * piece.width
    middle = [c for c in range(2, len(x) - 2) if lo <= x[c] <= hi]
    if not middle:
        return []
    dy = np.sign(np.diff(y))
    turning = [c for c in middle if dy[c - 1] != 0 and dy[c] != 0 and dy[c - 1] != dy[c]][: count // 2]
    spaced = [middle[int(i)] for i in np.linspace(0, len(middle) - 1, max(count - len(turning), 1)).round()]
    return sorted(set(turning) | set(spaced))


def _cut_joined(pieces: list[PenPiece], owners: InkOwners, reader: _Reader, params: ReadingParams,
                depth: int = 0) -> list[PenPiece]:
    """Cut each stroke much wider than the line is tall where reading both halves scores best, when that beats
    reading it whole (a wide 0 or 2 stays whole)."""
    out: list[PenPiece] = []
    for piece in pieces:
        cuts = _cut_points(piece, params.cut_candidates) if piece.width > params.joined_width * reader.height \
            and depth < 2 else []
        if not cuts:
            out.append(piece)
            continue
        halves = [piece.cut(c) for c in cuts]
        tried = [piece] + [h for pair in halves for h in pair]
        read = reader.read([owners.segment_of([h]) for h in tried], [[h.points] for h in tried])

        score = [float(reader.scores(r[1], h.box, params).max()) if r is not None else -math.inf
                 for r, h in zip(read, tried)]
        best, best_score = None, score[0]
        for k, pair in enumerate(halves):
            halves_score = score[1 + 2 * k] + score[2 + 2 * k]
            if halves_score > best_score:
                best, best_score = pair, halves_score
        out.extend([piece] if best is None else _cut_joined(list(best), owners, reader, params, depth + 1))
    return sorted(out, key=lambda p: (p.centre_x, p.stroke, p.start))


def _candidates(pieces: Sequence[PenPiece], gaps: np.ndarray, reader: _Reader, params: ReadingParams
                ) -> list[tuple[int, int]]:
    """The runs of pieces worth reading as one digit: runs of neighbours that no sure gap parts, not too wide, not
    too far from a digit's size and with no more tall strokes than a digit has (in the benchmark's numbers, no run
    past these bounds was the right digit; several overlapping 1s and 8s read together can look like a 4), and each
    piece alone unless it is too small to be a digit and a run takes it in (the bar of a 5: one read fewer)."""
    runs = []
    for i in range(len(pieces)):
        for j in range(i + 2, min(len(pieces), i + params.max_pieces) + 1):
            box = _span(pieces[i:j])
            if gaps[j - 2] > params.sure_gap or box[2] - box[0] > params.max_group_width * reader.height:
                break  # a longer run would only span the same gap, or be wider
            tall = len({p.stroke for p in pieces[i:j] if p.height >= 0.5 * reader.height})  # a cut stroke is one
            if reader.shape_penalty(box, params) <= params.max_shape_penalty and tall <= params.max_tall_pieces:
                runs.append((i, j))
    covered = {k for i, j in runs for k in range(i, j)}
    singles = [(k, k + 1) for k in range(len(pieces))
               if k not in covered or reader.shape_penalty(pieces[k].box, params) <= params.max_shape_penalty]
    return sorted(singles + runs)


def pen_candidates(ink: np.ndarray, strokes: Sequence[np.ndarray], model: Any,
                   params: ReadingParams = DEFAULT_PARAMS, **predict_kwargs: Any) -> PenCandidates | None:
    """A number's pieces of strokes and its candidate digits, read: what the lattice chooses among (None when the
    strokes do not trace the ink). ``ink``: ``ink_array`` of the image; the rest as ``read_number``'s."""
    aligned = align_strokes(strokes, ink)
    if aligned is None:
        return None
    scale = max(1, int(line_height(aligned) // WORKING_HEIGHT))
    small = [_scaled(s, 1 / scale) for s in aligned] if scale > 1 else aligned
    height = line_height(small)
    reader = _Reader(model, height, predict_kwargs)
    owners = InkOwners(shrink(ink, scale), small)
    pieces = _cut_joined(pen_pieces(small, height), owners, reader, params)
    gaps = _gaps(pieces, height)
    candidates = _candidates(pieces, gaps, reader, params)
    runs = owners.runs(pieces)
    segments = [runs.segment(i, j) for i, j in candidates]
    read = reader.read(segments, [_piece_strokes(pieces[i:j]) for i, j in candidates])
    found = {c: (segment, *r) for c, segment, r in zip(candidates, segments, read) if r is not None}
    return PenCandidates(pieces, gaps, scale, reader, found)


@dataclass
class PenCandidates:
    pieces: list[PenPiece]  # left to right, at the working scale
    gaps: np.ndarray  # between neighbouring pieces, in line heights (``_gaps``)
    scale: int  # image pixels per working pixel
    reader: _Reader
    found: dict[tuple[int, int], tuple[Segment, np.ndarray, Prediction]]  # the runs read: ink, 28x28, answer

    def paths(self, params: ReadingParams = DEFAULT_PARAMS) -> list[Path]:
        """The best ways through the lattice with ``params``'s weights, over the runs its bounds allow."""
        allowed = set(_candidates(self.pieces, self.gaps, self.reader, params))
        edges = {(i, j): self.reader.scores(prediction, _span(self.pieces[i:j]), params)
                 for (i, j), (_segment, _image28, prediction) in self.found.items() if (i, j) in allowed}
        return best_paths(len(self.pieces), edges, boundary_log_odds(self.gaps, params.gap_centre, params.gap_scale))

    def reading(self, params: ReadingParams = DEFAULT_PARAMS) -> NumberReading | None:
        """The best path's digits, answered in the image's pixels (None when no path is complete)."""
        paths = self.paths(params)
        if not paths:
            return None
        best = paths[0]
        if len(best.groups) > MAX_DIGITS:
            raise TooManyDigits(f"that is {len(best.groups)} digits: write at most {MAX_DIGITS}")
        digits = []
        for i, j in best.groups:
            segment, image28, prediction = self.found[(i, j)]
            strokes = [_scaled(s, self.scale) for s in _piece_strokes(self.pieces[i:j])]
            digits.append(NumberDigit(segment, image28, prediction, strokes, self.scale))
        return NumberReading(digits, "strokes", alternative(paths), segmentation_margin(paths) < params.unsure_margin)


# ---------------------------------------------------------------- by the ink alone


def _read_by_image(ink: np.ndarray, model: Any, kwargs: dict) -> NumberReading:
    segments = split_ink(ink)
    reader = _Reader(model, 1.0, kwargs)
    kept = [(s, r) for s, r in zip(segments, reader.read(segments, [None] * len(segments))) if r is not None]
    if not kept:
        raise EmptyDrawing("that is only dots, not a number: write bigger digits")
    edges = {(k, k + 1): log_probabilities(r[1].probabilities) for k, (_s, r) in enumerate(kept)}
    paths = best_paths(len(kept), edges)
    digits = [NumberDigit(s, r[0], r[1]) for s, r in kept]
    return NumberReading(digits, "image", alternative(paths), False)
