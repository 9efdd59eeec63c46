"""Brute-force nearest neighbours and the distance-weighted vote, shared by every k-NN in recognizer.ml
(the image model, the stroke model, and the label ranking of the feedback loop)."""

from __future__ import annotations

import numpy as np

__all__ = ["N_CLASSES", "PRUNE_CANDIDATES", "PRUNE_DIMS", "PruneIndex", "knn_sorted", "knn_sorted_pruned", "prune_index",
           "vote"]

N_CLASSES = 10
_CHUNK = 256  # query rows per distance block (256 x 60k float32 = 61 MB)


def knn_sorted(Q: np.ndarray, R: np.ndarray, r_sq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """For each row of Q, the k nearest rows of R (``r_sq``: their squared norms): (indices (n, k) int64,
    distances (n, k) float32), nearest first."""
    k = min(k, len(R))
    n = len(Q)
    idx_out = np.empty((n, k), dtype=np.int64)
    dist_out = np.empty((n, k), dtype=np.float32)
    q_sq = np.einsum("ij,ij->i", Q, Q)
    for s in range(0, n, _CHUNK):
        q = Q[s : s + _CHUNK]
        D = (q * np.float32(-2.0)) @ R.T  # the same bits as -2 (q @ R.T), one pass over D fewer
        D += r_sq[None, :]
        if k < len(R):
            part = _k_smallest(D, k)
        else:
            part = np.broadcast_to(np.arange(len(R)), (len(q), len(R))).copy()
        d = np.take_along_axis(D, part, axis=1)
        o = np.argsort(d, axis=1)
        idx_out[s : s + len(q)] = np.take_along_axis(part, o, axis=1)
        d = np.take_along_axis(d, o, axis=1) + q_sq[s : s + len(q), None]
        dist_out[s : s + len(q)] = np.sqrt(np.maximum(d, 0.0))
    return idx_out, dist_out


# _k_smallest bounds a row's k-th smallest value by the k-th smallest of one column in this many.
_SAMPLE_STRIDE = 16


def _k_smallest(D: np.ndarray, k: int) -> np.ndarray:
    """Column indices of each row's k smallest values of D (in no order), as np.argpartition(D, k - 1)[:, :k].

    Partitioning whole rows is most of a large search's time (a ranking's 10,000 new drawings against 1M others:
    1e10 values). So: the k-th smallest of every _SAMPLE_STRIDE-th column bounds the row's k-th smallest from
    above; the values at or under that bound (about k x _SAMPLE_STRIDE of them) are the candidates, and only they
    are partitioned. A row with far more candidates (heaps of ties) is partitioned whole. Values tied at a row's
    k-th smallest may be taken in another order than a whole-row partition takes them."""
    n = D.shape[1]
    if n < 4 * _SAMPLE_STRIDE * k:
        return np.argpartition(D, k - 1, axis=1)[:, :k]
    bound = np.partition(D[:, ::_SAMPLE_STRIDE], k - 1, axis=1)[:, k - 1]
    rows, cols = np.nonzero(D <= bound[:, None])
    counts = np.bincount(rows, minlength=len(D))  # each at least k: the bound is one of the row's values
    whole = counts > 16 * _SAMPLE_STRIDE * k
    if whole.any():
        keep = ~whole[rows]
        rows, cols = rows[keep], cols[keep]
        counts[whole] = 0
    slot = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
    cand = np.zeros((len(D), max(int(counts.max()), k)), np.int64)
    value = np.full(cand.shape, np.inf, D.dtype)
    cand[rows, slot], value[rows, slot] = cols, D[rows, cols]
    out = np.take_along_axis(cand, np.argpartition(value, k - 1, axis=1)[:, :k], axis=1)
    if whole.any():
        out[whole] = np.argpartition(D[whole], k - 1, axis=1)[:, :k]
    return out


def vote(labels: np.ndarray, dist: np.ndarray, mult: np.ndarray, weights: str) -> np.ndarray:
    """(n, 10) class probabilities from neighbour labels (n, k), distances and per-neighbour multipliers;
    ``weights``: "distance" (1 / distance) or "uniform"."""
    n = labels.shape[0]
    if weights == "distance":
        w = 1.0 / np.maximum(dist, 1e-6)
    else:
        w = np.ones_like(dist)
    w = w * mult
    flat = (np.arange(n)[:, None] * N_CLASSES + labels).ravel()
    votes = np.bincount(flat, weights=w.ravel(), minlength=n * N_CLASSES).reshape(n, N_CLASSES)
    total = votes.sum(axis=1, keepdims=True)
    empty = total[:, 0] <= 0
    if empty.any():  # (a boolean assignment costs a request microseconds even when it selects nothing)
        votes[empty] = 1.0
        total[empty] = N_CLASSES
    return votes / total


# A query's distance over the first principal components alone is a lower bound of its full distance:
# searching those first and the full vectors of only the best candidates reads a third of the memory a
# full search does (what a single query's time is: 75k x 60 float32 is 18 MB per query), and the bound
# proves the answer exact or the full search runs (measured: the bound holds for 98.6% of MNIST test
# digits with 24 of 60 components and 256 candidates; bench/unseen_writers.py has the latency).
PRUNE_DIMS = 24
PRUNE_CANDIDATES = 256

# (the first columns of the training vectors, contiguous; their squared norms)
PruneIndex = tuple[np.ndarray, np.ndarray]


def prune_index(R: np.ndarray, dims: int = PRUNE_DIMS) -> PruneIndex | None:
    """(the first ``dims`` columns of R, contiguous; their squared norms), or None when not worth it."""
    if R.shape[1] <= dims or len(R) <= 8 * PRUNE_CANDIDATES:
        return None
    head = np.ascontiguousarray(R[:, :dims])
    return head, np.einsum("ij,ij->i", head, head)


def knn_sorted_pruned(Q: np.ndarray, R: np.ndarray, r_sq: np.ndarray, k: int, index: PruneIndex | None,
                      candidates: int = PRUNE_CANDIDATES) -> tuple[np.ndarray, np.ndarray]:
    """The same (indices, distances) as ``knn_sorted``, exact, for a few queries, through ``index``."""
    if index is None or k >= candidates:
        return knn_sorted(Q, R, r_sq, k)
    head, head_sq = index
    m = head.shape[1]
    idx_out = np.empty((len(Q), k), dtype=np.int64)
    dist_out = np.empty((len(Q), k), dtype=np.float32)
    for i, q in enumerate(np.asarray(Q, dtype=np.float32)):
        lower = head_sq - 2.0 * (head @ q[:m])
        part = np.argpartition(lower, candidates)
        cand = part[:candidates]
        full = r_sq[cand] - 2.0 * (R[cand] @ q)
        order = np.argsort(full, kind="stable")[:k]
        # proven when every point left out is at least as far, by its lower bound, as the k-th found
        if lower[part[candidates]] + float(q[:m] @ q[:m]) >= full[order[-1]] + float(q @ q):
            idx_out[i] = cand[order]
            dist_out[i] = np.sqrt(np.maximum(full[order] + float(q @ q), 0.0))
        else:
            idx_out[i : i + 1], dist_out[i : i + 1] = knn_sorted(q[None], R, r_sq, k)
    return idx_out, dist_out
