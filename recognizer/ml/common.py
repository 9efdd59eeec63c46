"""What every model kind shares: the answer to one drawing (Prediction), the result of a training
(TrainingResult), and the steps of training that the k-NN, the SVM and the CNN run alike (checking the
data, progress stages, cross-validation folds with their own PCA, augmentation, subsampling).

The kinds themselves (recognizer.ml.model, .svm, .cnn) import from here and from recognizer.ml.features;
recognizer.ml.kinds lists them. Nothing here imports a model kind.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy import ndimage

from .features import as_images, fit_pca, image_features

__all__ = [
    "KindUnavailable",
    "Prediction",
    "Progress",
    "TrainingResult",
    "augment_images",
    "check_digit_labels",
    "cv_splits",
    "final_training_set",
    "images_and_labels",
    "random_subsample",
    "stage_reporter",
]

# progress(stage, fraction): stages "features", "cv", "augment", "fit", "done"; the fraction is of the
# whole training, non-decreasing, 1.0 at "done".
Progress = Callable[[str, float], None]


class KindUnavailable(ValueError):
    """A model kind was asked for whose optional extra is not installed (the message names it)."""


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
    stroke_distance: float | None = None  # mean distance to the stroke k-NN's neighbours, when it read them


def is_unsure(probabilities: Sequence[float], unfamiliar: bool, confidence: float, margin: float) -> bool:
    """Unsure when the best digit is below ``confidence``, the runner-up is within ``margin`` of it, or the
    drawing is far from every digit the model knows (a scribble can still win a confident vote)."""
    best, second = sorted(probabilities, reverse=True)[:2]
    return unfamiliar or best < confidence or best - second < margin


@dataclass
class TrainingResult:
    estimator: Any  # a recognizer.ml.kinds.ServingEstimator
    hyperparameters: dict
    cv_curve: dict
    train_seconds: float
    n_train: int
    cv_grid: list = field(default_factory=list)


# ---------------------------------------------------------------- checking the data


def check_digit_labels(F: np.ndarray, y: ArrayLike) -> np.ndarray:
    """Labels as int64 digits, one per feature row; a clear error otherwise."""
    y = np.asarray(y).astype(np.int64).ravel()
    if len(y) != len(F):
        raise ValueError(f"{len(F)} images but {len(y)} labels")
    if len(y) == 0:
        raise ValueError("cannot fit on an empty training set")
    if y.min() < 0 or y.max() > 9:
        raise ValueError("labels must be digits 0-9")
    return y


def images_and_labels(images: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """(float32 (n, 28, 28) images, int64 labels), refusing a count mismatch."""
    X = as_images(images)
    y = np.asarray(labels).astype(np.int64).ravel()
    if len(X) != len(y):
        raise ValueError(f"{len(X)} images but {len(y)} labels")
    return X, y


def random_subsample(y: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted row indices of ``n`` random samples (all of them, shuffled, when ``n`` covers ``y``)."""
    if n >= len(y):
        return rng.permutation(len(y))
    return np.sort(rng.choice(len(y), size=n, replace=False))


# ---------------------------------------------------------------- progress


def stage_reporter(progress: Progress | None, spans: dict[str, tuple[float, float]]) -> Progress:
    """progress(stage, fraction of the stage) -> progress(stage, overall fraction), per the stage spans."""

    def report(stage: str, frac: float) -> None:
        if progress is not None:
            lo, hi = spans[stage]
            progress(stage, lo + (hi - lo) * float(frac))

    return report


# ---------------------------------------------------------------- cross-validation and the final set


def cv_splits(F: np.ndarray, y: np.ndarray, pca_size: int, cv_samples: int, cv_folds: int,
              rng: np.random.Generator) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Per fold of a random subsample: (train rows, test rows, their PCA features), the PCA fitted on
    the fold's training rows only."""
    sub = random_subsample(y, min(cv_samples, len(y)), rng)
    folds = np.array_split(rng.permutation(sub), cv_folds)
    for fi in range(cv_folds):
        te = folds[fi]
        tr = np.concatenate([folds[j] for j in range(cv_folds) if j != fi])
        mean, comps = fit_pca(F[tr], min(pca_size, F.shape[1], len(tr)))
        yield tr, te, (F[tr] - mean) @ comps.T, (F[te] - mean) @ comps.T


def final_training_set(X: np.ndarray, y: np.ndarray, F: np.ndarray, sample_weight: ArrayLike | None,
                       augment: dict | None, deskew: bool, blur_sigma: float, random_state: int,
                       features: str = "pixels") -> tuple[np.ndarray, np.ndarray, ArrayLike | None]:
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


# ---------------------------------------------------------------- augmentation


def augment_images(
    images: ArrayLike,
    labels: ArrayLike,
    *,
    shifts: int = 0,
    thickness: tuple[float, ...] = (),
    rotations: tuple[float, ...] = (),
    fraction: float = 1.0,
    random_state: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (images, labels, is_augmented) with originals first, then augmented copies.

    ``shifts``: add +-shifts px translations in 4 directions; ``thickness``: grey-level
    dilation (>0) / erosion (<0) radii in px; ``rotations``: angles in degrees.
    ``fraction``: share of the originals each augmentation is applied to (random subset).
    """
    X = as_images(images)
    y = np.asarray(labels).ravel()
    rng = np.random.default_rng(random_state)
    outs, ys = [X], [y]

    def subset() -> np.ndarray:
        if fraction >= 1.0:
            return np.arange(len(X))
        return np.sort(rng.choice(len(X), size=round(fraction * len(X)), replace=False))

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


def cached_arrays(cache_file: str | os.PathLike | None, compute: Callable[[], dict[str, np.ndarray]],
                  fits: Callable[[dict[str, np.ndarray]], bool] = lambda arrays: True) -> dict[str, np.ndarray]:
    """The arrays stored in ``cache_file`` (.npz) when it is there, readable and ``fits``; otherwise
    ``compute()``, written there for next time (a temporary file renamed into place: concurrent processes
    never read half a file). ``cache_file`` None: computed, nothing kept."""
    path = None if cache_file is None else Path(cache_file)
    if path is not None and path.is_file():
        try:
            with np.load(path) as z:
                arrays = {name: z[name] for name in z.files}
            if fits(arrays):
                return arrays
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache is rebuilt
    arrays = compute()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez_compressed(f, **arrays)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return arrays
