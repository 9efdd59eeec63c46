"""Staff API of the feedback loop: start a retrain, list runs, activate (roll back to) a version."""

from __future__ import annotations

from pathlib import Path

import pytest
from rest_framework.test import APIClient

from recognizer import serving, versions
from recognizer.models import ModelVersion, TrainingRun

pytestmark = [pytest.mark.django_db, pytest.mark.filterwarnings("ignore:WARNING. MNIST was NOT found:RuntimeWarning")]


def client_for(user=None) -> APIClient:
    client = APIClient()
    if user is not None:
        client.force_authenticate(user)
    return client


def test_staff_start_a_retrain_and_get_its_task_id(staff, tiny_training, active_model,
                                                  django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = client_for(staff).post("/api/v1/models/retrain")
    assert response.status_code == 202
    run = TrainingRun.objects.get()
    assert response.json()["task_id"] == run.task_id and response.json()["created"] is True
    assert run.started_by == staff and run.trigger == "staff"
    assert run.status in ("promoted", "not_promoted")  # eager Celery ran it on commit


def test_a_second_request_is_answered_with_the_running_ones_id(staff):
    first = client_for(staff).post("/api/v1/models/retrain").json()
    second = client_for(staff).post("/api/v1/models/retrain")
    assert second.status_code == 202
    assert second.json()["task_id"] == first["task_id"] and second.json()["created"] is False
    assert TrainingRun.objects.count() == 1


def test_users_who_are_not_staff_cannot_retrain(alice):
    assert client_for(alice).post("/api/v1/models/retrain").status_code == 403
    assert client_for().post("/api/v1/models/retrain").status_code == 401
    assert not TrainingRun.objects.exists()


def test_staff_list_training_runs(staff, alice):
    TrainingRun.objects.create(trigger="schedule", status="promoted", data_counts={"mnist_train": 10})
    response = client_for(staff).get("/api/v1/training-runs")
    assert response.status_code == 200
    assert response.json()["results"][0]["data_counts"] == {"mnist_train": 10}
    assert client_for(alice).get("/api/v1/training-runs").status_code == 403


def test_staff_roll_back_to_an_earlier_version(staff, active_model, small_training_result, settings):
    from recognizer.ml import store

    data, result = small_training_result
    newer = versions.register_model(store.save_model(result.estimator, {}, settings.RECOGNIZER_MODEL_DIR),
                                    kind="knn", data_source="x", metrics={})
    versions.activate(newer)
    response = client_for(staff).post(f"/api/v1/models/{active_model.pk}/activate")
    assert response.status_code == 200 and response.json()["is_active"] is True
    assert ModelVersion.objects.get(is_active=True).pk == active_model.pk
    assert serving.model_cache.get().version_id == active_model.pk


def test_a_corrupt_version_is_refused_with_a_json_error(staff, active_model, small_training_result, settings):
    from recognizer.ml import store

    data, result = small_training_result
    saved = store.save_model(result.estimator, {}, settings.RECOGNIZER_MODEL_DIR)
    broken = versions.register_model(saved, kind="knn", data_source="x", metrics={})
    (Path(settings.RECOGNIZER_MODEL_DIR) / broken.file).write_bytes(b"not a model")  # the published file
    response = client_for(staff).post(f"/api/v1/models/{broken.pk}/activate")
    assert response.status_code == 409 and "cannot be activated" in response.json()["detail"]
    assert response.json()["code"] == "model_unusable"
    assert ModelVersion.objects.get(is_active=True).pk == active_model.pk
    assert client_for(staff).post("/api/v1/models/99999/activate").status_code == 404


def test_users_who_are_not_staff_cannot_activate(alice, active_model):
    assert client_for(alice).post(f"/api/v1/models/{active_model.pk}/activate").status_code == 403
