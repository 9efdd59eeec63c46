"""The stroke k-NN searches through its own HNSW graph once it has recognizer.ml.ann.ANN_MIN_ROWS rows (lowered to
200 here), as the image k-NN does: it answers as the exact search does, its file holds the stroke vectors once,
and a refit that appends stroke rows extends the graph. Synthetic trajectories (a noisy template per digit):
no data set, a few seconds."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest

from recognizer.ml import ann, mnist, model
from recognizer.ml.knn import knn_sorted
from recognizer.ml.strokes import StrokeClassifier

SMALL = 200


def _templates(rng):
    return [rng.uniform(0, 100, size=(int(rng.integers(4, 9)), 2)) for _ in range(10)]


def _drawings(templates, labels, rng, noise=6.0):
    """One or two strokes per drawing: its digit's template polyline, every point moved, a random rotation."""
    out = []
    for y in labels:
        t = templates[int(y)]
        a = rng.normal(0, 0.15)
        rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        pts = (t - 50) @ rot.T * rng.uniform(0.8, 1.2) + 50 + rng.normal(0, noise, t.shape)
        cut = int(rng.integers(2, len(pts) - 1)) if rng.random() < 0.3 else len(pts)
        out.append([pts[:cut], pts[cut:]] if cut < len(pts) else [pts])
    return out


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(3)
    templates = _templates(rng)
    y = np.arange(900) % 10
    q = rng.integers(0, 10, size=150)
    return _drawings(templates, y, rng), y, _drawings(templates, q, rng), q, templates


@pytest.fixture(scope="module")
def fitted(data):
    drawings, y, *_ = data
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ann, "ANN_MIN_ROWS", SMALL)
        return StrokeClassifier().fit(drawings, y)


def _exact_copy(model_):
    exact = copy.copy(model_)
    exact.__dict__.update(neighbour_index_=None, neighbour_index_origin_=None)
    return exact


def test_a_large_stroke_model_searches_through_its_graph_and_votes_as_the_exact_search(fitted, data, monkeypatch):
    _drawings_, _y, queries, q, _t = data
    graph = fitted.neighbour_index_
    assert isinstance(graph, ann.NeighbourIndex) and fitted.neighbour_index_origin_ == "built"
    assert np.array_equal(graph.vectors, fitted.train_features_)
    calls = []
    real = graph.search
    monkeypatch.setattr(graph, "search", lambda Q, k, *a, **kw: calls.append(len(Q)) or real(Q, k, *a, **kw))
    exact = _exact_copy(fitted)
    through_graph, exactly = fitted.predict(queries), exact.predict(queries)
    assert calls == [len(queries)]
    assert (through_graph == exactly).mean() >= 0.98
    assert (exactly == q).mean() >= 0.9  # the templates are learnable: agreement is not agreement on noise
    # a user's own drawings stay on the exact search, merged with the graph's neighbours
    other = (int(through_graph[0]) + 1) % 10
    own = fitted.features(queries[:1] * 3)
    p = fitted.predict_proba(queries[:1], extra_features=own, extra_y=[other] * 3, extra_weight=5.0)
    assert int(p.argmax()) == other


def test_a_large_stroke_model_pickles_its_vectors_once(fitted, data):
    queries = data[2]
    state = fitted.__getstate__()
    assert "train_features_" not in state and "train_features_" in fitted.__dict__
    without = len(pickle.dumps(_exact_copy(fitted)))
    graph_bytes, vector_bytes = fitted.neighbour_index_.serialized_nbytes(), fitted.train_features_.nbytes
    assert len(pickle.dumps(fitted)) - without < graph_bytes - vector_bytes + 4096
    back = pickle.loads(pickle.dumps(fitted))
    assert np.array_equal(back.train_features_, fitted.train_features_) and not back.train_features_.flags.writeable
    np.testing.assert_allclose(back.predict_proba(queries), fitted.predict_proba(queries))


def test_a_refit_that_appends_stroke_rows_extends_the_stroke_graph(data, monkeypatch):
    """Through refit_knn, as a retrain in a kept feature space does: the image graph and the stroke graph are
    each extended when the previous model's rows come first, and built again when one is dropped."""
    drawings, y, queries, q, templates = data
    monkeypatch.setattr(ann, "ANN_MIN_ROWS", SMALL)
    digits = mnist.load_fallback_digits()
    n = 400
    images, labels = digits.train_images[:n] / 255.0, digits.train_labels[:n].astype(np.int64)
    strokes = _drawings(templates, labels, np.random.default_rng(5))
    est = model.train_knn(images, labels, cv=False, strokes=strokes, defaults={"pca_components": 20}).estimator
    old_graph = est.stroke_model_.neighbour_index_
    assert est.stroke_model_.neighbour_index_origin_ == "built" and len(old_graph) == n

    new_y = np.arange(60) % 10
    new = model.KnnRows(est.stroke_model_.features(_drawings(templates, new_y, np.random.default_rng(6))), new_y,
                        np.ones(60, np.float32), np.full(60, 7, np.int64), np.arange(5000, 5060))
    image_rows = model.knn_rows(est)
    grown = model.refit_knn(est, image_rows, model.knn_rows(est.stroke_model_) + new)
    strokes_now = grown.stroke_model_
    assert strokes_now.neighbour_index_origin_ == "extended" and len(strokes_now.neighbour_index_) == n + 60
    assert np.array_equal(strokes_now.neighbour_index_.vectors, strokes_now.train_features_)
    assert est.stroke_model_.neighbour_index_ is old_graph and len(old_graph) == n  # the serving model: untouched
    _idx, dist = strokes_now.kneighbors_features(new.features, 1)
    assert (dist[:, 0] < 1e-3).mean() >= 0.99  # each new row finds itself through the graph

    dropped = model.refit_knn(est, image_rows, model.knn_rows(est.stroke_model_).pick(np.arange(1, n)) + new)
    assert dropped.stroke_model_.neighbour_index_origin_ == "built"
    back = pickle.loads(pickle.dumps(grown))  # the whole model, both graphs, through one pickle
    np.testing.assert_allclose(back.predict_proba(images[:20], strokes=strokes[:20]),
                               grown.predict_proba(images[:20], strokes=strokes[:20]), rtol=1e-5)


def test_a_small_or_old_stroke_model_searches_exactly(data):
    drawings, y, queries, _q, _t = data
    assert len(y) < ann.ANN_MIN_ROWS
    small = StrokeClassifier().fit(drawings, y)
    assert small.neighbour_index_ is None and "train_features_" in small.__getstate__()
    Q = small.features(queries)
    idx, dist = small.kneighbors_features(Q, 3)
    ref_idx, ref_dist = knn_sorted(Q, small.train_features_, small.train_sq_, 3)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_allclose(dist, ref_dist, rtol=1e-5, atol=1e-5)
    old = copy.copy(small)  # a stroke model saved before the graph has neither attribute
    del old.__dict__["neighbour_index_"], old.__dict__["neighbour_index_origin_"]
    back = pickle.loads(pickle.dumps(old))
    np.testing.assert_array_equal(back.predict(queries), small.predict(queries))
