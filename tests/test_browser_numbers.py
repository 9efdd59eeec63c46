"""Number mode of the drawing page in a real browser (Chromium + Playwright, as tests/test_browser.py):
switch to Number, write two digits side by side, read two answers with a box each over the pad,
correct one digit with one click, and see that correction stored. Screenshot in artifacts/."""

from __future__ import annotations

import numpy as np
import pytest

from recognizer.models import Drawing
from tests import test_browser as tb

pytestmark = pytest.mark.integration

# The fixtures of tests/test_browser.py (imported by name so pytest finds them here; not its tests).
server = tb.server
browser_page = tb.browser_page


def draw_number(page, samples: list[tuple[int, list[np.ndarray]]]) -> None:
    """Each digit's pen trajectory fitted into its own slot of the pad, left to right, 60% of the height."""
    box = page.locator("#pad").bounding_box()
    slot = box["width"] / len(samples)
    for i, (_label, strokes) in enumerate(samples):
        points = np.concatenate(strokes)
        lo, hi = points.min(axis=0), points.max(axis=0)
        ext = np.maximum(hi - lo, 1e-6)
        scale = min(0.6 * box["height"] / ext[1], 0.7 * slot / ext[0])
        size = ext * scale
        offset = np.array([box["x"] + i * slot + (slot - size[0]) / 2, box["y"] + (box["height"] - size[1]) / 2])
        tb.trace(page, strokes, lo, scale, offset)


def test_a_user_writes_a_two_digit_number_and_corrects_one_digit(alice, active_model, server, browser_page):
    page = browser_page
    tb.ARTIFACTS.mkdir(exist_ok=True)
    page.goto(server.url + "/accounts/login/")
    page.fill("#id_username", "alice")
    page.fill("#id_password", "alice-password-1")
    page.click("button[type=submit]")
    page.wait_for_url(server.url + "/")

    page.check("#mode-number")
    pad = page.locator("#pad").bounding_box()
    assert pad["width"] == pytest.approx(2 * pad["height"], rel=0.02)  # a wide pad for numbers
    assert page.locator("#bars").is_hidden() and page.inner_text("#pad-title") == "Write a number"

    samples = tb.pen_samples(limit=2)
    draw_number(page, samples)
    with page.expect_response(lambda r: r.url.endswith("/api/v1/predict") and r.request.method == "POST"
                              and '"store":true' in (r.request.post_data or "")) as answer:
        page.click("#predict")
    assert answer.value.status == 200, answer.value.text()
    assert '"mode":"number"' in answer.value.request.post_data
    body = answer.value.json()
    assert len(body["digits"]) == 2, body["number"]
    page.wait_for_function("!document.querySelector('#number-answer').hidden")
    assert page.inner_text("#number") == body["number"]
    assert page.locator("#number-digits li").count() == 2
    assert page.locator("#answer").is_hidden()

    # A box over each digit, left one over the left half of the pad, right one over the right half.
    boxes = [page.locator("#boxes .box").nth(i).bounding_box() for i in range(2)]
    assert page.locator("#boxes .box").count() == 2
    centres = [(b["x"] + b["width"] / 2 - pad["x"]) / pad["width"] for b in boxes]
    assert centres[0] < 0.5 < centres[1]
    for b in boxes:
        assert pad["y"] <= b["y"] and b["y"] + b["height"] <= pad["y"] + pad["height"] + 1

    ids = [d["drawing"] for d in body["digits"]]
    assert all(ids) and Drawing.objects.filter(user=alice).count() == 2
    page.screenshot(path=str(tb.ARTIFACTS / "number_mode.png"), full_page=True)

    # Correct the second digit: one click on its true label (or, if it was read right, another digit).
    truth = samples[1][0]
    new_label = truth if body["digits"][1]["digit"] != truth else (truth + 1) % 10
    with page.expect_response(lambda r: f"/api/v1/drawings/{ids[1]}/label" in r.url) as saved:
        page.locator(f'#number-digits li[data-index="1"] button[data-label="{new_label}"]').click()
    assert saved.value.status == 200, saved.value.text()
    page.wait_for_function("document.querySelector('#number-digits li[data-index=\"1\"] .saved').dataset.savedLabel")
    assert Drawing.objects.get(pk=ids[1]).label == new_label
    assert Drawing.objects.get(pk=ids[0]).label is None
    assert page.inner_text("#number") == f"{body['digits'][0]['digit']}{new_label}"
    page.screenshot(path=str(tb.ARTIFACTS / "number_mode_corrected.png"), full_page=True)

    # Back to one digit: the square pad, the bars, and the boxes gone.
    page.check("#mode-digit")
    pad = page.locator("#pad").bounding_box()
    assert pad["width"] == pytest.approx(pad["height"], rel=0.02)
    assert page.locator("#boxes .box").count() == 0 and page.locator("#number-answer").is_hidden()
    assert not page.errors, page.errors
