"""The approximate neighbour index keeps the exact search's contract, finds the true neighbours on
clustered data, answers the same every time, survives pickling, and copes with k above the row count.
Small synthetic data only: no data sets, a second or two."""

from __future__ import annotations

import gc
import os
import pickle
import subprocess
import sys
from pathlib import Path

import joblib
import numpy as np
import pytest

from recognizer.ml import ann  # faiss-cpu is in requirements.txt: a missing one fails here, never skips

ROOT = Path(__file__).resolve().parents[1]


def _log_of_a_first_faiss_import(first: str) -> str:
    """What a fresh process with the site's logging (settings.LOGGING: root at INFO on the console, as
    `manage.py train_model` has it) writes while ``first`` is imported and then faiss loads through
    recognizer.ml.ann. Logging is configured as django.setup() does first, before the apps (whose
    import brings in recognizer.ml) load, so ``first`` is the first import of either."""
    code = ("from django.conf import settings; from django.utils.log import configure_logging; "
            "configure_logging(settings.LOGGING_CONFIG, settings.LOGGING); "
            f"import {first}; from recognizer.ml import ann; ann._faiss(); "
            "import logging; print('level', logging.getLogger('faiss.loader').getEffectiveLevel())")
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "digitsite.settings.base", "DJANGO_LOG_LEVEL": "INFO"}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


def test_faiss_loader_info_lines_stay_out_of_the_site_log():
    # the control: faiss imported before recognizer.ml.ann logs its loader's INFO lines to the root handler
    # (if a faiss upgrade stops logging them, the quieting in recognizer/ml/ann.py can go)
    assert "INFO faiss.loader" in _log_of_a_first_faiss_import("faiss")
    out = _log_of_a_first_faiss_import("recognizer.ml.ann")
    assert "faiss.loader" not in out and "Loading faiss" not in out, out
    assert "level 30" in out  # WARNING: its warnings and errors still show


def _clustered(n=4000, d=24, clusters=40, seed=0):
    """Rows around cluster centres, with decreasing variance per column like principal components."""
    rng = np.random.default_rng(seed)
    scale = np.linspace(3, 0.3, d)
    centres = rng.normal(size=(clusters, d)) * scale * 3
    R = (centres[rng.integers(0, clusters, n)] + rng.normal(size=(n, d)) * scale).astype(np.float32)
    Q = (centres[rng.integers(0, clusters, 200)] + rng.normal(size=(200, d)) * scale).astype(np.float32)
    return R, Q


def _exact(Q, R, k):
    d2 = ((Q[:, None, :].astype(np.float64) - R[None].astype(np.float64)) ** 2).sum(-1)
    idx = np.argsort(d2, axis=1, kind="stable")[:, :k]
    return idx, np.sqrt(np.take_along_axis(d2, idx, axis=1))


@pytest.fixture(scope="module")
def built():
    R, Q = _clustered()
    return R, Q, ann.NeighbourIndex.build(R)


def test_search_keeps_the_exact_searchs_contract(built):
    R, Q, index = built
    idx, dist = index.search(Q, 4)
    assert idx.shape == dist.shape == (len(Q), 4)
    assert idx.dtype == np.int64 and dist.dtype == np.float32
    assert (idx >= 0).all() and (idx < len(R)).all()
    assert (np.diff(dist, axis=1) >= 0).all()  # nearest first
    # each distance is the euclidean distance of the row it names
    true = np.linalg.norm(R[idx].astype(np.float64) - Q[:, None, :], axis=2)
    assert np.allclose(dist, true, rtol=1e-4, atol=1e-3)
    assert all(len(set(row)) == 4 for row in idx)


def test_recall_on_clustered_data(built):
    R, Q, index = built
    idx, _ = index.search(Q, 4)
    ref, _ = _exact(Q, R, 4)
    recall = np.mean([len(np.intersect1d(a, b)) / 4 for a, b in zip(idx, ref)])
    assert recall >= 0.95, recall


def test_a_single_query_and_a_batch_agree(built):
    _R, Q, index = built
    idx, dist = index.search(Q[:5], 4)
    for i in range(5):
        one_idx, one_dist = index.search(Q[i], 4)  # a 1-D query is one row
        assert one_idx.shape == (1, 4)
        assert np.array_equal(one_idx[0], idx[i]) and np.allclose(one_dist[0], dist[i])


def test_the_same_rows_build_the_same_index(built):
    R, Q, index = built
    again = ann.NeighbourIndex.build(R)
    a, da = index.search(Q, 4)
    b, db = again.search(Q, 4)
    assert np.array_equal(a, b) and np.array_equal(da, db)
    assert pickle.dumps(index) == pickle.dumps(again)  # the graph itself, byte for byte


def test_pickle_and_joblib_round_trips(built, tmp_path):
    R, Q, index = built
    want = index.search(Q, 4)
    back = pickle.loads(pickle.dumps(index))
    assert len(back) == len(R) and back.dim == R.shape[1] and back.ef_search == index.ef_search
    got = back.search(Q, 4)
    assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
    joblib.dump(index, tmp_path / "index.joblib", compress=3)  # as recognizer.ml.store saves models
    got = joblib.load(tmp_path / "index.joblib").search(Q, 4)
    assert np.array_equal(got[0], want[0])


def test_k_above_the_row_count_returns_every_row():
    R, Q = _clustered(n=7, d=5, clusters=2)
    index = ann.NeighbourIndex.build(R)
    idx, dist = index.search(Q[:3], 10)
    assert idx.shape == dist.shape == (3, 7)
    ref_idx, ref_dist = _exact(Q[:3], R, 7)
    assert all(sorted(a) == list(range(7)) for a in idx)
    assert np.allclose(dist, ref_dist, rtol=1e-4, atol=1e-4)


def test_vectors_are_the_rows_and_outlive_the_index():
    R, _Q = _clustered(n=500, d=8)
    index = ann.NeighbourIndex.build(R)
    v = index.vectors
    assert v.shape == R.shape and np.array_equal(v, R)
    assert not v.flags.writeable
    head = v[:10, :3]
    del index, v
    gc.collect()
    assert np.array_equal(head, R[:10, :3])  # the view keeps the index's memory alive
    assert type(pickle.loads(pickle.dumps(head))) is np.ndarray


def test_a_walk_that_runs_short_is_answered_exactly(built, monkeypatch):
    R, Q, index = built
    real = index._raw_search

    def short(Qs, k, threads):  # what faiss returns when it finds fewer than k: id -1, distance inf
        sq, ids = real(Qs, k, threads)
        ids[0, -1], sq[0, -1] = -1, np.inf
        return sq, ids

    monkeypatch.setattr(index, "_raw_search", short)
    idx, dist = index.search(Q[:2], 4)
    ref_idx, ref_dist = _exact(Q[:1], R, 4)
    assert np.array_equal(idx[0], ref_idx[0]) and np.allclose(dist[0], ref_dist[0], rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("bad", [np.zeros((0, 4), np.float32), np.zeros(4, np.float32),
                                 np.array([[0.0, np.nan]], np.float32)])
def test_build_refuses_what_it_cannot_index(bad):
    with pytest.raises(ValueError):
        ann.NeighbourIndex.build(bad)


def test_search_refuses_the_wrong_width(built):
    _R, Q, index = built
    with pytest.raises(ValueError):
        index.search(Q[:, :3], 4)
    with pytest.raises(ValueError):
        index.search(Q, 0)


def test_extending_an_index_keeps_it_and_finds_the_new_rows():
    R, Q = _clustered(n=5000, seed=1)
    old = ann.NeighbourIndex.build(R[:4000])
    old_bytes, old_answers = pickle.dumps(old), old.search(Q, 4)
    grown = old.extended(R[4000:])
    assert len(grown) == len(R) and np.array_equal(grown.vectors, R)
    idx, _ = grown.search(Q, 4)
    ref, _ = _exact(Q, R, 4)
    recall = np.mean([len(np.intersect1d(a, b)) / 4 for a, b in zip(idx, ref)])
    assert recall >= 0.99, recall
    assert (idx >= 4000).any()  # the new rows are reachable through the graph
    # the index extended is left as it was: a model still serving reads it
    assert len(old) == 4000 and pickle.dumps(old) == old_bytes
    again = old.search(Q, 4)
    assert np.array_equal(again[0], old_answers[0]) and np.array_equal(again[1], old_answers[1])
    # the same graph and rows give the same graph, whether the index was just built or loaded from a file
    assert pickle.dumps(pickle.loads(old_bytes).extended(R[4000:])) == pickle.dumps(grown)
    assert len(old.extended(R[:0])) == 4000
    with pytest.raises(ValueError):
        old.extended(R[4000:, :3])


def _with_copies(seed=2):
    """300 distinct rows, each repeated 1-6 times, shuffled: (rows, the distinct vector of each row)."""
    rng = np.random.default_rng(seed)
    distinct, _Q = _clustered(n=300, d=12, clusters=10, seed=seed)
    which = rng.permutation(np.repeat(np.arange(300), rng.integers(1, 7, 300)))
    return distinct[which], which


def test_copies_share_a_node_and_each_comes_back_as_a_row():
    R, which = _with_copies()
    index = ann.NeighbourIndex.build(R)
    assert len(index) == len(R) and index.nodes == 300 and index.merges_copies
    assert np.array_equal(index.vectors, R) and not index.vectors.flags.writeable
    # a query on a stored vector gets every copy of it, in row order, then the next nearest rows
    for row in (0, 17, 123):
        copies = np.flatnonzero(which == which[row])
        idx, dist = index.search(R[row], len(copies) + 3)
        assert list(idx[0, :len(copies)]) == list(copies) and (dist[0, :len(copies)] == 0).all()
        assert (dist[0, len(copies):] > 0).all()
    # any k: the exact search's distances, each row named once, each distance that of the row it names
    Q = R[::7] + np.float32(0.05)
    for k in (1, 4, 9):
        idx, dist = index.search(Q, k)
        _ref, ref_dist = _exact(Q, R, k)
        assert idx.shape == (len(Q), k) and all(len(set(r)) == k for r in idx)
        assert np.allclose(dist, ref_dist, rtol=1e-4, atol=1e-4)
        assert np.allclose(np.linalg.norm(R[idx] - Q[:, None, :], axis=2), dist, rtol=1e-4, atol=1e-4)
    back = pickle.loads(pickle.dumps(index))
    assert back.nodes == 300 and np.array_equal(back.search(Q, 9)[0], index.search(Q, 9)[0])


def test_extending_adds_a_node_only_for_a_vector_not_stored():
    R, which = _with_copies(seed=3)
    old = ann.NeighbourIndex.build(R[:1000])
    fresh = _clustered(n=5, d=12, seed=9)[0]
    new = np.concatenate([R[1000:], fresh, fresh[:2], R[:3]])  # copies of stored rows, of each other, and new
    grown = old.extended(new)
    rows = np.concatenate([R[:1000], new])
    assert len(grown) == len(R) + 10 and np.array_equal(grown.vectors, rows)
    assert grown.nodes == len(np.unique(rows, axis=0)) == old.nodes + 5 + (len(np.unique(R, axis=0)) - old.nodes)
    idx, dist = grown.search(fresh[:2], 3)  # each of the two twice, then something else
    assert sorted(idx[0, :2]) == [len(R) + 0, len(R) + 5] and (dist[:, :2] == 0).all()


def test_rows_whose_hashes_collide_stay_apart(monkeypatch):
    R, which = _with_copies(seed=4)
    monkeypatch.setattr(ann, "_row_hashes", lambda R, chunk=0: np.zeros(len(R), np.uint64))  # all collide
    firsts, at = ann._distinct_rows(R)
    # no row is taken for a copy of a different vector; copies of the first row's vector still share its node
    assert np.array_equal(R[firsts][at], R) and len(firsts) > len(np.unique(which))
    assert (at[which == which[0]] == 0).all()


def test_a_graph_saved_with_a_node_per_row_is_read_and_built_again_not_extended(monkeypatch):
    R, which = _with_copies(seed=5)
    import faiss

    flat = faiss.IndexHNSWFlat(R.shape[1], ann.HNSW_M)
    flat.add(R)  # a node per row, copies apart: as version 1 saved it
    old = pickle.loads(pickle.dumps(ann.NeighbourIndex(flat)))
    state = old.__getstate__()
    state.update(version=1)
    del state["node_of_row"]
    v1 = ann.NeighbourIndex.__new__(ann.NeighbourIndex)
    v1.__setstate__(state)
    assert len(v1) == v1.nodes == len(R) and not v1.merges_copies
    assert np.array_equal(v1.vectors, R)
    monkeypatch.setattr(ann, "ANN_MIN_ROWS", 10)
    graph, origin = ann.index_rows(np.concatenate([R, R[:5]]), v1)
    assert origin == "built" and graph.nodes == 300 and graph.merges_copies
    again, origin = ann.index_rows(np.concatenate([R, R[:5], R[5:9]]), graph)
    assert origin == "extended" and again.nodes == 300


def _recall(index, R, Q, k, ef):
    """Distance recall of the k nearest rows of R to queries Q at list ``ef``, against _exact."""
    _idx, exact = _exact(Q, R, k)
    index.ef_search = ef
    return float((index.search(Q, k)[1] <= exact[:, -1:] * (1 + 1e-5) + 1e-6).mean())


@pytest.mark.parametrize("k", [4, 32])
def test_the_search_list_is_the_shortest_that_finds_the_exact_neighbours(built, k):
    R, Q, _index = built
    easy = ann.NeighbourIndex.build(R)
    hard = ann.NeighbourIndex.build(R, m=4, ef_construction=8)  # few links: walks stop short
    short, long = ann.SEARCH_LISTS[0], ann.SEARCH_LISTS[-1]
    assert _recall(easy, R, Q, k, short) >= ann.LIST_RECALL > _recall(hard, R, Q, k, short)
    assert easy.tune_search_list(R, Q, k) == easy.ef_search == short
    assert hard.tune_search_list(R, Q, k, np.einsum("ij,ij->i", R, R)) == hard.ef_search == long
    with pytest.raises(ValueError, match="rows"):
        easy.tune_search_list(R[:-1], Q, k)
    with pytest.raises(ValueError, match="queries"):
        easy.tune_search_list(R, Q[:, :-1], k)
