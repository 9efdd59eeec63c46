"""A learned metric that re-ranks the image k-NN's nearest candidates (LearnedMetric).

The image k-NN finds its neighbours by euclidean distance between PCA'd gradient features, which counts a
stroke drawn thicker, a loop a little open or a digit a little off-centre as far as a different digit. A
perceptron with two hidden layers trained (scikit-learn's MLPClassifier) to tell the ten digits apart from
those same features, and from deformed copies of the training digits (deformed_copies), learns which
differences between two digits matter and which do not; its last hidden layer is a space where a deformed 4
lies nearer the other 4s. On MNIST test, trained on MNIST alone: plain 99.11%, re-ranked 99.53%; the default
model (MNIST and the pen renders) 99.02% and 99.28% (``bench.unseen_writers --model-only``, with
``--pen-variants 0`` for MNIST alone). On writers in no training set (``bench.unseen_writers``, 5 folds, median):
image only 98.60% plain, 99.07% re-ranked.

The re-rank only reorders the ``candidates`` the plain search found: the candidates' embeddings are computed
from the PCA features the model stores anyway (nothing more is stored per training row), so its cost per query
is fixed, ``candidates`` x (80 x 256 + 256 x 256) multiply-adds at 80 components (2.8M: 0.14 ms of a request,
``python -m bench.predict_stages``), whatever the number of training rows. ``weight`` is
how far the ranking may move from the plain one: the re-ranked distance is
``(1 - weight) * d_pca + weight * ratio * d_learned``, so weight 0 is the plain search exactly, and ``ratio``
(fitted) keeps the distances in PCA units, where the novelty threshold, the number reader and a user's own
drawings (searched exactly, not re-ranked) compare them.
"""

from __future__ import annotations

import warnings

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["METRIC_EPOCHS", "METRIC_HIDDEN", "METRIC_MAX_ROWS", "RERANK_CANDIDATES", "LearnedMetric", "deformed_copies"]

RERANK_CANDIDATES = 32  # the plain search's nearest rows the learned metric re-ranks
METRIC_HIDDEN = (256, 256)  # hidden units per layer: the last layer's output is the embedding
METRIC_EPOCHS = 30  # Adam passes over the training rows (~25 s at 75k rows on 2 cores)

# The rows the perceptron trains on, at most (a random sample beyond): its training time grows with them, and
# 100k rows already hold every writer style the k-NN's rows do many times over.
METRIC_MAX_ROWS = 100_000

_CHUNK = 1024  # queries per block in rerank: bounds the gathered candidates to ~10 MB at 80 components


class LearnedMetric:
    """``embed(F)``: ``F / scale`` through the perceptron's hidden layers (``x -> ReLU(x W + b)`` for each
    ``(W, b)`` in ``layers``), fitted by ``LearnedMetric.fit``; ``ratio`` converts its distances to PCA units
    (the median PCA distance of a training row's nearest neighbours over their median learned distance, set by
    ``calibrate``)."""

    def __init__(self, layers: list[tuple[np.ndarray, np.ndarray]], scale: float, ratio: float = 1.0) -> None:
        if not layers:
            raise ValueError("a learned metric needs at least one layer")
        self.layers = [(_without_subnormals(W), _without_subnormals(b)) for W, b in layers]
        self.scale = float(scale)
        self.ratio = float(ratio)

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.layers = [(_without_subnormals(W), _without_subnormals(b)) for W, b in self.layers]

    @property
    def hidden(self) -> tuple[int, ...]:
        return tuple(int(W.shape[1]) for W, _b in self.layers)

    @classmethod
    def fit(cls, features: ArrayLike, labels: ArrayLike, sample_weight: ArrayLike | None = None, *,
            hidden: tuple[int, ...] = METRIC_HIDDEN, epochs: int = METRIC_EPOCHS, random_state: int = 0
            ) -> LearnedMetric:
        """Train the perceptron on (n, d) features and their digit labels and keep its hidden layers.

        ``sample_weight``: as the k-NN's votes are weighted, a row's share of the loss (a row of weight 0
        teaches the metric nothing)."""
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.neural_network import MLPClassifier

        F = np.asarray(features, dtype=np.float32)
        y = np.asarray(labels).ravel()
        if F.ndim != 2 or len(F) != len(y):
            raise ValueError(f"features must be (n, d) with one label per row, got {F.shape} and {y.shape}")
        if len(np.unique(y)) < 2:
            raise ValueError("the learned metric needs at least two digits in training")
        scale = float(F.std()) or 1.0  # one number: the PCA's own weighting of its components is kept
        mlp = MLPClassifier(tuple(int(h) for h in hidden), max_iter=int(epochs), random_state=random_state,
                            batch_size=min(200, len(F)))
        with warnings.catch_warnings():  # the epochs are capped on purpose (chosen by measurement)
            warnings.simplefilter("ignore", ConvergenceWarning)
            mlp.fit(F / scale, y, sample_weight=None if sample_weight is None
                    else np.asarray(sample_weight, dtype=np.float64).ravel())
        n_hidden = len(mlp.coefs_) - 1  # the last layer maps to the ten digits' scores: not part of the metric
        return cls(list(zip(mlp.coefs_[:n_hidden], mlp.intercepts_[:n_hidden], strict=True)), scale)

    def embed(self, F: np.ndarray) -> np.ndarray:
        """(..., d) PCA features -> (..., last hidden size) float32."""
        F = np.asarray(F, dtype=np.float32)
        h = F.reshape(-1, F.shape[-1]) * np.float32(1.0 / self.scale)
        for W, b in self.layers:
            h = h @ W
            h += b
            np.maximum(h, 0.0, out=h)
        return h.reshape(*F.shape[:-1], -1)

    def distances(self, Q: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """(n, d) queries and (n, K, d) candidates' features -> (n, K) learned distances (unscaled)."""
        both = self.embed(np.concatenate([np.asarray(Q, np.float32)[:, None, :], candidates], axis=1))
        diff = both[:, 1:] - both[:, :1]  # one pass through the layers for a query and its candidates
        return np.sqrt(np.einsum("nkh,nkh->nk", diff, diff))

    def rerank(self, Q: np.ndarray, candidates: np.ndarray, distances: np.ndarray, weight: float) -> np.ndarray:
        """The re-ranked distances, in PCA units, of each query's candidates: (n, d) queries, (n, K, d) candidates'
        features and their (n, K) PCA distances. ``weight`` 0 returns ``distances`` unchanged."""
        w = float(weight)
        if not 0.0 <= w <= 1.0:
            raise ValueError("the re-rank weight must be between 0 and 1")
        distances = np.asarray(distances, dtype=np.float32)
        if w == 0.0:
            return distances
        if len(Q) <= _CHUNK:  # a request's query: one block, without the blocks' bookkeeping
            return self._blend(Q, candidates, distances, w)
        out = np.empty_like(distances)
        for i in range(0, len(Q), _CHUNK):
            part = slice(i, i + _CHUNK)
            out[part] = self._blend(Q[part], candidates[part], distances[part], w)
        return out

    def _blend(self, Q: np.ndarray, candidates: np.ndarray, distances: np.ndarray, w: float) -> np.ndarray:
        return (1.0 - w) * distances + w * (self.distances(Q, candidates) * np.float32(self.ratio))

    def calibrate(self, Q: np.ndarray, neighbours: np.ndarray, distances: np.ndarray) -> None:
        """Set ``ratio`` from training rows ``Q``, their (n, k, d) nearest rows' features and PCA distances."""
        learned = self.distances(Q, neighbours)
        d_learned = float(np.median(learned))
        self.ratio = float(np.median(distances)) / d_learned if d_learned > 0 else 1.0


def _without_subnormals(a: ArrayLike) -> np.ndarray:
    """``a`` as contiguous float32 with its subnormal values (below 1.2e-38) set to 0. Adam leaves a few hundred
    of the 65,536 second-layer weights subnormal, and the CPU multiplies those through a slow path that made
    the layer several times slower. A subnormal adds nothing a float32 sum of the layer's other terms can
    hold, so the embeddings stay the same."""
    a = np.array(a, dtype=np.float32, order="C")
    a[np.abs(a) < np.finfo(np.float32).tiny] = 0.0
    return a


def deformed_copies(images: np.ndarray, rng: np.random.Generator, *, max_shift: float = 1.5,
                    max_rotation: float = 10.0, scale: tuple[float, float] = (0.9, 1.1)) -> np.ndarray:
    """One deformed copy of each (n, 28, 28) image: rotated, stretched (each axis on its own) and shifted at
    random, and half the copies half a pixel thicker or thinner (2x2 grey dilation or erosion). Drawings differ
    from their nearest training digit by such small deformations after preprocessing (which sizes, centres
    and thins the ink): trained on them, the metric learns to count them as near."""
    from scipy import ndimage

    X = np.asarray(images, dtype=np.float32).reshape(-1, 28, 28)
    out = np.empty_like(X)
    centre = np.array([13.5, 13.5])
    for i, im in enumerate(X):
        a = np.deg2rad(rng.uniform(-max_rotation, max_rotation))
        rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        M = rot / rng.uniform(*scale, size=2)[None, :]  # output -> input coordinates
        offset = centre - M @ (centre + rng.uniform(-max_shift, max_shift, size=2))
        warped = ndimage.affine_transform(im, M, offset=offset, order=1, mode="constant")
        pick = rng.integers(4)
        if pick == 0:
            warped = ndimage.grey_dilation(warped, size=(2, 2))
        elif pick == 1:
            warped = ndimage.grey_erosion(warped, size=(2, 2))
        out[i] = np.clip(warped, 0.0, 1.0)
    return out
