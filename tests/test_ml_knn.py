"""The pruned single-query search returns exactly what the full search does, also when its bound fails; the
sampled selection of the k smallest distances takes what a whole-row partition takes."""

from __future__ import annotations

import numpy as np
import pytest

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


@pytest.mark.parametrize("copies", [False, True])
@pytest.mark.parametrize("k", [1, 5, 40])
def test_the_sampled_selection_takes_the_k_smallest_of_each_row(k, copies):
    rng = np.random.default_rng(k)
    D = rng.normal(size=(64, 20_000)).astype(np.float32)
    if copies:  # heaps of equal values, as distances to copied rows are
        D[:, 10_000:] = D[:, :10_000]
        D[::3, :] = np.round(D[::3, :], 1)
    D[5, :] = 1.0  # a row of ties only: the sample bounds nothing, the whole row is partitioned
    D[6, ::16] = 100.0  # a row whose sample misses its small values: many candidates, still right
    assert len(D[0]) >= 4 * knn._SAMPLE_STRIDE * k  # the sampled path, not the plain partition
    got = knn._k_smallest(D, k)
    assert got.shape == (len(D), k) and all(len(set(r)) == k for r in got)
    want = np.sort(np.partition(D, k - 1, axis=1)[:, :k], axis=1)
    assert np.array_equal(np.sort(np.take_along_axis(D, got, axis=1), axis=1), want)


def test_knn_sorted_over_many_rows_matches_a_plain_sort():
    rng = np.random.default_rng(3)
    R = rng.normal(size=(12_000, 6)).astype(np.float32)
    Q = rng.normal(size=(30, 6)).astype(np.float32)
    idx, dist = knn.knn_sorted(Q, R, np.einsum("ij,ij->i", R, R), 9)
    ref = np.sort(np.linalg.norm(Q[:, None, :] - R[None], axis=2), axis=1)[:, :9]
    assert np.allclose(dist, ref, atol=1e-4)
    assert np.allclose(np.linalg.norm(R[idx] - Q[:, None, :], axis=2), dist, atol=1e-4)
