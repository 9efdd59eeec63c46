"""The image k-NN, the model kind the site serves and retrains: deskew -> (optional Gaussian blur, off:
it cost 0.2-0.5 pt) -> gradient-direction maps -> PCA -> distance-weighted k-NN, its probabilities fused
with a stroke k-NN's when the drawing came with its pen trajectory.

The neighbour search is exact, plain NumPy (recognizer.ml.knn: precomputed squared norms, one matmul,
argpartition; single queries pruned on the first components) while the training set has fewer than
recognizer.ml.ann.ANN_MIN_ROWS rows. From there the model builds an HNSW graph over its rows
(recognizer.ml.ann.NeighbourIndex, faiss) and answers every query through it: the exact search's cost
grows with the rows (1.7 ms a query at 75k, 17-27 ms at 1M; bench/README.md), the graph's barely. The
model file then stores the training vectors once, inside the graph. A user's own drawings stay exact.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from sklearn.base import BaseEstimator, ClassifierMixin

from . import ann
from .common import (
    Prediction,
    Progress,
    TrainingResult,
    check_digit_labels,
    final_training_set,
    images_and_labels,
    stage_reporter,
)

# DigitFeatures lived here before recognizer.ml.features: the import keeps that name importable from
# this module too, for code (and any pickle) that refers to it by its old path.
from .features import DigitFeatures, as_images, image_features
from .knn import N_CLASSES, knn_sorted, knn_sorted_pruned, prune_index, vote
from .knn_cv import cross_validate_knn, curve_without_cv

# The training rows and the refit in a kept feature space live in recognizer.ml.knn_rows; imported here so
# that callers (recognizer.training, tests, bench) keep them under this module's name.
from .knn_rows import KnnRows, knn_rows, refit_knn
from .metric import METRIC_MAX_ROWS, RERANK_CANDIDATES, LearnedMetric, deformed_copies
from .strokes import StrokeClassifier

__all__ = [
    "DEFAULT_PARAM_GRID",
    "STROKE_FUSION_WEIGHT",
    "STROKE_NEIGHBORS",
    "DigitClassifier",
    "KnnRows",
    "knn_rows",
    "refit_knn",
    "train_knn",
]

DEFAULT_PARAM_GRID = {
    "pca_components": [40, 50, 60, 80],
    "weights": ["uniform", "distance"],
    "k": list(range(1, 11)),
}

# The share of the stroke k-NN in the fused probabilities, and its k: chosen by leave-writers-out
# cross-validation over the 30 pendigits writers (bench/unseen_writers.py --tune).
STROKE_FUSION_WEIGHT = 0.45
STROKE_NEIGHBORS = 3

StrokeList = Sequence[np.ndarray]  # one drawing's pen strokes, each an (m, 2+) array (recognizer.ml.strokes)


class DigitClassifier(DigitFeatures, ClassifierMixin, BaseEstimator):
    """deskew -> blur -> PCA -> k-NN (float32), classes are always 0..9.

    ``fit(X, y, sample_weight)``: X is (n,28,28) or (n,784) in [0,1] (uint8 0..255 accepted);
    ``sample_weight`` multiplies a training sample's neighbour vote.
    ``neighbour_index_``: the HNSW graph over the training rows the search goes through, or None (fewer
    than ``recognizer.ml.ann.ANN_MIN_ROWS`` rows, or a model saved before there was one: exact search);
    ``neighbour_index_origin_``: "built", "extended" (from the previous model's, ``refit_knn``) or None.
    ``metric_``: the learned metric (recognizer.ml.metric) that re-ranks the ``rerank_candidates`` nearest
    training rows, as far as ``metric_weight`` lets it (0: the plain ranking; None in models saved before it).
    """

    def __init__(
        self,
        n_components: int = 50,
        n_neighbors: int = 4,
        weights: str = "distance",
        deskew: bool = True,
        blur_sigma: float = 0.0,
        features: str = "gradients",
        metric_weight: float = 1.0,
        rerank_candidates: int = RERANK_CANDIDATES,
        metric_deformations: bool = True,
    ) -> None:
        self.n_components = n_components
        self.n_neighbors = n_neighbors
        self.weights = weights
        self.deskew = deskew
        self.blur_sigma = blur_sigma
        self.features = features
        self.metric_weight = metric_weight
        self.rerank_candidates = rerank_candidates
        self.metric_deformations = metric_deformations

    # -- fitting
    def fit(self, X: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None) -> DigitClassifier:
        X = as_images(X)
        return self._fit_features(self._pre(X), y, sample_weight, metric_images=X)

    def _fit_features(self, F: np.ndarray, y: ArrayLike, sample_weight: ArrayLike | None = None,
                      metric_images: np.ndarray | None = None) -> DigitClassifier:
        """Fit on features ``F`` (``self._pre`` of the images); ``metric_images``: the images of F's first rows,
        whose deformed copies also train the learned metric (``metric_deformations``; None: no copies)."""
        y = check_digit_labels(F, y)
        if self.weights not in ("uniform", "distance"):
            raise ValueError(f"weights must be 'uniform' or 'distance', not {self.weights!r}")
        self._fit_pca(F, self.n_components)
        self.train_features_ = self._project(F)
        self.train_sq_ = np.einsum("ij,ij->i", self.train_features_, self.train_features_)
        self._index_training_rows()
        if self.neighbour_index_ is not None and metric_images is not None:
            self._tune_search_list(metric_images)
        self.train_labels_ = y.astype(np.uint8)
        if sample_weight is None:
            self.sample_weight_ = None
        else:
            sw = np.asarray(sample_weight, dtype=np.float32).ravel()
            if len(sw) != len(y):
                raise ValueError("sample_weight must have one value per sample")
            self.sample_weight_ = sw
        self.classes_ = np.arange(N_CLASSES)
        self.n_features_in_ = 784
        self._fit_metric(metric_images)
        self.novelty_distance_ = self._typical_distance()
        self.stroke_model_ = None
        return self

    def _fit_metric(self, images: np.ndarray | None = None, n: int = 2000) -> None:
        """Train ``metric_`` on (at most METRIC_MAX_ROWS of) the training rows and, with ``metric_deformations``,
        on a deformed copy of each of their ``images`` (the first rows'); none when ``metric_weight`` is 0 or one
        digit is all there is. Its distances are put in PCA units on ``n`` training rows' plain nearest
        neighbours."""
        self.metric_ = None
        if not float(self.metric_weight) or len(np.unique(self.train_labels_)) < 2:
            return
        rng = np.random.default_rng(0)
        copies = images is not None and bool(self.metric_deformations)
        pool = len(images) if copies else len(self.train_labels_)
        rows = np.arange(pool) if pool <= METRIC_MAX_ROWS else np.sort(rng.choice(pool, METRIC_MAX_ROWS, replace=False))
        F, y = self.train_features_[rows], self.train_labels_[rows]
        sw = None if self.sample_weight_ is None else self.sample_weight_[rows]
        if copies:
            F = np.concatenate([F, self._deformed_features(images, rows, rng)])
            y = np.concatenate([y, y])
            sw = None if sw is None else np.concatenate([sw, sw])
        metric = LearnedMetric.fit(F, y, sw)
        k = int(self.n_neighbors)
        if len(self.train_features_) > k + 1:
            sel = rng.choice(len(self.train_features_), size=min(n, len(self.train_features_)), replace=False)
            idx, dist = self.kneighbors_features(self.train_features_[sel], k + 1)
            # column 0 is the row itself
            metric.calibrate(self.train_features_[sel], self.train_features_[idx[:, 1:]], dist[:, 1:])
        self.metric_ = metric

    def _deformed_features(self, images: np.ndarray, rows: np.ndarray, rng: np.random.Generator,
                           chunk: int = 8192) -> np.ndarray:
        """PCA features of a deformed copy of each of ``images[rows]``, a block at a time (a block's gradient
        features are 50 MB; all of them at 100k rows 630 MB)."""
        out = np.empty((len(rows), self.components_.shape[0]), np.float32)
        for s in range(0, len(rows), chunk):
            out[s: s + chunk] = self._project(self._pre(deformed_copies(images[rows[s: s + chunk]], rng)))
        return out

    # -- the pen trajectory, when the drawing came with one
    def attach_stroke_model(self, stroke_model: StrokeClassifier | None, stroke_weight: float) -> None:
        """Fuse a stroke k-NN's probabilities with the image's: p = (1 - w) p_image + w p_strokes."""
        if not 0.0 <= float(stroke_weight) <= 1.0:
            raise ValueError("stroke_weight must be between 0 and 1")
        self.stroke_model_ = stroke_model
        self.stroke_weight_ = float(stroke_weight)

    # -- the approximate neighbour index, for large training sets
    def _index_training_rows(self, previous: DigitClassifier | None = None) -> None:
        """Set ``neighbour_index_`` for the training rows just set (``ann.index_rows``: none below
        ``ann.ANN_MIN_ROWS`` rows, else ``previous``'s graph extended or a new one)."""
        self.__dict__.pop("_prune_index", None)
        old = None if previous is None else getattr(previous, "neighbour_index_", None)
        self.neighbour_index_, self.neighbour_index_origin_ = ann.index_rows(self.train_features_, old)

    def _tune_search_list(self, images: np.ndarray, n: int = 500) -> None:
        """The graph's search list for what the model searches for (the re-rank's candidates, or the vote's
        neighbours), tuned on deformed copies of ``n`` of the training ``images``: queries like drawings."""
        rng = np.random.default_rng(1)
        rows = np.sort(rng.choice(len(images), size=min(n, len(images)), replace=False))
        k = int(self.n_neighbors)
        self.neighbour_index_.tune_search_list(
            self.train_features_, self._deformed_features(images, rows, rng),
            max(k, int(self.rerank_candidates)) if float(self.metric_weight) else k, self.train_sq_)

    @property
    def reads_strokes(self) -> bool:
        return getattr(self, "stroke_model_", None) is not None

    def _fuse(self, p_image: np.ndarray, strokes: Sequence[StrokeList | None] | None,
              stroke_extras: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(probabilities, used, stroke distance) for each row: rows whose ``strokes`` entry is None keep the
        image's, and their stroke distance (the mean over the stroke k-NN's neighbours) is NaN."""
        used = np.zeros(len(p_image), dtype=bool)
        stroke_distance = np.full(len(p_image), np.nan)
        if strokes is None or not self.reads_strokes:
            return p_image, used, stroke_distance
        rows = [i for i, s in enumerate(strokes) if s is not None and len(s)]
        if not rows:
            return p_image, used, stroke_distance
        p_strokes, dist = self.stroke_model_.predict_proba_and_distance(
            [strokes[i] for i in rows], **stroke_extras)
        w = self.stroke_weight_
        out = p_image.copy()
        out[rows] = (1.0 - w) * p_image[rows] + w * p_strokes
        used[rows] = True
        stroke_distance[rows] = dist.mean(axis=1)
        return out, used, stroke_distance

    def _typical_distance(self, n: int = 2000, quantile: float = 95.0) -> float | None:
        """The mean k-NN distance that `quantile`% of training digits stay within, leaving each out.

        Measured on the full model: with this threshold (about 4.0), 74% of random scribbles are
        flagged instead of 38% by confidence alone, and real canvas digits flagged go from 4.4% to 6%.
        """
        k = int(self.n_neighbors)
        if len(self.train_features_) < k + 2:
            return None
        rng = np.random.default_rng(0)
        sel = rng.choice(len(self.train_features_), size=min(n, len(self.train_features_)), replace=False)
        # Through the search served queries go through (the graph and the re-rank): the threshold is compared with
        # the distances predict_one finds there, and an approximate neighbour is never nearer than the exact one.
        # The exact search would also be slow at the graph's sizes: 17-27 ms a query at 1M rows against the
        # graph's 0.4 ms (bench/ann.py, bench/README.md), so these 2,000 queries would take most of a minute.
        _idx, dist = self.training_neighbours(self.train_features_[sel], k + 1)
        return float(np.percentile(dist[:, 1:].mean(axis=1), quantile))  # column 0 is the sample itself

    # -- prediction
    def _check(self) -> None:
        if not hasattr(self, "train_features_"):
            from sklearn.exceptions import NotFittedError

            raise NotFittedError("DigitClassifier is not fitted yet: call fit() first")

    def kneighbors_features(self, Q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(indices, distances) into the training set for PCA features Q: through the HNSW graph when the model
        has one (any number of queries: at 1M rows a batch's exact matrix product is far slower than the
        graph), else exact."""
        self._check()
        graph = getattr(self, "neighbour_index_", None)
        if graph is not None:
            return graph.search(Q, k)
        if len(Q) > 8:  # batches: one matrix product is faster than pruning row by row
            return knn_sorted(Q, self.train_features_, self.train_sq_, k)
        index = self.__dict__.get("_prune_index")
        if index is None:  # built on first use, not stored in the model file
            index = self.__dict__["_prune_index"] = prune_index(self.train_features_) or False
        return knn_sorted_pruned(Q, self.train_features_, self.train_sq_, k, index or None)

    def training_neighbours(self, Q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(indices, distances in PCA units) of the k nearest training rows to PCA features Q as the model ranks
        them: the plain search's ``rerank_candidates`` nearest re-ranked by the learned metric, or the plain
        search alone (``metric_weight`` 0, or a model saved before the metric)."""
        metric, weight = self.metric_, float(self.metric_weight)
        if metric is None or not weight:
            return self.kneighbors_features(Q, k)
        idx, dist = self.kneighbors_features(Q, max(int(k), int(self.rerank_candidates)))
        reranked = metric.rerank(Q, self.train_features_[idx], dist, weight)
        keep = np.argsort(reranked, axis=1, kind="stable")[:, :k]
        rows = np.arange(len(keep))[:, None]  # take_along_axis's indexing, without its checks' cost per query
        return idx[rows, keep], reranked[rows, keep]

    def __getstate__(self) -> dict:
        # a copy: on Python 3.11+ object.__getstate__ (under BaseEstimator's) returns the live __dict__ itself
        state = dict(super().__getstate__())
        state.pop("_prune_index", None)
        if state.get("neighbour_index_") is not None:
            state.pop("train_features_", None)  # the graph stores the vectors: a model file holds them once
        return state

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)  # BaseEstimator's: scikit-learn's version bookkeeping
        # models saved before the learned metric rank plainly, and get_params must find the parameters
        self.__dict__.setdefault("metric_weight", 0.0)
        self.__dict__.setdefault("rerank_candidates", RERANK_CANDIDATES)
        self.__dict__.setdefault("metric_", None)
        self.__dict__.setdefault("metric_deformations", False)
        graph = getattr(self, "neighbour_index_", None)  # models saved before the graph have none
        if graph is not None and "train_features_" not in self.__dict__:
            self.train_features_ = graph.vectors  # read-only, the graph's memory: nothing writes into it

    def predict_proba(self, X: ArrayLike, extra_X: ArrayLike | None = None, extra_y: ArrayLike | None = None,
                      extra_weight: float = 1.0, extra_features: np.ndarray | None = None,
                      strokes: Sequence[StrokeList | None] | None = None,
                      extra_stroke_features: np.ndarray | None = None,
                      extra_stroke_y: ArrayLike | None = None) -> np.ndarray:
        """(n, 10) probabilities.  ``extra_X``/``extra_y``: extra preprocessed 28x28 samples
        (e.g. a user's own drawings) searched alongside the training set; their votes are
        multiplied by ``extra_weight``.  ``extra_features``: ``self.transform(extra_X)`` computed
        in advance (cache it per user: it saves ~10 us per extra image and query).
        ``strokes``: one stroke list (or None) per image, read by the stroke model when there is one;
        ``extra_stroke_features``/``extra_stroke_y``: the user's own drawings that have strokes."""
        labels, dist, mult = self._neighbours(X, extra_X, extra_y, extra_weight, extra_features)
        p = vote(labels, dist, mult, self.weights)
        return self._fuse(p, strokes, _stroke_extras(extra_stroke_features, extra_stroke_y, extra_weight))[0]

    def _neighbours(self, X: ArrayLike, extra_X: ArrayLike | None = None, extra_y: ArrayLike | None = None,
                    extra_weight: float = 1.0, extra_features: np.ndarray | None = None
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(labels, distances, vote multipliers) of the k nearest, training set and extras merged."""
        if extra_features is not None and extra_X is None:
            extra_X = extra_features
        self._check()
        Q = self.transform(X)
        k = int(self.n_neighbors)
        idx, dist = self.training_neighbours(Q, k)
        labels = self.train_labels_[idx].astype(np.int64)
        mult = (
            self.sample_weight_[idx]
            if self.sample_weight_ is not None
            else np.ones(idx.shape, dtype=np.float32)
        )
        if extra_X is not None and len(extra_X) > 0:
            if extra_y is None:
                raise ValueError("extra_y is required with extra_X")
            ey = np.asarray(extra_y).astype(np.int64).ravel()
            E = (
                np.ascontiguousarray(extra_features, dtype=np.float32)
                if extra_features is not None
                else self.transform(extra_X)
            )
            if E.ndim != 2 or E.shape[1] != self.components_.shape[0]:
                raise ValueError(f"extra features must be (n, {self.components_.shape[0]}), got {E.shape}")
            if len(ey) != len(E):
                raise ValueError(f"{len(E)} extra images but {len(ey)} extra labels")
            eidx, edist = knn_sorted(Q, E, np.einsum("ij,ij->i", E, E), k)
            # merge the two candidate lists and keep the k nearest overall
            all_d = np.concatenate([dist, edist], axis=1)
            all_l = np.concatenate([labels, ey[eidx]], axis=1)
            all_m = np.concatenate(
                [mult, np.full(eidx.shape, float(extra_weight), dtype=np.float32)], axis=1
            )
            keep = np.argsort(all_d, axis=1, kind="stable")[:, :k]
            dist = np.take_along_axis(all_d, keep, axis=1)
            labels = np.take_along_axis(all_l, keep, axis=1)
            mult = np.take_along_axis(all_m, keep, axis=1)
        return labels, dist, mult

    def predict(self, X: ArrayLike, **extras: Any) -> np.ndarray:
        return self.predict_proba(X, **extras).argmax(axis=1)

    def predict_one(self, img28: ArrayLike, strokes: StrokeList | None = None, **extras: Any) -> Prediction:
        """One preprocessed 28x28 image (and its pen strokes, if any) -> Prediction."""
        return self.predict_many(as_images(img28)[:1], None if strokes is None else [strokes], **extras)[0]

    def predict_many(self, images: ArrayLike, strokes: Sequence[StrokeList | None] | None = None,
                     extra_stroke_features: np.ndarray | None = None, extra_stroke_y: ArrayLike | None = None,
                     **extras: Any) -> list[Prediction]:
        """Preprocessed 28x28 images (and one stroke list or None per image) -> a Prediction each, with the
        distances a number's reader weighs candidate digits by (recognizer.ml.numbers): one search for all."""
        labels, dist, mult = self._neighbours(as_images(images), **extras)
        p_image = vote(labels, dist, mult, self.weights)
        stroke_extras = _stroke_extras(extra_stroke_features, extra_stroke_y, extras.get("extra_weight", 1.0))
        p, used, stroke_distance = self._fuse(p_image, strokes, stroke_extras)
        threshold = getattr(self, "novelty_distance_", None)
        # np.mean's value (a float32 sum over the row, divided in float32) without its Python-level wrapper
        mean_distance = dist.sum(axis=1) / dist.shape[1]
        out = []
        for i, row in enumerate(p):
            d = int(row.argmax())
            distance = float(mean_distance[i])
            out.append(Prediction(
                digit=d, confidence=float(row[d]), probabilities=row.tolist(), distance=distance,
                unfamiliar=threshold is not None and distance > threshold, used_strokes=bool(used[i]),
                stroke_distance=None if np.isnan(stroke_distance[i]) else float(stroke_distance[i])))
        return out


def _stroke_extras(features: np.ndarray | None, y: ArrayLike | None, weight: float) -> dict:
    if features is None or len(features) == 0:
        return {}
    return {"extra_features": features, "extra_y": y, "extra_weight": weight}


# ---------------------------------------------------------------- training


def _fit_stroke_model(est: DigitClassifier, strokes: Sequence[StrokeList | None] | None, y: np.ndarray,
                      sample_weight: ArrayLike | None, stroke_weight: float) -> int:
    """Train the stroke k-NN on the samples that have strokes and attach it; returns how many."""
    if strokes is None:
        return 0
    if len(strokes) != len(y):
        raise ValueError(f"{len(y)} images but {len(strokes)} stroke entries (use None for none)")
    rows = [i for i, s in enumerate(strokes) if s is not None and len(s)]
    if not rows:
        return 0
    sw = None if sample_weight is None else np.asarray(sample_weight, np.float32)[rows]
    model = StrokeClassifier(n_neighbors=STROKE_NEIGHBORS).fit([strokes[i] for i in rows], y[rows], sw)
    est.attach_stroke_model(model, stroke_weight)
    return len(rows)


def train_knn(
    images: ArrayLike,
    labels: ArrayLike,
    *,
    progress: Progress | None = None,
    cv: bool = True,
    param_grid: dict | None = None,
    augment: dict | None = None,
    sample_weight: ArrayLike | None = None,
    random_state: int = 0,
    cv_samples: int = 15000,
    cv_folds: int = 3,
    deskew: bool = True,
    blur_sigma: float = 0.0,
    defaults: dict | None = None,
    max_train_samples: int | None = None,
    features: str = "gradients",
    strokes: Sequence[StrokeList | None] | None = None,
    stroke_weight: float = STROKE_FUSION_WEIGHT,
) -> TrainingResult:
    """Fit a DigitClassifier, choosing PCA size, k and weighting by cross-validation.

    The other kinds train through recognizer.ml.kinds (``train_model(..., kind="svm")``).

    CV runs on a random subsample (``cv_samples``) with ``cv_folds`` folds, every (pca size, weighting, k)
    scored from one search per fold (recognizer.ml.knn_cv).  ``augment`` (kwargs of ``augment_images``)
    enlarges only the final training set.
    ``progress(stage, fraction)`` reports stages "features", "cv", "augment", "fit", "done" with
    the overall fraction of the whole training (non-decreasing, 1.0 at "done").
    ``features``: "gradients" (gradient-direction maps, the default) or "pixels" (deskewed pixels).
    ``strokes``: one stroke list (or None) per image; the samples that have one also train a stroke
    k-NN whose probabilities are fused with the image model's (``stroke_weight``), see
    ``DigitClassifier.attach_stroke_model``.
    """
    if max_train_samples:
        raise ValueError("max_train_samples is for kind='svm' or 'cnn' (the k-NN trains on every sample)")
    t0 = time.perf_counter()
    report = stage_reporter(progress, {"features": (0.0, 0.15), "cv": (0.15, 0.75), "augment": (0.75, 0.85),
                                        "fit": (0.85, 1.0), "done": (1.0, 1.0)})
    X, y = images_and_labels(images, labels)
    report("features", 0.0)
    F = image_features(X, deskew, blur_sigma, features)
    report("features", 1.0)
    chosen, cv_curve = _choose_hyperparameters(F, y, cv and len(y) >= 2 * cv_folds, param_grid, defaults,
                                               sample_weight, cv_samples, cv_folds, random_state, report)
    if augment:
        report("augment", 0.0)
    Ff, yf, swf = final_training_set(X, y, F, sample_weight, augment, deskew, blur_sigma, random_state, features)
    if augment:
        report("augment", 1.0)
    report("fit", 0.0)
    est = DigitClassifier(n_components=chosen["pca_components"], n_neighbors=chosen["k"], weights=chosen["weights"],
                          deskew=deskew, blur_sigma=blur_sigma, features=features)
    est._fit_features(Ff, yf, swf, metric_images=X)
    n_strokes = _fit_stroke_model(est, strokes, y, sample_weight, stroke_weight)
    report("fit", 1.0)
    hyper = _hyperparameters_trained(est, augment, cv_curve["grid"], n_strokes)
    secs = time.perf_counter() - t0
    report("done", 1.0)
    return TrainingResult(est, hyper, cv_curve, secs, len(yf), cv_curve["grid"])


def _choose_hyperparameters(F: np.ndarray, y: np.ndarray, cv: bool, param_grid: dict | None, defaults: dict | None,
                            sample_weight: ArrayLike | None, cv_samples: int, cv_folds: int, random_state: int,
                            report: Progress) -> tuple[dict, dict]:
    """(PCA size, weighting and k; TrainingResult.cv_curve) for train_knn: cross-validated over
    DEFAULT_PARAM_GRID updated with `param_grid` when `cv`, else 50 components, distance weighting and
    k = 4 updated with `defaults`."""
    grid = dict(DEFAULT_PARAM_GRID)
    if param_grid:
        grid.update(param_grid)
    chosen = {"pca_components": 50, "weights": "distance", "k": 4}
    if defaults:
        chosen.update(defaults)
    if not cv:
        return chosen, curve_without_cv(chosen)
    return cross_validate_knn(F, y, grid, sample_weight=sample_weight, cv_samples=cv_samples, cv_folds=cv_folds,
                              random_state=random_state, report=report)


def _hyperparameters_trained(est: DigitClassifier, augment: dict | None, cv_grid: list[dict], n_strokes: int) -> dict:
    """TrainingResult.hyperparameters of a k-NN train_knn fitted: what it was trained with, the best
    cross-validated accuracy (None without cross-validation) and its stroke k-NN's settings."""
    return {
        "n_components": est.n_components,
        "n_neighbors": est.n_neighbors,
        "weights": est.weights,
        "deskew": est.deskew,
        "blur_sigma": est.blur_sigma,
        "features": est.features,
        "metric": None if est.metric_ is None else {
            "kind": "MLP hidden layers", "hidden": list(est.metric_.hidden),
            "weight": float(est.metric_weight), "candidates": int(est.rerank_candidates)},
        "augment": augment or None,
        "cv_accuracy": max((r["accuracy"] for r in cv_grid), default=None),
        "stroke_model": None if not n_strokes else {
            "n_train": n_strokes, "n_neighbors": est.stroke_model_.n_neighbors,
            "stroke_weight": est.stroke_weight_, **est.stroke_model_.feature_params,
        },
    }
