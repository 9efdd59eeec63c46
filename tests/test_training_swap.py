"""The swap: predictions running while versions are activated never fail and never mix two models."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from recognizer import serving, versions
from recognizer.ml import store


def activate_retrying(version, attempts: int = 50) -> None:
    """The test database is in-memory SQLite with table locks (a file or PostgreSQL database waits
    instead): an activation that meets a reader's lock is simply tried again."""
    import time

    from django.db import OperationalError

    for _ in range(attempts):
        try:
            versions.activate(version)
            return
        except OperationalError:
            time.sleep(0.01)
    raise AssertionError("could not activate")


@pytest.mark.django_db(transaction=True)
def test_predictions_during_activations_never_fail_or_mix_models(settings, small_training_result, digit_png):
    data, result = small_training_result
    # Two models that cannot be confused: the second learned every label shifted by one.
    from recognizer.ml import model as ml_model

    other = ml_model.train_knn(data.train_images / 255.0, (data.train_labels + 1) % 10, cv=False).estimator
    stored = []
    for estimator in (result.estimator, other):
        saved = store.save_model(estimator, {}, settings.RECOGNIZER_MODEL_DIR)
        stored.append(versions.register_model(saved, kind="knn", data_source="x", metrics={}))
    versions.activate(stored[0])
    serving.model_cache.clear()
    image = digit_png(7)
    image28 = serving.preprocess_upload(image)
    expected = {v.pk: est.predict_one(image28).probabilities for v, est in zip(stored, (result.estimator, other))}
    assert expected[stored[0].pk] != expected[stored[1].pk]

    serving.predict_image(image)  # a serving worker has loaded its model before the swaps begin
    answers, errors, stop = [], [], threading.Event()

    def predict_until_stopped():
        from django.db import connection

        try:
            while not stop.is_set():
                answer = serving.predict_image(image)
                answers.append((answer.model_version, answer.probabilities))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=predict_until_stopped) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for i in range(20):
            activate_retrying(stored[(i + 1) % 2])
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert not errors
    assert {version for version, _ in answers} == {v.pk for v in stored}
    for version, probabilities in answers:
        assert np.allclose(probabilities, expected[version])
    serving.model_cache.clear()
