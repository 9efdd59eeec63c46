"""POST /api/v1/predict with "mode": "number": a drawn number split into digits, each answered with its box
and (for a logged-in caller) stored as its own drawing that the label endpoint corrects."""

from __future__ import annotations

import io

import numpy as np
import pytest
from django.core.cache import cache
from PIL import Image, ImageDraw
from rest_framework.test import APIClient

from recognizer import serving
from recognizer.models import Drawing
from tests.test_api import PREDICT, client_for, data_url

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_throttles():
    cache.clear()
    yield
    cache.clear()


def number_png(digits: str = "170", width: int = 600, height: int = 240) -> bytes:
    """1, 7 and 0 drawn side by side like a browser canvas: black ink on transparent."""
    image = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    ink, pen = (0, 0, 0, 255), 14
    step = width / (len(digits) + 1)
    for i, d in enumerate(digits):
        x, y, w, h = step * (i + 0.6), 50, 0.5 * step, 140
        if d == "1":
            draw.line([(x + w / 2, y), (x + w / 2, y + h)], fill=ink, width=pen)
        elif d == "7":
            draw.line([(x, y), (x + w, y), (x + w * 0.35, y + h)], fill=ink, width=pen, joint="curve")
        else:
            draw.ellipse([x, y, x + w, y + h], outline=ink, width=pen)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_an_anonymous_visitor_gets_each_digit_with_its_box_and_nothing_is_stored(active_model):
    response = APIClient().post(PREDICT, {"image": data_url(number_png("170")), "mode": "number"}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert set(body) == {"number", "digits", "model_version", "uncertain", "segmentation", "alternative"}
    assert body["segmentation"]["method"] == "image"  # no strokes sent: split from the ink
    assert len(body["digits"]) == 3
    assert body["number"] == "".join(str(d["digit"]) for d in body["digits"])
    assert body["model_version"] == active_model.pk
    assert body["uncertain"] == any(d["uncertain"] for d in body["digits"])
    lefts = []
    for d in body["digits"]:
        assert set(d) >= {"digit", "confidence", "probabilities", "uncertain", "box", "drawing", "strokes"}
        assert d["strokes"] is None and d["strokes_used"] is False
        assert len(d["probabilities"]) == 10 and d["confidence"] == pytest.approx(max(d["probabilities"]))
        x0, y0, x1, y1 = d["box"]
        assert 0 <= x0 < x1 <= 600 and 0 <= y0 < y1 <= 240
        assert d["drawing"] is None
        lefts.append(x0)
    assert lefts == sorted(lefts)
    assert Drawing.objects.count() == 0


def test_the_default_mode_is_still_one_digit(active_model, digit_png):
    body = APIClient().post(PREDICT, {"image": data_url(digit_png(1))}, format="json").json()
    assert "digit" in body and "digits" not in body


def test_each_digit_answers_as_the_same_drawing_sent_alone(active_model):
    """The digit's crop, predicted in digit mode, gives the same answer as inside the number."""
    from recognizer.ml.segment import split_number

    body = APIClient().post(PREDICT, {"image": data_url(number_png("71")), "mode": "number"}, format="json").json()
    segments = split_number(number_png("71"))
    for d, segment in zip(body["digits"], segments):
        alone = APIClient().post(PREDICT, {"image": data_url(segment.png())}, format="json").json()
        assert alone["digit"] == d["digit"]
        assert alone["probabilities"] == pytest.approx(d["probabilities"], abs=1e-6)


def test_alice_gets_one_drawing_per_digit_and_corrects_one_of_them(alice, active_model):
    api = client_for(alice)
    response = api.post(PREDICT, {"image": data_url(number_png("170")), "mode": "number"}, format="json")
    assert response.status_code == 200, response.content
    digits = response.json()["digits"]
    ids = [d["drawing"] for d in digits]
    assert all(isinstance(i, int) for i in ids) and len(set(ids)) == 3
    drawings = {d.pk: d for d in Drawing.objects.filter(user=alice)}
    assert set(drawings) == set(ids)
    for d in digits:
        stored = drawings[d["drawing"]]
        assert stored.predicted_digit == d["digit"]
        assert stored.confidence == pytest.approx(d["confidence"])
        assert len(stored.preprocessed) == 784
        with stored.image.open("rb") as handle:
            crop = Image.open(handle)
            crop.load()
        x0, y0, x1, y1 = d["box"]
        assert crop.width < 600 / 2 and crop.width >= x1 - x0  # the digit's crop (with a margin), not the number

    # Correct the middle digit (a 7) only.
    label = api.post(f"/api/v1/drawings/{ids[1]}/label", {"label": 7}, format="json")
    assert label.status_code == 200, label.content
    assert label.json()["label"] == 7
    assert [Drawing.objects.get(pk=i).label for i in ids] == [None, 7, None]

    # Bob cannot label Alice's digits.
    bob = type(alice).objects.create_user("bob", "bob@example.com", "bob-password-1")
    assert client_for(bob).post(f"/api/v1/drawings/{ids[0]}/label", {"label": 1}, format="json").status_code == 404


def test_store_false_keeps_nothing_for_alice(alice, active_model):
    body = client_for(alice).post(PREDICT, {"image": data_url(number_png("17")), "mode": "number", "store": False},
                                  format="json").json()
    assert [d["drawing"] for d in body["digits"]] == [None, None]
    assert Drawing.objects.count() == 0


def test_multipart_works_in_number_mode(active_model):
    from django.core.files.uploadedfile import SimpleUploadedFile

    upload = SimpleUploadedFile("n.png", number_png("10"), content_type="image/png")
    response = APIClient().post(PREDICT, {"image": upload, "mode": "number"}, format="multipart")
    assert response.status_code == 200, response.content
    assert len(response.json()["digits"]) == 2


def test_an_empty_number_is_a_422(alice, active_model, empty_png):
    response = client_for(alice).post(PREDICT, {"image": data_url(empty_png), "mode": "number"}, format="json")
    assert response.status_code == 422
    assert response.json()["code"] == "empty_drawing"
    assert "empty" in response.json()["detail"]
    assert Drawing.objects.count() == 0


def test_only_a_dot_is_a_422(active_model):
    image = Image.new("RGBA", (400, 200), (0, 0, 0, 0))
    ImageDraw.Draw(image).ellipse([100, 100, 112, 112], fill=(0, 0, 0, 255))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    response = APIClient().post(PREDICT, {"image": data_url(buffer.getvalue()), "mode": "number"}, format="json")
    assert response.status_code == 422, response.content


@pytest.mark.parametrize("mode", ["numbers", "", 3, None])
def test_a_bad_mode_is_a_400(active_model, mode):
    response = APIClient().post(PREDICT, {"image": data_url(number_png("17")), "mode": mode}, format="json")
    assert response.status_code == 400, response.content
    assert "mode" in response.json()["errors"]


def test_unreadable_and_no_model_errors_are_the_same_as_digit_mode(db):
    serving.model_cache.clear()
    response = APIClient().post(PREDICT, {"image": data_url(b"not a png"), "mode": "number"}, format="json")
    assert response.status_code == 400
    response = APIClient().post(PREDICT, {"image": data_url(number_png("17")), "mode": "number"}, format="json")
    assert response.status_code == 503


def test_a_number_made_of_many_pieces_is_refused_with_a_400(active_model):
    image = Image.new("RGBA", (2000, 200), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    for i in range(20):
        draw.line([(40 + i * 95, 40), (40 + i * 95, 160)], fill=(0, 0, 0, 255), width=12)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    response = APIClient().post(PREDICT, {"image": data_url(buffer.getvalue()), "mode": "number"}, format="json")
    assert response.status_code == 400, response.content
    assert "at most" in response.json()["detail"]


# --- With the pen strokes ------------------------------------------------------------------------


def written_number(digits: str = "147", width: int = 700, height: int = 240):
    """The digits' hand-made trajectories side by side (a 4's second stroke drawn after the next digit), drawn
    as the page draws them: (PNG bytes, strokes as the API takes them)."""
    from recognizer.ml.strokes import draw_strokes
    from tests.test_ml_numbers import box_width, placed

    per_digit, x = [], 60.0
    for d in digits:
        strokes = placed(int(d), x, y=60, height=120)
        per_digit.append(strokes)
        x += box_width(strokes) + 50
    order = []
    for i, strokes in enumerate(per_digit):
        order.extend(strokes if digits[i] != "4" or i == len(digits) - 1 else strokes[:1])
        if i > 0 and digits[i - 1] == "4":
            order.append(per_digit[i - 1][1])  # the 4's bar, late
    buffer = io.BytesIO()
    draw_strokes(order, width, height, 12).save(buffer, format="PNG")
    return buffer.getvalue(), [[[float(x), float(y), 10.0 * k] for k, (x, y) in enumerate(s)] for s in order]


def test_with_strokes_each_digit_comes_with_its_own_strokes_and_is_stored_with_them(alice, fused_active_model):
    image, strokes = written_number("147")
    response = client_for(alice).post(PREDICT, {"image": data_url(image), "mode": "number", "strokes": strokes},
                                      format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["segmentation"]["method"] == "strokes"
    assert isinstance(body["segmentation"]["uncertain"], bool)
    assert body["uncertain"] == (body["segmentation"]["uncertain"] or any(d["uncertain"] for d in body["digits"]))
    assert body["alternative"] is None or (body["alternative"] != body["number"] and body["alternative"].isdigit())
    assert len(body["digits"]) == 3
    assert [len(d["strokes"]) for d in body["digits"]] == [1, 2, 1]  # the 4's late bar went back to it
    assert all(d["strokes_used"] for d in body["digits"])
    sent = {tuple(s[0][:2]) for s in strokes}
    assert {tuple(s[0][:2]) for d in body["digits"] for s in d["strokes"]} == sent
    for d in body["digits"]:
        stored = Drawing.objects.get(pk=d["drawing"])
        assert stored.strokes is not None and len(stored.strokes) == len(d["strokes"])
        # stored in the digit's own crop, as a single drawing's strokes are in its image
        with stored.image.open("rb") as handle:
            crop = Image.open(handle)
            crop.load()
        points = np.concatenate([np.array(s)[:, :2] for s in stored.strokes])
        assert points.min() >= 0 and points[:, 0].max() <= crop.width and points[:, 1].max() <= crop.height
        # the same points, moved by one offset: the crop's margin less the box's corner
        shift = points - np.concatenate([np.array(s)[:, :2] for s in d["strokes"]])
        assert np.allclose(shift, shift[0]) and np.all(shift[0] > -np.array(d["box"][:2]))


def test_each_digit_answers_as_its_crop_and_strokes_sent_alone(fused_active_model):
    image, strokes = written_number("10")
    body = APIClient().post(PREDICT, {"image": data_url(image), "mode": "number", "strokes": strokes},
                            format="json").json()
    assert body["segmentation"]["method"] == "strokes"
    from recognizer.ml.numbers import read_number

    loaded = serving.model_cache.get()
    reading = read_number(Image.open(io.BytesIO(image)), [np.array(s) for s in strokes], loaded.estimator)
    for d, read in zip(body["digits"], reading.digits):
        alone = APIClient().post(PREDICT, {"image": data_url(read.png()), "strokes": d["strokes"]},
                                 format="json").json()
        assert alone["digit"] == d["digit"] and alone["strokes_used"]
        assert alone["probabilities"] == pytest.approx(d["probabilities"], abs=1e-6)


def test_a_correction_of_one_digit_is_one_label(alice, fused_active_model):
    image, strokes = written_number("147")
    body = client_for(alice).post(PREDICT, {"image": data_url(image), "mode": "number", "strokes": strokes},
                                  format="json").json()
    middle = body["digits"][1]
    response = client_for(alice).post(middle["label_url"], {"label": 4}, format="json")
    assert response.status_code == 200, response.content
    assert sorted(Drawing.objects.filter(user=alice).values_list("label", flat=True), key=str) == [4, None, None]


def test_strokes_of_another_drawing_fall_back_to_the_image(fused_active_model):
    image, _strokes = written_number("10")
    _image, elsewhere = written_number("74")
    body = APIClient().post(PREDICT, {"image": data_url(image), "mode": "number", "strokes": elsewhere},
                            format="json").json()
    assert body["segmentation"]["method"] == "image" and len(body["digits"]) == 2
    assert all(d["strokes"] is None for d in body["digits"])


@pytest.mark.parametrize("strokes, message", [
    ([[[1, "x"]]], "must be a number"),
    ([[[0, 0]]] * 65, "too many strokes"),
    ("[[[0, 0], [NaN, 1]]]", "finite"),
    ({"x": 1}, "list of strokes"),
])
def test_bad_strokes_in_number_mode_are_a_400_and_nothing_is_stored(alice, fused_active_model, strokes, message):
    image, _strokes = written_number("10")
    response = client_for(alice).post(PREDICT, {"image": data_url(image), "mode": "number", "strokes": strokes},
                                      format="json")
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "invalid_strokes" and message in response.json()["detail"]
    assert Drawing.objects.count() == 0
