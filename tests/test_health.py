"""/healthz reports the database, the model and the broker separately."""

from __future__ import annotations

import pytest
from django.db import DatabaseError

from recognizer import services


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
def test_healthz_is_503_and_says_why_when_no_model_is_active(client):
    services.model_cache.clear()
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["can_predict"] is False
    assert "train_model" in response.json()["model"]["error"]


@pytest.mark.django_db
def test_a_database_outage_keeps_the_loaded_model_serving(active_model, settings, monkeypatch, digit_png):
    first = services.predict_image(digit_png(1))
    settings.RECOGNIZER_MODEL_CHECK_SECONDS = 0.0

    def database_down(*args, **kwargs):
        raise DatabaseError("connection refused")

    monkeypatch.setattr(services.ModelVersion.objects, "filter", database_down)
    second = services.predict_image(digit_png(1))
    assert second.model_version == first.model_version == active_model.pk
    assert "database" in services.model_cache.last_error


@pytest.mark.django_db
def test_a_corrupt_new_version_leaves_the_previous_model_serving(active_model, settings, digit_png):
    services.predict_image(digit_png(1))
    broken = services.ModelVersion.objects.create(file="models/missing.joblib", sha256="0" * 64)
    services.ModelVersion.objects.filter(pk=active_model.pk).update(is_active=False)
    services.ModelVersion.objects.filter(pk=broken.pk).update(is_active=True)
    result = services.predict_image(digit_png(1))
    assert result.model_version == active_model.pk
    assert f"v{broken.pk}" in services.model_cache.last_error


@pytest.mark.django_db
def test_the_admin_says_when_the_last_good_model_is_serving_in_place_of_a_broken_one(admin_client, active_model,
                                                                                     digit_png):
    services.predict_image(digit_png(1))
    assert 'id="model-health"' not in admin_client.get("/admin/").content.decode()
    broken = services.ModelVersion.objects.create(file="models/missing.joblib", sha256="0" * 64)
    services.ModelVersion.objects.filter(pk=active_model.pk).update(is_active=False)
    services.ModelVersion.objects.filter(pk=broken.pk).update(is_active=True)
    html = admin_client.get("/admin/").content.decode()
    assert f"Serving v{active_model.pk}, the last good model." in html
    assert f"Model v{broken.pk} could not be loaded" in html


@pytest.mark.django_db
def test_the_admin_says_when_no_model_can_serve(admin_client):
    services.model_cache.clear()
    assert "No model can serve predictions" in admin_client.get("/admin/").content.decode()
