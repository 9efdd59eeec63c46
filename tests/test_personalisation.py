"""A correction changes the corrector's next predictions at once, and nobody else's."""

from __future__ import annotations

import pytest

from recognizer import services, training

pytestmark = pytest.mark.django_db


def test_a_correction_changes_the_users_next_prediction(alice, bob, active_model, digit_png):
    png = digit_png(1)
    before = services.predict_image(png, user=alice)
    wrong_guess = (before.digit + 5) % 10
    services.label_drawing(before.drawing, wrong_guess)  # "this is my way of writing a 6"
    assert services.predict_image(png, user=alice).digit == wrong_guess
    assert services.predict_image(png, user=bob).digit == before.digit
    assert services.predict_image(png).digit == before.digit


def test_a_rejected_drawing_stops_counting(alice, active_model, digit_png):
    png = digit_png(1)
    before = services.predict_image(png, user=alice)
    services.label_drawing(before.drawing, (before.digit + 5) % 10)
    before.drawing.status = "rejected"
    before.drawing.save()
    assert services.predict_image(png, user=alice).digit == before.digit


def test_personal_examples_are_cached_until_the_users_labels_change(alice, active_model, digit_png,
                                                                   django_assert_max_num_queries):
    training.personal_examples.clear()
    first = services.predict_image(digit_png(1), user=alice)
    services.label_drawing(first.drawing, 1)
    assert training.personal_examples.get(alice)[1].tolist() == [1]
    cached = training.personal_examples.get(alice)
    assert training.personal_examples.get(alice)[0] is cached[0]  # same arrays: nothing re-read
    second = services.predict_image(digit_png(7), user=alice)
    services.label_drawing(second.drawing, 7)
    assert sorted(training.personal_examples.get(alice)[1].tolist()) == [1, 7]
