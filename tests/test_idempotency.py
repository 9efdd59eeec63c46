"""Pressing Predict twice stores one drawing: POST /api/v1/predict with an Idempotency-Key (one per drawing
attempt, as the page and the desktop client send) returns the first answer for the same user and key."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from recognizer import idempotency, tasks
from recognizer.models import Drawing, PredictRequest
from tests.test_api import client_for, data_url

PREDICT = "/api/v1/predict"
# Each test starts with no throttle counts left over from earlier tests.
pytestmark = pytest.mark.usefixtures("fresh_throttles")




def predict(client, png: bytes, key: str | None = None, **body):
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key is not None else {}
    return client.post(PREDICT, {"image": data_url(png), **body}, format="json", **headers)


@pytest.mark.django_db
def test_the_same_key_twice_stores_one_drawing_and_returns_the_first_answer(alice, active_model, digit_png):
    client = client_for(alice)
    first = predict(client, digit_png(1), "attempt-1")
    second = predict(client, digit_png(1), "attempt-1")
    assert first.status_code == second.status_code == 200
    assert second.json() == first.json()
    assert "Idempotent-Replayed" not in first and second["Idempotent-Replayed"] == "true"
    assert Drawing.objects.filter(user=alice).count() == 1
    assert second.json()["drawing"] == Drawing.objects.get(user=alice).pk


@pytest.mark.django_db
def test_each_new_key_stores_a_new_drawing(alice, active_model, digit_png):
    client = client_for(alice)
    answers = [predict(client, digit_png(1), f"attempt-{i}").json()["drawing"] for i in range(3)]
    assert len(set(answers)) == 3 and Drawing.objects.filter(user=alice).count() == 3


@pytest.mark.django_db
def test_without_a_key_every_request_stores_as_before(alice, active_model, digit_png):
    client = client_for(alice)
    predict(client, digit_png(1))
    predict(client, digit_png(1))
    assert Drawing.objects.filter(user=alice).count() == 2


@pytest.mark.django_db
def test_the_same_key_with_another_drawing_is_refused_and_nothing_more_is_stored(alice, active_model, digit_png):
    client = client_for(alice)
    predict(client, digit_png(1), "attempt-1")
    response = predict(client, digit_png(7), "attempt-1")
    assert response.status_code == 422
    assert response.json()["code"] == "idempotency_key_reused"
    assert "new key" in response.json()["detail"]
    assert Drawing.objects.filter(user=alice).count() == 1


@pytest.mark.django_db
def test_other_strokes_with_the_same_key_are_another_drawing(alice, active_model, digit_png):
    client = client_for(alice)
    strokes = [[[140, 56, 0], [140, 224, 300]]]
    predict(client, digit_png(1), "attempt-1", strokes=strokes)
    assert predict(client, digit_png(1), "attempt-1", strokes=strokes).status_code == 200
    assert predict(client, digit_png(1), "attempt-1", strokes=[[[140, 50, 0], [141, 230, 300]]]).status_code == 422


@pytest.mark.django_db
def test_keys_are_per_user(alice, bob, active_model, digit_png):
    mine = predict(client_for(alice), digit_png(1), "same-key").json()
    theirs = predict(client_for(bob), digit_png(1), "same-key").json()
    assert mine["drawing"] != theirs["drawing"]
    assert Drawing.objects.get(pk=theirs["drawing"]).user == bob


@pytest.mark.django_db
def test_after_the_window_the_same_key_stores_again(alice, active_model, digit_png, settings):
    settings.RECOGNIZER_IDEMPOTENCY_SECONDS = 60
    client = client_for(alice)
    first = predict(client, digit_png(1), "attempt-1").json()
    PredictRequest.objects.update(created_at=timezone.now() - timedelta(seconds=61))
    second = predict(client, digit_png(1), "attempt-1")
    assert second.status_code == 200 and "Idempotent-Replayed" not in second
    assert second.json()["drawing"] != first["drawing"]
    assert PredictRequest.objects.count() == 1  # the expired claim gave way to the new one


@pytest.mark.django_db
def test_expired_answers_are_purged(alice, active_model, digit_png, settings):
    settings.RECOGNIZER_IDEMPOTENCY_SECONDS = 60
    client = client_for(alice)
    predict(client, digit_png(1), "old")
    PredictRequest.objects.update(created_at=timezone.now() - timedelta(seconds=61))
    predict(client, digit_png(1), "new")
    assert tasks.purge_predict_requests() == 1
    assert list(PredictRequest.objects.values_list("key", flat=True)) == ["new"]
    assert Drawing.objects.filter(user=alice).count() == 2  # the drawings stay


@pytest.mark.django_db
def test_a_live_preview_does_not_use_up_the_key(alice, active_model, digit_png):
    client = client_for(alice)
    preview = predict(client, digit_png(1), "attempt-1", store=False)
    assert preview.json()["drawing"] is None
    stored = predict(client, digit_png(1), "attempt-1")
    assert stored.json()["drawing"] is not None and "Idempotent-Replayed" not in stored


@pytest.mark.django_db
def test_an_anonymous_caller_may_send_a_key_and_nothing_is_stored(active_model, digit_png):
    response = predict(APIClient(), digit_png(1), "attempt-1")
    assert response.status_code == 200 and response.json()["drawing"] is None
    assert not Drawing.objects.exists() and not PredictRequest.objects.exists()


@pytest.mark.django_db
def test_a_failed_request_leaves_the_key_free(alice, active_model, digit_png, empty_png):
    client = client_for(alice)
    assert predict(client, empty_png, "attempt-1").status_code == 422
    assert not PredictRequest.objects.exists()
    assert predict(client, digit_png(1), "attempt-1").status_code == 200
    assert Drawing.objects.filter(user=alice).count() == 1


@pytest.mark.django_db
def test_a_number_sent_twice_stores_its_digits_once(alice, active_model, digit_png):
    from tests.test_api_numbers import number_png

    client = client_for(alice)
    first = predict(client, number_png("17"), "number-1", mode="number")
    second = predict(client, number_png("17"), "number-1", mode="number")
    assert first.status_code == 200 and second.json() == first.json()
    assert Drawing.objects.filter(user=alice).count() == len(first.json()["digits"]) >= 2


@pytest.mark.django_db
@pytest.mark.parametrize("key", ["", " ", "x" * 256, "naïve", "two words"])
def test_a_malformed_key_is_a_400(alice, active_model, digit_png, key):
    response = predict(client_for(alice), digit_png(1), key)
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_idempotency_key"
    assert not Drawing.objects.exists()


@pytest.mark.django_db
def test_deleting_the_drawing_forgets_the_stored_answer(alice, active_model, digit_png):
    client = client_for(alice)
    drawing = predict(client, digit_png(1), "attempt-1").json()["drawing"]
    assert client.delete(f"/api/v1/drawings/{drawing}").status_code == 204
    assert not PredictRequest.objects.exists()
    again = predict(client, digit_png(1), "attempt-1")
    assert again.status_code == 200 and again.json()["drawing"] != drawing


@pytest.mark.django_db
def test_a_request_that_loses_the_race_for_its_key_replays_the_winners_answer(alice, active_model, digit_png,
                                                                               monkeypatch, settings):
    client = client_for(alice)
    winner = predict(client, digit_png(1), "racing-key")
    files = set((settings.MEDIA_ROOT / "drawings").rglob("*.png"))
    # The loser looked before the winner committed, so its first look found nothing.
    real_filter = PredictRequest.objects.filter
    monkeypatch.setattr(PredictRequest.objects, "filter", lambda *args, **kwargs: (
        PredictRequest.objects.none() if "created_at__gte" in kwargs else real_filter(*args, **kwargs)))
    loser = predict(client, digit_png(1), "racing-key")
    assert loser.status_code == 200 and loser.json() == winner.json() and loser["Idempotent-Replayed"] == "true"
    assert Drawing.objects.filter(user=alice).count() == 1
    # The key is claimed before anything is stored: the loser wrote no image file either.
    assert set((settings.MEDIA_ROOT / "drawings").rglob("*.png")) == files


@pytest.mark.django_db(transaction=True)
def test_two_requests_racing_with_one_key_store_one_drawing(alice, active_model, digit_png):
    """Both pass the first look before either commits: the database's unique (user, key) decides, the
    second waiting for the first to commit. Needs a database where each thread has its own connection
    (scripts/with-postgres); pytest-django's in-memory SQLite locks tables instead of waiting."""
    if connection.vendor == "sqlite":
        pytest.skip("in-memory SQLite cannot run two writers at once: run under scripts/with-postgres")
    png = digit_png(1)
    barrier = threading.Barrier(2)
    real_filter = PredictRequest.objects.filter
    answers = []

    def first_look_misses(*args, **kwargs):
        if kwargs.get("created_at__gte") is not None:
            barrier.wait(timeout=10)  # both requests have looked and found nothing
        return real_filter(*args, **kwargs)

    def send():
        try:
            answers.append(predict(client_for(alice), png, "racing-key"))
        finally:
            connection.close()

    PredictRequest.objects.filter = first_look_misses
    try:
        threads = [threading.Thread(target=send) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    finally:
        del PredictRequest.objects.filter
    assert [a.status_code for a in answers] == [200, 200]
    assert answers[0].json()["drawing"] == answers[1].json()["drawing"]
    assert sorted(a.get("Idempotent-Replayed", "") for a in answers) == ["", "true"]
    assert Drawing.objects.filter(user=alice).count() == 1


def test_the_fingerprint_tells_drawings_apart():
    assert idempotency.fingerprint(b"a", "digit", None) == idempotency.fingerprint(b"a", "digit", None)
    assert idempotency.fingerprint(b"a", "digit", None) != idempotency.fingerprint(b"a", "number", None)
    assert idempotency.fingerprint(b"a", "digit", None) != idempotency.fingerprint(b"b", "digit", None)
