"""/healthz reports the database, the model and the broker separately: whether each is up to anyone,
what went wrong to staff only (and the logs). A model file that will not load is read and logged once."""

from __future__ import annotations

import json
import logging

import pytest
from django.db import DatabaseError

from recognizer import modelfiles, serving
from recognizer.models import ModelVersion


@pytest.mark.django_db
def test_healthz_is_200_with_the_serving_version_when_a_model_is_active(client, active_model):
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["can_predict"] is True
    assert body["model"] == {"ok": True, "version": active_model.pk}
    assert body["database"] == {"ok": True}
    assert body["broker"]["ok"] is True


@pytest.mark.django_db
def test_healthz_is_503_and_tells_staff_why_when_no_model_is_active(client, admin_client):
    serving.model_cache.clear()
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["can_predict"] is False
    assert response.json()["model"] == {"ok": False, "status": "unavailable"}
    assert "train_model" in admin_client.get("/healthz").json()["model"]["error"]


def break_the_active_model(active_model, digit_png) -> ModelVersion:
    """Serve the good model, then activate a version whose file is missing (as another process would)."""
    serving.predict_image(digit_png(1))
    broken = ModelVersion.objects.create(file="models/missing.joblib", sha256="0" * 64)
    ModelVersion.objects.filter(pk=active_model.pk).update(is_active=False)
    ModelVersion.objects.filter(pk=broken.pk).update(is_active=True)
    return broken


@pytest.mark.django_db
def test_anyone_sees_whether_each_part_is_up_but_not_the_error_text(client, active_model, digit_png, caplog):
    break_the_active_model(active_model, digit_png)
    with caplog.at_level(logging.WARNING, logger="recognizer.health"):
        response = client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["model"] == {"ok": True, "version": active_model.pk, "status": "degraded"}
    assert "missing.joblib" not in json.dumps(body) and "/" not in json.dumps(body)
    # The operator finds the details in the log.
    assert any("missing.joblib" in r.getMessage() for r in caplog.records)


@pytest.mark.django_db
def test_staff_see_what_went_wrong(admin_client, active_model, digit_png):
    broken = break_the_active_model(active_model, digit_png)
    body = admin_client.get("/healthz").json()
    assert body["model"]["status"] == "degraded"
    assert f"Model v{broken.pk} could not be loaded" in body["model"]["warning"]
    assert "missing.joblib" in body["model"]["warning"]


@pytest.mark.django_db
def test_a_database_error_is_generic_to_the_public(client, admin_client, monkeypatch):
    from recognizer import health

    def database_down():
        return {"ok": False, "status": "unavailable", "error": 'could not connect to server "db.internal" (10.0.0.5)'}

    monkeypatch.setattr(health, "database_state", database_down)
    assert client.get("/healthz").json()["database"] == {"ok": False, "status": "unavailable"}
    assert "db.internal" in admin_client.get("/healthz").json()["database"]["error"]


@pytest.mark.django_db
def test_a_broken_model_file_is_read_and_logged_once_not_at_every_check(active_model, settings, digit_png,
                                                                         monkeypatch, caplog):
    settings.RECOGNIZER_MODEL_CHECK_SECONDS = 0.0
    settings.RECOGNIZER_MODEL_RETRY_SECONDS = 3600
    loads = []
    real_fetch = modelfiles.local_copy
    monkeypatch.setattr(modelfiles, "local_copy", lambda *a, **k: loads.append(a[0]) or real_fetch(*a, **k))
    with caplog.at_level(logging.ERROR, logger="recognizer.serving"):
        broken = break_the_active_model(active_model, digit_png)
        for _ in range(20):
            assert serving.predict_image(digit_png(1)).model_version == active_model.pk
    assert loads.count(broken.file) == 1
    assert len([r for r in caplog.records if f"v{broken.pk}" in r.getMessage()]) == 1
    assert f"v{broken.pk}" in serving.model_cache.last_error  # still reported


@pytest.mark.django_db
def test_a_broken_model_file_is_tried_again_after_the_back_off(active_model, settings, digit_png, monkeypatch):
    settings.RECOGNIZER_MODEL_RETRY_SECONDS = 600
    broken = break_the_active_model(active_model, digit_png)
    serving.predict_image(digit_png(1))
    loads = []
    real_fetch = modelfiles.local_copy
    monkeypatch.setattr(modelfiles, "local_copy", lambda *a, **k: loads.append(a[0]) or real_fetch(*a, **k))
    serving.predict_image(digit_png(1))
    assert loads == []
    now = serving.time.monotonic()
    monkeypatch.setattr(serving.time, "monotonic", lambda: now + 601)
    serving.predict_image(digit_png(1))
    assert loads == [broken.file]


@pytest.mark.django_db
def test_a_broken_version_made_active_again_is_tried_again(active_model, settings, digit_png, monkeypatch):
    settings.RECOGNIZER_MODEL_RETRY_SECONDS = 3600
    broken = break_the_active_model(active_model, digit_png)
    serving.predict_image(digit_png(1))
    # Staff roll back to the good version, then someone activates the broken one again.
    ModelVersion.objects.filter(pk=broken.pk).update(is_active=False)
    ModelVersion.objects.filter(pk=active_model.pk).update(is_active=True)
    serving.predict_image(digit_png(1))
    assert serving.model_cache.last_error == ""
    loads = []
    real_fetch = modelfiles.local_copy
    monkeypatch.setattr(modelfiles, "local_copy", lambda *a, **k: loads.append(a[0]) or real_fetch(*a, **k))
    ModelVersion.objects.filter(pk=active_model.pk).update(is_active=False)
    ModelVersion.objects.filter(pk=broken.pk).update(is_active=True)
    serving.predict_image(digit_png(1))
    assert loads == [broken.file]


@pytest.mark.django_db
def test_a_database_outage_keeps_the_loaded_model_serving(active_model, settings, monkeypatch, digit_png):
    first = serving.predict_image(digit_png(1))
    settings.RECOGNIZER_MODEL_CHECK_SECONDS = 0.0

    def database_down(*args, **kwargs):
        raise DatabaseError("connection refused")

    monkeypatch.setattr(ModelVersion.objects, "filter", database_down)
    second = serving.predict_image(digit_png(1))
    assert second.model_version == first.model_version == active_model.pk
    assert "database" in serving.model_cache.last_error


@pytest.mark.django_db
def test_a_corrupt_new_version_leaves_the_previous_model_serving(active_model, settings, digit_png):
    serving.predict_image(digit_png(1))
    broken = ModelVersion.objects.create(file="models/missing.joblib", sha256="0" * 64)
    ModelVersion.objects.filter(pk=active_model.pk).update(is_active=False)
    ModelVersion.objects.filter(pk=broken.pk).update(is_active=True)
    result = serving.predict_image(digit_png(1))
    assert result.model_version == active_model.pk
    assert f"v{broken.pk}" in serving.model_cache.last_error


@pytest.mark.django_db
def test_the_admin_says_when_the_last_good_model_is_serving_in_place_of_a_broken_one(admin_client, active_model,
                                                                                     digit_png):
    serving.predict_image(digit_png(1))
    assert 'id="model-health"' not in admin_client.get("/admin/").content.decode()
    broken = ModelVersion.objects.create(file="models/missing.joblib", sha256="0" * 64)
    ModelVersion.objects.filter(pk=active_model.pk).update(is_active=False)
    ModelVersion.objects.filter(pk=broken.pk).update(is_active=True)
    html = admin_client.get("/admin/").content.decode()
    assert f"Serving v{active_model.pk}, the last good model." in html
    assert f"Model v{broken.pk} could not be loaded" in html


@pytest.mark.django_db
def test_the_admin_says_when_no_model_can_serve(admin_client):
    serving.model_cache.clear()
    assert "No model can serve predictions" in admin_client.get("/admin/").content.decode()
