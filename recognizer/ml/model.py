"""k-NN digit classifier: deskew -> (optional Gaussian blur, off: it cost 0.2-0.5 pt) -> PCA -> distance-weighted brute-force k-NN.

The k-NN search is plain NumPy (precomputed squared norms, one matmul, argpartition), which
keeps a single query well under a millisecond with 60k float32 training vectors.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from scipy import ndimage
from sklearn.base import BaseEstimator, ClassifierMixin

from .features import GRADIENT_CELLS, GRADIENT_DIRECTIONS, gradient_features
from .knn import N_CLASSES, _knn_sorted, _vote, knn_sorted_pruned, prune_index
from .preprocess import deskew_batch
from .strokes import StrokeClassifier

__all__ = [
    "DigitClassifier",
    "Prediction",
    "TrainingResult",
    "train_model",
    "augment_images",
    "as_images",
    "DEFAULT_PARAM_GRID",
    "MODEL_KINDS",
]

MODEL_KINDS = ("knn", "svm", "cnn")  # svm: recognizer.ml.svm; cnn: recognizer.ml.cnn (requirements-cnn.txt)
FEATURE_SETS = ("pixels", "gradients")

_FEATURE_CHUNK = 4096

DEFAULT_PARAM_GRID = {
    "pca_components": [40, 50, 60, 80],
    "weights": ["uniform", "distance"],
    "k": list(range(1, 11)),
}


@dataclass
class Prediction:
    digit: int
    confidence: float
    probabilities: list[float]
    # Mean distance to the k nearest neighbours, and whether it is beyond what training digits show:
    # a scribble can win a confident vote, but it is far from every digit the model knows.
    distance: float | None = None
    unfamiliar: bool = False
    used_strokes: bool = False  # the pen trajectory was read too, not only the image


def as_images(X) -> np.ndarray:
    """(n,28,28) or (n,784) in [0,1] (or uint8 0..255) -> float32 (n,28,28)."""
    a = np.asarray(X)
    if a.dtype == np.uint8:
        a = a.astype(np.float32) * (1 / 255)
    else:
        a = a.astype(np.float32, copy=False)
    if a.ndim == 2 and a.shape == (28, 28):
        a = a[None]
    if a.ndim == 1 and a.size == 784:
        a = a[None]
    return a.reshape(-1, 28, 28)


def image_features(X, deskew: bool = True, blur_sigma: float = 0.0, features: str = "pixels") -> np.ndarray:
    """Images -> float32 features before PCA: deskew, then blur, then the deskewed pixels (784) or
    their gradient-direction maps (``features="gradients"``, recognizer.ml.features)."""
    if features not in FEATURE_SETS:
        raise ValueError(f"features must be one of {', '.join(FEATURE_SETS)}, not {features!r}")
    imgs = as_images(X)
    width = 784 if features == "pixels" else GRADIENT_DIRECTIONS * GRADIENT_CELLS**2
    out = np.empty((len(imgs), width), dtype=np.float32)
    for s in range(0, len(imgs), _FEATURE_CHUNK):
        block = imgs[s : s + _FEATURE_CHUNK]
        if deskew:
            block = deskew_batch(block)
        if blur_sigma and blur_sigma > 0:
            block = ndimage.gaussian_filter(block, sigma=(0, blur_sigma, blur_sigma), mode="constant")
        out[s : s + len(block)] = block.reshape(len(block), 784) if features == "pixels" else gradient_features(block)
    return out


def _pca(F: np.ndarray, n_components: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and top principal axes (n_components, d) via the covariance eigendecomposition."""
    mean = F.mean(axis=0, dtype=np.float64)
    cov = np.zeros((F.shape[1], F.shape[1]), dtype=np.float64)
    for s in range(0, len(F), 16384):
        b = F[s : s + 16384].astype(np.float64) - mean
        cov += b.T @ b
    # One BLAS thread: OpenBLAS's threaded eigh of a 784x784 matrix took 1-5 s on a busy 2-core machine
    # against 0.2 s single-threaded (the covariance matmuls above keep their threads).
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        vals, vecs = np.linalg.eigh(cov)
    order = np.argsort(vals)[::-1][:n_components]
    comps = vecs[:, order].T
    # deterministic sign: largest-magnitude loading positive
    signs = np.sign(comps[np.arange(len(comps)), np.abs(comps).argmax(axis=1)])
    comps *= np.where(signs == 0, 1, signs)[:, None]
    return mean.astype(np.float32), comps.astype(np.float32)


def check_digit_labels(F: np.ndarray, y) -> np.ndarray:
    """Labels as int64 digits, one per feature row; a clear error otherwise."""
    y = np.asarray(y).astype(np.int64).ravel()
    if len(y) != len(F):
        raise ValueError(f"{len(F)} images but {len(y)} labels")
    if len(y) == 0:
        raise ValueError("cannot fit on an empty training set")
    if y.min() < 0 or y.max() > 9:
        raise ValueError("labels must be digits 0-9")
    return y


class DigitFeatures:
    """The features every model kind reads: deskew -> (blur) -> PCA, fitted as mean_ and components_."""

    def _pre(self, X) -> np.ndarray:
        # models saved before gradient features existed read pixels
        return image_features(X, self.deskew, self.blur_sigma, getattr(self, "features", "pixels"))

    def _project(self, F: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray((F - self.mean_) @ self.components_.T, dtype=np.float32)

    def transform(self, X) -> np.ndarray:
        """Images -> PCA feature vectors (float32)."""
        self._check()
        return self._project(self._pre(X))


class DigitClassifier(DigitFeatures, ClassifierMixin, BaseEstimator):
    """deskew -> blur -> PCA -> brute-force k-NN (float32), classes are always 0..9.

    ``fit(X, y, sample_weight)``: X is (n,28,28) or (n,784) in [0,1] (uint8 0..255 accepted);
    ``sample_weight`` multiplies a training sample's neighbour vote.
    """

    def __init__(
        self,
        n_components: int = 50,
        n_neighbors: int = 4,
        weights: str = "distance",
        deskew: bool = True,
        blur_sigma: float = 0.0,
        features: str = "gradients",
    ):
        self.n_components = n_components
        self.n_neighbors = n_neighbors
        self.weights = weights
        self.deskew = deskew
        self.blur_sigma = blur_sigma
        self.features = features

    # -- fitting
    def fit(self, X, y, sample_weight=None):
        F = self._pre(X)
        return self._fit_features(F, y, sample_weight)

    def _fit_features(self, F, y, sample_weight=None, pca=None):
        y = check_digit_labels(F, y)
        if self.weights not in ("uniform", "distance"):
            raise ValueError(f"weights must be 'uniform' or 'distance', not {self.weights!r}")
        p = int(min(self.n_components, F.shape[1], len(F)))
        if pca is None:
            pca = _pca(F, p)
        self.mean_, self.components_ = pca[0], pca[1][:p]
        self.__dict__.pop("_prune_index", None)
        self.train_features_ = self._project(F)
        self.train_sq_ = np.einsum("ij,ij->i", self.train_features_, self.train_features_)
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
        self.novelty_distance_ = self._typical_distance()
        self.stroke_model_ = None
        return self

    # -- the pen trajectory, when the drawing came with one
    def attach_stroke_model(self, stroke_model: StrokeClassifier | None, stroke_weight: float) -> None:
        """Fuse a stroke k-NN's probabilities with the image's: p = (1 - w) p_image + w p_strokes."""
        if not 0.0 <= float(stroke_weight) <= 1.0:
            raise ValueError("stroke_weight must be between 0 and 1")
        self.stroke_model_ = stroke_model
        self.stroke_weight_ = float(stroke_weight)

    @property
    def reads_strokes(self) -> bool:
        return getattr(self, "stroke_model_", None) is not None

    def _fuse(self, p_image: np.ndarray, strokes, stroke_extras: dict) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities, used) for each row: rows whose ``strokes`` entry is None keep the image's."""
        used = np.zeros(len(p_image), dtype=bool)
        if strokes is None or not self.reads_strokes:
            return p_image, used
        rows = [i for i, s in enumerate(strokes) if s is not None and len(s)]
        if not rows:
            return p_image, used
        p_strokes = self.stroke_model_.predict_proba([strokes[i] for i in rows], **stroke_extras)
        w = self.stroke_weight_
        out = p_image.copy()
        out[rows] = (1.0 - w) * p_image[rows] + w * p_strokes
        used[rows] = True
        return out, used

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
        _idx, dist = _knn_sorted(self.train_features_[sel], self.train_features_, self.train_sq_, k + 1)
        return float(np.percentile(dist[:, 1:].mean(axis=1), quantile))  # column 0 is the sample itself

    # -- prediction
    def _check(self):
        if not hasattr(self, "train_features_"):
            from sklearn.exceptions import NotFittedError

            raise NotFittedError("DigitClassifier is not fitted yet: call fit() first")

    def kneighbors_features(self, Q: np.ndarray, k: int):
        """(indices, distances) into the training set for PCA features Q."""
        self._check()
        if len(Q) > 8:  # batches: one matrix product is faster than pruning row by row
            return _knn_sorted(Q, self.train_features_, self.train_sq_, k)
        index = self.__dict__.get("_prune_index")
        if index is None:  # built on first use, not stored in the model file
            index = self.__dict__["_prune_index"] = prune_index(self.train_features_) or False
        return knn_sorted_pruned(Q, self.train_features_, self.train_sq_, k, index or None)

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("_prune_index", None)
        return state

    def predict_proba(self, X, extra_X=None, extra_y=None, extra_weight: float = 1.0, extra_features=None,
                      strokes=None, extra_stroke_features=None, extra_stroke_y=None):
        """(n, 10) probabilities.  ``extra_X``/``extra_y``: extra preprocessed 28x28 samples
        (e.g. a user's own drawings) searched alongside the training set; their votes are
        multiplied by ``extra_weight``.  ``extra_features``: ``self.transform(extra_X)`` computed
        in advance (cache it per user: it saves ~10 us per extra image and query).
        ``strokes``: one stroke list (or None) per image, read by the stroke model when there is one;
        ``extra_stroke_features``/``extra_stroke_y``: the user's own drawings that have strokes."""
        labels, dist, mult = self._neighbours(X, extra_X, extra_y, extra_weight, extra_features)
        p = _vote(labels, dist, mult, self.weights)
        return self._fuse(p, strokes, _stroke_extras(extra_stroke_features, extra_stroke_y, extra_weight))[0]

    def _neighbours(self, X, extra_X=None, extra_y=None, extra_weight: float = 1.0, extra_features=None):
        """(labels, distances, vote multipliers) of the k nearest, training set and extras merged."""
        if extra_features is not None and extra_X is None:
            extra_X = extra_features
        self._check()
        Q = self.transform(X)
        k = int(self.n_neighbors)
        idx, dist = self.kneighbors_features(Q, k)
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
            eidx, edist = _knn_sorted(Q, E, np.einsum("ij,ij->i", E, E), k)
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

    def predict(self, X, **extras):
        return self.predict_proba(X, **extras).argmax(axis=1)

    def predict_one(self, img28, strokes=None, extra_stroke_features=None, extra_stroke_y=None,
                    **extras) -> Prediction:
        """One preprocessed 28x28 image (and its pen strokes, if any) -> Prediction."""
        labels, dist, mult = self._neighbours(as_images(img28)[:1], **extras)
        p_image = _vote(labels, dist, mult, self.weights)
        stroke_extras = _stroke_extras(extra_stroke_features, extra_stroke_y, extras.get("extra_weight", 1.0))
        p, used = self._fuse(p_image, None if strokes is None else [strokes], stroke_extras)
        p = p[0]
        d = int(p.argmax())
        distance = float(dist[0].mean())
        threshold = getattr(self, "novelty_distance_", None)
        return Prediction(digit=d, confidence=float(p[d]), probabilities=[float(v) for v in p],
                          distance=distance, unfamiliar=threshold is not None and distance > threshold,
                          used_strokes=bool(used[0]))


def _stroke_extras(features, y, weight) -> dict:
    if features is None or len(features) == 0:
        return {}
    return {"extra_features": features, "extra_y": y, "extra_weight": weight}


# ---------------------------------------------------------------- augmentation


def augment_images(
    images,
    labels,
    *,
    shifts: int = 0,
    thickness: tuple[float, ...] = (),
    rotations: tuple[float, ...] = (),
    fraction: float = 1.0,
    random_state: int = 0,
):
    """Return (images, labels, is_augmented) with originals first, then augmented copies.

    ``shifts``: add +-shifts px translations in 4 directions; ``thickness``: grey-level
    dilation (>0) / erosion (<0) radii in px; ``rotations``: angles in degrees.
    ``fraction``: share of the originals each augmentation is applied to (random subset).
    """
    X = as_images(images)
    y = np.asarray(labels).ravel()
    rng = np.random.default_rng(random_state)
    outs, ys = [X], [y]

    def subset():
        if fraction >= 1.0:
            return np.arange(len(X))
        return np.sort(rng.choice(len(X), size=int(round(fraction * len(X))), replace=False))

    for t in thickness:
        sel = subset()
        r = abs(float(t))
        size = int(2 * np.ceil(r) + 1)
        yy, xx = np.mgrid[:size, :size] - size // 2
        fp = (yy**2 + xx**2) <= r * r + 1e-6
        op = ndimage.grey_dilation if t > 0 else ndimage.grey_erosion
        outs.append(np.stack([op(im, footprint=fp) for im in X[sel]]).astype(np.float32))
        ys.append(y[sel])
    for a in rotations:
        sel = subset()
        rot = ndimage.rotate(X[sel], a, axes=(2, 1), reshape=False, order=1, mode="constant")
        outs.append(np.clip(rot, 0, 1).astype(np.float32))
        ys.append(y[sel])
    if shifts:
        for dy, dx in ((shifts, 0), (-shifts, 0), (0, shifts), (0, -shifts)):
            sel = subset()
            outs.append(ndimage.shift(X[sel], (0, dy, dx), order=0, mode="constant"))
            ys.append(y[sel])
    flags = np.concatenate([np.zeros(len(X), bool)] + [np.ones(len(o), bool) for o in outs[1:]])
    return np.concatenate(outs), np.concatenate(ys), flags


# ---------------------------------------------------------------- training


# The share of the stroke k-NN in the fused probabilities, and its k: chosen by leave-writers-out
# cross-validation over the 30 pendigits writers (bench/unseen_writers.py --tune).
STROKE_FUSION_WEIGHT = 0.45
STROKE_NEIGHBORS = 3


def _fit_stroke_model(est: DigitClassifier, strokes, y, sample_weight, stroke_weight: float) -> int:
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


@dataclass
class TrainingResult:
    estimator: DigitClassifier
    hyperparameters: dict
    cv_curve: dict
    train_seconds: float
    n_train: int
    cv_grid: list = field(default_factory=list)


def _stratified_subsample(y, n, rng):
    if n >= len(y):
        return rng.permutation(len(y))
    return np.sort(rng.choice(len(y), size=n, replace=False))


def _stage_reporter(progress, spans: dict):
    """progress(stage, fraction of the stage) -> progress(stage, overall fraction), per the stage spans."""

    def report(stage, frac):
        if progress is not None:
            lo, hi = spans[stage]
            progress(stage, lo + (hi - lo) * float(frac))

    return report


def _images_and_labels(images, labels) -> tuple[np.ndarray, np.ndarray]:
    X = as_images(images)
    y = np.asarray(labels).astype(np.int64).ravel()
    if len(X) != len(y):
        raise ValueError(f"{len(X)} images but {len(y)} labels")
    return X, y


def _cv_splits(F: np.ndarray, y: np.ndarray, pca_size: int, cv_samples: int, cv_folds: int, rng):
    """Per fold of a stratified subsample: (train rows, test rows, their PCA features), the PCA
    fitted on the fold's training rows only."""
    sub = _stratified_subsample(y, min(cv_samples, len(y)), rng)
    folds = np.array_split(rng.permutation(sub), cv_folds)
    for fi in range(cv_folds):
        te = folds[fi]
        tr = np.concatenate([folds[j] for j in range(cv_folds) if j != fi])
        mean, comps = _pca(F[tr], min(pca_size, F.shape[1], len(tr)))
        yield tr, te, (F[tr] - mean) @ comps.T, (F[te] - mean) @ comps.T


def _final_training_set(X, y, F, sample_weight, augment, deskew, blur_sigma, random_state, features="pixels"):
    """(features, labels, weights): the originals, then augmented copies (weight 1: they come from a
    random subset that is not mapped back to the originals' weights)."""
    if not augment:
        return F, y, sample_weight
    Xa, ya, flags = augment_images(X, y, random_state=random_state, **augment)
    Fa = image_features(Xa[flags], deskew, blur_sigma, features)
    sw = None
    if sample_weight is not None:
        sw = np.concatenate([np.asarray(sample_weight, np.float32), np.ones(len(Fa), np.float32)])
    return np.concatenate([F, Fa]), ya, sw


def train_model(
    images,
    labels,
    *,
    progress: Callable[[str, float], None] | None = None,
    cv: bool = True,
    param_grid: dict | None = None,
    augment: dict | None = None,
    sample_weight=None,
    random_state: int = 0,
    cv_samples: int = 15000,
    cv_folds: int = 3,
    deskew: bool = True,
    blur_sigma: float = 0.0,
    defaults: dict | None = None,
    kind: str = "knn",
    max_train_samples: int | None = None,
    features: str = "gradients",
    strokes: list | None = None,
    stroke_weight: float = STROKE_FUSION_WEIGHT,
) -> TrainingResult:
    """Fit a DigitClassifier, choosing PCA size, k and weighting by cross-validation.

    ``kind="svm"`` trains recognizer.ml.svm.SvmDigitClassifier instead (same features, an RBF SVC;
    see ``train_svm``, which also takes ``max_train_samples``), with the same arguments otherwise.

    CV runs on a random subsample (``cv_samples``) with ``cv_folds`` folds; per fold the PCA is
    fitted once at the largest size and neighbours are computed once up to the largest k, so
    every (pca size, weighting, k) is scored from one search.  ``augment`` (kwargs of
    ``augment_images``) enlarges only the final training set.
    ``progress(stage, fraction)`` reports stages "features", "cv", "augment", "fit", "done" with
    the overall fraction of the whole training (non-decreasing, 1.0 at "done").
    ``features``: "gradients" (gradient-direction maps, the default) or "pixels" (deskewed pixels).
    ``strokes``: one stroke list (or None) per image; the samples that have one also train a stroke
    k-NN whose probabilities are fused with the image model's (``stroke_weight``), see
    ``DigitClassifier.attach_stroke_model``.
    """
    if kind == "svm":
        from .svm import train_svm

        return train_svm(images, labels, progress=progress, cv=cv, param_grid=param_grid, augment=augment,
                         sample_weight=sample_weight, random_state=random_state, cv_folds=cv_folds,
                         deskew=deskew, blur_sigma=blur_sigma, defaults=defaults,
                         max_train_samples=max_train_samples)
    if kind == "cnn":  # JAX is imported only here, and refused with the install hint when missing
        from .cnn import train_cnn

        return train_cnn(images, labels, progress=progress, cv=cv, param_grid=param_grid, augment=augment,
                         sample_weight=sample_weight, random_state=random_state, defaults=defaults,
                         max_train_samples=max_train_samples)
    if kind != "knn":
        raise ValueError(f"unknown model kind {kind!r}: one of {', '.join(MODEL_KINDS)}")
    if max_train_samples:
        raise ValueError("max_train_samples is for kind='svm' (the k-NN trains on every sample)")
    t0 = time.perf_counter()
    report = _stage_reporter(progress, {"features": (0.0, 0.15), "cv": (0.15, 0.75), "augment": (0.75, 0.85),
                                        "fit": (0.85, 1.0), "done": (1.0, 1.0)})
    X, y = _images_and_labels(images, labels)
    grid = dict(DEFAULT_PARAM_GRID)
    if param_grid:
        grid.update(param_grid)
    chosen = {"pca_components": 50, "weights": "distance", "k": 4}
    if defaults:
        chosen.update(defaults)
    report("features", 0.0)
    F = image_features(X, deskew, blur_sigma, features)
    report("features", 1.0)
    cv_grid: list = []
    cv_curve: dict = {  # filled in below when cross-validation runs
        "pca_components": chosen["pca_components"], "weights": chosen["weights"],
        "k": [], "accuracy": [], "grid": cv_grid, "n_cv": 0, "folds": 0,
    }
    rng = np.random.default_rng(random_state)
    if cv and len(y) >= 2 * cv_folds:
        ps = sorted({int(p) for p in grid["pca_components"]})
        ks = sorted({int(k) for k in grid["k"]})
        ws = list(grid["weights"])
        kmax = max(ks)
        correct = {(p, w, k): 0 for p in ps for w in ws for k in ks}
        total = 0
        for fi, (tr, te, Ptr, Pte) in enumerate(_cv_splits(F, y, max(ps), cv_samples, cv_folds, rng)):
            sw = None if sample_weight is None else np.asarray(sample_weight, np.float32)[tr]
            for pi, p in enumerate(ps):
                A = np.ascontiguousarray(Ptr[:, :p])
                B = np.ascontiguousarray(Pte[:, :p])
                idx, dist = _knn_sorted(B, A, np.einsum("ij,ij->i", A, A), kmax)
                lab = y[tr][idx]
                mult = np.ones(idx.shape, np.float32) if sw is None else sw[idx]
                for w in ws:
                    for k in ks:
                        kk = min(k, idx.shape[1])
                        pred = _vote(lab[:, :kk], dist[:, :kk], mult[:, :kk], w).argmax(axis=1)
                        correct[(p, w, k)] += int((pred == y[te]).sum())
                report("cv", (fi * len(ps) + pi + 1) / (cv_folds * len(ps)))
            total += len(te)
        for (p, w, k), c in correct.items():
            cv_grid.append({"pca_components": p, "weights": w, "k": k, "accuracy": c / total})
        best = max(cv_grid, key=lambda r: (round(r["accuracy"], 6), -r["k"], -r["pca_components"]))
        chosen = {"pca_components": best["pca_components"], "weights": best["weights"], "k": best["k"]}
        cv_curve = {
            "pca_components": chosen["pca_components"],
            "weights": chosen["weights"],
            "k": ks,
            "accuracy": [correct[(chosen["pca_components"], chosen["weights"], k)] / total for k in ks],
            "grid": cv_grid,
            "n_cv": int(total),
            "folds": cv_folds,
        }
    if augment:
        report("augment", 0.0)
    Ff, yf, swf = _final_training_set(X, y, F, sample_weight, augment, deskew, blur_sigma, random_state, features)
    if augment:
        report("augment", 1.0)
    report("fit", 0.0)
    est = DigitClassifier(
        n_components=chosen["pca_components"],
        n_neighbors=chosen["k"],
        weights=chosen["weights"],
        deskew=deskew,
        blur_sigma=blur_sigma,
        features=features,
    )
    est._fit_features(Ff, yf, swf)
    n_strokes = _fit_stroke_model(est, strokes, y, sample_weight, stroke_weight)
    report("fit", 1.0)
    hyper = {
        "n_components": est.n_components,
        "n_neighbors": est.n_neighbors,
        "weights": est.weights,
        "deskew": deskew,
        "blur_sigma": blur_sigma,
        "features": features,
        "augment": augment or None,
        "cv_accuracy": max((r["accuracy"] for r in cv_grid), default=None),
        "stroke_model": None if not n_strokes else {
            "n_train": n_strokes, "n_neighbors": est.stroke_model_.n_neighbors,
            "stroke_weight": est.stroke_weight_, **est.stroke_model_.feature_params,
        },
    }
    secs = time.perf_counter() - t0
    report("done", 1.0)
    return TrainingResult(est, hyper, cv_curve, secs, int(len(yf)), cv_grid)
