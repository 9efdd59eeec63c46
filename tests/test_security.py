"""Hostile callers: CSRF on every form and session write, no way into another user's drawings, staff-only
endpoints closed to everyone else, throttled logins and predictions, weak passwords refused.

Complements tests/test_api.py and tests/test_accounts.py (which cover the single cases: predict without
CSRF, a 404 for someone else's drawing, the image view, each throttle alone); DEBUG off in production is
in tests/test_settings.py.
"""

from __future__ import annotations

import base64

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.test import Client
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from recognizer import serving
from recognizer.api import throttles
from recognizer.models import ModelVersion

pytestmark = pytest.mark.django_db

PASSWORDS = {"alice": "alice-password-1", "bob": "bob-password-1", "staff": "staff-password-1"}


@pytest.fixture(autouse=True)
def fresh_throttles():
    cache.clear()
    yield
    cache.clear()


def csrf_client(user=None) -> Client:
    """A browser that really checks CSRF (Django's test client skips it unless told), logged in if asked."""
    client = Client(enforce_csrf_checks=True)
    if user is not None:
        client.force_login(user)
    return client


def csrf_token(client: Client, page: str = "/") -> str:
    client.get(page)  # the drawing page sets the cookie (ensure_csrf_cookie)
    return client.cookies["csrftoken"].value


def png_payload(digit_png) -> dict:
    return {"image": "data:image/png;base64," + base64.b64encode(digit_png(1)).decode()}


# --- CSRF ----------------------------------------------------------------------------------------

FORMS = {
    "login": ("/accounts/login/", None, lambda: {"username": "alice", "password": PASSWORDS["alice"]}),
    "signup": ("/accounts/signup/", None, lambda: {"username": "carol", "email": "carol@example.com",
                                                   "password1": "a-long-pass-phrase-9",
                                                   "password2": "a-long-pass-phrase-9"}),
    "password change": ("/accounts/password_change/", "alice", lambda: {
        "old_password": PASSWORDS["alice"], "new_password1": "new-pass-phrase-42", "new_password2": "new-pass-phrase-42"}),
    "logout": ("/accounts/logout/", "alice", dict),
    "delete account": ("/accounts/delete/", "alice", lambda: {"password": PASSWORDS["alice"]}),
}


@pytest.mark.parametrize("form", sorted(FORMS))
def test_every_form_refuses_a_post_without_the_csrf_token(form, alice):
    url, who, data = FORMS[form]
    client = csrf_client(alice if who else None)
    response = client.post(url, data())
    assert response.status_code == 403
    assert b"CSRF" in response.content
    alice.refresh_from_db()
    assert alice.check_password(PASSWORDS["alice"])  # the password change did not happen
    assert not get_user_model().objects.filter(username="carol").exists()


@pytest.mark.parametrize("form", sorted(FORMS))
def test_every_form_accepts_the_same_post_with_the_csrf_token(form, alice):
    # The control for the test above: the 403 came from the missing token, not from the data.
    url, who, data = FORMS[form]
    client = csrf_client(alice if who else None)
    response = client.post(url, data(), HTTP_X_CSRFTOKEN=csrf_token(client))
    assert response.status_code == 302, response.content[:500]


def test_a_session_users_label_needs_the_csrf_token(alice, active_model, digit_png):
    drawing = serving.predict_image(digit_png(1), alice).drawing
    client = csrf_client(alice)
    url = f"/api/v1/drawings/{drawing.pk}/label"
    refused = client.post(url, {"label": 4}, content_type="application/json")
    assert refused.status_code == 403 and "CSRF" in refused.json()["detail"]
    drawing.refresh_from_db()
    assert drawing.label is None
    accepted = client.post(url, {"label": 4}, content_type="application/json", HTTP_X_CSRFTOKEN=csrf_token(client))
    assert accepted.status_code == 200
    drawing.refresh_from_db()
    assert drawing.label == 4


@pytest.mark.parametrize("url", ["/api/v1/models/retrain", "/api/v1/models/{version}/activate"])
def test_a_staff_sessions_writes_need_the_csrf_token(url, staff, active_model):
    client = csrf_client(staff)
    response = client.post(url.format(version=active_model.pk))
    assert response.status_code == 403 and "CSRF" in response.json()["detail"]
    assert not ModelVersion.objects.filter(is_active=True).exclude(pk=active_model.pk).exists()
    from recognizer.models import TrainingRun

    assert not TrainingRun.objects.exists()


def test_a_token_client_needs_no_csrf_token(alice, active_model, digit_png):
    # Tokens are not sent by browsers on their own, so CSRF does not apply to them (and must not block them).
    client = APIClient(enforce_csrf_checks=True)
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=alice).key}")
    assert client.post("/api/v1/predict", png_payload(digit_png), format="json").status_code == 200


# --- Another user's drawings -----------------------------------------------------------------------


def api_as(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=user)[0].key}")
    return client


def test_another_users_drawings_do_not_show_through_the_list_filters(alice, bob, active_model, digit_png):
    serving.predict_image(digit_png(1), alice)
    as_bob = api_as(bob)
    for query in ("", "?user=alice", "?label=1", "?predicted_digit=1", "?labelled=false", "?page_size=100"):
        response = as_bob.get(f"/api/v1/drawings{query}")
        assert response.status_code == 200
        assert response.json()["count"] == 0, query


def test_a_guessed_image_url_of_another_user_is_the_same_404_as_a_missing_one(alice, bob, active_model, digit_png):
    drawing = serving.predict_image(digit_png(1), alice).drawing
    body = api_as(alice).get(f"/api/v1/drawings/{drawing.pk}").json()
    assert "/media/" not in body["image_url"] and not body["image_url"].endswith(drawing.image.name)
    as_bob = api_as(bob)
    theirs, missing = as_bob.get(f"/drawings/{drawing.pk}/image.png"), as_bob.get("/drawings/999999/image.png")
    assert theirs.status_code == missing.status_code == 404
    assert theirs.content == missing.content and theirs["Content-Type"] == missing["Content-Type"]


def test_session_users_cannot_reach_another_users_drawing_either(alice, bob, active_model, digit_png):
    drawing = serving.predict_image(digit_png(1), alice).drawing
    client = csrf_client(bob)
    token = csrf_token(client)
    for response in (client.get(f"/api/v1/drawings/{drawing.pk}"),
                     client.post(f"/api/v1/drawings/{drawing.pk}/label", {"label": 3},
                                 content_type="application/json", HTTP_X_CSRFTOKEN=token),
                     client.get(f"/drawings/{drawing.pk}/image.png")):
        assert response.status_code == 404
    assert f'data-drawing="{drawing.pk}"' not in client.get("/drawings/").content.decode()
    drawing.refresh_from_db()
    assert drawing.label is None


def test_nothing_under_media_is_served_not_even_the_model_files(alice, active_model, digit_png, client):
    drawing = serving.predict_image(digit_png(1), alice).drawing
    client.force_login(alice)
    for path in (drawing.image.name, active_model.file, f"{active_model.file}.json", "models/", ""):
        assert client.get(f"/media/{path}").status_code == 404, path


# --- Staff-only endpoints ------------------------------------------------------------------------------

STAFF_ONLY = [("post", "/api/v1/models/retrain"), ("post", "/api/v1/models/{version}/activate"),
              ("get", "/api/v1/training-runs"), ("get", "/api/v1/training-runs/{run}")]


@pytest.fixture
def training_run(staff):
    from recognizer.models import TrainingRun

    return TrainingRun.objects.create(trigger="staff", started_by=staff, status="failed", error="test")


@pytest.mark.parametrize(("method", "url"), STAFF_ONLY)
def test_staff_only_endpoints_refuse_users_with_a_403(method, url, alice, active_model, training_run):
    url = url.format(version=active_model.pk, run=training_run.pk)
    with_token = getattr(api_as(alice), method)(url)
    session = APIClient()
    session.force_login(alice)
    with_session = getattr(session, method)(url)
    for response in (with_token, with_session):
        assert response.status_code == 403
        assert response.json()["code"] == "permission_denied"


@pytest.mark.parametrize(("method", "url"), STAFF_ONLY)
def test_staff_only_endpoints_refuse_anonymous_callers_with_a_401(method, url, active_model, training_run):
    response = getattr(APIClient(), method)(url.format(version=active_model.pk, run=training_run.pk))
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"


@pytest.mark.parametrize(("method", "url"), STAFF_ONLY[2:])
def test_staff_only_endpoints_answer_staff(method, url, staff, active_model, training_run):
    # The control: the same requests work for staff, so the 401/403 above are about who asks.
    assert getattr(api_as(staff), method)(url.format(run=training_run.pk)).status_code == 200


def test_a_user_who_is_made_staff_then_demoted_loses_access_at_once(alice):
    client = api_as(alice)
    alice.is_staff = True
    alice.save()
    assert client.get("/api/v1/training-runs").status_code == 200
    alice.is_staff = False
    alice.save()
    assert client.get("/api/v1/training-runs").status_code == 403


# --- Throttling ----------------------------------------------------------------------------------------


def test_the_login_form_and_the_token_endpoint_share_one_budget_per_address(alice, monkeypatch):
    # Otherwise an attacker doubles their guesses by alternating the two.
    monkeypatch.setattr(throttles.LoginThrottle, "rate", "3/minute", raising=False)
    form, api = Client(), APIClient()
    codes = [form.post("/accounts/login/", {"username": "alice", "password": "guess-1"}).status_code,
             api.post("/api/v1/auth/token", {"username": "alice", "password": "guess-2"}, format="json").status_code,
             form.post("/accounts/login/", {"username": "alice", "password": "guess-3"}).status_code,
             api.post("/api/v1/auth/token", {"username": "alice", "password": "guess-4"}, format="json").status_code,
             form.post("/accounts/login/", {"username": "alice", "password": "guess-5"}).status_code]
    assert codes == [200, 400, 200, 429, 429]


def test_a_throttled_login_with_the_right_password_does_not_log_in(alice, monkeypatch):
    monkeypatch.setattr(throttles.LoginThrottle, "rate", "1/minute", raising=False)
    client = Client()
    client.post("/accounts/login/", {"username": "alice", "password": "wrong"})
    right = client.post("/accounts/login/", {"username": "alice", "password": PASSWORDS["alice"]})
    assert right.status_code == 429
    assert "_auth_user_id" not in client.session
    token = APIClient().post("/api/v1/auth/token", {"username": "alice", "password": PASSWORDS["alice"]}, format="json")
    assert token.status_code == 429 and "token" not in token.json()


def test_the_login_throttle_counts_per_address(alice, monkeypatch):
    monkeypatch.setattr(throttles.LoginThrottle, "rate", "1/minute", raising=False)
    Client(REMOTE_ADDR="10.0.0.1").post("/accounts/login/", {"username": "alice", "password": "wrong"})
    assert Client(REMOTE_ADDR="10.0.0.1").post("/accounts/login/", {"username": "alice", "password": "x"}).status_code == 429
    assert Client(REMOTE_ADDR="10.0.0.2").post("/accounts/login/", {"username": "alice", "password": "x"}).status_code == 200


def test_a_user_and_an_anonymous_caller_each_meet_their_own_prediction_limit(alice, active_model, digit_png,
                                                                            monkeypatch):
    # Users are counted by account, anonymous callers by address; past either budget the answer is 429.
    monkeypatch.setattr(throttles.UserPredictThrottle, "rate", "2/minute", raising=False)
    monkeypatch.setattr(throttles.AnonPredictThrottle, "rate", "1/minute", raising=False)
    user, anonymous = api_as(alice), APIClient()
    codes = [user.post("/api/v1/predict", png_payload(digit_png), format="json").status_code for _ in range(3)]
    codes += [anonymous.post("/api/v1/predict", png_payload(digit_png), format="json").status_code for _ in range(2)]
    assert codes == [200, 200, 429, 200, 429]


# --- Passwords -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("password", "reason"), [("short-1", "too short"), ("password123", "too common"),
                                                  ("48151623429", "entirely numeric"),
                                                  ("carol-example", "too similar")])
def test_sign_up_refuses_a_weak_password(client, password, reason):
    response = client.post("/accounts/signup/", {"username": "carol-example", "email": "carol@example.com",
                                                 "password1": password, "password2": password})
    assert response.status_code == 200
    assert reason in response.content.decode()
    assert not get_user_model().objects.filter(username="carol-example").exists()


def test_a_password_change_refuses_a_weak_password(client, alice):
    client.force_login(alice)
    response = client.post("/accounts/password_change/", {"old_password": PASSWORDS["alice"],
                                                           "new_password1": "12345678", "new_password2": "12345678"})
    assert response.status_code == 200
    alice.refresh_from_db()
    assert alice.check_password(PASSWORDS["alice"])
