"""The drawing page in a real browser: Debian's Chromium, headless, driven by Playwright.

Logs in through the form, draws a digit by moving the pointer along a real pen trajectory
(pendigits, or a built-in stroke list when PENDIGITS_DIR is absent), reads the prediction, corrects
it with one click, and checks that the correction is stored. The page sends the pen strokes with the
image, and they are stored with the drawing. Screenshots go to artifacts/.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from recognizer.models import Drawing

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--no-first-run"]

# A "4" and a "7" written as pen strokes (x, y in a 0..100 box, y down), for when pendigits is absent.
BUILT_IN = [
    (4, [np.array([[60, 5], [45, 30], [30, 55], [20, 70], [45, 70], [70, 70], [85, 70]], float),
         np.array([[62, 30], [62, 50], [62, 70], [62, 90], [62, 100]], float)]),
    (7, [np.array([[15, 10], [40, 10], [65, 10], [85, 10], [75, 30], [62, 52], [52, 75], [45, 100]], float)]),
]


def need_browser():
    """Skip without Chromium or Playwright, unless CI is set: then a missing browser is a failure."""
    reason = None
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is missing (scripts/install-browser installs it)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            reason = "the playwright package is not installed (pip install playwright)"
    if reason is None:
        return
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"Browser test cannot run under CI: {reason}")
    pytest.skip(reason)


def pen_samples(limit: int = 8) -> list[tuple[int, list[np.ndarray]]]:
    directory = os.environ.get("PENDIGITS_DIR", "")
    if directory and Path(directory).exists():
        from recognizer.ml.pendigits import load_pendigits

        digits = load_pendigits(directory)
        rng = np.random.default_rng(3)
        picks = rng.choice(len(digits), size=limit, replace=False)
        return [(digits[i].label, digits[i].strokes) for i in picks]
    return BUILT_IN


@pytest.fixture
def server(transactional_db):
    """The app on 127.0.0.1 and a free port, sharing the test database."""
    from pytest_django.live_server_helper import LiveServer

    live = LiveServer("127.0.0.1:0")
    yield live
    live.stop()


@pytest.fixture
def served_estimator(fused_active_model):
    """The estimator the live server answers with (the server thread shares this process's model cache):
    the fused image + stroke k-NN, so the page's answers must say `strokes_used: true`."""
    from recognizer import serving

    return serving.model_cache.get().estimator


@pytest.fixture
def browser_page(monkeypatch):
    need_browser()
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop in this thread; the test's own ORM calls are still sync.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS, headless=True)
        context = browser.new_context(viewport={"width": 1100, "height": 900})
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.errors = errors
        page.live_bodies = []
        page.on("request", lambda r: r.url.endswith("/api/v1/predict") and page.live_bodies.append(r.post_data or ""))
        yield page
        context.close()
        browser.close()


def draw(page, strokes: list[np.ndarray]) -> None:
    """Move the mouse along the trajectory, fitted into the middle 60% of the canvas."""
    box = page.locator("#pad").bounding_box()
    points = np.concatenate(strokes)
    lo, hi = points.min(axis=0), points.max(axis=0)
    scale = 0.6 * box["width"] / max(hi - lo)
    offset = np.array([box["x"], box["y"]]) + (np.array([box["width"], box["height"]]) - (hi - lo) * scale) / 2
    trace(page, strokes, lo, scale, offset)


def trace(page, strokes: list[np.ndarray], lo: np.ndarray, scale: float, offset: np.ndarray) -> None:
    """Press, move and release the mouse along each stroke, mapped to page pixels (p - lo) * scale + offset."""
    for stroke in strokes:
        xy = (stroke - lo) * scale + offset
        page.mouse.move(*xy[0])
        page.mouse.down()
        for x, y in xy[1:]:
            page.mouse.move(x, y, steps=2)
        page.mouse.up()


def assert_sends_strokes(post_data: str, drawn: list[np.ndarray]) -> list:
    """The predict request carries the pen strokes: one per stroke drawn, [x, y, t] points in the pixels of
    the 280x280 image sent, t in ms since the drawing began (0 at its first point, never going back)."""
    sent = json.loads(post_data)["strokes"]
    assert len(sent) == len(drawn)
    assert all(len(stroke) >= 2 for stroke in sent)  # the mouse moved along every stroke
    points = [point for stroke in sent for point in stroke]
    assert all(len(point) == 3 for point in points)
    assert all(0 <= x <= 280 and 0 <= y <= 280 for x, y, _ in points)
    times = [t for _, _, t in points]
    assert times[0] == 0 and times == sorted(times)
    return sent


def ink(page) -> int:
    """How many of the pad's pixels are inked once the page has painted its latest change: what the user sees."""
    return page.evaluate("""() => new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(() => {
        const pad = document.querySelector("#pad");
        const pixels = pad.getContext("2d").getImageData(0, 0, pad.width, pad.height).data;
        let inked = 0;
        for (let i = 3; i < pixels.length; i += 4) if (pixels[i]) inked++;
        done(inked);
    })))""")


def sent_strokes(page, press) -> list:
    """The strokes that the predict request started by `press()` carried: the drawing as the server gets it."""
    with page.expect_request(lambda r: r.url.endswith("/api/v1/predict") and r.method == "POST") as request:
        press()
    return json.loads(request.value.post_data)["strokes"]


def predict(page, drawn: list[np.ndarray], served_estimator) -> int:
    with page.expect_response(lambda r: r.url.endswith("/api/v1/predict") and r.request.method == "POST"
                              and '"store":true' in (r.request.post_data or "")) as answer:
        page.click("#predict")
    assert answer.value.status == 200, answer.value.text()
    sent = assert_sends_strokes(answer.value.request.post_data, drawn)
    body = answer.value.json()
    assert body["drawing"] is not None
    assert served_estimator.reads_strokes and body["strokes_used"] is True  # a fused answer
    assert Drawing.objects.get(pk=body["drawing"]).strokes == sent  # stored as sent
    page.wait_for_function("document.querySelector('#answer') && !document.querySelector('#answer').hidden")
    shown = page.inner_text("#digit").rstrip("?")
    assert int(shown) == (body["top_two"][0]["digit"] if body["uncertain"] else body["digit"])
    return body["digit"]


def test_a_user_draws_a_digit_reads_the_prediction_and_corrects_it(alice, fused_active_model, served_estimator, server,
                                                                   browser_page):
    page = browser_page
    ARTIFACTS.mkdir(exist_ok=True)

    page.goto(server.url + "/accounts/login/")
    page.fill("#id_username", "alice")
    page.fill("#id_password", "alice-password-1")
    page.click("button[type=submit]")
    page.wait_for_url(server.url + "/")
    assert page.locator("#app").get_attribute("data-authenticated") == "true"

    # An empty canvas: a friendly message, and no request.
    page.click("#predict")
    assert "empty" in page.inner_text("#status")

    # Draw real trajectories until the model misreads one (so the click is a real correction).
    samples = pen_samples()
    for attempt, (truth, strokes) in enumerate(samples):
        # A live preview goes out once the pen rests (debounced); Predict would cancel a pending one.
        with page.expect_request(lambda r: r.url.endswith("/api/v1/predict")
                                 and '"store":false' in (r.post_data or ""), timeout=10_000):
            draw(page, strokes)
        predicted = predict(page, strokes, served_estimator)
        if predicted != truth or attempt == len(samples) - 1:
            break
        page.keyboard.press("Escape")  # clear, and try the next writer's digit
        assert page.locator("#answer").is_hidden()

    # Live previews went out while drawing (not stored), with the strokes so far; only the Predict presses
    # stored drawings.
    previews = [json.loads(body) for body in page.live_bodies if '"store":false' in body]
    assert previews and all(preview["strokes"] and preview["strokes"][0] for preview in previews)
    assert Drawing.objects.filter(user=alice).count() == attempt + 1

    page.click(f"#label-buttons button[data-label='{truth}']")
    page.wait_for_function("document.querySelector('#label-status').textContent.startsWith('Saved')")
    status = page.inner_text("#label-status")
    assert f"it is a {truth}" in status or f"it is a {truth}." in status
    assert page.locator(f"#label-buttons button[data-label='{truth}']").get_attribute("class").count("chosen")

    drawing = Drawing.objects.filter(user=alice).order_by("-id").first()
    assert drawing is not None
    assert drawing.label == truth and drawing.predicted_digit == predicted
    assert drawing.model_version_id == fused_active_model.pk
    page.wait_for_timeout(400)  # let the bars' width transition finish before the picture
    page.screenshot(path=str(ARTIFACTS / "browser-drawing-page.png"), full_page=True)

    # Undo removes the last stroke and keeps the rest (live: the rest is predicted again); My drawings shows
    # the stored drawing.
    inked = ink(page)
    if len(strokes) > 1:
        assert len(sent_strokes(page, lambda: page.click("#undo"))) == len(strokes) - 1
        assert 0 < ink(page) < inked
    else:
        page.click("#undo")
        assert ink(page) == 0 and page.locator("#answer").is_hidden()
    page.goto(server.url + "/drawings/")
    thumb = page.locator(f"[data-drawing='{drawing.pk}'] img")
    thumb.wait_for()
    page.wait_for_function("[...document.images].every((img) => img.complete)")
    assert page.evaluate("(img) => img.naturalWidth", thumb.element_handle()) == 280
    assert page.evaluate("[...document.images].filter((img) => !img.naturalWidth).length") == 0
    page.screenshot(path=str(ARTIFACTS / "browser-my-drawings.png"), full_page=True)
    assert page.errors == []


def test_a_failed_request_keeps_the_drawing_and_says_so(active_model, server, browser_page):
    page = browser_page
    page.goto(server.url + "/")
    page.route("**/api/v1/predict", lambda route: route.fulfill(
        status=503, content_type="application/json",
        body='{"detail": "Predictions are not available right now.", "code": "no_active_model"}'))
    assert page.evaluate("'digitsite' in window") is False  # no test hook ships with the page
    page.uncheck("#live")
    draw(page, BUILT_IN[1][1])
    sent = sent_strokes(page, lambda: page.click("#predict"))
    page.wait_for_function("document.querySelector('#status').classList.contains('error')")
    assert "not available" in page.inner_text("#status")
    # The drawing is kept: still on the pad, and sent whole again by the next try.
    assert len(sent) == 1 and ink(page) > 0
    assert sent_strokes(page, lambda: page.click("#predict")) == sent
    page.screenshot(path=str(ARTIFACTS / "browser-error.png"))

    # Keyboard: U and Ctrl+Z undo the last stroke; an empty pad says so instead of asking the server.
    page.keyboard.press("Escape")
    assert ink(page) == 0
    draw(page, BUILT_IN[0][1])
    assert len(sent_strokes(page, lambda: page.keyboard.press("Enter"))) == 2
    page.keyboard.press("u")
    assert len(sent_strokes(page, lambda: page.keyboard.press("Enter"))) == 1
    page.keyboard.press("Control+z")
    assert ink(page) == 0
    requests_before = len(page.live_bodies)
    page.keyboard.press("Enter")
    assert "empty" in page.inner_text("#status")
    assert len(page.live_bodies) == requests_before
    assert page.errors == []


def log_in(page, server, username: str = "alice", password: str = "alice-password-1") -> None:
    page.goto(server.url + "/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    page.wait_for_url(server.url + "/")


def press_predict(page, press) -> tuple[str, dict]:
    """(the Idempotency-Key sent, the answer) of one stored prediction started by `press()`."""
    with page.expect_response(lambda r: r.url.endswith("/api/v1/predict")
                              and '"store":true' in (r.request.post_data or "")) as answer:
        press()
    assert answer.value.status == 200, answer.value.text()
    return answer.value.request.headers.get("idempotency-key", ""), answer.value.json()


def test_predict_pressed_again_on_the_same_drawing_stores_it_once(alice, active_model, server, browser_page):
    page = browser_page
    log_in(page, server)
    page.uncheck("#live")
    draw(page, BUILT_IN[1][1])
    key, first = press_predict(page, lambda: page.click("#predict"))
    again, second = press_predict(page, lambda: page.keyboard.press("Enter"))  # Enter predicts too
    assert len(key) == 32 and again == key
    assert second["drawing"] == first["drawing"] is not None
    assert Drawing.objects.filter(user=alice).count() == 1
    # Storing it by labelling reuses the stored drawing too; another stroke makes another drawing and key.
    page.click(f"#label-buttons button[data-label='{first['digit']}']")
    page.wait_for_function("document.querySelector('#label-status').textContent.startsWith('Saved')")
    draw(page, BUILT_IN[0][1][:1])
    other, third = press_predict(page, lambda: page.click("#predict"))
    assert other != key and third["drawing"] != first["drawing"]
    assert Drawing.objects.filter(user=alice).count() == 2
    assert page.errors == []


def test_the_page_fits_a_phone_and_the_canvas_does_not_scroll_the_page(active_model, server, monkeypatch):
    need_browser()
    from playwright.sync_api import sync_playwright

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS, headless=True)
        context = browser.new_context(viewport={"width": 375, "height": 740}, is_mobile=True, has_touch=True,
                                      device_scale_factor=2)
        page = context.new_page()
        page.goto(server.url + "/")
        box = page.locator("#pad").bounding_box()
        assert 250 <= box["width"] <= 375 and abs(box["width"] - box["height"]) < 1
        assert page.evaluate("document.scrollingElement.scrollWidth") <= 375  # no sideways scrolling
        assert page.evaluate("getComputedStyle(document.querySelector('#pad')).touchAction") == "none"
        # The drawing buffer follows the screen's pixel density, so strokes stay sharp.
        assert page.evaluate("document.querySelector('#pad').width") == round(box["width"] * 2)
        # The answer also shows right under the pad, since the result card is below the fold.
        draw(page, BUILT_IN[1][1])
        page.click("#predict")
        page.wait_for_function("!document.querySelector('#quick-answer').hidden")
        assert page.locator("#quick-answer").is_visible()
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "browser-phone.png"))
        context.close()
        browser.close()


def test_strokes_beyond_what_the_api_takes_are_thinned_or_left_out(active_model, server, browser_page):
    from recognizer.ml.strokes import MAX_COORDINATE, MAX_POINTS, MAX_STROKES, parse_strokes

    assert MAX_COORDINATE == 1e6  # MAX_T in static/recognizer/canvas.js

    page = browser_page
    page.goto(server.url + "/")
    # The pad's own export function, loaded from the URL the page loaded its modules from (no global hook).
    exported = page.evaluate("""async (maxStrokes) => {
        const main = document.querySelector("script[type=module]").src;
        const { strokesForApi } = await import(new URL("canvas.js", main).href);
        const strokes = [];  // 3 long, slow strokes on a 280-pixel pad
        for (let i = 0; i < 3; i++) {
          const stroke = [];
          for (let j = 0; j < 4000; j++) stroke.push([j / 3999, (i + 1) / 4, i * 4000 + j]);
          strokes.push(stroke);
        }
        const thinned = strokesForApi(strokes, 280);
        while (strokes.length <= maxStrokes) strokes.push([[0.5, 0.5, 20000]]);
        const tooMany = strokesForApi(strokes, 280);
        const tooLate = strokesForApi([[[0.5, 0.5, 0], [0.6, 0.6, 2e6]]], 280);  // finished 33 minutes after it began
        return { thinned, tooMany, tooLate };
    }""", MAX_STROKES)
    thinned = exported["thinned"]
    assert len(thinned) == 3 and sum(map(len, thinned)) <= MAX_POINTS
    assert all(stroke[0][0] == 0 and stroke[-1][0] == 280 for stroke in thinned)  # both ends of every stroke
    assert thinned[1][0] == [0, 140, 4000]
    parse_strokes(thinned)  # what the API accepts
    assert exported["tooMany"] is None and exported["tooLate"] is None  # the image goes alone
    assert page.errors == []
