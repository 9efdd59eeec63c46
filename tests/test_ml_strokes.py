"""Pen strokes: validation, resampling on tiny hand-made strokes, the stroke k-NN, and fusion with the
image model (which falls back to the image alone without strokes)."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

from recognizer.ml import strokes as st
from recognizer.ml.model import train_knn
from tests.stroke_helpers import digit_template, jittered, stroke_dataset

# --- validation


def test_parse_strokes_accepts_points_with_and_without_time():
    out = st.parse_strokes([[[0, 0, 0], [10, 5, 16.5]], [[3, 4]]])
    assert [a.shape for a in out] == [(2, 3), (1, 3)]
    assert out[0][1].tolist() == [10.0, 5.0, 16.5]
    assert out[1][0].tolist() == [3.0, 4.0, 0.0]  # a missing t is the point's index


@pytest.mark.parametrize("raw, message", [
    ("0,0,1", "must be a list"),
    ({"x": 1}, "must be a list"),
    ([[[0, 0, 0]]] * (st.MAX_STROKES + 1), "too many strokes"),
    ([[[0, 0, 0]] * (st.MAX_POINTS + 1)], "too many points"),
    ([[[0, float("nan"), 0]]], "finite"),
    ([[[float("inf"), 0, 0]]], "finite"),
    ([[[0, 1e9, 0]]], "out of range"),
    ([[["1", 0, 0]]], "must be a number"),
    ([[[True, 0, 0]]], "must be a number"),
    ([[[0, 0, 0, 0]]], "[x, y] or [x, y, t]"),
    ([[[0]]], "[x, y] or [x, y, t]"),
    ([[0, 0, 0]], "must be [x, y]"),
    ([[]], "no points"),
    ([], "no points"),
])
def test_parse_strokes_refuses_bad_input_with_a_clear_message(raw, message):
    with pytest.raises(st.InvalidStrokes, match=message.replace("[", r"\[").replace("]", r"\]")):
        st.parse_strokes(raw)


def test_strokes_round_trip_through_json():
    raw = [[[0.0, 0.0, 0.0], [10.0, 5.0, 16.0]], [[3.0, 4.0, 40.0]]]
    assert st.strokes_to_json(st.parse_strokes(raw)) == raw


# --- resampling and features


def test_resample_spaces_points_equally_along_the_path():
    # an L: 30 px down then 10 px right, 40 px of path -> 5 points every 10 px
    pts, pen_up = st.resample([np.array([[0, 0], [0, 30], [10, 30]], float)], 5)
    assert pts.tolist() == [[0, 0], [0, 10], [0, 20], [0, 30], [10, 30]]
    assert pen_up.tolist() == [0, 0, 0, 0, 0]


def test_resample_bridges_pen_ups_and_flags_them():
    # two 10 px strokes 10 px apart: the jump between them is path too, drawn with the pen up
    pts, pen_up = st.resample([np.array([[0, 0], [10, 0]], float), np.array([[20, 0], [30, 0]], float)], 7)
    assert np.allclose(pts[:, 0], [0, 5, 10, 15, 20, 25, 30])
    assert pen_up.tolist() == [0, 0, 0, 1, 0, 0, 0]


def test_a_single_point_resamples_to_that_point():
    pts, pen_up = st.resample([np.array([[4.0, 2.0]])], 3)
    assert pts.tolist() == [[4, 2]] * 3 and pen_up.tolist() == [0, 0, 0]


def test_features_ignore_position_and_size_but_not_direction():
    seven = digit_template(7)
    moved = [s * 3.0 + 100.0 for s in seven]
    backwards = [s[::-1] for s in seven[::-1]]
    f = st.stroke_features(seven)
    assert np.allclose(f, st.stroke_features(moved), atol=1e-5)
    assert not np.allclose(f, st.stroke_features(backwards), atol=1e-2)
    assert f.shape == (5 * st.STROKE_FEATURE_PARAMS["n_points"],)


# --- the stroke k-NN


def test_stroke_knn_reads_new_drawings_of_the_digits():
    X, y = stroke_dataset(per_digit=15, seed=0)
    Xt, yt = stroke_dataset(per_digit=8, seed=1)
    model = st.StrokeClassifier().fit(X, y)
    assert (model.predict(Xt) == yt).mean() >= 0.95
    proba = model.predict_proba(Xt[:3])
    assert proba.shape == (3, 10) and np.allclose(proba.sum(axis=1), 1.0)


def test_stroke_knn_extra_examples_count_for_that_query():
    X, y = stroke_dataset(per_digit=10, seed=0)
    model = st.StrokeClassifier().fit(X, y)
    weird = [np.array([[0, 0], [50, 50], [0, 100], [50, 150]], float)]  # a zigzag nobody taught it
    E = model.features([weird])
    assert model.predict_proba([weird], extra_features=E, extra_y=np.array([4]), extra_weight=3.0).argmax() == 4


def test_stroke_knn_refuses_bad_labels():
    X, _y = stroke_dataset(per_digit=1)
    with pytest.raises(ValueError, match="0-9"):
        st.StrokeClassifier().fit(X, np.full(len(X), 12))


# --- fusion with the image model


@pytest.fixture(scope="module")
def fused():
    """An image k-NN on blurry blobs that cannot tell 1 from 7, plus strokes that can."""
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 0.1, size=(200, 28, 28)).astype(np.float32)
    images[:, 8:20, 12:16] = 1.0  # every image is the same bar: the image model is a coin toss
    labels = np.array([1, 7] * 100)
    strokes = [jittered(int(d), rng) for d in labels]
    est = train_knn(images, labels, cv=False, strokes=strokes, stroke_weight=0.5).estimator
    # ranked plainly: the learned metric would learn which of these 200 noise patterns is a 1 and which a 7
    est.metric_weight = 0.0
    return est, images, labels


def test_fusion_reads_the_strokes_when_there_are_some(fused):
    est, images, _labels = fused
    rng = np.random.default_rng(5)
    for digit in (1, 7):
        p = est.predict_one(images[0], strokes=jittered(digit, rng))
        assert p.used_strokes and p.digit == digit


def test_without_strokes_the_answer_is_the_image_models_exactly(fused):
    est, images, _labels = fused
    p = est.predict_one(images[3])
    stroke_model, est.stroke_model_ = est.stroke_model_, None
    try:
        q = est.predict_one(images[3])
    finally:
        est.stroke_model_ = stroke_model
    assert not p.used_strokes and p.probabilities == q.probabilities


def test_batch_rows_without_strokes_keep_the_image_probabilities(fused):
    est, images, _labels = fused
    rng = np.random.default_rng(2)
    p_image = est.predict_proba(images[:3])
    other = 1 if p_image[1].argmax() == 7 else 7  # strokes of the digit the image model did not pick
    p = est.predict_proba(images[:3], strokes=[None, jittered(other, rng), []])
    assert np.allclose(p[0], p_image[0]) and np.allclose(p[2], p_image[2])
    assert not np.allclose(p[1], p_image[1])


def test_fused_probabilities_are_the_weighted_mean(fused):
    est, images, _labels = fused
    s = jittered(1, np.random.default_rng(3))
    p_image = est.predict_proba(images[:1])[0]
    p_strokes = est.stroke_model_.predict_proba([s])[0]
    p = est.predict_one(images[0], strokes=s).probabilities
    assert np.allclose(p, 0.5 * p_image + 0.5 * p_strokes)
    assert math.isclose(sum(p), 1.0, rel_tol=1e-6)


def test_a_model_trained_without_strokes_does_not_read_them():
    rng = np.random.default_rng(0)
    est = train_knn(rng.uniform(size=(40, 28, 28)), np.arange(40) % 10, cv=False).estimator
    assert not est.reads_strokes
    assert not est.predict_one(np.zeros((28, 28)) + 0.5, strokes=digit_template(1)).used_strokes


def test_stroke_entries_must_match_the_images():
    with pytest.raises(ValueError, match="stroke entries"):
        train_knn(np.zeros((4, 28, 28)) + 0.5, [1, 2, 3, 4], cv=False, strokes=[None])


def test_the_typical_stroke_distance_is_measured_at_fit_and_for_older_models_once_on_first_use():
    drawings, labels = stroke_dataset(per_digit=8)
    model = st.StrokeClassifier().fit(drawings, labels)
    measured = model.__dict__["typical_distance_"]
    assert measured is not None and measured > 0
    older = pickle.loads(pickle.dumps(model))
    del older.__dict__["typical_distance_"]  # a model saved before the measure
    assert older.typical_distance() == pytest.approx(measured)
    assert older.__dict__["typical_distance_"] == pytest.approx(measured)  # kept, not measured again
