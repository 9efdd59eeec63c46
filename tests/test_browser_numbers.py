"""Number mode of the drawing page in a real browser (Chromium + Playwright, as tests/test_browser.py):
switch to Number, write digits side by side with the mouse along real pen trajectories, send them with their
strokes, read the number with a box over each digit and the unsure ones marked, correct one digit with one
click or take the second reading of the whole number, and see those corrections stored. Screenshots in
artifacts/."""

from __future__ import annotations

import json

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


def correct_digit(page, body: dict, index: int, truth: int) -> int:
    """Click digit ``index``'s true label (another digit when it was read right) and wait until it is saved: the
    label given."""
    new_label = truth if body["digits"][index]["digit"] != truth else (truth + 1) % 10
    drawing = body["digits"][index]["drawing"]
    with page.expect_response(lambda r: f"/api/v1/drawings/{drawing}/label" in r.url) as saved:
        page.locator(f'#number-digits li[data-index="{index}"] button[data-label="{new_label}"]').click()
    assert saved.value.status == 200, saved.value.text()
    page.wait_for_function(
        f"document.querySelector('#number-digits li[data-index=\"{index}\"] .saved').dataset.savedLabel")
    return new_label


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
    sent = json.loads(answer.value.request.post_data)
    assert sent["mode"] == "number" and len(sent["strokes"]) == sum(len(strokes) for _, strokes in samples)
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
    new_label = correct_digit(page, body, 1, samples[1][0])
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


# A "1" and a "0" as pen strokes (x, y in a 0..100 box, y down): with tests/test_browser.py's 4 and 7, three
# different digits when PENDIGITS_DIR is absent.
BUILT_IN_MORE = [
    (1, [np.array([[40, 20], [55, 5], [55, 35], [55, 65], [55, 100]], float)]),
    (0, [np.array([[50, 0], [25, 15], [15, 50], [25, 85], [50, 100], [75, 85], [85, 50], [75, 15], [52, 1]],
                  float)]),
]


def three_digits() -> list[tuple[int, list[np.ndarray]]]:
    """Pen samples of three different digits, the same ones on every run."""
    picked: dict[int, list[np.ndarray]] = {}
    for label, strokes in [*tb.pen_samples(limit=12), *tb.BUILT_IN, *BUILT_IN_MORE]:
        picked.setdefault(label, strokes)
    return list(picked.items())[:3]


def expected_verdict(body: dict) -> tuple[str, list[str]]:
    """What the answer says the page must say: the number with "?" for each unsure digit (the number itself
    when all are unsure), and the doubts."""
    digits = body["digits"]
    ordinals = {1: "1st", 2: "2nd", 3: "3rd"}
    unsure = [ordinals[i + 1] for i, d in enumerate(digits) if d["uncertain"]]
    if len(unsure) == len(digits):
        shown, doubts = body["number"], ["not sure of any of its digits" if len(digits) > 1 else "not sure of it"]
    else:
        shown = "".join("?" if d["uncertain"] else str(d["digit"]) for d in digits)
        doubts = [f"not sure of the {unsure[0]} digit" if len(unsure) == 1
                  else f"not sure of the {' and '.join(unsure)} digits"] if unsure else []
    if body["segmentation"]["uncertain"]:
        doubts.append("not sure where one digit ends and the next begins")
    return shown, doubts


def predict_number(page) -> tuple[dict, dict]:
    """(the request's JSON, the answer) of one stored number prediction started by the Predict button."""
    with page.expect_response(lambda r: r.url.endswith("/api/v1/predict") and r.request.method == "POST"
                              and '"store":true' in (r.request.post_data or "")) as answer:
        page.click("#predict")
    assert answer.value.status == 200, answer.value.text()
    page.wait_for_function("!document.querySelector('#number-answer').hidden")
    return json.loads(answer.value.request.post_data), answer.value.json()


def assert_marks_unsure_digits(page, body: dict) -> None:
    """The number on the page, its unsure digits marked in it, over the pad and in the list, and said."""
    assert page.inner_text("#number") == body["number"]
    for i, d in enumerate(body["digits"]):
        for where in (f"#number span >> nth={i}", f'#boxes .box[data-index="{i}"]',
                      f'#number-digits li[data-index="{i}"]'):
            assert ("unsure" in (page.locator(where).get_attribute("class") or "")) == d["uncertain"], where
    verdict = page.inner_text("#number-verdict")
    shown, doubts = expected_verdict(body)
    if doubts:
        assert verdict.startswith(f"I read {shown} — ") and all(doubt in verdict for doubt in doubts), verdict
        assert "unsure" in page.get_attribute("#number-answer", "class")
    elif body["uncertain"]:
        assert verdict == f"I read {body['number']}, but I'm not sure of it."
    else:
        assert verdict == f"It's {body['number']}."
    if body["alternative"] is None:
        assert page.locator("#number-alternative").is_hidden()
    else:
        assert f"Or is it {body['alternative']}?" in page.inner_text("#number-alternative")


def test_a_user_writes_a_three_digit_number_and_corrects_its_middle_digit(alice, active_model, server,
                                                                           browser_page):
    page = browser_page
    tb.ARTIFACTS.mkdir(exist_ok=True)
    tb.log_in(page, server)
    page.check("#mode-number")
    samples = three_digits()
    assert len({label for label, _ in samples}) == 3
    # A live preview goes out once the pen rests, as for a single digit (not stored).
    with page.expect_request(lambda r: r.url.endswith("/api/v1/predict") and '"store":false' in (r.post_data or ""),
                             timeout=10_000):
        draw_number(page, samples)
    sent, body = predict_number(page)
    previews = [json.loads(b) for b in page.live_bodies if '"store":false' in b]
    assert previews and all(p["mode"] == "number" and p["strokes"] for p in previews)

    # The request: number mode with every stroke drawn, in the pixels of the 560x280 image it goes with (each
    # digit's strokes in its third of the width, where the mouse wrote it), t from 0 and never going back.
    assert sent["mode"] == "number"
    drawn = [strokes for _, strokes in samples]
    assert len(sent["strokes"]) == sum(map(len, drawn))
    points = np.array([p for stroke in sent["strokes"] for p in stroke])
    assert points[:, 0].min() >= 0 and points[:, 0].max() <= 560 and points[:, 1].min() >= 0
    assert points[:, 1].max() <= 280 and points[0, 2] == 0 and np.all(np.diff(points[:, 2]) >= 0)
    first = 0
    for i, strokes in enumerate(drawn):
        mine = np.concatenate([np.array(s) for s in sent["strokes"][first:first + len(strokes)]])
        first += len(strokes)
        assert i * 560 / 3 < mine[:, 0].mean() < (i + 1) * 560 / 3

    # The answer: three digits grouped from those strokes, each with the strokes it was written with.
    assert body["segmentation"]["method"] == "strokes", body
    assert len(body["digits"]) == 3, body["number"]
    assert body["number"] == "".join(str(d["digit"]) for d in body["digits"])
    assert [len(d["strokes"]) for d in body["digits"]] == [len(strokes) for strokes in drawn]
    assert [d["box"][0] for d in body["digits"]] == sorted(d["box"][0] for d in body["digits"])
    assert_marks_unsure_digits(page, body)
    ids = [d["drawing"] for d in body["digits"]]
    assert all(ids) and len(set(ids)) == 3 and Drawing.objects.filter(user=alice).count() == 3
    page.screenshot(path=str(tb.ARTIFACTS / "number_mode_three_digits.png"), full_page=True)

    # Correct the middle digit: one click on its true label (or, if it was read right, on another digit).
    new_label = correct_digit(page, body, 1, samples[1][0])
    assert list(Drawing.objects.filter(user=alice, label__isnull=False).values_list("pk", "label")) == [
        (ids[1], new_label)]
    corrected = f"{body['digits'][0]['digit']}{new_label}{body['digits'][2]['digit']}"
    assert page.inner_text("#number") == corrected
    assert page.inner_text('#boxes .box[data-index="1"] span') == str(new_label)
    middle = page.get_attribute('#number-digits li[data-index="1"]', "class")
    assert "corrected" in middle and "unsure" not in middle  # the user said what it is
    # The sentence now: the doubts left about the other digits and the split, or the corrected number.
    now = {**body, "number": corrected,
           "digits": [{**d, "digit": new_label, "uncertain": False} if i == 1 else d for i, d in enumerate(body["digits"])]}
    shown, doubts = expected_verdict(now)
    verdict = page.inner_text("#number-verdict")
    if doubts:
        assert verdict.startswith(f"I read {shown} — ") and all(doubt in verdict for doubt in doubts), verdict
    else:
        assert verdict == f"Corrected: it's {corrected} (I read {body['number']})."
    page.screenshot(path=str(tb.ARTIFACTS / "number_mode_three_digits_corrected.png"), full_page=True)
    assert not page.errors, page.errors


def test_the_second_reading_of_a_number_is_taken_with_one_click(alice, active_model, server, browser_page):
    """The server's own answer with its doubts and second reading set (real drawings give each only now and
    then): only the middle digit and the split unsure. The page says which, and one click on "Or is it ...?" labels the
    digit that differs; another digit count is only explained, since a label cannot change it."""
    page = browser_page
    tb.ARTIFACTS.mkdir(exist_ok=True)
    tb.log_in(page, server)
    page.check("#mode-number")
    page.uncheck("#live")
    samples = three_digits()
    other_number = {}

    def unsure_middle(route):
        body = route.fetch().json()
        digits = body["digits"]
        for i, d in enumerate(digits):
            d["uncertain"] = i == 1
        body["uncertain"] = body["segmentation"]["uncertain"] = True
        other_number["same"] = body["number"][0] + str((digits[1]["digit"] + 1) % 10) + body["number"][2]
        body["alternative"] = other_number["same"] if "count" not in other_number else body["number"] + "1"
        route.fulfill(json=body)

    page.route("**/api/v1/predict", unsure_middle)
    draw_number(page, samples)
    _sent, body = predict_number(page)
    assert len(body["digits"]) == 3 and body["alternative"] == other_number["same"]
    assert_marks_unsure_digits(page, body)
    verdict = page.inner_text("#number-verdict")
    assert "not sure of the 2nd digit" in verdict and "not sure where one digit ends" in verdict
    middle = body["alternative"][1]
    assert f"The 2nd digit would be {'an' if middle == '8' else 'a'} {middle}." in page.inner_text("#number-alternative")
    page.screenshot(path=str(tb.ARTIFACTS / "number_mode_alternative.png"), full_page=True)

    ids = [d["drawing"] for d in body["digits"]]
    with page.expect_response(lambda r: f"/api/v1/drawings/{ids[1]}/label" in r.url) as saved:
        page.click("#number-alternative button")
    assert saved.value.status == 200, saved.value.text()
    page.wait_for_function("document.querySelector('#number-alternative').hidden")
    assert page.inner_text("#number") == body["alternative"]
    assert list(Drawing.objects.filter(user=alice, label__isnull=False).values_list("pk", "label")) == [
        (ids[1], int(body["alternative"][1]))]
    verdict = page.inner_text("#number-verdict")
    assert "2nd digit" not in verdict and "not sure where one digit ends" in verdict  # a label fixes no split

    # A second reading with another digit count: said, with no button, since labels keep three digits.
    other_number["count"] = True
    page.keyboard.press("Escape")
    draw_number(page, samples)
    _sent, body = predict_number(page)
    assert body["alternative"] == body["number"] + "1"
    text = page.inner_text("#number-alternative")
    assert f"Or is it {body['alternative']}?" in text and "4 digits, not 3" in text
    assert page.locator("#number-alternative button").count() == 0
    assert Drawing.objects.filter(user=alice, label__isnull=False).count() == 1
    assert not page.errors, page.errors
