"""Canvas drawing -> MNIST-frame preprocessing, one behaviour per test (PIL-drawn images)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from recognizer.ml.preprocess import (
    EmptyDrawing,
    ImageTooLarge,
    UnreadableImage,
    decode_image,
    deskew,
    from_uint8,
    preprocess_drawing,
    stroke_width,
    to_uint8,
)


def png(img: Image.Image, fmt="PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def transparent_stroke(size=280, box=(100, 60, 140, 220), width=18):
    img = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    ImageDraw.Draw(img).line([box[:2], box[2:]], fill=(0, 0, 0, 255), width=width)
    return img


def centre_of_mass(a):
    r, c = np.mgrid[:28, :28]
    return (r * a).sum() / a.sum(), (c * a).sum() / a.sum()


def test_it_returns_a_28x28_float_image_in_0_1():
    out = preprocess_drawing(png(transparent_stroke()))
    assert out.shape == (28, 28) and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 1 and out.max() > 0.9


def test_it_treats_alpha_as_ink_on_a_transparent_background():
    out = preprocess_drawing(png(transparent_stroke()))
    assert out[0].max() == 0 and out[14, 14] > 0.5  # ink centred, border black


def test_black_on_white_and_white_on_black_give_the_same_result():
    bw = Image.new("L", (200, 200), 255)
    ImageDraw.Draw(bw).ellipse((50, 40, 150, 170), outline=0, width=14)
    wb = Image.eval(bw, lambda v: 255 - v)
    a = preprocess_drawing(png(bw))
    b = preprocess_drawing(png(wb.convert("RGB"), "JPEG"))
    assert a[14, 14] < 0.1 and a.max() > 0.9  # a ring: hole in the middle
    assert np.abs(a - b).mean() < 0.03


def test_an_off_centre_drawing_lands_centred():
    out = preprocess_drawing(png(transparent_stroke(box=(10, 10, 40, 80), width=8)))
    cy, cx = centre_of_mass(out)
    assert abs(cy - 13.5) <= 0.6 and abs(cx - 13.5) <= 0.6


def test_the_longer_side_is_scaled_to_20_pixels_keeping_the_aspect_ratio():
    img = Image.new("L", (400, 400), 0)
    ImageDraw.Draw(img).rectangle((100, 50, 159, 349), fill=255)  # 60 x 300: 1:5
    out = preprocess_drawing(png(img), max_stroke_width=None)
    rows = np.flatnonzero(out.max(axis=1) > 0.5)
    cols = np.flatnonzero(out.max(axis=0) > 0.5)
    assert rows[-1] - rows[0] + 1 == 20
    assert cols[-1] - cols[0] + 1 == 4


@pytest.mark.parametrize("size", [28, 40, 3000])
def test_tiny_and_huge_canvases_give_the_same_shape(size):
    img = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    s = size / 10
    ImageDraw.Draw(img).line([(3 * s, 2 * s), (7 * s, 8 * s)], fill=(0, 0, 0, 255), width=max(2, int(s)))
    out = preprocess_drawing(png(img))
    assert out.shape == (28, 28) and out.max() > 0.5
    assert abs(centre_of_mass(out)[0] - 13.5) < 1


def test_a_tiny_drawing_on_a_big_canvas_is_enlarged_to_fill_the_box():
    img = Image.new("L", (500, 500), 255)
    ImageDraw.Draw(img).line([(250, 240), (252, 262)], fill=0, width=3)
    out = preprocess_drawing(png(img))
    rows = np.flatnonzero(out.max(axis=1) > 0.3)
    assert rows[-1] - rows[0] + 1 >= 19


def test_it_accepts_pil_images_and_arrays():
    img = transparent_stroke()
    a = preprocess_drawing(img)
    b = preprocess_drawing(np.asarray(img))
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_it_rejects_an_empty_canvas():
    with pytest.raises(EmptyDrawing, match="empty"):
        preprocess_drawing(png(Image.new("RGBA", (280, 280), (0, 0, 0, 0))))


def test_it_rejects_a_nearly_empty_canvas():
    img = Image.new("L", (280, 280), 255)
    img.putpixel((100, 100), 0)
    with pytest.raises(EmptyDrawing):
        preprocess_drawing(png(img))


@pytest.mark.parametrize("diameter", [8, 25, 120])
def test_it_rejects_a_single_dot_of_any_size(diameter):
    img = Image.new("RGBA", (280, 280), (0, 0, 0, 0))
    ImageDraw.Draw(img).ellipse([60, 60, 60 + diameter, 60 + diameter], fill=(0, 0, 0, 255))
    with pytest.raises(EmptyDrawing, match="dot"):
        preprocess_drawing(png(img))


def test_it_accepts_a_short_thick_one():
    img = Image.new("RGBA", (280, 280), (0, 0, 0, 0))
    ImageDraw.Draw(img).line([(140, 90), (140, 190)], fill=(0, 0, 0, 255), width=25)
    assert preprocess_drawing(png(img)).sum() > 10


def test_it_rejects_garbage_bytes_as_unreadable():
    with pytest.raises(UnreadableImage, match="could not read"):
        preprocess_drawing(b"this is not an image at all")


def test_it_rejects_a_truncated_png_as_unreadable():
    data = png(transparent_stroke())
    with pytest.raises(UnreadableImage):
        decode_image(data[: len(data) // 2])


def test_it_refuses_too_many_pixels_before_decoding():
    data = png(Image.new("L", (300, 300), 0))
    with pytest.raises(ImageTooLarge, match="300x300"):
        decode_image(data, max_pixels=200 * 200)


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "GIF", "BMP", "JPEG"])
def test_it_reads_the_common_browser_formats(fmt):
    img = Image.new("RGB", (120, 120), "white")
    ImageDraw.Draw(img).line([(60, 20), (60, 100)], fill="black", width=10)
    out = preprocess_drawing(png(img, fmt))
    assert out.max() > 0.8 and out[:, :5].max() < 0.1


def test_deskew_straightens_a_slanted_stroke():
    img = np.zeros((28, 28), np.float32)
    for r in range(4, 24):
        c = 8 + (r - 4) * 12 // 20
        img[r, c : c + 2] = 1.0
    out = deskew(img)
    cols_top = np.flatnonzero(out[7] > 0.3).mean()
    cols_bottom = np.flatnonzero(out[20] > 0.3).mean()
    assert abs(cols_top - cols_bottom) < 1.5 < abs(np.flatnonzero(img[7]).mean() - np.flatnonzero(img[20]).mean())


def test_bold_strokes_are_thinned_but_mnist_like_strokes_are_left_alone():
    def drawing(width):
        img = Image.new("L", (280, 280), 0)
        ImageDraw.Draw(img).line([(140, 40), (140, 240)], fill=255, width=width)
        ImageDraw.Draw(img).line([(90, 140), (190, 140)], fill=255, width=width)
        return img

    thin = drawing(20)
    np.testing.assert_array_equal(preprocess_drawing(thin), preprocess_drawing(thin, max_stroke_width=None))
    bold = drawing(60)
    raw = preprocess_drawing(bold, max_stroke_width=None)
    out = preprocess_drawing(bold)
    assert stroke_width(out) < stroke_width(raw) and out.max() == pytest.approx(1.0)


def test_uint8_storage_round_trips_to_within_one_level():
    img = np.random.default_rng(0).random((28, 28)).astype(np.float32)
    b = to_uint8(img)
    assert isinstance(b, bytes) and len(b) == 784
    np.testing.assert_allclose(from_uint8(b), img, atol=1 / 255)


def soft_transparent_digit(rng, size=280, peak=255, mode="RGBA"):
    """A random anti-aliased polyline on a transparent canvas: alpha takes every grey, faint pens included."""
    big = Image.new("L", (size * 2, size * 2), 0)
    pts = [tuple(int(v) for v in rng.integers(size // 4, size * 7 // 4, 2)) for _ in range(int(rng.integers(2, 6)))]
    ImageDraw.Draw(big).line(pts, fill=int(peak), width=int(rng.integers(4, 40)), joint="curve")
    alpha = big.resize((size, size), Image.LANCZOS)
    img = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    img.putalpha(alpha)
    return img.convert(mode)


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_a_transparent_canvas_framed_from_its_alpha_bytes_matches_the_float_ink_bit_for_bit(mode):
    from recognizer.ml.preprocess import ink_array, preprocess_ink

    rng = np.random.default_rng(3)
    compared = 0
    for size, peak in [(280, 255), (280, 120), (60, 255), (1000, 200), (28, 255)] * 4:
        img = soft_transparent_digit(rng, size, peak, mode)
        if size > 28 and rng.random() < 0.5:  # a faint speck at the ink threshold's edge widens the box or not
            a = np.array(img)
            a[..., -1][1 + int(rng.integers(size // 8)), 1 + int(rng.integers(size // 8))] = rng.integers(49, 54)
            img = Image.fromarray(a, mode)
        data = png(img)
        try:
            reference = preprocess_ink(ink_array(decode_image(data)))  # the whole canvas as float ink
        except EmptyDrawing:
            with pytest.raises(EmptyDrawing):
                preprocess_drawing(data)
            continue
        assert np.array_equal(preprocess_drawing(data), reference)
        compared += 1
    assert compared >= 15
