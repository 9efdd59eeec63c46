"""The pruned single-query search returns exactly what the full search does, also when its bound fails."""

from __future__ import annotations

import numpy as np

from recognizer.ml import knn


def _data(n=6000, d=40, seed=0):
    rng = np.random.default_rng(seed)
    # decreasing variance per column, like principal components
    R = (rng.normal(size=(n, d)) * np.linspace(3, 0.2, d)).astype(np.float32)
    return R, np.einsum("ij,ij->i", R, R)


def test_pruned_search_equals_the_full_search():
    R, r_sq = _data()
    index = knn.prune_index(R, dims=12)
    Q = (np.random.default_rng(1).normal(size=(50, R.shape[1])) * np.linspace(3, 0.2, R.shape[1])).astype(np.float32)
    idx, dist = knn.knn_sorted_pruned(Q, R, r_sq, 5, index, candidates=64)
    ref_idx, ref_dist = knn.knn_sorted(Q, R, r_sq, 5)
    assert np.array_equal(idx, ref_idx)
    assert np.allclose(dist, ref_dist, atol=1e-3)


def test_when_the_bound_cannot_prove_it_the_full_search_answers(monkeypatch):
    R, r_sq = _data()
    index = knn.prune_index(R, dims=2)  # two columns: a loose bound that fails
    calls = []
    full = knn.knn_sorted

    def counting(*args, **kwargs):
        calls.append(1)
        return full(*args, **kwargs)

    monkeypatch.setattr(knn, "knn_sorted", counting)
    Q = R[:10] + 0.01
    idx, _dist = knn.knn_sorted_pruned(Q, R, r_sq, 3, index, candidates=16)
    assert calls  # fell back at least once
    assert np.array_equal(idx, full(Q, R, r_sq, 3)[0])


def test_small_sets_are_not_indexed():
    R, _ = _data(n=100)
    assert knn.prune_index(R) is None
