"""Shared fixtures: named users (alice, bob, staff) and a small trained model that is active.

The model is trained once per test session on scikit-learn's bundled digits (in the MNIST
frame), so unit tests need no downloaded data.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

# Fixtures kept next to their helpers (tiny_training, fallback_data; redis_url, site), available to every
# test module without importing them (an imported fixture is a name ruff rightly calls unused).
pytest_plugins = ["tests.training_helpers", "tests.redis_helpers"]


@pytest.fixture
def fresh_throttles():
    """An empty cache around a test, so throttle counts from earlier tests do not refuse its requests."""
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def alice(django_user_model):
    return django_user_model.objects.create_user("alice", "alice@example.com", "alice-password-1")


@pytest.fixture
def bob(django_user_model):
    return django_user_model.objects.create_user("bob", "bob@example.com", "bob-password-1")


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_user("staff", "staff@example.com", "staff-password-1", is_staff=True)


@pytest.fixture(scope="session")
def small_training_result():
    """A k-NN trained on the bundled 8x8 digits, upscaled: seconds to train, good enough to test paths."""
    from recognizer.ml import mnist, model

    data = mnist.load_fallback_digits()
    return data, model.train_knn(data.train_images / 255.0, data.train_labels, cv=False)


@pytest.fixture(scope="session")
def fused_training_result(small_training_result):
    """conftest's image k-NN with a stroke k-NN attached (trained on hand-made trajectories of the ten
    digits), fused the way the default model is: the real model kind that reads strokes, in seconds."""
    import copy

    from recognizer.ml.strokes import StrokeClassifier
    from tests.stroke_helpers import stroke_dataset

    data, result = small_training_result
    estimator = copy.deepcopy(result.estimator)
    drawings, labels = stroke_dataset(per_digit=12)
    estimator.attach_stroke_model(StrokeClassifier().fit(drawings, labels), stroke_weight=0.6)
    return data, estimator


def _activate(settings, data, estimator):
    from recognizer import serving, versions
    from recognizer.ml import store

    saved = store.save_model(estimator, {"data_source": data.source}, settings.RECOGNIZER_MODEL_DIR)
    version = versions.register_model(saved, kind="knn", data_source=data.source, metrics={})
    versions.activate(version)
    serving.model_cache.clear()
    return version


@pytest.fixture
def active_model(db, settings, small_training_result):
    """A stored, registered and active model version, as the site would have after train_model
    (an image-only k-NN: it does not read strokes)."""
    from recognizer import serving

    data, result = small_training_result
    yield _activate(settings, data, result.estimator)
    serving.model_cache.clear()


@pytest.fixture
def fused_active_model(db, settings, fused_training_result):
    """Like active_model, but the model reads pen strokes too (image and stroke k-NN fused)."""
    from recognizer import serving

    yield _activate(settings, *fused_training_result)
    serving.model_cache.clear()


def draw_digit_png(digit: int = 1, size: int = 280, background=(0, 0, 0, 0), ink=(0, 0, 0, 255)) -> bytes:
    """A crude canvas drawing of 0, 1 or 7 as PNG bytes, drawn the way a browser canvas would."""
    image = Image.new("RGBA", (size, size), background)
    draw = ImageDraw.Draw(image)
    w = max(2, size // 14)
    s = size
    if digit == 1:
        draw.line([(s * 0.5, s * 0.2), (s * 0.5, s * 0.8)], fill=ink, width=w)
    elif digit == 7:
        draw.line([(s * 0.3, s * 0.2), (s * 0.7, s * 0.2), (s * 0.45, s * 0.8)], fill=ink, width=w, joint="curve")
    else:
        draw.ellipse([s * 0.3, s * 0.2, s * 0.7, s * 0.8], outline=ink, width=w)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def blank_png(size: int = 280) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGBA", (size, size), (0, 0, 0, 0)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def digit_png():
    return draw_digit_png


@pytest.fixture
def empty_png():
    return blank_png()


@pytest.fixture
def rng():
    return np.random.default_rng(0)
