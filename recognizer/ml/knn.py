"""Brute-force nearest neighbours and the distance-weighted vote, shared by every k-NN in recognizer.ml
(the image model, the stroke model, and the label ranking of the feedback loop)."""

from __future__ import annotations

import numpy as np

__all__ = ["N_CLASSES", "_knn_sorted", "_vote"]

N_CLASSES = 10
_CHUNK = 256  # query rows per distance block (256 x 60k float32 = 61 MB)


def _knn_sorted(Q: np.ndarray, R: np.ndarray, r_sq: np.ndarray, k: int):
    """For each row of Q, the k nearest rows of R: (indices, distances), nearest first."""
    k = min(k, len(R))
    n = len(Q)
    idx_out = np.empty((n, k), dtype=np.int64)
    dist_out = np.empty((n, k), dtype=np.float32)
    q_sq = np.einsum("ij,ij->i", Q, Q)
    for s in range(0, n, _CHUNK):
        q = Q[s : s + _CHUNK]
        D = q @ R.T
        D *= -2.0
        D += r_sq[None, :]
        if k < len(R):
            part = np.argpartition(D, k - 1, axis=1)[:, :k]
        else:
            part = np.broadcast_to(np.arange(len(R)), (len(q), len(R))).copy()
        d = np.take_along_axis(D, part, axis=1)
        o = np.argsort(d, axis=1)
        idx_out[s : s + len(q)] = np.take_along_axis(part, o, axis=1)
        d = np.take_along_axis(d, o, axis=1) + q_sq[s : s + len(q), None]
        dist_out[s : s + len(q)] = np.sqrt(np.maximum(d, 0.0))
    return idx_out, dist_out


def _vote(labels: np.ndarray, dist: np.ndarray, mult: np.ndarray, weights: str) -> np.ndarray:
    """Class probabilities from neighbour labels (n,k), distances and per-neighbour multipliers."""
    n, k = labels.shape
    if weights == "distance":
        w = 1.0 / np.maximum(dist, 1e-6)
    else:
        w = np.ones_like(dist)
    w = w * mult
    flat = (np.arange(n)[:, None] * N_CLASSES + labels).ravel()
    votes = np.bincount(flat, weights=w.ravel(), minlength=n * N_CLASSES).reshape(n, N_CLASSES)
    total = votes.sum(axis=1, keepdims=True)
    empty = total[:, 0] <= 0
    votes[empty] = 1.0
    total[empty] = N_CLASSES
    return votes / total
