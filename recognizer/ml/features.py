"""From images to the feature vectors the k-NN and the SVM read: deskew -> (blur) -> pixels or
gradient-direction maps -> PCA.

Gradient-direction features (the "e-grg" family of Liu et al., Pattern Recognition 2003): the Sobel
gradient of the deskewed digit is split by direction into 8 planes (each gradient shared linearly
between its two nearest directions), each plane is Gaussian-pooled to 14x14, and a square root evens
out the strong and faint edges. A k-NN on them reads MNIST test at 99.1% where deskewed pixels give
98.5%, because they describe where strokes run and in which direction rather than which pixels are
lit, so a stroke one pixel off still matches.
"""

from __future__ import annotations

import functools

import numpy as np
from numpy.typing import ArrayLike
from scipy import ndimage

from .preprocess import deskew_batch

__all__ = [
    "FEATURE_SETS",
    "GRADIENT_CELLS",
    "GRADIENT_DIRECTIONS",
    "GRADIENT_SIGMA",
    "DigitFeatures",
    "as_images",
    "fit_pca",
    "gradient_features",
    "image_features",
]

FEATURE_SETS = ("pixels", "gradients")
GRADIENT_DIRECTIONS = 8
GRADIENT_CELLS = 14  # pooled grid per direction: 8 x 14 x 14 = 1,568 values before PCA
GRADIENT_SIGMA = 1.6  # px, the pooling Gaussian's width

_FEATURE_CHUNK = 4096  # images per deskew/feature block: bounds the float32 temporaries to ~25 MB
_GRADIENT_BLOCK = 256  # images whose eight direction planes gradient_features computes at once


@functools.lru_cache(maxsize=8)
def _pooling_matrix(cells: int, size: int = 28, sigma: float = GRADIENT_SIGMA) -> np.ndarray:
    """(cells, size), read-only: row i is the normalised Gaussian centred on cell i's middle pixel."""
    step = size / cells
    centres = (np.arange(cells) + 0.5) * step - 0.5
    x = np.arange(size)[None, :]
    m = np.exp(-0.5 * ((x - centres[:, None]) / sigma) ** 2)
    out = (m / m.sum(axis=1, keepdims=True)).astype(np.float32)
    out.flags.writeable = False  # one array for every call
    return out


@functools.lru_cache(maxsize=8)
def _direction_starts(n_directions: int) -> np.ndarray:
    """(n_directions, 1, 1) float32, read-only: each direction plane's angle."""
    width = 2 * np.pi / n_directions
    out = np.array([j * width for j in range(n_directions)], dtype=np.float32)[:, None, None]
    out.flags.writeable = False
    return out


def gradient_features(imgs: np.ndarray, n_directions: int = GRADIENT_DIRECTIONS, cells: int = GRADIENT_CELLS,
                      sigma: float = GRADIENT_SIGMA) -> np.ndarray:
    """(n, 28, 28) float images -> (n, n_directions * cells * cells) float32."""
    imgs = np.asarray(imgs, dtype=np.float32).reshape(-1, 28, 28)
    width = 2 * np.pi / n_directions
    turn = np.float32(2 * np.pi)
    starts = _direction_starts(n_directions)
    B = _pooling_matrix(cells, sigma=sigma)
    out = np.empty((len(imgs), n_directions, cells, cells), dtype=np.float32)
    # every direction at once, a block of images at a time: one image (a web request) costs a few dozen
    # NumPy calls instead of a few per direction, and a block's temporaries stay ~6 MB
    for s in range(0, len(imgs), _GRADIENT_BLOCK):
        part = imgs[s: s + _GRADIENT_BLOCK]
        p = np.zeros((len(part), 30, 30), np.float32)
        p[:, 1:-1, 1:-1] = part
        # Sobel, written out: scipy.ndimage.sobel on a stack would also smooth across the stacked images
        gx = (p[:, :-2, 2:] - p[:, :-2, :-2]) + 2 * (p[:, 1:-1, 2:] - p[:, 1:-1, :-2]) + (p[:, 2:, 2:] - p[:, 2:, :-2])
        gy = (p[:, 2:, :-2] - p[:, :-2, :-2]) + 2 * (p[:, 2:, 1:-1] - p[:, :-2, 1:-1]) + (p[:, 2:, 2:] - p[:, :-2, 2:])
        mag = np.hypot(gx, gy)[:, None]
        # each gradient is shared between its two nearest directions by its angular distance to them
        a = np.arctan2(gy, gx)[:, None] - starts + np.pi
        # a % 2pi bit for bit as np.remainder gives it on [-2pi, 2pi], in a fifth of the time
        a = np.where(a < 0, a + turn, np.where(a >= turn, a - turn, a))
        planes = mag * np.clip(1.0 - np.abs(a - np.pi) / width, 0.0, 1.0)
        out[s: s + len(part)] = B @ planes @ B.T
    np.sqrt(np.maximum(out, 0.0, out=out), out=out)
    return out.reshape(len(imgs), -1)


def as_images(X: ArrayLike) -> np.ndarray:
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


def image_features(X: ArrayLike, deskew: bool = True, blur_sigma: float = 0.0, features: str = "pixels") -> np.ndarray:
    """Images -> float32 features before PCA: deskew, then blur, then the deskewed pixels (784) or
    their gradient-direction maps (``features="gradients"``)."""
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


def fit_pca(F: np.ndarray, n_components: int) -> tuple[np.ndarray, np.ndarray]:
    """(mean (d,), principal axes (n_components, d)), both float32, of the rows of ``F``.

    scikit-learn's covariance-eigh PCA: one d x d Gram matrix, so 75k x 1,568 gradient rows cost no
    copy of the data. The Gram matrix is in F's dtype: on float32 MNIST gradients the axes are within
    0.1 degree of a float64 solution, every cross-validation cell of the k-NN's grid (80, 15k digits)
    counts the same and every MNIST test prediction is the same (a float64 copy would cost 0.8 GB).
    Signs follow scikit-learn's convention: each axis's largest loading is positive.
    """
    from sklearn.decomposition import PCA
    from threadpoolctl import threadpool_limits

    F = np.asarray(F)
    if len(F) < 2:  # no variance to decompose (scikit-learn divides by n - 1): any axes project alike
        d = F.shape[1]
        return F.mean(axis=0).astype(np.float32), np.eye(d, dtype=np.float32)[::-1][:n_components].copy()
    # One BLAS thread: OpenBLAS's threaded eigh of a 784x784 matrix took 1-5 s on a busy 2-core machine
    # against 0.2 s single-threaded, and the Gram matrix gains nothing there from threads (60k gradient
    # rows: 9.8 s single-threaded, 10.0 s with two).
    with threadpool_limits(limits=1, user_api="blas"):
        pca = PCA(n_components=int(n_components), svd_solver="covariance_eigh").fit(F)
    return pca.mean_.astype(np.float32), pca.components_.astype(np.float32)


_PROJECT_CHUNK = 262_144  # rows projected at once by a large training set's _project (sizes up to this: one product)


class DigitFeatures:
    """The PCA features the k-NN and the SVM read: deskew -> (blur) -> pixels or gradients -> PCA.

    A subclass sets ``deskew``, ``blur_sigma`` and ``features`` and fits ``mean_`` and ``components_``
    (stored as plain arrays, so model files of any scikit-learn version load); ``_pre`` is the hook a
    subclass with other features overrides (recognizer.ml.cnn.DeepKnnClassifier).
    """

    deskew: bool
    blur_sigma: float
    mean_: np.ndarray
    components_: np.ndarray

    def _pre(self, X: ArrayLike) -> np.ndarray:
        # models saved before gradient features existed read pixels
        return image_features(X, self.deskew, self.blur_sigma, getattr(self, "features", "pixels"))

    def _project(self, F: np.ndarray) -> np.ndarray:
        if len(F) <= _PROJECT_CHUNK:
            return np.ascontiguousarray((F - self.mean_) @ self.components_.T, dtype=np.float32)
        # in blocks: F minus its mean is a copy of F (6.7 GB of gradient features at 1M drawings)
        out = np.empty((len(F), self.components_.shape[0]), np.float32)
        for s in range(0, len(F), _PROJECT_CHUNK):
            out[s: s + _PROJECT_CHUNK] = (F[s: s + _PROJECT_CHUNK] - self.mean_) @ self.components_.T
        return out

    def _fit_pca(self, F: np.ndarray, n_components: int) -> None:
        p = int(min(n_components, F.shape[1], len(F)))
        self.mean_, self.components_ = fit_pca(F, p)

    def _check(self) -> None:
        raise NotImplementedError

    def transform(self, X: ArrayLike) -> np.ndarray:
        """Images -> PCA feature vectors (float32)."""
        self._check()
        return self._project(self._pre(X))
