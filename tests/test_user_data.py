"""A user's own data: deleting a drawing (API and My drawings) or the whole account (page and API) takes
the rows, the image files and what the model learns from them; the drawings download as a zip."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.db import transaction
from django.test import Client
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from recognizer import feedback, serving, userdata
from recognizer.api import throttles
from recognizer.models import Drawing, PredictRequest
from tests.test_api import client_for, data_url
from tests.training_helpers import make_drawing

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fresh_throttles")]

EXPORT = "/api/v1/drawings/export"



def stored(user, digit_png, digit: int = 1) -> Drawing:
    return serving.predict_image(digit_png(digit), user).drawing


def image_file(drawing: Drawing) -> Path:
    return Path(drawing.image.path)


# --- Deleting a drawing through the API ------------------------------------------------------------


def test_the_owner_deletes_a_drawing_and_its_image_file(alice, active_model, digit_png,
                                                        django_capture_on_commit_callbacks):
    drawing = stored(alice, digit_png)
    path = image_file(drawing)
    assert path.exists()
    with django_capture_on_commit_callbacks(execute=True):
        response = client_for(alice).delete(f"/api/v1/drawings/{drawing.pk}")
    assert response.status_code == 204
    assert not Drawing.objects.filter(pk=drawing.pk).exists()
    assert not path.exists()
    assert client_for(alice).get(f"/api/v1/drawings/{drawing.pk}").status_code == 404


def test_someone_elses_drawing_is_a_404_and_stays(alice, bob, active_model, digit_png,
                                                  django_capture_on_commit_callbacks):
    drawing = stored(alice, digit_png)
    with django_capture_on_commit_callbacks(execute=True):
        response = client_for(bob).delete(f"/api/v1/drawings/{drawing.pk}")
    assert response.status_code == 404
    assert Drawing.objects.filter(pk=drawing.pk).exists() and image_file(drawing).exists()


def test_staff_delete_only_their_own_drawings_through_the_api(alice, staff, active_model, digit_png):
    alices = stored(alice, digit_png)
    assert client_for(staff).delete(f"/api/v1/drawings/{alices.pk}").status_code == 403
    assert Drawing.objects.filter(pk=alices.pk).exists()
    own = stored(staff, digit_png)
    assert client_for(staff).delete(f"/api/v1/drawings/{own.pk}").status_code == 204


def test_an_anonymous_delete_is_a_401(alice, active_model, digit_png):
    drawing = stored(alice, digit_png)
    assert APIClient().delete(f"/api/v1/drawings/{drawing.pk}").status_code == 401
    assert Drawing.objects.filter(pk=drawing.pk).exists()


def test_a_deletion_that_rolls_back_keeps_the_image_file(alice, active_model, digit_png,
                                                         django_capture_on_commit_callbacks):
    drawing = stored(alice, digit_png)
    pk, path = drawing.pk, image_file(drawing)
    with django_capture_on_commit_callbacks(execute=True) as callbacks, pytest.raises(RuntimeError), \
            transaction.atomic():
        userdata.delete_drawing(drawing)
        raise RuntimeError("something later in the same transaction failed")
    assert callbacks == []
    assert Drawing.objects.filter(pk=pk).exists() and path.exists()


def test_the_admin_deleting_a_drawing_removes_its_file_too(admin_client, alice, active_model, digit_png,
                                                           django_capture_on_commit_callbacks):
    drawing = stored(alice, digit_png)
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(f"/admin/recognizer/drawing/{drawing.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not image_file(drawing).exists()


# --- What the model learns from deleted drawings ---------------------------------------------------


def test_a_deleted_drawing_stops_counting_for_the_owners_predictions(alice, active_model, digit_png):
    png = digit_png(1)
    before = serving.predict_image(png, user=alice)
    feedback.label_drawing(before.drawing, (before.digit + 5) % 10)  # "my way of writing it"
    assert serving.predict_image(png, user=alice, store=False).digit == (before.digit + 5) % 10
    labels_before = len(serving.personal_examples.entry(alice).labels)
    userdata.delete_drawing(before.drawing)
    # The cache is keyed by an aggregate over the user's drawings: the deletion shows at the next prediction.
    entry = serving.personal_examples.entry(alice)
    assert entry is None or len(entry.labels) == labels_before - 1
    assert serving.predict_image(png, user=alice, store=False).digit == before.digit


def test_the_next_retrain_no_longer_trains_on_deleted_drawings(settings, alice, bob, fallback_data):  # noqa: F811
    settings.RECOGNIZER_REQUIRE_REVIEW = False
    mine = [make_drawing(alice, fallback_data.test_images[i], int(fallback_data.test_labels[i])) for i in range(4)]
    theirs = [make_drawing(bob, fallback_data.test_images[i], int(fallback_data.test_labels[i])) for i in range(4, 7)]
    train, held = feedback.split_trusted()
    assert len(train) + len(held) == 7
    userdata.delete_drawing(mine[0])
    userdata.delete_account(alice)
    train, held = feedback.split_trusted()
    assert len(train) + len(held) == 3
    assert set(train.ids) | set(held.ids) == {d.pk for d in theirs}


# --- Deleting a drawing on My drawings --------------------------------------------------------------


def test_my_drawings_links_each_drawing_to_its_deletion_and_offers_the_download(client, alice, active_model,
                                                                                digit_png):
    drawing = stored(alice, digit_png)
    client.force_login(alice)
    html = client.get("/drawings/?result=unlabelled").content.decode()
    assert f'href="/drawings/{drawing.pk}/delete/?next=/drawings/%3Fresult%3Dunlabelled"' in html
    assert f'href="{EXPORT}"' in html and 'href="/accounts/delete/"' in html


def test_deleting_from_my_drawings_asks_first_then_deletes_with_the_csrf_token(alice, active_model, digit_png,
                                                                               django_capture_on_commit_callbacks):
    drawing = stored(alice, digit_png)
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(alice)
    confirm = browser.get(f"/drawings/{drawing.pk}/delete/?next=/drawings/%3Fpage%3D2")
    assert confirm.status_code == 200
    assert b"Delete this drawing?" in confirm.content and b"csrfmiddlewaretoken" in confirm.content
    assert Drawing.objects.filter(pk=drawing.pk).exists()  # asking is not deleting
    url = f"/drawings/{drawing.pk}/delete/"
    assert browser.post(url, {"next": "/drawings/?page=2"}).status_code == 403  # no CSRF token
    assert Drawing.objects.filter(pk=drawing.pk).exists()
    with django_capture_on_commit_callbacks(execute=True):
        response = browser.post(url, {"next": "/drawings/?page=2",
                                      "csrfmiddlewaretoken": browser.cookies["csrftoken"].value})
    assert response.status_code == 302 and response["Location"] == "/drawings/?page=2"
    assert not Drawing.objects.filter(pk=drawing.pk).exists() and not image_file(drawing).exists()


def test_nobody_deletes_someone_elses_drawing_from_the_page(client, alice, bob, active_model, digit_png):
    drawing = stored(alice, digit_png)
    client.force_login(bob)
    assert client.get(f"/drawings/{drawing.pk}/delete/").status_code == 404
    assert client.post(f"/drawings/{drawing.pk}/delete/").status_code == 404
    assert Drawing.objects.filter(pk=drawing.pk).exists()


def test_after_deleting_the_page_never_redirects_off_site(client, alice, active_model, digit_png):
    drawing = stored(alice, digit_png)
    client.force_login(alice)
    response = client.post(f"/drawings/{drawing.pk}/delete/", {"next": "https://evil.example/"})
    assert response["Location"] == "/drawings/"


# --- Deleting the account ---------------------------------------------------------------------------


def test_the_api_deletes_the_account_and_everything_that_is_theirs(alice, bob, staff, active_model, digit_png,
                                                                   django_capture_on_commit_callbacks, settings,
                                                                   tmp_path):
    serving.predict_image(digit_png(1))  # the model is loaded: the media directory can move
    settings.MEDIA_ROOT = tmp_path  # an empty one, so the user's image directory can be seen to go
    token = Token.objects.create(user=alice)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    drawings = [api.post("/api/v1/predict", {"image": data_url(digit_png(d))}, format="json",
                         HTTP_IDEMPOTENCY_KEY=f"k{d}").json()["drawing"] for d in (0, 1, 7)]
    paths = [image_file(Drawing.objects.get(pk=pk)) for pk in drawings]
    bobs = stored(bob, digit_png)
    reviewed = stored(bob, digit_png)
    Drawing.objects.filter(pk=reviewed.pk).update(reviewer=alice)
    with django_capture_on_commit_callbacks(execute=True):
        response = api.delete("/api/v1/account", {"password": "alice-password-1"}, format="json")
    assert response.status_code == 204
    assert not get_user_model().objects.filter(username="alice").exists()
    assert not Drawing.objects.filter(pk__in=drawings).exists()
    assert not any(path.exists() for path in paths)
    assert not paths[0].parent.exists()  # the user's image directory goes too
    assert not Token.objects.filter(key=token.key).exists() and not PredictRequest.objects.exists()
    assert Drawing.objects.filter(pk=bobs.pk).exists() and image_file(bobs).exists()
    assert Drawing.objects.get(pk=reviewed.pk).reviewer is None
    assert api.get("/api/v1/drawings").status_code == 401  # the token went with the account


def test_a_wrong_or_missing_password_keeps_the_account(alice, active_model, digit_png):
    drawing = stored(alice, digit_png)
    api = client_for(alice)
    for body in ({"password": "not-it"}, {}):
        response = api.delete("/api/v1/account", body, format="json")
        assert response.status_code == 400 and response.json()["errors"]["password"]
    assert get_user_model().objects.filter(pk=alice.pk).exists() and Drawing.objects.filter(pk=drawing.pk).exists()


def test_password_attempts_to_delete_the_account_count_against_the_login_throttle(alice, monkeypatch):
    monkeypatch.setitem(throttles.LoginThrottle.THROTTLE_RATES, "login", "2/minute")
    api = client_for(alice)
    codes = [api.delete("/api/v1/account", {"password": "guess"}, format="json").status_code for _ in range(3)]
    assert codes == [400, 400, 429]


def test_the_account_page_asks_for_the_password_then_deletes_and_logs_out(client, alice, active_model, digit_png,
                                                                           django_capture_on_commit_callbacks):
    drawing = stored(alice, digit_png)
    client.force_login(alice)
    page = client.get("/accounts/delete/")
    assert page.status_code == 200 and b"1 drawing " in page.content and b'type="password"' in page.content
    wrong = client.post("/accounts/delete/", {"password": "not-it"})
    assert wrong.status_code == 200 and b"password is not right" in wrong.content
    assert get_user_model().objects.filter(pk=alice.pk).exists()
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/accounts/delete/", {"password": "alice-password-1"}, follow=True)
    assert response.redirect_chain[-1][0] == "/"
    assert b"all its drawings are deleted" in response.content
    assert not response.context["user"].is_authenticated
    assert not get_user_model().objects.filter(username="alice").exists()
    assert not image_file(drawing).exists()


def test_the_account_page_needs_a_login(client):
    response = client.get("/accounts/delete/")
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


# --- Downloading one's drawings --------------------------------------------------------------------



def read_zip(response) -> zipfile.ZipFile:
    return zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))


def test_the_download_has_each_drawing_with_its_label_as_png_csv_and_json(alice, bob, active_model, digit_png):
    first, second = stored(alice, digit_png, 1), stored(alice, digit_png, 7)
    feedback.label_drawing(second, 4)
    stored(bob, digit_png)
    response = client_for(alice).get(EXPORT)
    assert response.status_code == 200 and response["Content-Type"] == "application/zip"
    assert response["Content-Disposition"].startswith('attachment; filename="digitsite-drawings-alice-')
    archive = read_zip(response)
    assert sorted(archive.namelist()) == sorted(
        ["manifest.csv", "manifest.json", f"images/{first.pk}.png", f"images/{second.pk}.png"])
    assert archive.read(f"images/{first.pk}.png") == image_file(first).read_bytes()
    rows = list(csv.DictReader(io.StringIO(archive.read("manifest.csv").decode())))
    assert [r["id"] for r in rows] == [str(first.pk), str(second.pk)]
    assert set(rows[0]) >= {"id", "created_at", "predicted_digit", "confidence", "label", "status"}
    assert rows[1]["label"] == "4" and rows[0]["label"] == "" and rows[1]["status"] == "pending"
    assert rows[1]["predicted_digit"] == str(second.predicted_digit)
    manifest = json.loads(archive.read("manifest.json"))
    assert manifest["user"] == "alice" and len(manifest["drawings"]) == 2
    entry = manifest["drawings"][1]
    assert entry["label"] == 4 and entry["image"] == f"images/{second.pk}.png"
    assert entry["confidence"] == pytest.approx(second.confidence) and len(entry["probabilities"]) == 10


def test_staff_download_only_their_own_drawings(alice, staff, active_model, digit_png):
    stored(alice, digit_png)
    manifest = json.loads(read_zip(client_for(staff).get(EXPORT)).read("manifest.json"))
    assert manifest["drawings"] == []


def test_a_drawing_whose_file_is_missing_is_listed_without_an_image(alice, active_model, digit_png):
    drawing = stored(alice, digit_png)
    image_file(drawing).unlink()
    archive = read_zip(client_for(alice).get(EXPORT))
    assert archive.namelist() == ["manifest.csv", "manifest.json"]
    assert json.loads(archive.read("manifest.json"))["drawings"][0]["image"] is None


def test_the_download_works_from_the_page_session_and_needs_a_login(client, alice, active_model, digit_png):
    stored(alice, digit_png)
    assert client.get(EXPORT).status_code == 401  # JSON error for an anonymous caller
    assert client.get(EXPORT).json()["code"] == "not_authenticated"
    client.force_login(alice)
    assert client.get(EXPORT).status_code == 200


def test_downloads_are_throttled(alice, monkeypatch):
    monkeypatch.setitem(throttles.ExportThrottle.THROTTLE_RATES, "export", "1/hour")
    api = client_for(alice)
    assert [api.get(EXPORT).status_code for _ in range(2)] == [200, 429]
