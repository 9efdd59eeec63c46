"""A correction changes the corrector's next predictions at once, and nobody else's."""

from __future__ import annotations

import pytest

from recognizer import feedback, serving

pytestmark = pytest.mark.django_db


def test_a_correction_changes_the_users_next_prediction(alice, bob, active_model, digit_png):
    png = digit_png(1)
    before = serving.predict_image(png, user=alice)
    wrong_guess = (before.digit + 5) % 10
    feedback.label_drawing(before.drawing, wrong_guess)  # "this is my way of writing a 6"
    assert serving.predict_image(png, user=alice).digit == wrong_guess
    assert serving.predict_image(png, user=bob).digit == before.digit
    assert serving.predict_image(png).digit == before.digit


def test_a_rejected_drawing_stops_counting(alice, active_model, digit_png):
    png = digit_png(1)
    before = serving.predict_image(png, user=alice)
    feedback.label_drawing(before.drawing, (before.digit + 5) % 10)
    before.drawing.status = "rejected"
    before.drawing.save()
    assert serving.predict_image(png, user=alice).digit == before.digit


def test_personal_examples_are_cached_until_the_users_labels_change(alice, active_model, digit_png):
    serving.personal_examples.clear()
    first = serving.predict_image(digit_png(1), user=alice)
    feedback.label_drawing(first.drawing, 1)
    assert serving.personal_examples.get(alice)[1].tolist() == [1]
    cached = serving.personal_examples.get(alice)
    assert serving.personal_examples.get(alice)[0] is cached[0]  # same arrays: nothing re-read
    second = serving.predict_image(digit_png(7), user=alice)
    feedback.label_drawing(second.drawing, 7)
    assert sorted(serving.personal_examples.get(alice)[1].tolist()) == [1, 7]


def test_the_users_features_are_computed_once_per_model(alice, active_model, digit_png, monkeypatch):
    serving.personal_examples.clear()
    first = serving.predict_image(digit_png(1), user=alice)
    feedback.label_drawing(first.drawing, 1)
    serving.predict_image(digit_png(7), user=alice, store=False)
    entry = serving.personal_examples.entry(alice)
    assert set(entry.features) == {active_model.pk}
    calls = []
    estimator = serving.model_cache.get().estimator
    monkeypatch.setattr(estimator, "transform", lambda X, _real=estimator.transform: calls.append(len(X)) or _real(X))
    serving.predict_image(digit_png(7), user=alice, store=False)
    assert calls == [1]  # only the query itself; the user's drawing was not projected again


def test_a_correction_of_a_numbers_digit_changes_that_digit_in_the_users_next_number(alice, bob, fused_active_model):
    """Number mode reads each digit as a single drawing, the user's own drawings included."""
    import numpy as np

    from tests.test_api_numbers import written_number

    image, strokes = written_number("10")
    strokes = [np.array(s) for s in strokes]
    first = serving.predict_number(image, user=alice, strokes=strokes)
    wrong_guess = (first.digits[0].result.digit + 5) % 10
    feedback.label_drawing(first.digits[0].result.drawing, wrong_guess)  # "this is how I write a 6"
    again = serving.predict_number(image, user=alice, strokes=strokes, store=False)
    assert again.digits[0].result.digit == wrong_guess
    assert [d.result.digit for d in again.digits[1:]] == [d.result.digit for d in first.digits[1:]]
    assert serving.predict_number(image, user=bob, strokes=strokes, store=False).number == first.number
