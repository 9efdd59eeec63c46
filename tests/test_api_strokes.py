"""Pen strokes sent with a drawing to POST /api/v1/predict: validated, stored with the drawing, and read by
a serving model that reads strokes (`strokes_used` in the answer); a model that reads images only is called
exactly as before, and a caller that sends only the image gets the same answer as before."""

from __future__ import annotations

import io
import json

import pytest
from rest_framework.test import APIClient

from recognizer import serving
from recognizer.ml.strokes import MAX_POINTS, MAX_STROKES, parse_strokes, strokes_to_json
from recognizer.models import Drawing
from tests.test_api import client_for, data_url

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fresh_throttles")]

PREDICT = "/api/v1/predict"

# Pen strokes in the pixels of a 280x280 canvas (y down), t in ms since the drawing began.
ONE = [[[140, 56, 0], [140, 100, 40], [140, 150, 80], [140, 224, 130]]]
SEVEN = [[[84, 56, 0], [140, 56, 60], [196, 56, 120], [160, 130, 200], [126, 224, 290]]]
ZERO = [[[140, 56, 0], [84, 140, 80], [140, 224, 160], [196, 140, 240], [140, 56, 320]]]


@pytest.fixture
def api():
    return APIClient()


def post_json(client: APIClient, payload: dict):
    return client.post(PREDICT, payload, format="json")


def post_raw(client: APIClient, body: str):
    return client.post(PREDICT, body, content_type="application/json")


# --- Validation --------------------------------------------------------------------------------------


def many_strokes(n: int) -> list:
    return [[[float(i), float(i), float(i)]] for i in range(n)]


@pytest.mark.parametrize(
    "strokes, says",
    [
        (5, "must be a list of strokes"),
        ({"x": 1}, "must be a list of strokes"),
        ("not json at all", "not valid JSON"),
        ([5], "stroke 0 must be a list"),
        ([], "no points"),
        ([[]], "no points"),
        (many_strokes(MAX_STROKES + 1), "too many strokes"),
        ([[[i, i, i] for i in range(MAX_POINTS + 1)]], "too many points"),
        ([[[10, 10, 0]], [[i % 280, 5, i] for i in range(MAX_POINTS)]], "too many points"),
        ([[["140", "56", "0"]]], "must be a number, got str"),
        ([[[140, None, 0]]], "must be a number"),
        ([[[True, 56, 0]]], "must be a number, got bool"),
        ([[[140, 56, 0, 1]]], "must be [x, y] or [x, y, t]"),
        ([[[140]]], "must be [x, y] or [x, y, t]"),
        ([[[2e6, 56, 0]]], "out of range"),
    ],
)
def test_strokes_that_are_not_pen_trajectories_are_a_400_invalid_strokes(api, active_model, digit_png, strokes, says):
    response = post_json(api, {"image": data_url(digit_png(1)), "strokes": strokes})
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["code"] == "invalid_strokes", body
    assert body["detail"].startswith("The strokes cannot be read: ") and says in body["detail"], body["detail"]


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_tokens_in_a_json_body_are_refused(api, active_model, digit_png, token):
    # Python's json would read these tokens as floats; the API's strict JSON parser refuses the body.
    body = f'{{"image": "{data_url(digit_png(1))}", "strokes": [[[140, {token}, 0]]]}}'
    response = post_raw(api, body)
    assert response.status_code == 400
    assert response.json()["code"] == "parse_error"


def test_a_number_too_large_for_a_float_is_infinite_and_refused(api, active_model, digit_png):
    # 1e999 is valid JSON syntax that even a strict parser reads as infinity: parse_strokes refuses it.
    body = f'{{"image": "{data_url(digit_png(1))}", "strokes": [[[140, 1e999, 0]]]}}'
    response = post_raw(api, body)
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_strokes"
    assert "finite" in response.json()["detail"]


@pytest.mark.parametrize("token", ["NaN", "Infinity"])
def test_nan_in_the_json_string_of_a_form_field_is_refused(api, active_model, digit_png, token):
    upload = io.BytesIO(digit_png(1))
    upload.name = "one.png"
    response = api.post(PREDICT, {"image": upload, "strokes": f"[[[140, {token}, 0]]]"}, format="multipart")
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_strokes"
    assert "finite" in response.json()["detail"]


def test_nothing_is_stored_when_the_strokes_are_refused(alice, active_model, digit_png):
    response = post_json(client_for(alice), {"image": data_url(digit_png(1)), "strokes": [[["a", "b"]]]})
    assert response.status_code == 400
    assert not Drawing.objects.exists()


def test_strokes_at_the_limits_are_accepted(api, active_model, digit_png):
    per_stroke = MAX_POINTS // MAX_STROKES
    strokes = [[[float(s), float(p % 280), float(s * per_stroke + p)] for p in range(per_stroke)]
               for s in range(MAX_STROKES)]
    response = post_json(api, {"image": data_url(digit_png(1)), "strokes": strokes})
    assert response.status_code == 200, response.content


def test_null_and_an_empty_form_field_mean_no_strokes(api, alice, active_model, digit_png):
    assert post_json(api, {"image": data_url(digit_png(1)), "strokes": None}).status_code == 200
    upload = io.BytesIO(digit_png(1))
    upload.name = "one.png"
    response = client_for(alice).post(PREDICT, {"image": upload, "strokes": ""}, format="multipart")
    assert response.status_code == 200, response.content
    assert Drawing.objects.get(pk=response.json()["drawing"]).strokes is None


# --- Storage -----------------------------------------------------------------------------------------


def test_a_logged_in_predict_with_strokes_stores_them_with_the_drawing(alice, active_model, digit_png):
    sent = [[[140, 56], [140, 224]], SEVEN[0]]  # points without t get their index as t
    response = post_json(client_for(alice), {"image": data_url(digit_png(1)), "strokes": sent})
    assert response.status_code == 200, response.content
    drawing = Drawing.objects.get(pk=response.json()["drawing"])
    assert drawing.strokes == [[[140.0, 56.0, 0.0], [140.0, 224.0, 1.0]],
                               [[float(v) for v in point] for point in SEVEN[0]]]
    assert drawing.strokes == strokes_to_json(parse_strokes(sent))
    assert drawing.stroke_count == 2

    shown = client_for(alice).get(f"/api/v1/drawings/{drawing.pk}").json()
    assert shown["strokes"] == drawing.strokes and shown["has_strokes"] is True


def test_a_predict_without_strokes_stores_null(alice, active_model, digit_png):
    response = post_json(client_for(alice), {"image": data_url(digit_png(1))})
    drawing = Drawing.objects.get(pk=response.json()["drawing"])
    assert drawing.strokes is None and drawing.stroke_count == 0
    shown = client_for(alice).get(f"/api/v1/drawings/{drawing.pk}").json()
    assert shown["strokes"] is None and shown["has_strokes"] is False


def test_a_multipart_upload_takes_the_strokes_as_a_json_string(alice, active_model, digit_png):
    upload = io.BytesIO(digit_png(7))
    upload.name = "seven.png"
    response = client_for(alice).post(PREDICT, {"image": upload, "strokes": json.dumps(SEVEN)}, format="multipart")
    assert response.status_code == 200, response.content
    assert Drawing.objects.get(pk=response.json()["drawing"]).strokes == strokes_to_json(parse_strokes(SEVEN))


def test_a_live_preview_with_strokes_is_not_stored(alice, active_model, digit_png):
    response = post_json(client_for(alice), {"image": data_url(digit_png(1)), "strokes": ONE, "store": False})
    assert response.status_code == 200 and response.json()["drawing"] is None
    assert not Drawing.objects.exists()


def test_number_mode_with_an_image_only_model_groups_by_the_strokes_and_stores_them(alice, active_model):
    from tests.test_api_numbers import written_number

    image, strokes = written_number("47")
    response = post_json(client_for(alice), {"image": data_url(image), "mode": "number", "strokes": strokes})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["segmentation"]["method"] == "strokes" and len(body["digits"]) == 2
    assert not any(d["strokes_used"] for d in body["digits"])  # the model reads images only
    stored = [Drawing.objects.get(pk=d["drawing"]) for d in body["digits"]]
    assert [len(d.strokes) for d in stored] == [2, 1]  # each digit keeps its own strokes, for a later model
    # Still validated: a number's request with broken strokes is refused like any other.
    response = post_json(client_for(alice), {"image": data_url(image), "mode": "number", "strokes": 3})
    assert response.status_code == 400 and response.json()["code"] == "invalid_strokes"


# --- An image-only model: called exactly as before ------------------------------------------------------


@pytest.fixture
def image_only_model(active_model):
    """conftest's k-NN, which reads images only: `predict_one(image28, strokes=...)` would be a TypeError.
    These tests are about models without `reads_strokes`: should conftest's model ever read strokes, point
    this fixture at an image-only one."""
    assert not getattr(serving.model_cache.get().estimator, "reads_strokes", False)
    return active_model


@pytest.mark.parametrize("user", [False, True], ids=["anonymous", "logged-in"])
def test_the_image_only_model_answers_the_same_with_or_without_strokes(api, alice, image_only_model, digit_png,
                                                                      user):
    client = client_for(alice) if user else api
    image = data_url(digit_png(7))
    plain = post_json(client, {"image": image, "store": False})
    with_strokes = post_json(client, {"image": image, "store": False, "strokes": SEVEN})
    assert plain.status_code == with_strokes.status_code == 200, with_strokes.content
    assert plain.json()["strokes_used"] is False and with_strokes.json()["strokes_used"] is False
    assert with_strokes.json() == plain.json()


def test_a_caller_sending_only_the_image_gets_the_same_answer_as_before(api, image_only_model, digit_png):
    # "Before": the serving model called on the preprocessed image alone, as the API always did.
    png = digit_png(7)
    prediction = serving.model_cache.get().estimator.predict_one(serving.preprocess_upload(png))
    body = post_json(api, {"image": data_url(png)}).json()
    assert body["digit"] == prediction.digit
    assert body["probabilities"] == pytest.approx(prediction.probabilities)
    assert body["strokes_used"] is False


# --- A model that reads strokes ------------------------------------------------------------------------


@pytest.fixture
def stroke_model(fused_active_model):
    """The real model kind that reads strokes (conftest: image k-NN + stroke k-NN, fused), active and served."""
    assert serving.model_cache.get().estimator.reads_strokes
    return fused_active_model


def test_a_model_that_reads_strokes_gets_them_and_the_answer_says_so(api, stroke_model, digit_png):
    image = data_url(digit_png(1))  # the image of a 1, drawn with the strokes of a 7: the strokes decide
    body = post_json(api, {"image": image, "strokes": SEVEN}).json()
    assert body["strokes_used"] is True and body["digit"] == 7
    assert post_json(api, {"image": image, "strokes": ZERO}).json()["digit"] == 0

    image_only = post_json(api, {"image": image}).json()
    assert image_only["strokes_used"] is False
    assert image_only["model_version"] == body["model_version"] == stroke_model.pk


def test_a_stroke_reading_model_stores_what_it_read(alice, stroke_model, digit_png):
    response = post_json(client_for(alice), {"image": data_url(digit_png(1)), "strokes": SEVEN})
    drawing = Drawing.objects.get(pk=response.json()["drawing"])
    assert drawing.predicted_digit == 7 and drawing.strokes == strokes_to_json(parse_strokes(SEVEN))


def test_the_service_passes_parsed_strokes_only_to_a_model_that_reads_them(stroke_model, small_training_result,
                                                                        digit_png):
    image28 = serving.preprocess_upload(digit_png(1))
    loaded = serving.model_cache.get()
    strokes = parse_strokes(SEVEN)
    assert serving.predict_array(image28, loaded, {}, strokes=strokes).strokes_used is True
    image_only = serving.LoadedModel(version_id=0, sha256="", estimator=small_training_result[1].estimator)
    result = serving.predict_array(image28, image_only, {}, strokes=strokes)  # no `strokes=` for the k-NN
    assert result.strokes_used is False
    assert result.digit == small_training_result[1].estimator.predict_one(image28).digit
