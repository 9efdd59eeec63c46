"""Splitting a drawn number into digits (recognizer.ml.segment): plain Python, synthetic PIL drawings."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from recognizer.ml.preprocess import EmptyDrawing, preprocess_drawing
from recognizer.ml.segment import MAX_DIGITS, TooManyDigits, segment_image28, split_number

H = 280
PEN = 18


def stroke_digit(draw: ImageDraw.ImageDraw, digit: int, x: float, y: float = 60, h: float = 160) -> None:
    """A digit drawn with canvas-like strokes in the box (x, y, x + 0.6 h, y + h)."""
    w = 0.6 * h
    line = {"fill": (0, 0, 0, 255), "width": PEN, "joint": "curve"}
    if digit == 1:
        draw.line([(x + w / 2, y), (x + w / 2, y + h)], **line)
    elif digit == 7:
        draw.line([(x, y), (x + w, y), (x + w * 0.35, y + h)], **line)
    elif digit == 0:
        draw.ellipse([x, y, x + w, y + h], outline=(0, 0, 0, 255), width=PEN)
    elif digit == 4:  # two strokes that do not touch: the angle, then the down stroke starting below the bar
        draw.line([(x + w * 0.45, y), (x, y + h * 0.5), (x + w, y + h * 0.5)], **line)
        draw.line([(x + w * 0.75, y + h * 0.5 + 2 * PEN), (x + w * 0.75, y + h)], **line)
    elif digit == 5:  # the bar lifted off the stem
        draw.line([(x, y + PEN), (x, y + h * 0.45), (x + w * 0.7, y + h * 0.4), (x + w, y + h * 0.65),
                   (x + w * 0.7, y + h), (x, y + h * 0.9)], **line)
        draw.line([(x + 2 * PEN, y), (x + w, y)], **line)
    else:
        raise ValueError(digit)


def canvas(digits: list[tuple[int, float]], width: int = 900) -> Image.Image:
    image = Image.new("RGBA", (width, H), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    for digit, x in digits:
        stroke_digit(draw, digit, x)
    return image


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_two_separate_digits_are_two_segments_left_to_right():
    segments = split_number(png(canvas([(1, 100), (0, 400)])))
    assert len(segments) == 2
    (a0, _, a1, _), (b0, _, b1, _) = (s.box for s in segments)
    assert a1 <= b0
    assert a0 < 100 + 96 / 2 < a1  # the 1's vertical stroke at x = 148
    assert b0 <= 400 + PEN and b1 >= 400 + 96 - PEN


def test_three_digits_come_back_in_order_whatever_order_they_were_drawn_in():
    drawn = canvas([(0, 650), (7, 50), (1, 350)])
    segments = split_number(drawn)
    assert len(segments) == 3
    centres = [(s.box[0] + s.box[2]) / 2 for s in segments]
    assert centres == sorted(centres)
    # the 7 is first: its box starts where its bar starts
    assert abs(segments[0].box[0] - 50) <= PEN


@pytest.mark.parametrize("digit", [4, 5])
def test_a_digit_drawn_with_two_separate_strokes_stays_one_segment(digit):
    from scipy import ndimage

    image = canvas([(digit, 100)], width=400)
    ink = np.asarray(image.getchannel("A")) > 50
    assert ndimage.label(ink, structure=np.ones((3, 3)))[1] == 2  # really two separate strokes
    segments = split_number(image)
    assert len(segments) == 1
    # ... and next to a 1 it is still one digit, with the 1 its own
    one, other = split_number(canvas([(1, 50), (digit, 300)]))
    assert one.box[0] < 50 + 48 < one.box[2] < 300  # the 1's stroke is at x = 98
    assert abs(other.box[0] - 300) <= PEN and other.box[3] - other.box[1] >= 150  # the whole digit


def test_each_digit_is_preprocessed_exactly_as_if_drawn_alone():
    together = canvas([(7, 100), (0, 400)])
    alone = canvas([(7, 100)])
    seven = split_number(together)[0]
    np.testing.assert_allclose(segment_image28(seven), preprocess_drawing(alone), atol=1e-6)


def test_a_neighbours_ink_is_not_in_a_digits_segment():
    """A 7 whose bar reaches over the next digit's box keeps only its own components' ink."""
    image = Image.new("RGBA", (700, H), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    draw.line([(100, 60), (330, 60), (150, 220)], fill=(0, 0, 0, 255), width=PEN)  # long-barred 7
    draw.line([(360, 110), (360, 250)], fill=(0, 0, 0, 255), width=PEN)  # a 1 under the bar's end, lower
    segments = split_number(image)
    assert len(segments) == 2
    one = segments[1]
    assert one.box[1] >= 110 - PEN  # its box starts at the 1, not at the bar


def test_an_empty_canvas_is_an_empty_drawing():
    with pytest.raises(EmptyDrawing):
        split_number(png(Image.new("RGBA", (600, H), (0, 0, 0, 0))))


def test_a_speck_is_dropped():
    image = canvas([(1, 100), (7, 400)])
    ImageDraw.Draw(image).ellipse([700, 240, 706, 246], fill=(0, 0, 0, 255))
    assert len(split_number(image)) == 2


def test_touching_digits_are_cut_at_the_thinnest_column_when_asked():
    """Two 0s joined by a thin tail (the pen not lifted): one component, much wider than tall."""
    image = Image.new("RGBA", (600, H), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    draw.ellipse([100, 60, 190, 170], outline=(0, 0, 0, 255), width=PEN)
    draw.ellipse([230, 60, 320, 170], outline=(0, 0, 0, 255), width=PEN)
    draw.line([(185, 150), (235, 150)], fill=(0, 0, 0, 255), width=6)
    assert len(split_number(image, split_touching=False)) == 1
    cut = split_number(image, split_touching=True)
    assert len(cut) == 2
    assert 185 <= cut[0].box[2] <= cut[1].box[0] + 1 <= 236


def test_a_single_wide_digit_is_not_cut():
    assert len(split_number(canvas([(0, 100)], width=400))) == 1


def test_a_scribble_of_many_pieces_is_refused():
    image = Image.new("RGBA", (2000, H), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    for i in range(MAX_DIGITS + 3):
        draw.line([(40 + i * 140, 60), (40 + i * 140, 220)], fill=(0, 0, 0, 255), width=PEN)
    with pytest.raises(TooManyDigits):
        split_number(image)


def test_the_digits_png_reads_back_as_the_same_digit():
    segment = split_number(canvas([(7, 100), (0, 400)]))[1]
    np.testing.assert_allclose(preprocess_drawing(segment.png()), segment_image28(segment), atol=1e-2)


def test_a_segment_is_framed_exactly_as_its_ink_read_from_an_image():
    """segment_image28 frames the segment's ink directly: reading it from a padded image first changes nothing."""
    for segment in split_number(png(canvas([(4, 40), (7, 260), (1, 470), (5, 640)]))):
        np.testing.assert_array_equal(segment_image28(segment), preprocess_drawing(np.pad(segment.ink, 2)))
