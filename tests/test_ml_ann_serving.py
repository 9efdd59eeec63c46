"""The served k-NN searches through its HNSW graph once the training set is large (recognizer.ml.ann.ANN_MIN_ROWS,
lowered to 200 here so the ~1,400 bundled digits count as large): it answers as the exact search does, its
model file holds the training vectors once, and a refit that appends rows extends the graph instead of
building it again. Small data only: a few seconds."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest

from recognizer.ml import ann, mnist, model, store
from recognizer.ml.knn import knn_sorted

SMALL = 200


@pytest.fixture(scope="module")
def digits():
    return mnist.load_fallback_digits()


@pytest.fixture(scope="module")
def fitted(digits):
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ann, "ANN_MIN_ROWS", SMALL)
        return model.DigitClassifier(n_components=30, n_neighbors=4).fit(digits.train_images / 255.0,
                                                                         digits.train_labels)


@pytest.fixture
def small_threshold(monkeypatch):
    monkeypatch.setattr(ann, "ANN_MIN_ROWS", SMALL)


def _exact_copy(est):
    """The same model searching exactly: its graph removed."""
    exact = copy.copy(est)
    exact.__dict__.update(neighbour_index_=None, neighbour_index_origin_=None)
    exact.__dict__.pop("_prune_index", None)
    return exact


def _new_rows(est, digits, n=100):
    images = digits.test_images[:n] / 255.0
    return model.KnnRows(est.transform(images), digits.test_labels[:n].astype(np.int64), np.ones(n, np.float32),
                         np.full(n, 7, np.int64), np.arange(1000, 1000 + n))


def test_a_large_model_searches_through_its_graph_and_votes_as_the_exact_search(fitted, digits, monkeypatch):
    graph = fitted.neighbour_index_
    assert isinstance(graph, ann.NeighbourIndex) and fitted.neighbour_index_origin_ == "built"
    assert len(graph) == len(fitted.train_features_) and np.array_equal(graph.vectors, fitted.train_features_)
    calls = []
    real = graph.search

    def spy(Q, k, *args, **kwargs):
        calls.append(len(Q))
        return real(Q, k, *args, **kwargs)

    monkeypatch.setattr(graph, "search", spy)
    X = digits.test_images / 255.0
    exact = _exact_copy(fitted)
    assert exact.neighbour_index_ is None and fitted.neighbour_index_ is graph
    agree = (fitted.predict(X) == exact.predict(X)).mean()
    assert agree >= 0.98, agree
    assert calls == [len(X)]  # a batch goes through the graph, not the exact matrix product
    one = fitted.predict_one(X[0])
    assert calls[-1] == 1 and 0 <= one.digit <= 9 and one.digit == exact.predict_one(X[0]).digit
    assert one.distance == pytest.approx(exact.predict_one(X[0]).distance, rel=1e-4)
    # personal examples stay on the exact search, merged with the graph's neighbours
    other = (one.digit + 1) % 10
    p = fitted.predict_proba(X[:1], extra_X=np.repeat(X[:1], 3, axis=0), extra_y=[other] * 3, extra_weight=5.0)
    assert int(p.argmax()) == other
    # the novelty threshold is measured through the graph too, and close to the exact one
    assert fitted.novelty_distance_ == pytest.approx(exact._typical_distance(), rel=0.02)


def test_a_fitted_model_tunes_its_graphs_search_list_for_the_neighbours_it_ranks(digits, small_threshold,
                                                                                 monkeypatch, tmp_path):
    asked = []
    tune = ann.NeighbourIndex.tune_search_list

    def spy(self, R, Q, k, *args, **kwargs):
        asked.append((len(R), len(Q), k))
        return tune(self, R, Q, k, *args, **kwargs)

    monkeypatch.setattr(ann.NeighbourIndex, "tune_search_list", spy)
    X, y = digits.train_images / 255.0, digits.train_labels
    reranked = model.DigitClassifier(n_components=30, n_neighbors=4, rerank_candidates=16).fit(X, y)
    plain = model.DigitClassifier(n_components=30, n_neighbors=4, metric_weight=0.0).fit(X, y)
    assert asked == [(len(y), 500, 16), (len(y), 500, 4)]  # the re-rank's candidates, or the vote's neighbours
    for est in (reranked, plain):
        assert est.neighbour_index_.ef_search in ann.SEARCH_LISTS
    saved = store.save_model(plain, {}, tmp_path)
    assert store.load_model(saved.path).neighbour_index_.ef_search == plain.neighbour_index_.ef_search
    # a refit from rows (no images to deform) searches with the full list, whatever its previous model's
    plain.neighbour_index_.ef_search = ann.SEARCH_LISTS[0]
    grown = model.refit_knn(plain, model.knn_rows(plain) + _new_rows(plain, digits))
    assert grown.neighbour_index_origin_ == "extended" and grown.neighbour_index_.ef_search == ann.EF_SEARCH
    assert plain.neighbour_index_.ef_search == ann.SEARCH_LISTS[0]  # the serving model's graph is left alone


def test_a_large_model_file_holds_the_training_vectors_once(fitted, digits, tmp_path):
    state = fitted.__getstate__()
    assert "train_features_" not in state and "train_sq_" in state and state["neighbour_index_"] is not None
    assert "train_features_" in fitted.__dict__  # the state is a copy: pickling leaves the live model whole
    with_graph, without = len(pickle.dumps(fitted)), len(pickle.dumps(_exact_copy(fitted)))
    graph_bytes, vector_bytes = fitted.neighbour_index_.serialized_nbytes(), fitted.train_features_.nbytes
    # the graph adds its links, not a second copy of the vectors (which would add vector_bytes more)
    assert with_graph - without < graph_bytes - vector_bytes + 4096, (with_graph, without, graph_bytes)

    X = digits.test_images[:60] / 255.0
    back = pickle.loads(pickle.dumps(fitted))
    assert np.array_equal(back.train_features_, fitted.train_features_) and not back.train_features_.flags.writeable
    np.testing.assert_array_equal(back.train_sq_, fitted.train_sq_)
    np.testing.assert_array_equal(back.predict(X), fitted.predict(X))
    # a loaded model pickles again without its view of the graph's vectors doubling up
    assert "train_features_" not in back.__getstate__() and abs(len(pickle.dumps(back)) - with_graph) < 1024

    saved = store.save_model(fitted, {}, tmp_path)  # joblib, as the site stores models
    loaded = store.load_model(saved.path)
    assert loaded.neighbour_index_origin_ == "built" and len(loaded.neighbour_index_) == len(fitted.train_features_)
    assert np.array_equal(loaded.train_features_, fitted.train_features_)
    np.testing.assert_allclose(loaded.predict_proba(X), fitted.predict_proba(X))
    assert loaded.predict_one(X[0]) == fitted.predict_one(X[0])


def test_a_refit_that_appends_rows_extends_the_graph_and_one_that_drops_a_row_builds_it(
        fitted, digits, small_threshold):
    graph = fitted.neighbour_index_
    probe = fitted.transform(digits.test_images[200:260] / 255.0)
    before = pickle.dumps(graph), graph.search(probe, 4)
    rows, new = model.knn_rows(fitted), _new_rows(fitted, digits)

    grown = model.refit_knn(fitted, rows + new)
    assert grown.neighbour_index_origin_ == "extended" and grown.neighbour_index_ is not graph
    assert len(grown.neighbour_index_) == len(rows) + len(new)
    assert np.array_equal(grown.neighbour_index_.vectors, grown.train_features_)
    idx, dist = grown.kneighbors_features(new.features, 1)
    assert (dist[:, 0] < 1e-3).mean() >= 0.99  # each new row finds itself through the graph
    # a model loaded from its file extends to the very same graph
    loaded = pickle.loads(pickle.dumps(fitted))
    assert pickle.dumps(model.refit_knn(loaded, rows + new).neighbour_index_) == pickle.dumps(grown.neighbour_index_)
    assert model.refit_knn(fitted, rows).neighbour_index_origin_ == "extended"  # the same rows: nothing to add

    dropped = model.refit_knn(fitted, rows.pick(np.arange(1, len(rows))) + new)
    assert dropped.neighbour_index_origin_ == "built"
    assert np.array_equal(dropped.neighbour_index_.vectors, dropped.train_features_)
    changed = copy.deepcopy(rows)
    changed.features[5] += 1.0
    assert model.refit_knn(fitted, changed + new).neighbour_index_origin_ == "built"
    # the previous model, still serving, is untouched
    assert fitted.neighbour_index_ is graph and pickle.dumps(graph) == before[0]
    after = graph.search(probe, 4)
    assert np.array_equal(after[0], before[1][0]) and np.array_equal(after[1], before[1][1])


def test_below_the_threshold_there_is_no_graph_and_the_search_is_exact(digits):
    X, y = digits.train_images / 255.0, digits.train_labels
    assert len(y) < ann.ANN_MIN_ROWS
    est = model.DigitClassifier(n_components=30, n_neighbors=4).fit(X, y)
    assert est.neighbour_index_ is None and est.neighbour_index_origin_ is None
    Q = est.transform(digits.test_images[:40] / 255.0)
    for q in (Q, Q[:3]):  # a batch and a few queries (the pruned search), both exact
        idx, dist = est.kneighbors_features(q, 4)
        ref_idx, ref_dist = knn_sorted(q, est.train_features_, est.train_sq_, 4)
        np.testing.assert_array_equal(idx, ref_idx)
        np.testing.assert_allclose(dist, ref_dist, rtol=1e-5, atol=1e-5)
    assert "train_features_" in est.__getstate__()
    back = pickle.loads(pickle.dumps(est))
    assert back.neighbour_index_ is None and back.train_features_.flags.writeable
    refit = model.refit_knn(est, model.knn_rows(est) + _new_rows(est, digits))
    assert refit.neighbour_index_ is None and refit.neighbour_index_origin_ is None


def test_a_model_saved_before_the_graph_loads_searches_exactly_and_refits(fitted, digits, small_threshold):
    old = _exact_copy(fitted)
    del old.__dict__["neighbour_index_"], old.__dict__["neighbour_index_origin_"]
    back = pickle.loads(pickle.dumps(old))
    assert not hasattr(back, "neighbour_index_")
    X = digits.test_images[:30] / 255.0
    np.testing.assert_array_equal(back.predict(X), old.predict(X))
    back.predict_one(X[0])
    refit = model.refit_knn(back, model.knn_rows(back) + _new_rows(back, digits))
    assert refit.neighbour_index_origin_ == "built"  # nothing to extend: the threshold is met, so a new graph
