"""Reading whole numbers by the pen (recognizer.ml.numbers, recognizer.ml.pen_segment) on tiny hand-made
strokes: late bars, touching digits, a joined stroke, a dot, strokes in another scale, the fallback to the
image, and the lattice choosing what a fixed fake model reads best."""

from __future__ import annotations

import io

import numpy as np
import pytest

from recognizer.ml.common import Prediction
from recognizer.ml.lattice import best_paths
from recognizer.ml.numbers import ReadingParams, read_number
from recognizer.ml.preprocess import EmptyDrawing
from recognizer.ml.strokes import draw_strokes
from tests.stroke_helpers import digit_template

HEIGHT = 100.0  # the digits' height in these drawings (pixels)
PEN = 9.0


def placed(digit: int, x: float, y: float = 40.0, height: float = HEIGHT) -> list[np.ndarray]:
    """Digit ``digit``'s template strokes, ``height`` tall, its box's left edge at ``x``."""
    strokes = digit_template(digit)
    pts = np.concatenate(strokes)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    scale = height / (hi[1] - lo[1])
    return [(s - lo) * scale + (x, y) for s in strokes]


def canvas(strokes, width: int = 600, height: int = 180):
    return draw_strokes(strokes, width, height, PEN)


def box_width(strokes) -> float:
    return float(np.ptp(np.concatenate(strokes)[:, 0]))


def key(stroke: np.ndarray) -> tuple[int, int]:
    return round(float(stroke[0, 0])), round(float(stroke[0, 1]))


def prediction(digit: int, confidence: float) -> Prediction:
    p = np.full(10, (1 - confidence) / 9)
    p[digit] = confidence
    return Prediction(digit=digit, confidence=confidence, probabilities=p.tolist())


class PreferringModel:
    """Reads a candidate as ``preferred[its strokes' first points]`` with confidence 0.97, anything else as an 8
    it is not sure of; records every candidate it was asked to read."""

    reads_strokes = True

    def __init__(self, preferred: dict[frozenset, int]) -> None:
        self.preferred = preferred
        self.asked: list[frozenset] = []

    def predict_many(self, images, strokes, **kwargs):
        assert len(images) == len(strokes) and images.shape[1:] == (28, 28)
        out = []
        for s in strokes:
            if s is None:  # read from the image alone
                out.append(prediction(2, 0.9))
                continue
            k = frozenset(key(stroke) for stroke in s)
            self.asked.append(k)
            out.append(prediction(self.preferred[k], 0.97) if k in self.preferred else prediction(8, 0.4))
        return out


class NeutralModel(PreferringModel):
    """The same answer for every candidate: the pen's geometry alone decides."""

    def __init__(self) -> None:
        super().__init__({})

    def predict_many(self, images, strokes, **kwargs):
        return [prediction(0, 0.9) for _ in strokes]


class NarrowModel(PreferringModel):
    """Sure of a candidate at most 0.9 times as wide as the line is tall, unsure of wider ones."""

    def __init__(self) -> None:
        super().__init__({})

    def predict_many(self, images, strokes, **kwargs):
        return [prediction(1, 0.95) if box_width(s) <= 0.9 * HEIGHT else prediction(1, 0.3) for s in strokes]


def groups(reading) -> list[set]:
    return [{key(s) for s in d.strokes} for d in reading.digits]


def test_best_paths_add_digit_scores_and_boundary_odds():
    edges = {(0, 1): np.log(np.eye(10)[1] * 0.9 + 0.01), (1, 2): np.log(np.eye(10)[1] * 0.9 + 0.01),
             (0, 2): np.log(np.eye(10)[4] * 0.5 + 0.01)}
    no_boundary_odds = best_paths(2, edges)
    assert no_boundary_odds[0].groups == ((0, 1), (1, 2)) and no_boundary_odds[0].number == "11"
    sure_join = best_paths(2, edges, np.array([[np.log(0.99), np.log(0.01)]]))
    assert sure_join[0].groups == ((0, 2),) and sure_join[0].number == "4"
    assert sure_join[0].score == pytest.approx(np.log(0.51) + np.log(0.99))
    assert [p.score for p in sure_join] == sorted((p.score for p in sure_join), reverse=True)


def test_a_late_bar_drawn_after_the_next_digit_joins_its_own_digit():
    four = placed(4, 60)
    one = placed(1, 60 + box_width(four) + 40)
    strokes = [four[0], *one, four[1]]  # the 4's second stroke comes after the 1
    reading = read_number(canvas(strokes), strokes, NeutralModel())
    assert reading.method == "strokes"
    assert groups(reading) == [{key(four[0]), key(four[1])}, {key(one[0])}]
    assert [len(d.strokes) for d in reading.digits] == [2, 1]
    assert reading.digits[0].strokes[1] is not None and key(reading.digits[0].strokes[1]) == key(four[1])


def test_touching_digits_are_told_apart_by_their_strokes():
    one = placed(1, 60)
    zero = placed(0, 60 + box_width(one) + 0.8 * PEN)  # the inks touch: one piece of ink
    strokes = [*one, *zero]
    reading = read_number(canvas(strokes), strokes, NeutralModel())
    assert len(reading.digits) == 2
    (ax0, _ay0, ax1, _ay1), (bx0, _by0, _bx1, _by1) = (d.box for d in reading.digits)
    assert ax1 <= bx0 + PEN  # each digit has its own ink, not its neighbour's
    assert reading.digits[0].segment.ink.sum() < reading.digits[1].segment.ink.sum()  # a 1 has less ink than a 0


def joined_one_zero() -> np.ndarray:
    """A 1 and a 0 written without lifting the pen: down, up the ligature to the 0's top, round the 0."""
    down = np.array([[40.0, 40.0], [40.0, 140.0]])
    ligature = np.array([[40 + 110 * t, 140 - 100 * t] for t in np.linspace(0.05, 1, 20)])
    a = np.linspace(0, 2 * np.pi, 30)[1:]
    loop = np.stack([150 - 30 * np.sin(a), 90 - 50 * np.cos(a)], axis=1)
    return np.concatenate([down, ligature, loop])


def test_a_stroke_through_two_digits_is_cut_where_both_halves_read_best():
    joined = joined_one_zero()
    assert np.ptp(joined[:, 0]) > 1.3 * HEIGHT  # wider than any one digit: worth cutting
    reading = read_number(canvas([joined]), [joined], NarrowModel())
    assert len(reading.digits) == 2
    left, right = (d.strokes for d in reading.digits)
    assert box_width(left) <= 0.9 * HEIGHT and box_width(right) <= 0.9 * HEIGHT
    # the halves share the cut point, on the ligature
    assert np.allclose(left[0][-1], right[0][0]) and 90 <= left[0][-1][0] <= 130


def test_a_wide_stroke_that_reads_best_whole_stays_whole():
    class WideModel(PreferringModel):
        """Sure of the whole stroke, unsure of any part of it."""

        def __init__(self) -> None:
            super().__init__({})

        def predict_many(self, images, strokes, **kwargs):
            return [prediction(2, 0.95) if box_width(s) > 1.3 * HEIGHT else prediction(1, 0.3) for s in strokes]

    joined = joined_one_zero()
    reading = read_number(canvas([joined]), [joined], WideModel())
    assert reading.number == "2" and len(reading.digits[0].strokes) == 1
    assert len(reading.digits[0].strokes[0]) == len(joined)  # not cut


def test_a_dot_next_to_a_digit_is_not_a_digit():
    one = placed(1, 60)
    dot = np.array([[200.0, 135.0], [201.0, 136.0], [200.0, 137.0]])
    strokes = [*one, dot]
    reading = read_number(canvas(strokes), strokes, NeutralModel())
    assert len(reading.digits) == 1 and groups(reading) == [{key(one[0])}]


def test_only_dots_are_an_empty_drawing():
    dots = [np.array([[100.0 + 30 * i, 100.0], [101.0 + 30 * i, 101.0]]) for i in range(3)]
    with pytest.raises(EmptyDrawing):
        read_number(canvas(dots), dots, NeutralModel())  # the image alone is only dots too


def test_without_strokes_the_image_is_split_alone():
    strokes = [*placed(1, 60), *placed(0, 220)]

    class ImageModel:
        def predict_one(self, image28, **kwargs):
            assert "strokes" not in kwargs
            return prediction(3, 0.9)

    reading = read_number(canvas(strokes), None, ImageModel())
    assert reading.method == "image" and reading.number == "33"
    assert all(d.strokes is None for d in reading.digits)
    assert reading.digits[0].box[2] <= reading.digits[1].box[0]


def test_strokes_that_do_not_trace_the_ink_are_not_used():
    strokes = [*placed(1, 60), *placed(0, 220)]
    elsewhere = [s + (2000.0, 900.0) for s in strokes[:1]]  # another drawing's strokes
    model = PreferringModel({})
    reading = read_number(canvas(strokes), elsewhere, model)
    assert reading.method == "image" and reading.number == "22" and not model.asked


def test_strokes_in_the_canvas_scale_are_mapped_onto_the_image():
    strokes = [*placed(1, 60), *placed(0, 220)]
    css = [s / 2 for s in strokes]  # a client that sent CSS pixels of a pad drawn at twice the size
    reading = read_number(canvas(strokes), css, NeutralModel())
    assert reading.method == "strokes" and len(reading.digits) == 2
    assert abs(reading.digits[1].strokes[0][0][0] - strokes[1][0][0]) < 2 * PEN  # back in the image's pixels


def ambiguous_pair():
    """Two upright strokes whose boxes just overlap: the gap alone cannot say if they are one digit or two."""
    a = np.array([[100.0, 40.0], [100.0, 140.0]])
    b = np.array([[100.0 - 0.05 * HEIGHT, 45.0], [140.0, 140.0]])  # starts 5 % of the height back over a
    return a, b


@pytest.mark.parametrize("prefer_joined", [True, False])
def test_the_lattice_takes_the_segmentation_the_model_reads_best(prefer_joined):
    a, b = ambiguous_pair()
    preferred = {frozenset({key(a), key(b)}): 4} if prefer_joined else {frozenset({key(a)}): 1, frozenset({key(b)}): 1}
    model = PreferringModel(preferred)
    reading = read_number(canvas([a, b]), [a, b], model)
    assert reading.number == ("4" if prefer_joined else "11")
    assert {frozenset({key(a)}), frozenset({key(b)}), frozenset({key(a), key(b)})} <= set(model.asked)


def test_an_unsure_split_and_the_second_reading_are_reported():
    a, b = ambiguous_pair()
    reading = read_number(canvas([a, b]), [a, b], NeutralModel())
    assert reading.segmentation_uncertain  # one digit or two: the model reads both alike
    sure = read_number(canvas([a, b]), [a, b], NeutralModel(), ReadingParams(unsure_margin=0.0))
    assert not sure.segmentation_uncertain
    assert reading.alternative is not None and reading.alternative != reading.number


def test_digits_are_read_as_the_real_model_reads_them_drawn_alone(fused_training_result):
    """Each digit's answer is the model's predict_one of that digit's image and strokes."""
    _data, estimator = fused_training_result
    strokes = [*placed(1, 60), *placed(7, 200), *placed(0, 340)]
    reading = read_number(canvas(strokes), strokes, estimator)
    assert reading.method == "strokes" and len(reading.digits) == 3
    for d in reading.digits:
        alone = estimator.predict_one(d.image28, strokes=d.strokes)
        assert d.prediction.probabilities == pytest.approx(alone.probabilities)
        assert d.prediction.used_strokes and d.prediction.distance == pytest.approx(alone.distance)
    boxes = [d.box for d in reading.digits]
    assert [b[0] for b in boxes] == sorted(b[0] for b in boxes)


def test_tall_digits_are_read_at_a_working_scale_and_answered_in_the_image_pixels():
    from PIL import Image

    tall = 3 * HEIGHT  # read at a third of its size
    strokes = [*placed(1, 60, height=tall), *placed(0, 400, height=tall)]
    image = draw_strokes(strokes, 900, 420, 3 * PEN)
    reading = read_number(image, strokes, NeutralModel())
    assert [d.scale for d in reading.digits] == [4, 4]  # 300 px digits: 4 x the working height's 64 px
    (x0, y0, x1, y1), (u0, _v0, u1, _v1) = (d.box for d in reading.digits)
    ink = np.concatenate(strokes[:1])
    assert abs(x0 - (ink[:, 0].min() - 1.5 * PEN)) <= 8 and abs(y1 - (ink[:, 1].max() + 1.5 * PEN)) <= 8
    assert u1 - u0 > 0.4 * tall and x1 < u0  # in the image's pixels, not the working scale's
    assert np.allclose(reading.digits[1].strokes[0], strokes[1])  # the strokes as sent
    for d in reading.digits:
        png = Image.open(io.BytesIO(d.png()))
        points = np.concatenate(d.png_strokes())[:, :2]
        assert points.min() >= 0 and points[:, 0].max() <= png.width and points[:, 1].max() <= png.height
