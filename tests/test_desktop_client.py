"""The desktop client (clients/desktop.py): DigitClient against a live test server, the Pillow
sketch, the command line, and the Tk window on a virtual X display (Xvfb).

The GUI tests are marked integration. Without Xvfb they are skipped, unless CI is set, where a
missing Xvfb is a failure: run scripts/install-xvfb first.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from clients.desktop import (
    CORRECTED_COLOUR,
    DEFAULT_SERVER,
    PEN_WIDTH,
    UNSURE_COLOUR,
    ApiError,
    App,
    ClientError,
    DigitClient,
    NumberReading,
    Point,
    ServerUnreachable,
    Sketch,
    build_parser,
    error_message,
    resolve_settings,
)

ROOT = Path(__file__).resolve().parents[1]
DESKTOP = ROOT / "clients" / "desktop.py"
ARTIFACTS = ROOT / "artifacts"


# --- Helpers and fixtures ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def live_server(django_db_setup):
    """pytest-django's live server, but bound to 127.0.0.1 rather than "localhost" (which may be ::1)."""
    from pytest_django.live_server_helper import LiveServer

    server = LiveServer("127.0.0.1")
    assert server.url.startswith("http://127.0.0.1:")
    yield server
    server.stop()


def make_token(user) -> str:
    from rest_framework.authtoken.models import Token

    return Token.objects.get_or_create(user=user)[0].key


@pytest.fixture
def alice_token(alice):
    return make_token(alice)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stroke(target, points) -> None:
    """Draw one stroke through an App's handlers (or a Sketch's methods)."""
    first, *rest = points
    if isinstance(target, Sketch):
        target.start(*first)
        for p in rest:
            target.extend(*p)
        return
    target.on_press(Point(*first))
    for p in rest:
        target.on_drag(Point(*p))
    target.on_release()


def line_points(a, b, steps=25):
    return [(a[0] + (b[0] - a[0]) * i / steps, a[1] + (b[1] - a[1]) * i / steps) for i in range(steps + 1)]


def draw_one(target) -> None:
    stroke(target, line_points((140, 50), (140, 230)))


def draw_seven(target) -> None:
    stroke(target, line_points((80, 60), (200, 60)) + line_points((200, 60), (120, 230))[1:])


def sketch_png(draw=draw_one) -> bytes:
    sketch = Sketch()
    draw(sketch)
    return sketch.png_bytes()


def draw_seventeen(target) -> None:
    """"17" on a number canvas (560 x 280): a 1 on the left, a 7 well apart from it on the right."""
    stroke(target, line_points((130, 50), (130, 230)))
    stroke(target, line_points((300, 60), (420, 60)) + line_points((420, 60), (340, 230))[1:])


def number_sketch() -> Sketch:
    sketch = Sketch(560, 280)
    draw_seventeen(sketch)
    return sketch


def number_answer(*, new_fields: bool = True, stored: bool = True) -> dict:
    """A number-mode answer as the API contract gives it: "170", digit 2 (a 7, or a 1) unsure. Without
    `new_fields`, as older servers answer (no segmentation, alternative or per-digit strokes)."""

    def digit(i, d, other, p, box, uncertain=False):
        return {"digit": d, "confidence": p, "probabilities": [0.0] * 10, "uncertain": uncertain,
                "top_two": [{"digit": d, "probability": p}, {"digit": other, "probability": 1 - p}],
                "box": box, "drawing": 20 + i if stored else None,
                "label_url": f"/api/v1/drawings/{20 + i}/label" if stored else None}

    answer = {"number": "170", "model_version": 3, "uncertain": True,
              "digits": [digit(0, 1, 7, 0.98, [100, 40, 160, 240]), digit(1, 7, 1, 0.55, [290, 50, 430, 240], True),
                         digit(2, 0, 6, 0.95, [450, 50, 540, 240])]}
    if new_fields:
        answer.update(segmentation={"method": "strokes", "uncertain": False}, alternative="110")
        for d in answer["digits"]:
            d.update(strokes=None, strokes_used=False)
    return answer


def sent_image(body: bytes) -> Image.Image:
    """The PNG inside a predict request's data URL."""
    image = json.loads(body)["image"]
    assert image.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(image.split(",", 1)[1])))


class FakeServer:
    """A tiny HTTP server answering every request with one canned status, type and body (`body` may be
    changed between requests)."""

    def __init__(self, status: int, body: bytes, content_type: str) -> None:
        outer = self
        self.body = body

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                outer.bodies.append(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                outer.requests.append((self.path, dict(self.headers)))
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(outer.body)))
                self.end_headers()
                self.wfile.write(outer.body)

            def log_message(self, *args):
                pass

        self.requests: list = []
        self.bodies: list[bytes] = []
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def fake_server():
    servers = []

    def start(status=200, body=b"{}", content_type="application/json"):
        server = FakeServer(status, body, content_type)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


# --- Pure logic: no server, no display ---------------------------------------------------------


@pytest.mark.parametrize(
    "body, expected",
    [
        ({"detail": "Invalid token."}, "Invalid token."),
        ({"error": {"code": "bad_image", "message": "Not an image."}}, "Not an image."),
        ({"message": "Too big"}, "Too big"),
        ({"image": ["This field is required."]}, "image: This field is required."),
        ({"label": ["Ensure this value is less than or equal to 9."]}, "label: Ensure this value"),
        ({"errors": [{"detail": "a"}, {"detail": "b"}]}, "a b"),
        ("plain text", "plain text"),
        ({}, "fallback"),
        (None, "fallback"),
    ],
)
def test_error_message_reads_every_error_shape(body, expected):
    assert error_message(body, "fallback").startswith(expected)


def test_sketch_draws_round_black_strokes_on_white():
    sketch = Sketch()
    assert sketch.is_empty
    draw_seven(sketch)
    assert not sketch.is_empty
    image = Image.open(io.BytesIO(sketch.png_bytes()))
    assert image.size == (280, 280) and image.mode == "L"
    assert image.getpixel((0, 0)) == 255 and image.getpixel((279, 279)) == 255  # white background
    assert image.getpixel((140, 60)) == 0  # on the top bar
    assert image.getpixel((140, 60 + 8)) == 0 and image.getpixel((140, 60 + 11)) == 255  # pen about 18 px wide
    # Round caps: ink reaches half a pen width beyond the end of the stroke, in a disc, not a square.
    assert image.getpixel((80 - 8, 60)) == 0
    assert image.getpixel((80 - 8, 60 - 8)) == 255


def test_sketch_click_makes_a_dot_and_clear_empties_it():
    sketch = Sketch()
    sketch.start(100, 100)
    assert not sketch.is_empty
    assert sketch.image.getpixel((100, 100)) == 0
    sketch.clear()
    assert sketch.is_empty
    assert sketch.image.getextrema() == (255, 255)


def test_sketch_ignores_jitter_below_a_pixel():
    sketch = Sketch()
    sketch.start(10, 10)
    assert sketch.extend(10.3, 10.2) is False
    assert sketch.extend(20, 10) is True
    assert sketch.strokes == [[(10, 10), (20, 10)]]


def test_sketch_records_the_strokes_with_their_times_for_the_api():
    ticks = iter([100.0, 100.02, 100.5, 100.6, 101.0, 101.0 + 17 * 60])  # seconds, as time.monotonic gives them
    sketch = Sketch(clock=lambda: next(ticks))
    assert sketch.stroke_data() is None
    sketch.start(80, 60)
    sketch.extend(120, 60)
    sketch.extend(120.3, 60.2)  # jitter: not recorded
    sketch.start(100, 100)
    sketch.extend(100, 200)
    assert sketch.stroke_data() == [[[80.0, 60.0, 0.0], [120.0, 60.0, 20.0]],
                                    [[100.0, 100.0, 500.0], [100.0, 200.0, 600.0]]]
    sketch.clear()
    assert sketch.stroke_data() is None
    sketch.start(5, 5)  # a new drawing starts the clock again
    assert sketch.stroke_data() == [[[5.0, 5.0, 0.0]]]
    sketch.start(9, 9)  # 17 minutes later: beyond the times the API takes
    assert sketch.stroke_data() is None


def test_more_strokes_than_the_api_takes_are_not_sent():
    from clients.desktop import MAX_STROKES
    from recognizer.ml.strokes import MAX_STROKES as API_MAX_STROKES

    assert MAX_STROKES == API_MAX_STROKES
    sketch = Sketch()
    for i in range(MAX_STROKES + 1):
        sketch.start(10 + i, 10)
    assert sketch.stroke_data() is None and not sketch.is_empty


def test_a_wide_sketch_is_a_wide_png_with_its_strokes():
    sketch = number_sketch()
    assert (sketch.width, sketch.height) == (560, 280)
    image = Image.open(io.BytesIO(sketch.png_bytes()))
    assert image.size == (560, 280) and image.mode == "L"
    assert image.getpixel((130, 140)) == 0 and image.getpixel((420, 61)) == 0  # the 1, and the 7's far corner
    assert image.getpixel((559, 279)) == 255
    one, seven = sketch.stroke_data()
    assert {point[0] for point in one} == {130.0}
    assert max(point[0] for point in seven) == 420.0  # beyond a square canvas: not clipped to 280
    assert seven[0][2] >= one[-1][2]  # one clock for the whole number
    sketch.clear()
    assert sketch.is_empty and sketch.image.getextrema() == (255, 255)  # the whole width, not a square of it


def test_number_reading_says_which_digits_it_is_unsure_of():
    reading = NumberReading(number_answer())
    assert reading.number == "170"
    assert reading.message() == "I read 1?0 — not sure of digit 2."
    assert reading.selected == 1  # the unsure digit is selected first
    assert reading.describe_selected() == "Digit 2 of 3: 7, unsure (or 1?)"
    assert reading.alternative() == "110"

    answer = number_answer()
    for d in answer["digits"]:
        d["uncertain"] = True
    assert NumberReading(answer).message() == "I read ??? — not sure of digits 1, 2 and 3."
    answer["digits"][1]["uncertain"] = False
    assert NumberReading(answer).message() == "I read ?7? — not sure of digits 1 and 3."


def test_number_reading_with_a_correction():
    reading = NumberReading(number_answer())
    reading.corrections[1] = 4
    assert reading.number == "140"
    assert reading.message() == "It's 140 (corrected; I read 170)."
    assert reading.describe_selected() == "Digit 2 of 3: 4 (corrected)"
    assert reading.alternative() is None  # "or 110?" no more: the user has said what the digits are


def test_number_reading_of_an_older_servers_answer():
    answer = number_answer(new_fields=False)
    reading = NumberReading(answer)
    assert reading.message() == "I read 1?0 — not sure of digit 2." and reading.alternative() is None
    answer["digits"][1]["uncertain"] = answer["uncertain"] = False
    assert NumberReading(answer).message() == "It's 170."
    answer["uncertain"] = True  # unsure, but of no digit in particular
    assert NumberReading(answer).message() == "I read 170 — not sure of it."


def test_number_reading_doubts_the_split_when_the_server_does():
    answer = number_answer()
    answer["digits"][1]["uncertain"] = False
    answer["segmentation"]["uncertain"] = True
    reading = NumberReading(answer)
    assert reading.message() == "I read 170 — not sure where one digit ends and the next begins."
    reading.corrections[0] = 4  # a correction cannot mend a split
    assert reading.message() == "I read 470 — not sure where one digit ends and the next begins."


def test_number_reading_finds_the_box_under_a_point_and_moves_the_selection():
    reading = NumberReading(number_answer())
    assert reading.box(2) == (450, 50, 540, 240)
    assert reading.box_at(120, 100) == 0 and reading.box_at(539, 239) == 2
    assert reading.box_at(540, 100) is None and reading.box_at(200, 100) is None  # x1 exclusive; between boxes
    reading.move(5)
    assert reading.selected == 2
    reading.move(-9)
    assert reading.selected == 0


def test_server_and_token_come_from_arguments_then_environment_then_default():
    parser = build_parser()
    env = {"DIGITSITE_URL": "http://env:9000", "DIGITSITE_TOKEN": "envtoken"}
    assert resolve_settings(parser.parse_args([]), {}) == (DEFAULT_SERVER, None)
    assert resolve_settings(parser.parse_args([]), env) == ("http://env:9000", "envtoken")
    args = parser.parse_args(["--server", "http://arg:1", "--token", "argtoken"])
    assert resolve_settings(args, env) == ("http://arg:1", "argtoken")


def test_client_normalises_the_server_address():
    assert DigitClient("127.0.0.1:8000/").url("predict") == "http://127.0.0.1:8000/api/v1/predict"
    assert DigitClient("https://digits.example/", token=" ").token is None


def test_label_must_be_a_digit():
    with pytest.raises(ValueError):
        DigitClient().label(1, 10)


def test_help_works():
    result = subprocess.run([sys.executable, str(DESKTOP), "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "--server" in result.stdout and "--token" in result.stdout and "DIGITSITE_URL" in result.stdout


def test_no_display_is_a_clear_error():
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    result = subprocess.run([sys.executable, str(DESKTOP)], capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 2
    assert "cannot open a window" in result.stderr and "DISPLAY" in result.stderr


def test_server_down_is_reported_as_unreachable():
    client = DigitClient(f"http://127.0.0.1:{free_port()}", timeout=5)
    with pytest.raises(ServerUnreachable, match="connection refused. Is it running"):
        client.predict(sketch_png())


def test_a_server_that_never_answers_times_out():
    with socket.socket() as listener:  # accepts connections (backlog) but never replies
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        client = DigitClient(f"http://127.0.0.1:{listener.getsockname()[1]}", timeout=0.5)
        with pytest.raises(ServerUnreachable, match="did not answer within 0.5 s"):
            client.predict(sketch_png())


def test_non_json_error_from_a_proxy_keeps_the_status(fake_server):
    server = fake_server(502, b"<html>Bad Gateway</html>", "text/html")
    with pytest.raises(ApiError) as info:
        DigitClient(server.url).predict(sketch_png())
    assert info.value.status == 502
    assert "502" in str(info.value)


def test_json_error_message_is_shown(fake_server):
    server = fake_server(429, json.dumps({"detail": "Request was throttled. Expected available in 7 seconds."}).encode())
    with pytest.raises(ApiError, match="throttled") as info:
        DigitClient(server.url).predict(sketch_png())
    assert info.value.status == 429


def test_request_is_json_with_a_data_url_and_the_token_header(fake_server):
    answer = {"digit": 7, "confidence": 0.9, "probabilities": [0.01] * 10, "model_version": 1,
              "uncertain": False, "drawing": 5}
    server = fake_server(200, json.dumps(answer).encode())
    assert DigitClient(server.url, token="k3y").predict(b"\x89PNG fake") == answer
    path, headers = server.requests[0]
    assert path == "/api/v1/predict"
    assert headers["Authorization"] == "Token k3y"
    assert headers["Content-Type"] == "application/json"
    assert set(json.loads(server.bodies[0])) == {"image"}  # no strokes given: none sent


def test_the_predict_request_carries_the_strokes(fake_server):
    server = fake_server(200, json.dumps({"digit": 7, "drawing": None}).encode())
    sketch = Sketch()
    draw_seven(sketch)
    DigitClient(server.url).predict(sketch.png_bytes(), sketch.stroke_data())
    body = json.loads(server.bodies[0])
    assert body["image"].startswith("data:image/png;base64,")
    assert body["strokes"] == sketch.stroke_data()
    [stroke] = body["strokes"]
    assert [tuple(point[:2]) for point in stroke] == sketch.strokes[0]


def test_a_number_request_carries_the_mode_the_strokes_and_store(fake_server):
    answer = number_answer()
    server = fake_server(200, json.dumps(answer).encode())
    sketch = number_sketch()
    assert DigitClient(server.url, token="k3y").predict(sketch.png_bytes(), sketch.stroke_data(),
                                                        mode="number") == answer
    body = json.loads(server.bodies[0])
    assert set(body) == {"image", "mode", "strokes", "store"}
    assert body["mode"] == "number" and body["store"] is True
    assert body["strokes"] == sketch.stroke_data()
    assert sent_image(server.bodies[0]).size == (560, 280)


def test_a_number_answer_must_have_digits(fake_server):
    server = fake_server(200, json.dumps({"digit": 7, "drawing": None}).encode())  # a server without number mode
    with pytest.raises(ClientError, match="no number"):
        DigitClient(server.url).predict(sketch_png(), mode="number")
    with pytest.raises(ValueError):
        DigitClient(server.url).predict(sketch_png(), mode="numbers")


def test_a_digit_is_corrected_at_its_label_url_on_the_server_only(fake_server):
    server = fake_server(200, json.dumps({"id": 21, "label": 4}).encode())
    DigitClient(server.url + "/", token="k3y").label_at("/api/v1/drawings/21/label", 4)
    path, headers = server.requests[0]
    assert path == "/api/v1/drawings/21/label" and headers["Authorization"] == "Token k3y"
    assert json.loads(server.bodies[0]) == {"label": 4}
    # Under a path prefix the server's link already holds the prefix: it is not added twice.
    DigitClient(server.url + "/digits", token="k3y").label_at("/digits/api/v1/drawings/21/label", 5)
    assert server.requests[1][0] == "/digits/api/v1/drawings/21/label"
    # A link to another host would carry the token there: refused, nothing sent.
    with pytest.raises(ClientError, match="another site"):
        DigitClient(server.url, token="k3y").label_at("http://elsewhere.example/api/v1/drawings/21/label", 4)
    with pytest.raises(ValueError):
        DigitClient(server.url, token="k3y").label_at("/api/v1/drawings/21/label", 10)
    assert len(server.requests) == 2


def test_a_200_that_is_not_json_is_an_error(fake_server):
    server = fake_server(200, b"<html>hello</html>", "text/html")
    with pytest.raises(ClientError, match="did not answer with JSON"):
        DigitClient(server.url).predict(sketch_png())


# --- DigitClient against the real API on a live test server ------------------------------------


@pytest.mark.django_db(transaction=True)
def test_anonymous_prediction_is_not_stored(live_server, active_model):
    from recognizer.models import Drawing

    answer = DigitClient(live_server.url).predict(sketch_png(draw_one))
    assert 0 <= answer["digit"] <= 9
    assert 0.0 <= answer["confidence"] <= 1.0
    assert len(answer["probabilities"]) == 10
    assert answer["model_version"] == active_model.pk
    assert isinstance(answer["uncertain"], bool)
    assert answer["drawing"] is None
    assert not Drawing.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_prediction_with_a_token_is_stored_and_can_be_labelled(live_server, active_model, alice, alice_token):
    from recognizer.models import Drawing

    client = DigitClient(live_server.url, alice_token)
    sketch = Sketch()
    draw_seven(sketch)
    answer = client.predict(sketch.png_bytes(), sketch.stroke_data())
    drawing = Drawing.objects.get(pk=answer["drawing"])
    assert drawing.user == alice
    assert drawing.predicted_digit == answer["digit"]
    assert drawing.label is None
    assert drawing.strokes == sketch.stroke_data()
    from recognizer import serving

    assert answer["strokes_used"] is getattr(serving.model_cache.get().estimator, "reads_strokes", False)

    client.label(answer["drawing"], 4)
    drawing.refresh_from_db()
    assert drawing.label == 4


@pytest.mark.django_db(transaction=True)
def test_number_mode_against_the_live_server(live_server, active_model, alice, alice_token):
    from recognizer.models import Drawing

    client = DigitClient(live_server.url, alice_token)
    sketch = number_sketch()
    answer = client.predict(sketch.png_bytes(), sketch.stroke_data(), mode="number")
    digits = answer["digits"]
    assert len(digits) == 2  # the 1 and the 7 are far apart: whatever reads them, it finds two digits
    assert answer["number"] == "".join(str(d["digit"]) for d in digits)
    assert answer["model_version"] == active_model.pk
    assert answer["uncertain"] == (any(d["uncertain"] for d in digits)
                                   or bool(answer.get("segmentation", {}).get("uncertain")))
    (a0, _, a1, _), (b0, _, b1, _) = (d["box"] for d in digits)
    assert a0 <= 130 < a1 <= b0 and b0 <= 340 and 420 < b1 <= 560  # left to right, each around its digit
    for d in digits:
        x0, y0, x1, y1 = d["box"]
        assert 0 <= x0 < x1 <= 560 and 0 <= y0 < y1 <= 280
        assert NumberReading(answer).box_at((x0 + x1) / 2, (y0 + y1) / 2) == digits.index(d)
    stored = Drawing.objects.filter(user=alice)
    assert sorted(stored.values_list("pk", flat=True)) == sorted(d["drawing"] for d in digits)

    client.label_at(digits[1]["label_url"], 7)
    assert Drawing.objects.get(pk=digits[1]["drawing"]).label == 7
    assert Drawing.objects.get(pk=digits[0]["drawing"]).label is None


def check_newer_number_fields(answer: dict) -> None:
    """The number answer's fields newer than number mode itself, as the client reads them."""
    segmentation = answer["segmentation"]
    assert segmentation["method"] in ("strokes", "image") and isinstance(segmentation["uncertain"], bool)
    assert answer["uncertain"] or not segmentation["uncertain"]  # an unsure split makes the answer unsure
    alternative = answer["alternative"]
    assert alternative is None or (alternative.isdigit() and alternative != answer["number"])
    for d in answer["digits"]:
        if d.get("strokes") is not None:  # this digit's own strokes, in the sent image's pixels
            x0, y0, x1, y1 = d["box"]
            assert all(x0 - PEN_WIDTH <= x <= x1 + PEN_WIDTH and y0 - PEN_WIDTH <= y <= y1 + PEN_WIDTH
                       for s in d["strokes"] for x, y, _t in s)


def test_the_newer_number_fields_check_itself():
    answer = number_answer()
    check_newer_number_fields(answer)
    answer["digits"][0]["strokes"] = [[[130.0, 50.0, 0.0], [130.0, 230.0, 90.0]]]
    check_newer_number_fields(answer)
    for broken in ({"alternative": "170"}, {"segmentation": {"method": "guess", "uncertain": False}}):
        with pytest.raises(AssertionError):
            check_newer_number_fields({**answer, **broken})
    answer["digits"][0]["strokes"] = [[[400.0, 50.0, 0.0]]]  # the 7's ink given to the 1
    with pytest.raises(AssertionError):
        check_newer_number_fields(answer)


@pytest.mark.django_db(transaction=True)
def test_the_newer_number_answer_fields_when_the_server_gives_them(live_server, active_model, alice_token):
    sketch = number_sketch()
    answer = DigitClient(live_server.url, alice_token).predict(sketch.png_bytes(), sketch.stroke_data(),
                                                               mode="number")
    if "segmentation" not in answer and "alternative" not in answer:
        pytest.skip("this server answers number mode without segmentation or alternative (an older one)")
    check_newer_number_fields(answer)
    reading = NumberReading(answer)  # and the client makes sense of it
    assert reading.number == answer["number"] and reading.message().startswith(("It's ", "I read "))
    assert reading.alternative() == answer["alternative"]


@pytest.mark.django_db(transaction=True)
def test_an_anonymous_number_is_not_stored(live_server, active_model):
    from recognizer.models import Drawing

    sketch = number_sketch()
    answer = DigitClient(live_server.url).predict(sketch.png_bytes(), sketch.stroke_data(), mode="number")
    assert answer["digits"] and all(d["drawing"] is None and d["label_url"] is None for d in answer["digits"])
    assert not Drawing.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_asking_again_with_the_same_key_stores_the_drawing_once(live_server, active_model, alice, alice_token):
    from recognizer.models import Drawing

    client = DigitClient(live_server.url, alice_token)
    png = sketch_png(draw_seven)
    first = client.predict(png, idempotency_key="drawing-1")
    again = client.predict(png, idempotency_key="drawing-1")  # the answer was lost: the user presses again
    assert again == first and Drawing.objects.filter(user=alice).count() == 1
    assert client.predict(png, idempotency_key="drawing-2")["drawing"] != first["drawing"]


@pytest.mark.django_db(transaction=True)
def test_bad_token_is_refused_with_the_servers_message(live_server, active_model):
    with pytest.raises(ApiError) as info:
        DigitClient(live_server.url, "not-a-real-token").predict(sketch_png())
    assert info.value.status in (401, 403)  # DRF says 403 when SessionAuthentication comes first
    assert info.value.message and "HTTP" not in info.value.message


@pytest.mark.django_db(transaction=True)
def test_garbage_image_is_a_400_with_a_message(live_server, active_model):
    with pytest.raises(ApiError) as info:
        DigitClient(live_server.url).predict(b"this is not a png")
    assert info.value.status == 400
    assert info.value.message


@pytest.mark.django_db(transaction=True)
def test_blank_drawing_is_refused_with_a_message(live_server, active_model):
    with pytest.raises(ApiError) as info:
        DigitClient(live_server.url).predict(Sketch().png_bytes())
    assert 400 <= info.value.status < 500
    assert info.value.message


@pytest.mark.django_db(transaction=True)
def test_nobody_labels_someone_elses_drawing(live_server, active_model, alice, alice_token, bob):
    from recognizer.models import Drawing

    answer = DigitClient(live_server.url, alice_token).predict(sketch_png())
    with pytest.raises(ApiError) as info:
        DigitClient(live_server.url, make_token(bob)).label(answer["drawing"], 3)
    assert info.value.status in (403, 404)
    assert Drawing.objects.get(pk=answer["drawing"]).label is None


@pytest.mark.django_db(transaction=True)
def test_obtain_token(live_server, alice):
    from rest_framework.authtoken.models import Token

    client = DigitClient(live_server.url)
    token = client.obtain_token("alice", "alice-password-1")
    assert token == Token.objects.get(user=alice).key
    assert client.token == token
    with pytest.raises(ApiError) as info:
        DigitClient(live_server.url).obtain_token("alice", "wrong")
    assert 400 <= info.value.status < 500 and info.value.message


# --- The window on a virtual display -----------------------------------------------------------


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() not in ("", "0", "false", "no")


def _free_display() -> int:
    for n in range(90, 400):
        if not Path(f"/tmp/.X{n}-lock").exists() and not Path(f"/tmp/.X11-unix/X{n}").exists():
            return n
    raise RuntimeError("no free X display number between :90 and :399")


@pytest.fixture(scope="module")
def xvfb(tmp_path_factory):
    """A private Xvfb display for this module; DISPLAY points at it while the tests run."""
    xvfb_bin = shutil.which("Xvfb")
    if xvfb_bin is None:
        message = "Xvfb is not installed (run scripts/install-xvfb)"
        if _truthy(os.environ.get("CI")):
            pytest.fail(f"{message}: CI is set, so the desktop client GUI test must run.")
        pytest.skip(message)
    try:
        import tkinter  # noqa: F401
    except ImportError as exc:
        if _truthy(os.environ.get("CI")):
            pytest.fail(f"tkinter is missing ({exc}): run scripts/install-xvfb")
        pytest.skip(f"tkinter is missing ({exc}): run scripts/install-xvfb")

    log = tmp_path_factory.mktemp("xvfb") / "xvfb.log"
    process = number = None
    for _attempt in range(5):  # another process may take the number between the check and the start
        number = _free_display()
        with open(log, "ab") as log_file:
            process = subprocess.Popen(
                [xvfb_bin, f":{number}", "-screen", "0", "1024x768x24", "-nolisten", "tcp"],
                stdout=subprocess.DEVNULL, stderr=log_file,
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and process.poll() is None:
            if Path(f"/tmp/.X11-unix/X{number}").exists():
                break
            time.sleep(0.05)
        if process.poll() is None and Path(f"/tmp/.X11-unix/X{number}").exists():
            break
        if process.poll() is None:
            process.kill()
        process.wait()
        process = None
    if process is None:
        pytest.fail(f"Xvfb did not start on any free display number: {log.read_text(errors='replace')[-2000:]}")

    previous = os.environ.get("DISPLAY")
    os.environ["DISPLAY"] = f":{number}"
    try:
        yield f":{number}"
    finally:
        if previous is None:
            os.environ.pop("DISPLAY", None)
        else:
            os.environ["DISPLAY"] = previous
        process.terminate()  # by its own PID
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def make_app(xvfb):
    import tkinter as tk

    roots = []

    def make(client: DigitClient) -> App:
        root = tk.Tk()
        roots.append(root)
        app = App(root, client)
        root.update()
        return app

    yield make
    for root in roots:
        try:
            root.destroy()
        except tk.TclError:
            pass


def pump(app: App, until, timeout: float = 20.0) -> None:
    """Run the Tk event loop until `until()` is true; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not until():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out; window shows digit={app.digit_var.get()!r} "
                        f"confidence={app.confidence_var.get()!r} status={app.status_var.get()!r}")
        app.root.update()
        time.sleep(0.02)
    app.root.update()


def screenshot(display: str, path: Path, bbox=None) -> bool:
    """Save the virtual screen (or the bbox of it) as PNG: Pillow's X11 grab, else ImageMagick's
    `import -window root`, else `xwd | convert`. Optional: False when none of them works."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        from PIL import ImageGrab

        ImageGrab.grab(bbox=bbox, xdisplay=display).save(path)
        return True
    except Exception:  # noqa: BLE001 - Pillow built without XCB: try the command-line tools
        pass
    env = {**os.environ, "DISPLAY": display}
    if shutil.which("import"):
        result = subprocess.run(["import", "-window", "root", str(path)], env=env, capture_output=True, timeout=30)
        if result.returncode == 0 and path.exists():
            return True
    if shutil.which("xwd") and shutil.which("convert"):
        result = subprocess.run(f"xwd -root -silent | convert xwd:- png:'{path}'", shell=True, env=env,
                                capture_output=True, timeout=30)
        return result.returncode == 0 and path.exists()
    return False


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_gui_predict_and_correct(make_app, xvfb, live_server, active_model, alice, alice_token):
    from recognizer.models import Drawing

    app = make_app(DigitClient(live_server.url, alice_token))
    assert app.canvas.winfo_width() >= 280 and app.canvas.winfo_height() >= 280
    assert app.correct_frame.winfo_ismapped() and not app.correction_enabled

    app.predict()  # nothing drawn: nothing is sent
    assert app.status_var.get() == "Draw a digit first."
    assert app.busy is False and not Drawing.objects.exists()

    draw_seven(app)
    assert app.canvas.find_withtag("ink")
    app.predict()
    pump(app, lambda: not app.busy)

    assert app.status_var.get() == "Wrong? Press the right digit below.", app.status_var.get()
    drawing = Drawing.objects.get(user=alice)
    assert app.drawing_id == drawing.pk
    assert app.digit_var.get() == str(drawing.predicted_digit)
    assert app.confidence_var.get().startswith("Confidence: ")
    assert app.confidence_var.get().endswith("— unsure") == bool(app.last_prediction["uncertain"])
    assert app.correction_enabled
    # What was sent is what the canvas shows: the stored PNG is the sketch, the stored strokes its strokes.
    with drawing.image.open("rb") as f:
        assert Image.open(f).convert("L").tobytes() == app.sketch.image.tobytes()
    assert len(drawing.strokes) == 1
    assert [tuple(point[:2]) for point in drawing.strokes[0]] == app.sketch.strokes[0]
    times = [point[2] for point in drawing.strokes[0]]
    assert times[0] == 0 and times == sorted(times)

    app.correct(7)
    pump(app, lambda: app.status_var.get().startswith("Thanks"))
    assert app.status_var.get() == "Thanks: saved as a 7."
    drawing.refresh_from_db()
    assert drawing.label == 7

    root = app.root
    bbox = (root.winfo_rootx(), root.winfo_rooty(),
            root.winfo_rootx() + root.winfo_width(), root.winfo_rooty() + root.winfo_height())
    if screenshot(xvfb, ARTIFACTS / "desktop-client.png", bbox):
        assert (ARTIFACTS / "desktop-client.png").stat().st_size > 0

    app.clear()
    assert not app.canvas.find_withtag("ink") and app.sketch.is_empty
    assert app.digit_var.get() == "?" and not app.correction_enabled and app.drawing_id is None


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)  # keeps all GUI tests in one block
def test_gui_sends_one_key_per_drawing(make_app, fake_server):
    answer = {"digit": 7, "confidence": 0.9, "probabilities": [0.1] * 10, "model_version": 1,
              "uncertain": False, "drawing": 9}
    server = fake_server(200, json.dumps(answer).encode())
    app = make_app(DigitClient(server.url, "t"))

    def predict() -> str:
        app.predict()
        pump(app, lambda: not app.busy)
        return server.requests[-1][1]["Idempotency-Key"]

    draw_seven(app)
    first = predict()
    assert predict() == first  # the same drawing asked again: the server stores it once
    draw_one(app)  # one more stroke: another drawing
    second = predict()
    app.clear()
    draw_one(app)
    third = predict()
    assert len({first, second, third}) == 3 and all(len(key) == 32 for key in (first, second, third))


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_gui_anonymous_cannot_correct(make_app, live_server, active_model):
    from recognizer.models import Drawing

    app = make_app(DigitClient(live_server.url))
    assert not app.correct_frame.winfo_ismapped()
    draw_one(app)
    app.predict()
    pump(app, lambda: not app.busy)
    assert app.digit_var.get() in list("0123456789")
    assert app.drawing_id is None and not app.correction_enabled
    app.correct(1)
    assert "token" in app.status_var.get()
    assert not Drawing.objects.exists()


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)  # keeps all GUI tests in one block
def test_gui_server_down(make_app):
    app = make_app(DigitClient(f"http://127.0.0.1:{free_port()}", "some-token", timeout=5))
    draw_one(app)
    app.predict()
    pump(app, lambda: not app.busy)
    assert "Is it running?" in app.status_var.get()
    assert app.digit_var.get() == "?"
    assert str(app.predict_button.cget("state")) == "normal"


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_gui_shows_the_servers_error_message(make_app, live_server, active_model):
    app = make_app(DigitClient(live_server.url, "not-a-real-token"))
    draw_one(app)
    app.predict()
    pump(app, lambda: not app.busy)
    status = app.status_var.get()
    assert status.endswith(("(HTTP 401)", "(HTTP 403)")) and len(status) > len("(HTTP 401)") + 3, status


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)  # keeps all GUI tests in one block
def test_gui_clear_drops_an_answer_still_on_its_way(make_app, fake_server):
    answer = {"digit": 3, "confidence": 0.5, "probabilities": [0.1] * 10, "model_version": 1,
              "uncertain": True, "drawing": 9}
    server = fake_server(200, json.dumps(answer).encode())
    app = make_app(DigitClient(server.url, "t"))
    draw_one(app)
    app.predict()
    app.clear()
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        app.root.update()
        time.sleep(0.02)
    assert app.digit_var.get() == "?" and app.drawing_id is None
    assert server.requests  # it was sent; its answer was ignored


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)  # keeps all GUI tests in one block
def test_gui_real_mouse_draws_on_canvas_and_sketch(make_app, xvfb):
    """The event bindings, driven by a real (virtual) mouse through xdotool."""
    if shutil.which("xdotool") is None:
        pytest.skip("xdotool is not installed (run scripts/install-xvfb)")
    app = make_app(DigitClient(f"http://127.0.0.1:{free_port()}"))
    app.root.lift()
    app.root.update()
    x0, y0 = app.canvas.winfo_rootx(), app.canvas.winfo_rooty()
    env = {**os.environ, "DISPLAY": xvfb}

    def xdo(*args):
        subprocess.run(["xdotool", *map(str, args)], env=env, check=True, timeout=10)
        app.root.update()

    xdo("mousemove", "--sync", x0 + 100, y0 + 60)
    xdo("mousedown", 1)
    for i in range(1, 16):
        xdo("mousemove", "--sync", x0 + 100 + i * 4, y0 + 60 + i * 10)
    xdo("mouseup", 1)
    pump(app, lambda: len(app.sketch.strokes) == 1 and len(app.sketch.strokes[0]) > 5, timeout=10)
    assert app.canvas.find_withtag("ink")
    start_x, start_y = app.sketch.strokes[0][0]
    assert abs(start_x - 100) <= 1 and abs(start_y - 60) <= 1
    assert app.sketch.image.getpixel((130, 135)) == 0  # on the line drawn


def press_key(app: App, keysym: str) -> None:
    """A key press as Tk delivers it to the window's bindings."""
    app.root.focus_force()
    app.root.update()
    app.root.event_generate(f"<KeyPress-{keysym}>")
    app.root.update()


def box_items(app: App) -> list:
    return sorted(app.canvas.find_withtag("box"), key=lambda item: app.canvas.coords(item)[0])


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_gui_number_mode_predict_and_correct(make_app, xvfb, live_server, active_model, alice, alice_token):
    from recognizer.models import Drawing

    app = make_app(DigitClient(live_server.url, alice_token))
    draw_one(app)
    press_key(app, "n")  # to number mode: a wide canvas, cleared
    assert app.mode == "number" and app.mode_var.get() == "number"
    assert app.canvas.winfo_width() == 560 and app.canvas.winfo_height() == 280
    assert app.sketch.is_empty and not app.canvas.find_withtag("ink") and app.sketch.image.size == (560, 280)

    draw_seventeen(app)
    app.predict()
    pump(app, lambda: not app.busy)
    answer = app.last_prediction
    digits = answer["digits"]
    assert app.digit_var.get() == answer["number"] and len(digits) == 2
    assert app.confidence_var.get() == NumberReading(answer).message()
    assert [app.canvas.coords(item) for item in box_items(app)] == [[float(v) for v in d["box"]] for d in digits]
    assert app.correction_enabled and "Click its box" in app.status_var.get()

    x0, y0, x1, y1 = digits[0]["box"]
    app.on_press(Point((x0 + x1) / 2, (y0 + y1) / 2))  # a click on the 1's box selects it, and draws nothing
    app.on_release()
    assert app.reading.selected == 0 and len(app.sketch.strokes) == 2
    assert app.selection_var.get().startswith("Digit 1 of 2: ")
    right = (digits[0]["digit"] + 1) % 10
    app.correct(right)
    pump(app, lambda: app.status_var.get().startswith("Thanks"))
    assert app.status_var.get() == f"Thanks: digit 1 saved as a {right}."
    assert Drawing.objects.get(pk=digits[0]["drawing"]).label == right
    assert Drawing.objects.get(pk=digits[1]["drawing"]).label is None
    assert app.digit_var.get() == f"{right}{digits[1]['digit']}"  # the number shown, corrected
    assert app.canvas.itemcget(box_items(app)[0], "outline") == CORRECTED_COLOUR

    root = app.root
    bbox = (root.winfo_rootx(), root.winfo_rooty(),
            root.winfo_rootx() + root.winfo_width(), root.winfo_rooty() + root.winfo_height())
    if screenshot(xvfb, ARTIFACTS / "desktop-client-number.png", bbox):
        assert (ARTIFACTS / "desktop-client-number.png").stat().st_size > 0

    press_key(app, "n")  # back to a digit: square again, the number and its boxes gone
    assert app.mode == "digit" and app.canvas.winfo_width() == 280 and app.sketch.image.size == (280, 280)
    assert not app.canvas.find_withtag("box") and app.reading is None and app.digit_var.get() == "?"


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)  # keeps all GUI tests in one block
def test_gui_number_unsure_digit_alternative_and_keys(make_app, fake_server):
    server = fake_server(200, json.dumps(number_answer()).encode())
    app = make_app(DigitClient(server.url, "t"))
    app.mode_buttons["number"].invoke()
    assert app.mode == "number" and app.sketch.width == 560
    draw_seventeen(app)
    app.predict()
    pump(app, lambda: not app.busy)
    body = json.loads(server.bodies[0])
    assert body["mode"] == "number" and body["store"] is True and body["strokes"] == app.sketch.stroke_data()
    assert sent_image(server.bodies[0]).convert("L").tobytes() == app.sketch.image.tobytes()

    assert app.digit_var.get() == "170"
    assert app.confidence_var.get() == "I read 1?0 — not sure of digit 2."
    assert app.alternative_var.get() == "or 110?"
    assert str(app.digit_label.cget("fg")) == UNSURE_COLOUR
    items = box_items(app)
    assert [app.canvas.itemcget(item, "outline") for item in items][1] == UNSURE_COLOUR
    assert [float(app.canvas.itemcget(item, "width")) for item in items] == [1.0, 3.0, 1.0]  # the unsure one selected

    press_key(app, "Right")
    assert app.reading.selected == 2
    assert float(app.canvas.itemcget(box_items(app)[2], "width")) == 3.0
    press_key(app, "Left")
    press_key(app, "Left")
    press_key(app, "Left")  # stops at the first digit
    assert app.reading.selected == 0
    press_key(app, "Right")
    press_key(app, "1")  # digit 2 is a 1
    pump(app, lambda: app.status_var.get().startswith("Thanks"))
    assert app.status_var.get() == "Thanks: digit 2 saved as a 1."
    path, headers = server.requests[-1]
    assert path == "/api/v1/drawings/21/label" and headers["Authorization"] == "Token t"
    assert json.loads(server.bodies[-1]) == {"label": 1}
    assert app.digit_var.get() == "110" and app.confidence_var.get() == "It's 110 (corrected; I read 170)."
    assert app.alternative_var.get() == ""

    # Digit mode afterwards asks as it always did: no mode in the request.
    server.body = json.dumps({"digit": 4, "confidence": 0.9, "uncertain": False, "drawing": 30}).encode()
    app.set_mode("digit")
    draw_one(app)
    app.predict()
    pump(app, lambda: not app.busy)
    assert "mode" not in json.loads(server.bodies[-1]) and app.digit_var.get() == "4"
    assert sent_image(server.bodies[-1]).size == (280, 280)


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)  # keeps all GUI tests in one block
def test_gui_number_digit_that_was_not_stored_cannot_be_corrected(make_app, fake_server):
    server = fake_server(200, json.dumps(number_answer(new_fields=False, stored=False)).encode())
    for client, says in ((DigitClient(server.url, "t"), "Digit 2 was not stored"),
                         (DigitClient(server.url), "Corrections need a token")):
        app = make_app(client)
        app.set_mode("number")
        app.correct(3)
        assert app.status_var.get().startswith(("Predict first", "Corrections need a token"))
        draw_seventeen(app)
        app.predict()
        pump(app, lambda app=app: not app.busy)
        assert app.confidence_var.get() == "I read 1?0 — not sure of digit 2."
        assert app.alternative_var.get() == ""  # an older answer: no alternative given
        assert not app.correction_enabled
        requests = len(server.requests)
        app.correct(3)
        assert app.status_var.get().startswith(says)
        assert len(server.requests) == requests  # nothing sent


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)  # keeps all GUI tests in one block
def test_gui_number_more_ink_drops_the_boxes(make_app, fake_server):
    server = fake_server(200, json.dumps(number_answer()).encode())
    app = make_app(DigitClient(server.url, "t"))
    app.set_mode("number")
    draw_seventeen(app)
    app.predict()
    pump(app, lambda: not app.busy)
    assert len(box_items(app)) == 3
    stroke(app, line_points((480, 60), (480, 200)))  # a stroke starting inside the last box: drawing, not a click
    assert len(app.sketch.strokes) == 3 and app.sketch.strokes[-1][0] == (480, 60)
    assert not app.canvas.find_withtag("box") and app.reading is None and not app.correction_enabled
    assert app.confidence_var.get() == "The drawing changed: Predict again."
    app.predict()
    pump(app, lambda: not app.busy)
    assert len(server.requests) == 2
    assert server.requests[0][1]["Idempotency-Key"] != server.requests[1][1]["Idempotency-Key"]  # another drawing
