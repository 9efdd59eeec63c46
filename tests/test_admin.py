"""Reviewing drawings, rolling back versions and starting retrains in the Django admin."""

from __future__ import annotations

import pytest
from django.urls import reverse

from recognizer import versions
from recognizer.models import Drawing, ModelVersion, TrainingRun
from tests.training_helpers import make_drawing

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_user(django_user_model):
    return django_user_model.objects.create_superuser("root", "root@example.com", "root-password-1")


@pytest.fixture
def admin_client_logged_in(client, admin_user):
    client.force_login(admin_user)
    return client


def test_the_drawing_list_shows_thumbnails_and_suspicious_first(admin_client_logged_in, alice, fallback_data):
    plain = make_drawing(alice, fallback_data.test_images[0], 3)
    odd = make_drawing(alice, fallback_data.test_images[1], 4)
    Drawing.objects.filter(pk=odd.pk).update(suspicious=True, suspicion_score=0.97)
    response = admin_client_logged_in.get(reverse("admin:recognizer_drawing_changelist"))
    html = response.content.decode()
    assert response.status_code == 200 and "data:image/png;base64," in html
    assert html.index(f"/drawing/{odd.pk}/change/") < html.index(f"/drawing/{plain.pk}/change/")


@pytest.mark.parametrize("query", ["status__exact=pending", "prediction=wrong", "label=3", "predicted_digit=3",
                                   "suspicious__exact=1", "q=alice"])
def test_the_drawing_list_filters_and_searches(admin_client_logged_in, alice, fallback_data, query):
    make_drawing(alice, fallback_data.test_images[0], 3, predicted=5)
    response = admin_client_logged_in.get(reverse("admin:recognizer_drawing_changelist") + "?" + query)
    assert response.status_code == 200


def test_the_detail_page_shows_the_drawing_and_what_the_model_saw(admin_client_logged_in, alice, fallback_data):
    drawing = make_drawing(alice, fallback_data.test_images[0], 3)
    html = admin_client_logged_in.get(reverse("admin:recognizer_drawing_change", args=[drawing.pk])).content.decode()
    assert "what the model saw (28x28)" in html.lower() and html.count("data:image/png;base64,") == 2


def change_form_data(drawing: Drawing, **changes) -> dict:
    data = {"label": "" if drawing.label is None else drawing.label, "status": drawing.status}
    return {**data, **changes}


def test_the_change_form_refuses_a_label_that_is_not_a_digit(admin_client_logged_in, alice, fallback_data):
    drawing = make_drawing(alice, fallback_data.test_images[0], 3)
    url = reverse("admin:recognizer_drawing_change", args=[drawing.pk])
    response = admin_client_logged_in.post(url, change_form_data(drawing, label=42))
    assert response.status_code == 200  # the form again, not a redirect
    assert response.context["adminform"].form.errors["label"] == ["Ensure this value is less than or equal to 9."]
    assert "Ensure this value is less than or equal to 9." in response.content.decode()
    drawing.refresh_from_db()
    assert drawing.label == 3 and drawing.reviewer is None

    response = admin_client_logged_in.post(url, change_form_data(drawing, label=8))
    assert response.status_code == 302
    drawing.refresh_from_db()
    assert drawing.label == 8 and drawing.reviewer is not None


def test_the_change_form_and_list_show_the_stroke_count(admin_client_logged_in, alice, fallback_data):
    drawing = make_drawing(alice, fallback_data.test_images[0], 3)
    Drawing.objects.filter(pk=drawing.pk).update(strokes=[[[1.0, 2.0, 0.0], [3.0, 4.0, 9.0]], [[5.0, 6.0, 20.0]]])
    html = admin_client_logged_in.get(reverse("admin:recognizer_drawing_change", args=[drawing.pk])).content.decode()
    assert "2 (3 points)" in html
    assert 'name="strokes"' not in html  # shown, never edited
    listing = admin_client_logged_in.get(reverse("admin:recognizer_drawing_changelist")).content.decode()
    assert "2 (3 points)" in listing


def test_bulk_approve_reject_and_relabel(admin_client_logged_in, admin_user, alice, fallback_data):
    a, b, c = (make_drawing(alice, fallback_data.test_images[i], 3) for i in range(3))
    url = reverse("admin:recognizer_drawing_changelist")
    admin_client_logged_in.post(url, {"action": "approve", "_selected_action": [a.pk]})
    admin_client_logged_in.post(url, {"action": "reject", "_selected_action": [b.pk]})
    admin_client_logged_in.post(url, {"action": "relabel_as_8", "_selected_action": [c.pk]})
    a.refresh_from_db(), b.refresh_from_db(), c.refresh_from_db()
    assert (a.status, b.status, c.status) == ("approved", "rejected", "approved")
    assert c.label == 8 and c.reviewer == admin_user and a.reviewed_at is not None


def test_staff_roll_back_from_the_admin(admin_client_logged_in, active_model, small_training_result, settings):
    from recognizer.ml import store

    data, result = small_training_result
    newer = versions.register_model(store.save_model(result.estimator, {}, settings.RECOGNIZER_MODEL_DIR),
                                    kind="knn", data_source="x", metrics={})
    versions.activate(newer)
    admin_client_logged_in.post(reverse("admin:recognizer_modelversion_changelist"),
                                {"action": "activate", "_selected_action": [active_model.pk]})
    assert ModelVersion.objects.get(is_active=True).pk == active_model.pk


def test_staff_start_a_retrain_from_the_admin(admin_client_logged_in):
    response = admin_client_logged_in.post(reverse("admin:recognizer_trainingrun_retrain"))
    assert response.status_code == 302
    run = TrainingRun.objects.get()
    assert run.trigger == "staff" and run.holds_lock
    page = admin_client_logged_in.get(reverse("admin:recognizer_trainingrun_changelist")).content.decode()
    assert "Retrain running" in page
    admin_client_logged_in.get(reverse("admin:recognizer_trainingrun_change", args=[run.pk]))


def test_a_user_who_is_not_staff_cannot_start_a_retrain(client, alice):
    client.force_login(alice)
    client.post(reverse("admin:recognizer_trainingrun_retrain"))
    assert not TrainingRun.objects.exists()
