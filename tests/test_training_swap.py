"""The swap: predictions running while versions are activated never fail and never mix two models."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from recognizer import services
from recognizer.ml import store


def activate_retrying(version, attempts: int = 50) -> None:
    """The test database is in-memory SQLite with table locks (a file or PostgreSQL database waits
    instead): an activation that meets a reader's lock is simply tried again."""
    import time

    from django.db import OperationalError

    for _ in range(attempts):
        try:
            services.activate_version(version)
            return
        except OperationalError:
            time.sleep(0.01)
    raise AssertionError("could not activate")


@pytest.mark.django_db(transaction=True)
def test_predictions_during_activations_never_fail_or_mix_models(settings, small_training_result, digit_png):
    data, result = small_training_result
    # Two models that cannot be confused: the second learned every label shifted by one.
    from recognizer.ml import model as ml_model

    other = ml_model.train_model(data.train_images / 255.0, (data.train_labels + 1) % 10, cv=False).estimator
    versions = []
    for estimator in (result.estimator, other):
        saved = store.save_model(estimator, {}, settings.RECOGNIZER_MODEL_DIR)
        versions.append(services.register_model(saved, kind="knn", data_source="x", metrics={}))
    services.activate_version(versions[0])
    services.model_cache.clear()
    image = digit_png(7)
    image28 = services.preprocess_upload(image)
    expected = {v.pk: est.predict_one(image28).probabilities for v, est in zip(versions, (result.estimator, other))}
    assert expected[versions[0].pk] != expected[versions[1].pk]

    services.predict_image(image)  # a serving worker has loaded its model before the swaps begin
    answers, errors, stop = [], [], threading.Event()

    def predict_until_stopped():
        from django.db import connection

        try:
            while not stop.is_set():
                answer = services.predict_image(image)
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
            activate_retrying(versions[(i + 1) % 2])
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert not errors
    assert {version for version, _ in answers} == {v.pk for v in versions}
    for version, probabilities in answers:
        assert np.allclose(probabilities, expected[version])
    services.model_cache.clear()
