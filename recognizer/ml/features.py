"""Image features the k-NN reads before PCA: the deskewed pixels, or gradient-direction maps.

Gradient-direction features (the "e-grg" family of Liu et al., Pattern Recognition 2003): the Sobel
gradient of the deskewed digit is split by direction into 8 planes (each gradient shared linearly
between its two nearest directions), each plane is Gaussian-pooled to 14x14, and a square root evens
out the strong and faint edges. A k-NN on them reads MNIST test at 99.1% where deskewed pixels give
98.5%, because they describe where strokes run and in which direction rather than which pixels are
lit, so a stroke one pixel off still matches.
"""

from __future__ import annotations

import numpy as np

__all__ = ["GRADIENT_CELLS", "GRADIENT_DIRECTIONS", "GRADIENT_SIGMA", "gradient_features"]

GRADIENT_DIRECTIONS = 8
GRADIENT_CELLS = 14  # pooled grid per direction: 8 x 14 x 14 = 1,568 values before PCA
GRADIENT_SIGMA = 1.6  # px, the pooling Gaussian's width


def _pooling_matrix(cells: int, size: int = 28, sigma: float = GRADIENT_SIGMA) -> np.ndarray:
    """(cells, size): row i is the normalised Gaussian centred on cell i's middle pixel."""
    step = size / cells
    centres = (np.arange(cells) + 0.5) * step - 0.5
    x = np.arange(size)[None, :]
    m = np.exp(-0.5 * ((x - centres[:, None]) / sigma) ** 2)
    return (m / m.sum(axis=1, keepdims=True)).astype(np.float32)


def gradient_features(imgs: np.ndarray, n_directions: int = GRADIENT_DIRECTIONS, cells: int = GRADIENT_CELLS,
                      sigma: float = GRADIENT_SIGMA) -> np.ndarray:
    """(n, 28, 28) float images -> (n, n_directions * cells * cells) float32."""
    imgs = np.asarray(imgs, dtype=np.float32).reshape(-1, 28, 28)
    p = np.pad(imgs, ((0, 0), (1, 1), (1, 1)))
    # Sobel, written out: scipy.ndimage.sobel on a stack would also smooth across the stacked images
    gx = (p[:, :-2, 2:] - p[:, :-2, :-2]) + 2 * (p[:, 1:-1, 2:] - p[:, 1:-1, :-2]) + (p[:, 2:, 2:] - p[:, 2:, :-2])
    gy = (p[:, 2:, :-2] - p[:, :-2, :-2]) + 2 * (p[:, 2:, 1:-1] - p[:, :-2, 1:-1]) + (p[:, 2:, 2:] - p[:, :-2, 2:])
    mag = np.hypot(gx, gy)
    ang = np.arctan2(gy, gx)
    width = 2 * np.pi / n_directions
    B = _pooling_matrix(cells, sigma=sigma)
    out = np.empty((len(imgs), n_directions, cells, cells), dtype=np.float32)
    for j in range(n_directions):
        diff = np.abs((ang - j * width + np.pi) % (2 * np.pi) - np.pi)
        plane = mag * np.clip(1.0 - diff / width, 0.0, 1.0)
        out[:, j] = B @ plane @ B.T
    np.sqrt(np.maximum(out, 0.0, out=out), out=out)
    return out.reshape(len(imgs), -1)
