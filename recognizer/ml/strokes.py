"""Pen trajectories: validation of what a client sends, and the features a stroke k-NN reads.

A drawing's strokes are ``[[[x, y, t], ...], ...]``: one list of points per pen-down, in canvas
coordinates (y down), ``t`` in milliseconds (optional: ``[x, y]`` points are accepted). The features
follow how the UCI pen-based digits were made (Alimoglu & Alpaydin): the whole trajectory, pen-ups
included, is resampled at equal arc length and normalised to its box, so neither speed, position nor
size matters; the direction of the pen and where it was lifted are added because they separate
digits that look alike as images (a 9 with a hooked tail and a 3 are drawn in opposite directions).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from PIL import Image, ImageDraw

from . import ann
from .knn import knn_sorted, vote
from .preprocess import DrawingError

__all__ = [
    "MAX_COORDINATE",
    "MAX_POINTS",
    "MAX_STROKES",
    "STROKE_FEATURE_PARAMS",
    "InvalidStrokes",
    "draw_strokes",
    "parse_strokes",
    "resample",
    "stroke_features",
    "stroke_features_batch",
    "strokes_to_json",
]

MAX_STROKES = 64  # a digit takes 1-4 strokes; a number split into digits still far fewer than this
MAX_POINTS = 5000  # over all strokes: a slow 10 s drawing at 120 events/s is about 1,200
MAX_COORDINATE = 1e6  # canvas pixels; t is bounded by the same magnitude in ms (about 16 minutes)


class InvalidStrokes(DrawingError):
    """The strokes sent with a drawing are not a list of pen trajectories we can read."""


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidStrokes(f"{where} must be a number, got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v):
        raise InvalidStrokes(f"{where} must be a finite number")
    if abs(v) > MAX_COORDINATE:
        raise InvalidStrokes(f"{where} is out of range (|value| <= {MAX_COORDINATE:g})")
    return v


def parse_strokes(raw: Any, *, max_strokes: int = MAX_STROKES, max_points: int = MAX_POINTS) -> list[np.ndarray]:
    """Validate client strokes -> list of (m, 3) float64 arrays (x, y, t); raises InvalidStrokes.

    Each point is ``[x, y]`` or ``[x, y, t]``; a missing ``t`` is the point's index (the order is
    all the features use). Empty strokes are dropped; no point at all is an error.
    """
    if not isinstance(raw, (list, tuple)):
        raise InvalidStrokes("strokes must be a list of strokes, each a list of [x, y, t] points")
    if len(raw) > max_strokes:
        raise InvalidStrokes(f"too many strokes: {len(raw)} (at most {max_strokes})")
    out: list[np.ndarray] = []
    total = 0
    for si, stroke in enumerate(raw):
        if not isinstance(stroke, (list, tuple)):
            raise InvalidStrokes(f"stroke {si} must be a list of [x, y, t] points")
        total += len(stroke)
        if total > max_points:
            raise InvalidStrokes(f"too many points: more than {max_points} over all strokes")
        if not stroke:
            continue
        pts = np.empty((len(stroke), 3), dtype=np.float64)
        for pi, point in enumerate(stroke):
            if not isinstance(point, (list, tuple)) or len(point) not in (2, 3):
                raise InvalidStrokes(f"stroke {si}, point {pi} must be [x, y] or [x, y, t]")
            where = f"stroke {si}, point {pi}"
            pts[pi, 0] = _number(point[0], f"{where}: x")
            pts[pi, 1] = _number(point[1], f"{where}: y")
            pts[pi, 2] = _number(point[2], f"{where}: t") if len(point) == 3 else float(pi)
        out.append(pts)
    if not out:
        raise InvalidStrokes("strokes has no points")
    return out


def draw_strokes(strokes: Sequence[np.ndarray], width: int, height: int, pen: float,
                 supersample: int = 4) -> Image.Image:
    """Strokes (image pixels) drawn as a browser canvas draws them: RGBA, transparent, black ink, a round
    pen ``pen`` pixels wide, anti-aliased."""
    ss = supersample
    big = Image.new("L", (width * ss, height * ss), 0)
    draw = ImageDraw.Draw(big)
    r = pen * ss / 2
    for s in strokes:
        pts = [tuple(p) for p in (np.asarray(s, dtype=np.float64)[:, :2] * ss).tolist()]
        if len(pts) > 1:
            draw.line(pts, fill=255, width=max(1, round(pen * ss)), joint="curve")
        for x, y in pts:  # round caps and joins
            draw.ellipse((x - r, y - r, x + r, y + r), fill=255)
    alpha = big.reduce(ss) if ss > 1 else big
    black = Image.new("L", (width, height), 0)
    return Image.merge("RGBA", (black, black, black, alpha))


def strokes_to_json(strokes: Sequence[np.ndarray]) -> list[list[list[float]]]:
    """Arrays back to the JSON shape the API takes (what a Drawing stores)."""
    return [[[float(v) for v in p] for p in np.asarray(s, dtype=np.float64).tolist()] for s in strokes]


# ---------------------------------------------------------------- features

# Chosen by leave-writers-out cross-validation over the 30 pendigits writers (bench/unseen_writers.py).
STROKE_FEATURE_PARAMS = {"n_points": 32, "direction_weight": 0.2, "penup_weight": 0.5}


def _close(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """np.isclose(a, b) with its default tolerances, without its checks: a number's reader computes the features of
    every candidate digit, and isclose was a third of that."""
    return np.abs(a - b) <= 1e-8 + 1e-5 * np.abs(b)


def resample(strokes: Sequence[np.ndarray], n_points: int) -> tuple[np.ndarray, np.ndarray]:
    """The trajectory resampled at ``n_points`` equally spaced arc lengths, pen-ups bridged, and the
    pen state there: (points (n, 2), pen_up (n,) 1.0 where the point lies on an invisible jump).

    The travel between strokes counts as path (as the UCI set was made), flagged as pen-up.
    """
    segs = [np.asarray(s, dtype=np.float64)[:, :2] for s in strokes if len(s)]
    if not segs:
        raise InvalidStrokes("strokes has no points")
    pts = [segs[0]]
    up = [np.zeros(len(segs[0]))]
    for s in segs[1:]:
        pts.append(s)
        u = np.zeros(len(s))
        u[0] = 1.0  # the segment arriving at a stroke's first point was drawn with the pen up
        up.append(u)
    P = np.concatenate(pts)
    U = np.concatenate(up)
    step = np.sqrt((np.diff(P, axis=0) ** 2).sum(axis=1))
    cum = np.concatenate([[0.0], np.cumsum(step)])
    length = cum[-1]
    if length <= 1e-9:
        return np.repeat(P[:1], n_points, axis=0), np.zeros(n_points)
    targets = np.linspace(0.0, length, n_points)
    x = np.interp(targets, cum, P[:, 0])
    y = np.interp(targets, cum, P[:, 1])
    # a target strictly inside segment j (between point j and j+1) is pen-up when point j+1 starts a
    # stroke; a target on a point itself is ink
    seg = np.clip(np.searchsorted(cum, targets, side="right") - 1, 0, len(P) - 2)
    pen_up = np.where(_close(targets, cum[seg]) | _close(targets, cum[seg + 1]), 0.0, U[seg + 1])
    return np.stack([x, y], axis=1), pen_up


def stroke_features(
    strokes: Sequence[np.ndarray],
    n_points: int = STROKE_FEATURE_PARAMS["n_points"],
    direction_weight: float = STROKE_FEATURE_PARAMS["direction_weight"],
    penup_weight: float = STROKE_FEATURE_PARAMS["penup_weight"],
) -> np.ndarray:
    """One drawing's strokes -> float32 feature vector: resampled points in their box (the longer
    side spans 0..1, aspect kept, centred), the unit direction of travel at each point, pen-up flags."""
    P, pen_up = resample(strokes, n_points)
    lo, hi = P.min(axis=0), P.max(axis=0)
    ext = hi - lo
    scale = max(float(ext.max()), 1e-9)
    Q = (P - (lo + hi) / 2) / scale + 0.5
    d = np.diff(P, axis=0, append=P[-1:] + (P[-1:] - P[-2:-1] if len(P) > 1 else 0))
    norm = np.sqrt((d**2).sum(axis=1, keepdims=True))
    d = np.where(norm > 1e-12, d / np.maximum(norm, 1e-12), 0.0)
    return np.concatenate([Q.ravel(), direction_weight * d.ravel(), penup_weight * pen_up]).astype(np.float32)


def stroke_features_batch(drawings: Sequence[Sequence[np.ndarray]], **params: Any) -> np.ndarray:
    """(n, 5 * n_points) float32: ``stroke_features`` of each drawing (``params``: its keyword arguments)."""
    if not drawings:
        n = int(params.get("n_points", STROKE_FEATURE_PARAMS["n_points"]))
        return np.empty((0, 5 * n), dtype=np.float32)
    return np.stack([stroke_features(s, **params) for s in drawings])


# ---------------------------------------------------------------- the stroke k-NN


class StrokeClassifier:
    """Distance-weighted k-NN over ``stroke_features``; classes are always 0..9.

    ``fit(drawings, y, sample_weight)``: ``drawings`` is a list of stroke lists (each stroke an
    (m, 2+) array); ``sample_weight`` multiplies a training drawing's neighbour vote.
    ``neighbour_index_``: the HNSW graph the search goes through from ``ann.ANN_MIN_ROWS`` rows, as the image
    k-NN's (every user drawing with strokes is a row, and an exact search reads n x 160 floats a query); None
    below (or in a model saved before the stroke graph: exact search).
    """

    def __init__(self, n_neighbors: int = 3, weights: str = "distance", **feature_params: Any) -> None:
        self.n_neighbors = n_neighbors
        self.weights = weights
        self.feature_params = {**STROKE_FEATURE_PARAMS, **feature_params}

    def features(self, drawings: Sequence[Sequence[np.ndarray]]) -> np.ndarray:
        return stroke_features_batch(drawings, **self.feature_params)

    def fit(self, drawings: Sequence[Sequence[np.ndarray]], y: ArrayLike,
            sample_weight: ArrayLike | None = None) -> StrokeClassifier:
        return self.fit_features(self.features(drawings), y, sample_weight)

    def fit_features(self, F: np.ndarray, y: ArrayLike, sample_weight: ArrayLike | None = None,
                     previous: StrokeClassifier | None = None) -> StrokeClassifier:
        """``previous``: the stroke k-NN these rows extend; its graph is extended when its rows come first."""
        y = np.asarray(y).astype(np.int64).ravel()
        if len(F) != len(y) or len(y) == 0:
            raise ValueError(f"{len(F)} stroke drawings but {len(y)} labels (need at least one)")
        if y.min() < 0 or y.max() > 9:
            raise ValueError("labels must be digits 0-9")
        self.train_features_ = np.ascontiguousarray(F, dtype=np.float32)
        self.train_sq_ = np.einsum("ij,ij->i", self.train_features_, self.train_features_)
        self.train_labels_ = y.astype(np.uint8)
        self.sample_weight_ = None if sample_weight is None else np.asarray(sample_weight, np.float32).ravel()
        old = None if previous is None else getattr(previous, "neighbour_index_", None)
        self.neighbour_index_, self.neighbour_index_origin_ = ann.index_rows(self.train_features_, old)
        self.typical_distance_ = self._leave_one_out_distance()  # here, not in a number's first prediction
        return self

    def kneighbors_features(self, Q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(indices, distances) of the k nearest training rows of stroke features Q: through the graph when
        there is one, else exact."""
        graph = getattr(self, "neighbour_index_", None)
        if graph is not None:
            return graph.search(Q, k)
        return knn_sorted(Q, self.train_features_, self.train_sq_, k)

    def typical_distance(self) -> float | None:
        """The mean k-NN distance that 95% of training drawings stay within, each left out (as the image k-NN's
        ``novelty_distance_``): the scale a number's reader judges a candidate digit's strokes by. Measured when
        the model is fitted; a model saved before that measures it once, on first use."""
        if "typical_distance_" not in self.__dict__:
            self.typical_distance_ = self._leave_one_out_distance()
        return self.typical_distance_

    def _leave_one_out_distance(self, n: int = 2000, quantile: float = 95.0) -> float | None:
        k = int(self.n_neighbors)
        F = self.train_features_
        if len(F) < k + 2:
            return None
        sel = np.random.default_rng(0).choice(len(F), size=min(n, len(F)), replace=False)
        _idx, dist = self.kneighbors_features(np.ascontiguousarray(F[sel]), k + 1)
        return float(np.percentile(dist[:, 1:].mean(axis=1), quantile))  # column 0 is the drawing itself

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        if state.get("neighbour_index_") is not None:
            state.pop("train_features_", None)  # the graph stores the vectors: a model file holds them once
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        graph = state.get("neighbour_index_")
        if graph is not None and "train_features_" not in state:
            self.train_features_ = graph.vectors  # read-only, the graph's memory

    def predict_proba_features(self, Q: np.ndarray, extra_features: np.ndarray | None = None,
                               extra_y: ArrayLike | None = None, extra_weight: float = 1.0) -> np.ndarray:
        """(n, 10) probabilities for stroke features Q; ``extra_*``: a user's own drawings with strokes,
        searched alongside the training set (their votes multiplied by ``extra_weight``)."""
        labels, dist, mult = self._neighbours(Q, extra_features, extra_y, extra_weight)
        return vote(labels, dist, mult, self.weights)

    def predict_proba_and_distance(self, drawings: Sequence[Sequence[np.ndarray]], **extras: Any
                                   ) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities (n, 10), distances to the k nearest (n, k)): ``predict_proba``'s search once."""
        labels, dist, mult = self._neighbours(self.features(drawings), **extras)
        return vote(labels, dist, mult, self.weights), dist

    def _neighbours(self, Q: np.ndarray, extra_features: np.ndarray | None = None,
                    extra_y: ArrayLike | None = None, extra_weight: float = 1.0
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(labels, distances, vote multipliers) of the k nearest, training set and a user's own merged."""
        Q = np.ascontiguousarray(Q, dtype=np.float32)
        k = int(self.n_neighbors)
        idx, dist = self.kneighbors_features(Q, k)
        labels = self.train_labels_[idx].astype(np.int64)
        mult = self.sample_weight_[idx] if self.sample_weight_ is not None else np.ones(idx.shape, np.float32)
        if extra_features is not None and len(extra_features):
            E = np.ascontiguousarray(extra_features, dtype=np.float32)
            ey = np.asarray(extra_y).astype(np.int64).ravel()
            eidx, edist = knn_sorted(Q, E, np.einsum("ij,ij->i", E, E), k)
            all_d = np.concatenate([dist, edist], axis=1)
            keep = np.argsort(all_d, axis=1, kind="stable")[:, :k]
            dist = np.take_along_axis(all_d, keep, axis=1)
            labels = np.take_along_axis(np.concatenate([labels, ey[eidx]], axis=1), keep, axis=1)
            mult = np.take_along_axis(
                np.concatenate([mult, np.full(eidx.shape, float(extra_weight), np.float32)], axis=1), keep, axis=1)
        return labels, dist, mult

    def predict_proba(self, drawings: Sequence[Sequence[np.ndarray]], **extras: Any) -> np.ndarray:
        return self.predict_proba_features(self.features(drawings), **extras)

    def predict(self, drawings: Sequence[Sequence[np.ndarray]], **extras: Any) -> np.ndarray:
        return self.predict_proba(drawings, **extras).argmax(axis=1)
