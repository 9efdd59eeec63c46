"""The REST API: predictions, drawings, labels, model versions, tokens, and every error it promises."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image
from rest_framework.test import APIClient

from recognizer import feedback, serving
from recognizer.api import throttles
from recognizer.models import Drawing

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fresh_throttles")]

PREDICT = "/api/v1/predict"


def data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


@pytest.fixture
def api():
    return APIClient()


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def make_drawing(user, digit_png, active_model, digit=1) -> Drawing:
    return serving.predict_image(digit_png(digit), user).drawing


# --- POST /api/v1/predict ----------------------------------------------------------------------


def test_an_anonymous_visitor_gets_a_prediction_and_nothing_is_stored(api, active_model, digit_png):
    response = api.post(PREDICT, {"image": data_url(digit_png(1))}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert set(body) >= {"digit", "confidence", "probabilities", "model_version", "uncertain", "drawing", "top_two"}
    assert 0 <= body["digit"] <= 9
    assert len(body["probabilities"]) == 10
    assert body["confidence"] == pytest.approx(max(body["probabilities"]))
    assert body["model_version"] == active_model.pk
    assert isinstance(body["uncertain"], bool)
    assert [g["digit"] for g in body["top_two"]][0] == body["digit"]
    assert body["drawing"] is None
    assert Drawing.objects.count() == 0


def test_a_bare_base64_string_works_too(api, active_model, digit_png):
    response = api.post(PREDICT, {"image": base64.b64encode(digit_png(7)).decode()}, format="json")
    assert response.status_code == 200, response.content


def test_a_multipart_file_upload_works(api, active_model, digit_png):
    upload = io.BytesIO(digit_png(0))
    upload.name = "zero.png"
    response = api.post(PREDICT, {"image": upload}, format="multipart")
    assert response.status_code == 200, response.content


def test_a_logged_in_users_drawing_is_stored_with_the_answer(alice, active_model, digit_png):
    response = client_for(alice).post(PREDICT, {"image": data_url(digit_png(1))}, format="json")
    assert response.status_code == 200
    body = response.json()
    drawing = Drawing.objects.get(pk=body["drawing"])
    assert drawing.user == alice
    assert drawing.predicted_digit == body["digit"]
    assert drawing.confidence == pytest.approx(body["confidence"])
    assert drawing.model_version_id == active_model.pk
    assert drawing.image.name.endswith(".png")


def test_the_answer_names_where_to_label_each_stored_drawing(api, alice, active_model, digit_png):
    client = client_for(alice)
    body = client.post(PREDICT, {"image": data_url(digit_png(1))}, format="json").json()
    assert body["label_url"] == f"/api/v1/drawings/{body['drawing']}/label"
    assert client.post(body["label_url"], {"label": 7}, format="json").status_code == 200
    assert Drawing.objects.get(pk=body["drawing"]).label == 7
    number = client.post(PREDICT, {"image": data_url(digit_png(1)), "mode": "number"}, format="json").json()
    assert number["digits"]
    assert [d["label_url"] for d in number["digits"]] == [f"/api/v1/drawings/{d['drawing']}/label"
                                                          for d in number["digits"]]
    # Nothing stored (a live preview, a visitor who is not logged in): nothing to label.
    preview = client.post(PREDICT, {"image": data_url(digit_png(1)), "store": False}, format="json").json()
    assert preview["label_url"] is None
    anonymous = api.post(PREDICT, {"image": data_url(digit_png(1)), "mode": "number"}, format="json").json()
    assert [d["label_url"] for d in anonymous["digits"]] == [None] * len(anonymous["digits"])


def test_a_live_preview_with_store_false_is_not_stored(alice, active_model, digit_png):
    response = client_for(alice).post(PREDICT, {"image": data_url(digit_png(1)), "store": False}, format="json")
    assert response.status_code == 200
    assert response.json()["drawing"] is None
    assert not Drawing.objects.exists()


def test_token_auth_stores_the_drawing_too(api, alice, active_model, digit_png):
    token = api.post("/api/v1/auth/token", {"username": "alice", "password": "alice-password-1"}, format="json")
    assert token.status_code == 200
    api.credentials(HTTP_AUTHORIZATION=f"Token {token.json()['token']}")
    response = api.post(PREDICT, {"image": data_url(digit_png(1))}, format="json")
    assert response.status_code == 200
    assert Drawing.objects.get(pk=response.json()["drawing"]).user == alice


def test_session_auth_needs_the_csrf_token(alice, active_model, digit_png):
    client = APIClient(enforce_csrf_checks=True)
    client.login(username="alice", password="alice-password-1")
    response = client.post(PREDICT, {"image": data_url(digit_png(1))}, format="json")
    assert response.status_code == 403
    assert "CSRF" in response.json()["detail"]


def test_the_answer_is_unsure_when_the_best_two_are_close(api, active_model, digit_png, settings):
    settings.RECOGNIZER_UNSURE_CONFIDENCE = 1.01  # nothing is ever that sure
    body = api.post(PREDICT, {"image": data_url(digit_png(1))}, format="json").json()
    assert body["uncertain"] is True
    assert len(body["top_two"]) == 2
    assert body["top_two"][0]["probability"] >= body["top_two"][1]["probability"]


@pytest.mark.parametrize("payload", [{}, {"image": ""}, {"image": 42}, {"image": None}, {"picture": "abc"}])
def test_a_request_without_a_usable_image_field_is_a_400(api, active_model, payload):
    response = api.post(PREDICT, payload, format="json")
    assert response.status_code == 400
    body = response.json()
    assert body["detail"] and body["code"] == "invalid" and "image" in body["errors"]


def test_malformed_json_is_a_400(api, active_model):
    response = api.post(PREDICT, b'{"image": "data:', content_type="application/json")
    assert response.status_code == 400
    assert "JSON" in response.json()["detail"]


def test_invalid_base64_is_a_400(api, active_model):
    response = api.post(PREDICT, {"image": "data:image/png;base64,!!!not base64!!!"}, format="json")
    assert response.status_code == 400
    assert "base64" in response.json()["detail"]


def test_a_data_url_that_is_not_an_image_is_a_400(api, active_model):
    response = api.post(PREDICT, {"image": "data:text/plain;base64,aGVsbG8="}, format="json")
    assert response.status_code == 400


def test_bytes_that_are_not_an_image_are_a_400(api, active_model):
    response = api.post(PREDICT, {"image": base64.b64encode(b"hello, not a png" * 10).decode()}, format="json")
    assert response.status_code == 400
    assert response.json()["code"] == "unreadable_image"
    assert "cannot be read" in response.json()["detail"]


def test_a_truncated_png_is_a_400(api, active_model, digit_png):
    response = api.post(PREDICT, {"image": data_url(digit_png(1)[:200])}, format="json")
    assert response.status_code == 400


def test_an_empty_canvas_is_a_422_with_a_friendly_message(api, active_model, empty_png):
    response = api.post(PREDICT, {"image": data_url(empty_png)}, format="json")
    assert response.status_code == 422
    assert response.json()["code"] == "empty_drawing"
    assert "draw a digit" in response.json()["detail"]


def test_an_upload_over_the_byte_limit_is_a_413(api, active_model, settings):
    settings.RECOGNIZER_MAX_UPLOAD_BYTES = 4096
    response = api.post(PREDICT, {"image": base64.b64encode(b"\0" * 5000).decode()}, format="json")
    assert response.status_code == 413
    assert "limit is 4096 bytes" in response.json()["detail"]


def test_a_multipart_file_over_the_byte_limit_is_a_413(api, active_model, settings):
    settings.RECOGNIZER_MAX_UPLOAD_BYTES = 4096
    upload = io.BytesIO(b"\0" * 5000)
    upload.name = "big.png"
    assert api.post(PREDICT, {"image": upload}, format="multipart").status_code == 413


def test_a_body_over_djangos_limit_is_a_413_not_a_500(api, active_model, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    response = api.post(PREDICT, {"image": "A" * 20_000}, format="json")
    assert response.status_code == 413
    assert response.json()["code"] == "too_large"


def test_an_image_over_the_pixel_limit_is_refused_with_a_clear_message(api, active_model, settings):
    settings.RECOGNIZER_MAX_PIXELS = 100 * 100
    buffer = io.BytesIO()
    Image.new("L", (200, 200), 0).save(buffer, format="PNG")
    response = api.post(PREDICT, {"image": data_url(buffer.getvalue())}, format="json")
    assert response.status_code == 413
    assert "pixels" in response.json()["detail"]


def test_a_decompression_bomb_is_refused_before_it_is_decoded(api, active_model):
    # A tiny PNG whose header claims 20000x20000 pixels (400 million): refused from the header alone.
    buffer = io.BytesIO()
    Image.new("1", (20000, 20000), 0).save(buffer, format="PNG", optimize=True)
    assert len(buffer.getvalue()) < 2 * 1024 * 1024
    response = api.post(PREDICT, {"image": data_url(buffer.getvalue())}, format="json")
    assert response.status_code == 413
    assert "too large" in response.json()["detail"]


def test_no_active_model_is_a_503_with_a_clear_message(api, db, digit_png):
    serving.model_cache.clear()
    response = api.post(PREDICT, {"image": data_url(digit_png(1))}, format="json")
    assert response.status_code == 503
    assert response.json()["code"] == "no_active_model"
    assert "train_model" in response.json()["detail"]


def test_anonymous_predictions_are_throttled_with_a_429(api, active_model, digit_png, monkeypatch):
    monkeypatch.setattr(throttles.AnonPredictThrottle, "rate", "2/minute", raising=False)
    payload = {"image": data_url(digit_png(1))}
    assert [api.post(PREDICT, payload, format="json").status_code for _ in range(2)] == [200, 200]
    response = api.post(PREDICT, payload, format="json")
    assert response.status_code == 429
    assert "Too many requests" in response.json()["detail"]
    assert "Retry-After" in response.headers


def test_users_have_their_own_throttle_scope(alice, active_model, digit_png, monkeypatch):
    monkeypatch.setattr(throttles.AnonPredictThrottle, "rate", "1/minute", raising=False)
    monkeypatch.setattr(throttles.UserPredictThrottle, "rate", "3/minute", raising=False)
    client = client_for(alice)
    codes = [client.post(PREDICT, {"image": data_url(digit_png(1))}, format="json").status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]


def test_get_is_not_allowed_on_predict(api, active_model):
    response = api.get(PREDICT)
    assert response.status_code == 405
    assert response.json()["detail"]


# --- Drawings ------------------------------------------------------------------------------------


def test_users_list_only_their_own_drawings_and_staff_see_all(alice, bob, staff, active_model, digit_png):
    mine = make_drawing(alice, digit_png, active_model)
    theirs = make_drawing(bob, digit_png, active_model)
    assert [d["id"] for d in client_for(alice).get("/api/v1/drawings").json()["results"]] == [mine.pk]
    assert [d["id"] for d in client_for(bob).get("/api/v1/drawings").json()["results"]] == [theirs.pk]
    body = client_for(staff).get("/api/v1/drawings").json()
    assert {d["id"] for d in body["results"]} == {mine.pk, theirs.pk}
    assert body["count"] == 2


def test_the_drawing_list_is_paginated(alice, active_model, digit_png):
    for _ in range(3):
        make_drawing(alice, digit_png, active_model)
    body = client_for(alice).get("/api/v1/drawings?page_size=2&page=1").json()
    assert body["count"] == 3 and len(body["results"]) == 2 and body["next"] and body["previous"] is None
    assert len(client_for(alice).get(body["next"]).json()["results"]) == 1
    assert client_for(alice).get("/api/v1/drawings?page=9").status_code == 404


def test_the_drawing_list_filters_by_label_prediction_and_review_state(alice, active_model, digit_png):
    a, b, c = (make_drawing(alice, digit_png, active_model) for _ in range(3))
    feedback.label_drawing(a, a.predicted_digit)
    feedback.label_drawing(b, (b.predicted_digit + 1) % 10)
    Drawing.objects.filter(pk=a.pk).update(status=Drawing.Status.APPROVED)
    client = client_for(alice)

    def ids(query):
        response = client.get(f"/api/v1/drawings?{query}")
        assert response.status_code == 200, response.content
        return {d["id"] for d in response.json()["results"]}

    assert ids(f"label={a.label}") >= {a.pk}
    assert ids(f"predicted_digit={c.predicted_digit}") >= {c.pk}
    assert ids("wrong=true") == {b.pk}
    assert ids("wrong=false") == {a.pk}
    assert ids("labelled=false") == {c.pk}
    assert ids("labelled=true") == {a.pk, b.pk}
    assert ids("reviewed=true") == {a.pk}
    assert ids("reviewed=false") == {b.pk, c.pk}
    assert ids("status=approved") == {a.pk}


def test_a_bad_filter_value_is_a_400(alice, active_model):
    response = client_for(alice).get("/api/v1/drawings?status=nonsense")
    assert response.status_code == 400
    assert response.json()["detail"]


def test_a_drawing_shows_its_prediction_and_an_image_url(alice, active_model, digit_png):
    drawing = make_drawing(alice, digit_png, active_model)
    body = client_for(alice).get(f"/api/v1/drawings/{drawing.pk}").json()
    assert body["id"] == drawing.pk
    assert body["predicted_digit"] == drawing.predicted_digit
    assert body["model_version"] == active_model.pk
    assert body["user"] == "alice"
    assert body["image_url"].endswith(f"/drawings/{drawing.pk}/image.png")
    assert "/media/" not in body["image_url"]


def test_another_users_drawing_is_a_404_that_does_not_reveal_it_exists(alice, bob, active_model, digit_png):
    drawing = make_drawing(alice, digit_png, active_model)
    as_bob = client_for(bob)
    missing = as_bob.get("/api/v1/drawings/999999")
    for response in (as_bob.get(f"/api/v1/drawings/{drawing.pk}"),
                     as_bob.post(f"/api/v1/drawings/{drawing.pk}/label", {"label": 3}, format="json"),
                     as_bob.get(f"/drawings/{drawing.pk}/image.png")):
        assert response.status_code == 404
        assert response.json() == missing.json()
    drawing.refresh_from_db()
    assert drawing.label is None


def test_the_image_is_served_to_its_owner_and_staff_only(api, alice, bob, staff, active_model, digit_png):
    drawing = make_drawing(alice, digit_png, active_model)
    url = f"/drawings/{drawing.pk}/image.png"
    owner = client_for(alice).get(url, HTTP_ACCEPT="image/avif,image/webp,image/*,*/*;q=0.8")
    assert owner.status_code == 200
    assert owner["Content-Type"] == "image/png"
    assert b"".join(owner.streaming_content)[:8] == b"\x89PNG\r\n\x1a\n"
    assert client_for(staff).get(url).status_code == 200
    assert client_for(bob).get(url).status_code == 404
    assert api.get(url).status_code == 404


def test_the_image_can_be_fetched_with_a_token(api, alice, active_model, digit_png):
    from rest_framework.authtoken.models import Token

    drawing = make_drawing(alice, digit_png, active_model)
    api.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=alice).key}")
    assert api.get(f"/drawings/{drawing.pk}/image.png").status_code == 200


def test_media_files_have_no_public_url(alice, active_model, digit_png, client):
    drawing = make_drawing(alice, digit_png, active_model)
    assert client.get(f"/media/{drawing.image.name}").status_code == 404


def test_the_owner_labels_a_drawing(alice, active_model, digit_png):
    drawing = make_drawing(alice, digit_png, active_model)
    wrong = (drawing.predicted_digit + 1) % 10
    response = client_for(alice).post(f"/api/v1/drawings/{drawing.pk}/label", {"label": wrong}, format="json")
    assert response.status_code == 200
    assert response.json()["label"] == wrong
    assert response.json()["is_wrong"] is True
    drawing.refresh_from_db()
    assert drawing.label == wrong and drawing.labelled_at is not None


def test_staff_can_label_anyones_drawing(alice, staff, active_model, digit_png):
    drawing = make_drawing(alice, digit_png, active_model)
    response = client_for(staff).post(f"/api/v1/drawings/{drawing.pk}/label", {"label": 4}, format="json")
    assert response.status_code == 200
    drawing.refresh_from_db()
    assert drawing.label == 4


@pytest.mark.parametrize("payload", [{}, {"label": 10}, {"label": 42}, {"label": -1}, {"label": "seven"},
                                     {"label": None}])
def test_a_label_must_be_a_digit(alice, active_model, digit_png, payload):
    drawing = make_drawing(alice, digit_png, active_model)
    response = client_for(alice).post(f"/api/v1/drawings/{drawing.pk}/label", payload, format="json")
    assert response.status_code == 400
    assert "label" in response.json()["errors"]


@pytest.mark.parametrize("method, url", [("get", "/api/v1/drawings"), ("get", "/api/v1/drawings/1"),
                                         ("post", "/api/v1/drawings/1/label"), ("get", "/api/v1/models"),
                                         ("get", "/api/v1/models/active")])
def test_anonymous_callers_get_a_401(api, method, url):
    response = getattr(api, method)(url)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert "credentials" in response.json()["detail"]


def test_a_bad_token_is_a_401(api):
    api.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    assert api.get("/api/v1/drawings").status_code == 401


# --- Models and tokens ---------------------------------------------------------------------------


def test_model_versions_are_listed_with_their_metrics(alice, active_model):
    body = client_for(alice).get("/api/v1/models").json()
    assert body["results"][0]["id"] == active_model.pk
    assert body["results"][0]["is_active"] is True
    assert "metrics" in body["results"][0]
    active = client_for(alice).get("/api/v1/models/active").json()
    assert active["id"] == active_model.pk
    assert client_for(alice).get(f"/api/v1/models/{active_model.pk}").json()["id"] == active_model.pk


def test_there_is_no_active_model_is_a_404_with_a_message(alice, db):
    response = client_for(alice).get("/api/v1/models/active")
    assert response.status_code == 404
    assert response.json()["detail"] == "No model is active yet."


def test_a_wrong_password_gets_no_token(api, alice):
    response = api.post("/api/v1/auth/token", {"username": "alice", "password": "nope"}, format="json")
    assert response.status_code == 400
    assert "Unable to log in" in response.json()["detail"]


def test_the_token_endpoint_is_throttled(api, alice, monkeypatch):
    monkeypatch.setattr(throttles.LoginThrottle, "rate", "2/minute", raising=False)
    codes = [api.post("/api/v1/auth/token", {"username": "alice", "password": "nope"}, format="json").status_code
             for _ in range(3)]
    assert codes == [400, 400, 429]


# --- Schema and docs -----------------------------------------------------------------------------


def test_the_openapi_schema_documents_the_endpoints(api):
    response = api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    for path in ("/api/v1/predict", "/api/v1/drawings", "/api/v1/drawings/{id}", "/api/v1/drawings/{id}/label",
                 "/api/v1/models", "/api/v1/models/active", "/api/v1/auth/token"):
        assert path in paths, path


def test_the_browsable_docs_load(api):
    assert api.get("/api/docs/").status_code == 200


def test_a_huge_form_body_from_a_session_user_is_a_413_not_a_500(alice, active_model, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(alice)
    token = client.get("/").cookies["csrftoken"].value
    # The CSRF check reads request.POST before the view runs: Django raises RequestDataTooBig there.
    response = client.post(PREDICT, "image=" + "A" * 20_000, content_type="application/x-www-form-urlencoded",
                           HTTP_X_CSRFTOKEN=token)
    assert response.status_code == 413
    assert response.json()["code"] == "too_large"


def test_an_unknown_content_type_is_a_415(api, active_model):
    response = api.post(PREDICT, b"\x89PNG...", content_type="image/png")
    assert response.status_code == 415
    assert "Unsupported media type" in response.json()["detail"]
