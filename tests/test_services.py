"""Service functions shared by the page, the API and the commands."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from recognizer import serving


def scribble_png(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    ink = (rng.random((56, 56)) > 0.6).astype(np.uint8) * 255
    image = Image.fromarray(ink, "L").resize((280, 280), Image.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.django_db
def test_a_scribble_far_from_every_known_digit_is_answered_as_unsure(active_model):
    answers = [serving.predict_image(scribble_png(seed)) for seed in range(5)]
    assert all(answer.uncertain for answer in answers)
    assert all(len(answer.top_two) == 2 for answer in answers)


@pytest.mark.django_db
def test_an_unfamiliar_drawing_is_unsure_even_with_a_confident_vote(settings):
    settings.RECOGNIZER_UNSURE_CONFIDENCE = 0.6
    confident = [0.0] * 10
    confident[3] = 1.0
    assert serving.is_uncertain(confident) is False
    assert serving.is_uncertain(confident, unfamiliar=True) is True


@pytest.mark.django_db
def test_anonymous_predictions_are_not_stored_and_a_users_are(active_model, alice, digit_png):
    assert serving.predict_image(digit_png(1)).drawing is None
    stored = serving.predict_image(digit_png(1), user=alice).drawing
    assert stored is not None and stored.user == alice and stored.model_version_id == active_model.pk
    assert len(bytes(stored.preprocessed)) == 784
    assert serving.predict_image(digit_png(1), user=alice, store=False).drawing is None
