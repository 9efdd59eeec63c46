"""Helpers for the feedback-loop tests: drawings made straight from 28x28 images, tiny training data."""

from __future__ import annotations

import io

import numpy as np
import pytest
from django.core.files.base import ContentFile
from django.utils import timezone
from PIL import Image

from recognizer.ml import preprocess as ml_preprocess
from recognizer.models import Drawing


def _tiny_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (28, 28)).save(buffer, format="PNG")
    return buffer.getvalue()


# The stored canvas image is not used by training, which reads `preprocessed`.
TINY_PNG = _tiny_png()


def make_drawing(user, image28: np.ndarray, label: int | None, *, predicted: int | None = None,
                 status: str = Drawing.Status.PENDING, confidence: float = 0.5) -> Drawing:
    image = np.asarray(image28, np.float32)
    if image.max() > 1.0:
        image = image / 255.0
    drawing = Drawing(
        user=user, preprocessed=ml_preprocess.to_uint8(image),
        predicted_digit=(label or 0) if predicted is None else predicted, confidence=confidence,
        probabilities=[0.1] * 10, label=label, labelled_at=timezone.now() if label is not None else None,
        status=status,
    )
    drawing.image.save("d.png", ContentFile(TINY_PNG), save=False)
    drawing.save()
    return drawing


@pytest.fixture
def fallback_data():
    from recognizer.ml import mnist

    return mnist.load_fallback_digits()


@pytest.fixture
def tiny_training(settings, tmp_path):
    """Retrains use the bundled digits (no MNIST dir) without cross-validation: about a second each."""
    settings.MNIST_DIR = ""
    settings.RECOGNIZER_DATA_DIR = tmp_path / "no-data"
    settings.PENDIGITS_DIR = ""
    settings.RECOGNIZER_RETRAIN_CV = False
    settings.RECOGNIZER_HOLDOUT_SHARE = 0.5
    return settings
