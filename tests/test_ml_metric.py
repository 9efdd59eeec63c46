"""The learned metric's re-rank of the image k-NN's candidates (recognizer.ml.metric): the plain ranking at
weight 0, better on deformed digits, a fixed amount of work per query, and what a model file keeps."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from recognizer.ml import mnist
from recognizer.ml.metric import LearnedMetric, deformed_copies
from recognizer.ml.model import DigitClassifier
from recognizer.ml.preprocess import preprocess_drawing
from recognizer.ml.store import load_model, save_model
from tests.conftest import draw_digit_png


@pytest.fixture(scope="module")
def digits():
    return mnist.load_fallback_digits()


@pytest.fixture(scope="module")
def model(digits):
    return DigitClassifier().fit(digits.train_images / 255.0, digits.train_labels)


def shifted_and_thickened(img: np.ndarray, shift: int = 2, width: int = 3) -> np.ndarray:
    """The digit moved ``shift`` px down and left, its strokes grown by a ``width`` x ``width`` dilation."""
    return ndimage.grey_dilation(np.roll(img, (shift, -shift), axis=(0, 1)), size=(width, width))


def plain(est: DigitClassifier):
    """A copy of ``est`` that ranks its neighbours plainly (deformation budget 0)."""
    import copy

    out = copy.copy(est)
    out.metric_weight = 0.0
    return out


def test_zero_weight_is_the_plain_ranking(model, digits):
    Q = model.transform(digits.test_images[:100] / 255.0)
    idx, dist = model.kneighbors_features(Q, model.n_neighbors)
    at_zero = plain(model)
    got_idx, got_dist = at_zero.training_neighbours(Q, model.n_neighbors)
    assert (got_idx == idx).all()
    np.testing.assert_array_equal(got_dist, dist)
    # and the re-rank itself leaves the candidates' distances as they are
    cidx, cdist = model.kneighbors_features(Q, 32)
    np.testing.assert_array_equal(model.metric_.rerank(Q, model.train_features_[cidx], cdist, 0.0), cdist)
    # while at the model's weight the ranking moves for some queries (else the rest tests nothing)
    moved_idx, _d = model.training_neighbours(Q, model.n_neighbors)
    assert (moved_idx != idx).any()


def test_a_model_with_weight_zero_trains_no_metric(digits):
    est = DigitClassifier(metric_weight=0.0).fit(digits.train_images[:300] / 255.0, digits.train_labels[:300])
    assert est.metric_ is None
    Q = est.transform(digits.test_images[:20] / 255.0)
    idx, dist = est.kneighbors_features(Q, 4)
    got_idx, got_dist = est.training_neighbours(Q, 4)
    assert (got_idx == idx).all() and (got_dist == dist).all()


def test_the_rerank_reads_shifted_and_thickened_digits_better(model, digits):
    Xt, yt = digits.test_images / 255.0, digits.test_labels.astype(int)
    deformed = np.stack([shifted_and_thickened(x) for x in Xt])
    p_rerank, p_plain = model.predict_proba(deformed), plain(model).predict_proba(deformed)
    true = np.arange(len(yt)), yt
    assert p_rerank[true].mean() > p_plain[true].mean() + 0.002, (p_rerank[true].mean(), p_plain[true].mean())
    assert (p_rerank.argmax(1) == yt).mean() >= (p_plain.argmax(1) == yt).mean()


def test_a_hand_made_shifted_and_thickened_digit(model, digits):
    """A 7 drawn with two lines, preprocessed as an upload is, then moved and thickened. The plain ranking finds
    14 sevens among its 16 nearest training rows and gives the 7 about 0.74; the re-rank finds more sevens
    and is surer. (A drawn 0 or 1 is read with certainty either way: nothing to improve there.)"""
    img = shifted_and_thickened(preprocess_drawing(draw_digit_png(7)))
    y = digits.train_labels
    Q = model.transform(img[None])
    sevens_rerank = int((y[model.training_neighbours(Q, 16)[0][0]] == 7).sum())
    sevens_plain = int((y[plain(model).training_neighbours(Q, 16)[0][0]] == 7).sum())
    assert sevens_rerank > sevens_plain, (sevens_rerank, sevens_plain)
    p_rerank, p_plain = model.predict_proba(img[None])[0], plain(model).predict_proba(img[None])[0]
    assert p_rerank.argmax() == 7
    assert p_rerank[7] > p_plain[7], (p_rerank, p_plain)


def test_the_work_per_query_does_not_grow_with_the_training_rows(digits, monkeypatch):
    """Each query embeds itself and ``rerank_candidates`` candidates, whatever the number of training rows."""
    X, y = digits.train_images / 255.0, digits.train_labels
    embedded = []
    original = LearnedMetric.embed

    def counting(self, F):
        embedded.append(int(np.prod(np.shape(F)[:-1])))
        return original(self, F)

    sizes = {}
    for n in (400, len(y)):
        est = DigitClassifier(rerank_candidates=16).fit(X[:n], y[:n])
        monkeypatch.setattr(LearnedMetric, "embed", counting)
        embedded.clear()
        est.predict_proba(digits.test_images[:10] / 255.0)
        sizes[n] = sum(embedded)
        monkeypatch.setattr(LearnedMetric, "embed", original)
    assert sizes[400] == sizes[len(y)] == 10 * (1 + 16), sizes


def test_deformed_copies_stay_digits_of_the_same_size(digits):
    X = digits.train_images[:50] / 255.0
    D = deformed_copies(X, np.random.default_rng(0))
    assert D.shape == X.shape and D.dtype == np.float32
    assert 0.0 <= D.min() and D.max() <= 1.0
    assert not np.allclose(D, X)
    ink, ink_d = X.sum(axis=(1, 2)), D.sum(axis=(1, 2))
    assert np.all(ink_d > 0.4 * ink) and np.all(ink_d < 2.5 * ink)


def test_the_metric_survives_the_model_file_and_refuses_a_bad_weight(model, digits, tmp_path):
    saved = save_model(model, {}, tmp_path)
    loaded = load_model(saved.path)
    X = digits.test_images[:50] / 255.0
    np.testing.assert_allclose(loaded.predict_proba(X), model.predict_proba(X), atol=1e-6)
    Q = model.transform(X[:2])
    cidx, cdist = model.kneighbors_features(Q, 8)
    with pytest.raises(ValueError, match="between 0 and 1"):
        model.metric_.rerank(Q, model.train_features_[cidx], cdist, 1.5)


def test_models_saved_before_the_metric_rank_plainly(model, digits):
    state = model.__getstate__()
    for key in ("metric_", "metric_weight", "rerank_candidates", "metric_deformations"):
        state.pop(key)
    old = DigitClassifier.__new__(DigitClassifier)
    old.__setstate__(state)
    assert old.metric_ is None and old.get_params()["metric_weight"] == 0.0
    X = digits.test_images[:50] / 255.0
    np.testing.assert_allclose(old.predict_proba(X), plain(model).predict_proba(X), atol=1e-6)


def test_subnormal_weights_are_zeroed_and_the_embedding_is_the_same():
    """Subnormal weights (which Adam leaves, and which the CPU multiplies slowly) are stored as 0, in a new
    metric and in one unpickled from a file written before, and the embedding does not change."""
    import pickle

    rng = np.random.default_rng(0)
    W1, b1 = rng.standard_normal((6, 8)).astype(np.float32), rng.standard_normal(8).astype(np.float32)
    W2 = rng.standard_normal((8, 5)).astype(np.float32)
    W2[::2, ::2] = np.float32(1e-39)  # subnormal
    assert np.abs(W2[0, 0]) < np.finfo(np.float32).tiny and W2[0, 0] != 0
    F = rng.standard_normal((4, 6)).astype(np.float32)
    h = np.maximum(F / 2.0 @ W1 + b1, 0.0)
    expected = np.maximum(h @ W2, 0.0)
    metric = LearnedMetric([(W1, b1), (W2, np.zeros(5, np.float32))], scale=2.0)
    stored = metric.__dict__ | {"layers": [(W1, b1), (W2, np.zeros(5, np.float32))]}  # as an older file holds it
    loaded = pickle.loads(pickle.dumps(metric))
    loaded.__setstate__(stored)
    for m in (metric, loaded):
        assert (m.layers[1][0][::2, ::2] == 0).all() and (m.layers[1][0][1::2] != 0).all()
        np.testing.assert_allclose(m.embed(F), expected, rtol=1e-6)
