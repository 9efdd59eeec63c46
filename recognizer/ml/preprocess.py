"""Turn a browser-canvas drawing into an MNIST-like 28x28 image.

Pipeline (same steps MNIST was built with):
1. decode: bytes -> PIL image, refusing oversized images before decoding pixels;
2. ink: alpha channel if the background is transparent, else luminance, inverted when the
   border is light (black-on-white) so that ink is high (white-on-black like MNIST);
3. background removal: subtract the border level and rescale, so grey/JPEG backgrounds read as 0;
4. crop to the bounding box of pixels with ink > INK_THRESHOLD;
5. scale the longer side to 20 px keeping the aspect ratio (box filter = anti-aliased);
6. paste into 28x28 so that the centre of mass lands at the centre of the frame;
   a blob shorter than 3 stroke widths (a click, a dot) is refused as EmptyDrawing here;
7. thickness normalisation: strokes much bolder than MNIST's (width = 2*ink/total variation
   > MAX_STROKE_WIDTH px) are half-eroded once (measured: +0.9 pt on replayed canvas drawings).
(``deskew`` is applied by the model, not here, so stored images stay MNIST-like.)
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from numpy.typing import ArrayLike
from PIL import Image

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DrawingError",
    "EmptyDrawing",
    "ImageInput",
    "ImageTooLarge",
    "UnreadableImage",
    "decode_image",
    "deskew",
    "deskew_batch",
    "frame_ink",
    "from_uint8",
    "ink_array",
    "normalize_thickness",
    "preprocess_drawing",
    "stroke_width",
    "to_uint8",
]

# A drawing as it arrives: encoded bytes (an upload), a PIL image, or an ink array.
ImageInput = bytes | bytearray | memoryview | Image.Image | np.ndarray

DEFAULT_MAX_PIXELS = 4096 * 4096
ACCEPTED_FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP")
INK_THRESHOLD = 0.2  # ink level (0..1) that counts as "drawn" for cropping
MIN_INK_PIXELS = 3  # fewer drawn pixels than this (after thresholding) = empty canvas
MIN_INK_FRACTION = 2e-5  # ... or fewer than this fraction of the canvas
BOX_SIZE = 20  # MNIST scales the longer side of the ink to 20 px
# A blob whose extent is under 3 stroke widths is a click or a dot, not a digit (a disc scores
# 2.5; the least elongated MNIST test digit 3.5, replayed pendigits drawings 4.6).
MIN_EXTENT_TO_WIDTH = 3.0
MAX_STROKE_WIDTH = 2.1  # px in the 28x28 frame (MNIST median ~1.95); bolder strokes get thinned
# the least byte whose ink (byte / 255 in float32, as _from_byte reads it) is over INK_THRESHOLD
_INKED_BYTE = int(np.argmax(np.arange(256, dtype=np.float32) * np.float32(1 / 255) > INK_THRESHOLD))
_CROSS = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=bool)


class DrawingError(ValueError):
    """The drawing cannot be turned into a digit image."""


class EmptyDrawing(DrawingError):
    pass


class UnreadableImage(DrawingError):
    pass


class ImageTooLarge(DrawingError):
    pass


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode image bytes; the size is checked from the header before pixels are decoded."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise UnreadableImage(f"expected image bytes, got {type(data).__name__}")
    if len(data) == 0:
        raise UnreadableImage("the uploaded image is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            # Only the formats the site takes: PIL's other decoders (TIFF, EPS, ...) widen the attack surface
            # and give colour modes the pipeline cannot convert (a LAB TIFF raised a bare ValueError).
            img = Image.open(io.BytesIO(bytes(data)), formats=ACCEPTED_FORMATS)
            w, h = img.size
            if w * h > max_pixels:
                raise ImageTooLarge(
                    f"image is {w}x{h} = {w * h} pixels, more than the {max_pixels} allowed"
                )
            img.load()
    except DrawingError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLarge(f"image is too large to decode safely ({exc})") from exc
    except Exception as exc:
        raise UnreadableImage(
            "could not read the image: it is not a valid PNG/JPEG/WebP/GIF/BMP file "
            f"({type(exc).__name__}: {exc})"
        ) from exc
    if w == 0 or h == 0:
        raise UnreadableImage("the image has no pixels")
    return img


def _border(a: np.ndarray) -> np.ndarray:
    return np.concatenate([a[0], a[-1], a[1:-1, 0], a[1:-1, -1]])


def _polarity(lum: np.ndarray) -> np.ndarray:
    """Return ink (high = ink) from luminance, deciding which colour is the background."""
    border = _border(lum)
    bg = float(np.median(border))
    if abs(bg - 0.5) < 0.1:  # ambiguous border: fall back to the majority colour
        bg = float(np.median(lum))
    ink = 1.0 - lum if bg > 0.5 else lum
    level = float(np.median(_border(ink)))
    if level > 0.02:  # grey background: make it 0 and stretch the rest
        ink = np.clip((ink - level) / max(1.0 - level, 1e-3), 0.0, 1.0)
    return ink


def ink_array(image: ImageInput) -> np.ndarray:
    """Ink intensity in [0, 1] (float32, any size) from bytes, a PIL image or an array."""
    ink = _ink(image)
    return _from_byte(ink) if ink.dtype == np.uint8 else ink


def _from_byte(a: ArrayLike) -> np.ndarray:
    """0..255 -> [0, 1] float32, as ink_array reads a channel."""
    return np.asarray(a, dtype=np.float32) * (1 / 255)


def _ink(image: ImageInput) -> np.ndarray:
    """``ink_array``, except that a transparent canvas's ink is its alpha channel as it is (uint8, 0..255).

    The page's canvases are transparent PNGs: framed from the alpha bytes, a request never turns the whole
    canvas into floats (only the digit's box), and frames the same 28x28 image bit for bit."""
    if isinstance(image, (bytes, bytearray, memoryview)):
        image = decode_image(image)
    if isinstance(image, Image.Image):
        img = image
        if img.mode == "P":
            img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
            rgba = img if img.mode == "RGBA" else img.convert("RGBA")
            alpha = np.asarray(rgba.getchannel("A"))
            if _from_byte(alpha.min()) < 0.9:  # has transparency: alpha is the ink
                border_alpha = float(np.median(_from_byte(_border(alpha))))
                if border_alpha < 0.5:
                    return alpha
                # opaque background with transparent strokes (unusual): ink = 1 - alpha
                return 1.0 - _from_byte(alpha)
            img = rgba.convert("RGB")
        if img.mode == "I;16" or img.mode == "I":
            arr = np.asarray(img, dtype=np.float32)
            lum = arr / max(float(arr.max()), 1.0)
        elif img.mode == "F":
            lum = np.clip(np.asarray(img, dtype=np.float32), 0, 1)
        else:
            try:
                lum = np.asarray(img.convert("L"), dtype=np.float32) * (1 / 255)
            except ValueError as exc:  # a colour mode PIL cannot turn into grey
                raise UnreadableImage(f"images in the {img.mode} colour mode are not supported") from exc
        return _polarity(lum)
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] in (3, 4):
        mode = "RGBA" if arr.shape[2] == 4 else "RGB"
        if arr.dtype != np.uint8:
            arr = np.clip(arr * 255 + 0.5, 0, 255).astype(np.uint8)
        return _ink(Image.fromarray(arr, mode))
    if arr.ndim != 2:
        raise UnreadableImage(f"expected a 2-D grayscale or RGB(A) array, got shape {arr.shape}")
    if arr.dtype == np.uint8:
        lum = arr.astype(np.float32) * (1 / 255)
    else:
        lum = np.clip(arr.astype(np.float32), 0.0, 1.0)
    return _polarity(lum)


def frame_ink(ink: np.ndarray, box: int = 20) -> np.ndarray:
    """Crop, scale longer side to ``box`` px (aspect kept) and centre by mass in 28x28. ``ink``: float in
    [0, 1], or uint8 0..255 (read as ``ink_array`` reads a channel)."""
    h, w = ink.shape
    mask = ink >= _INKED_BYTE if ink.dtype == np.uint8 else ink > INK_THRESHOLD
    rows = np.flatnonzero(mask.any(axis=1))
    if len(rows) == 0:
        raise EmptyDrawing("the canvas is empty: draw a digit first")
    cols = np.flatnonzero(mask.any(axis=0))
    n_ink = int(np.count_nonzero(mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]))
    if n_ink < max(MIN_INK_PIXELS, MIN_INK_FRACTION * h * w):
        raise EmptyDrawing("the canvas is almost empty: draw a bigger digit")
    crop = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    if crop.dtype == np.uint8:
        crop = _from_byte(crop)
    ch, cw = crop.shape
    scale = box / max(ch, cw)
    nh, nw = max(1, round(ch * scale)), max(1, round(cw * scale))
    if (nh, nw) != (ch, cw):
        resample = Image.BOX if scale < 1 else Image.BILINEAR
        crop = np.asarray(
            Image.fromarray(np.ascontiguousarray(crop, dtype=np.float32), mode="F").resize(
                (nw, nh), resample
            ),
            dtype=np.float32,
        )
    crop = np.clip(crop, 0.0, 1.0)
    peak = float(crop.max())
    if 0 < peak < 1.0:  # faint strokes (light pen / JPEG): stretch to full intensity
        crop = crop / peak
    out = np.zeros((28, 28), dtype=np.float32)
    total = float(crop.sum())
    cy = float(crop.sum(axis=1) @ np.arange(nh, dtype=np.float32)) / total
    cx = float(crop.sum(axis=0) @ np.arange(nw, dtype=np.float32)) / total
    top = min(max(round(13.5 - cy), 0), 28 - nh)
    left = min(max(round(13.5 - cx), 0), 28 - nw)
    out[top : top + nh, left : left + nw] = crop
    return out


def stroke_width(img28: np.ndarray) -> float:
    """Mean stroke width in px: ink area / half the total variation (stroke length x 2 edges)."""
    tv = np.abs(np.diff(img28, axis=0)).sum() + np.abs(np.diff(img28, axis=1)).sum()
    return float(2.0 * img28.sum() / max(float(tv), 1e-6))


def normalize_thickness(img28: np.ndarray, max_width: float = MAX_STROKE_WIDTH, width: float | None = None
                        ) -> np.ndarray:
    """Thin strokes bolder than ``max_width`` with one half-strength grey erosion (``width``: ``stroke_width``
    of ``img28``, when it is known)."""
    if max_width is None or (stroke_width(img28) if width is None else width) <= max_width:
        return img28
    from scipy.ndimage import grey_erosion

    out = 0.5 * (img28 + grey_erosion(img28, footprint=_CROSS))
    peak = float(out.max())
    return (out / peak).astype(np.float32) if peak > 0 else img28


def preprocess_drawing(
    image: ImageInput, max_pixels: int = DEFAULT_MAX_PIXELS, max_stroke_width: float | None = MAX_STROKE_WIDTH
) -> np.ndarray:
    """Bytes / PIL image / array of any size -> (28, 28) float32 in [0, 1], white ink on black.

    ``max_stroke_width=None`` disables the thickness normalisation (step 7)."""
    if isinstance(image, (bytes, bytearray, memoryview)):
        image = decode_image(image, max_pixels=max_pixels)
    elif isinstance(image, Image.Image) and image.size[0] * image.size[1] > max_pixels:
        raise ImageTooLarge(f"image has more than {max_pixels} pixels")
    return preprocess_ink(_ink(image), max_stroke_width)


def preprocess_ink(ink: np.ndarray, max_stroke_width: float | None = MAX_STROKE_WIDTH) -> np.ndarray:
    """``preprocess_drawing`` of ink already read (``ink_array``: float in [0, 1], 0 where nothing is drawn; or a
    transparent canvas's uint8 alpha, as ``frame_ink`` takes it)."""
    framed = frame_ink(ink)
    width = stroke_width(framed)
    if BOX_SIZE / width < MIN_EXTENT_TO_WIDTH:
        raise EmptyDrawing("that is a dot, not a digit: draw a bigger digit")
    return normalize_thickness(framed, max_stroke_width, width)


# ---------------------------------------------------------------- deskew

_GRID_R, _GRID_C = np.mgrid[:28, :28].astype(np.float32)
# The same coordinates as a column and a row: the shear moves whole rows, so the sampled rows and their
# weights are worked out per row and broadcast, the same values as over the full grid in fewer, smaller calls
_ROWS, _COLS = _GRID_R[:, :1], _GRID_C[:1, :]


def _bilinear(imgs: np.ndarray, r: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Sample (n, 28, 28) images at float coordinates r (n, 28, 1), each row's, and c (n, 28, 28), zero
    outside."""
    n, H, W = imgs.shape
    pad = np.zeros((n, H + 4, W + 4), dtype=np.float32)
    pad[:, 2:-2, 2:-2] = imgs
    r = np.minimum(np.maximum(r, -1.0), H) + 2
    c = np.minimum(np.maximum(c, -1.0), W) + 2
    r0 = np.floor(r)
    c0 = np.floor(c)
    fr = r - r0  # exact in float32: a float32 less its whole part
    fc = c - c0
    base = (np.arange(n, dtype=np.int64) * ((H + 4) * (W + 4)))[:, None, None]
    idx = base + r0.astype(np.int64) * (W + 4) + c0.astype(np.int64)
    flat = pad.ravel()
    a = flat[idx]
    b = flat[idx + 1]
    cc = flat[idx + (W + 4)]
    d = flat[idx + (W + 5)]
    return (a * (1 - fc) + b * fc) * (1 - fr) + (cc * (1 - fc) + d * fc) * fr


def deskew_batch(imgs: np.ndarray) -> np.ndarray:
    """Moments-based deskew of (n, 28, 28) images (shear so the principal axis is vertical,
    and shift the centroid to the centre), bilinear resampling."""
    imgs = np.asarray(imgs, dtype=np.float32).reshape(-1, 28, 28)
    total = imgs.sum(axis=(1, 2))
    safe = np.where(total > 0, total, 1.0)
    mr = (imgs * _GRID_R).sum(axis=(1, 2)) / safe
    mc = (imgs * _GRID_C).sum(axis=(1, 2)) / safe
    dr = _ROWS[None] - mr[:, None, None]
    dc = _COLS[None] - mc[:, None, None]
    vrr = (dr * dr * imgs).sum(axis=(1, 2)) / safe
    vrc = (dr * dc * imgs).sum(axis=(1, 2)) / safe
    alpha = np.where((total > 0) & (vrr > 1e-6), vrc / np.maximum(vrr, 1e-6), 0.0)
    # output (i, j) samples input (i + off_r, alpha * i + j + off_c), mapping centre -> centroid
    off_r = mr - 14.0
    off_c = mc - alpha * 14.0 - 14.0
    r = _ROWS[None] + off_r[:, None, None]
    c = alpha[:, None, None] * _ROWS[None] + _COLS[None] + off_c[:, None, None]
    out = _bilinear(imgs, r, c)
    out[total <= 0] = 0.0
    return out


def deskew(img28: np.ndarray) -> np.ndarray:
    """Moments-based deskew of one 28x28 image (classic Dibya/LeCun-style shear)."""
    return deskew_batch(np.asarray(img28, dtype=np.float32)[None])[0]


# ---------------------------------------------------------------- storage


def to_uint8(img28: np.ndarray) -> bytes:
    """(28, 28) float in [0, 1] -> 784 bytes (row-major, 0-255)."""
    a = np.asarray(img28, dtype=np.float32)
    if a.size != 784:
        raise ValueError(f"expected 784 pixels, got shape {a.shape}")
    return np.clip(a.reshape(28, 28) * 255 + 0.5, 0, 255).astype(np.uint8).tobytes()


def from_uint8(b: bytes) -> np.ndarray:
    """784 bytes -> (28, 28) float32 in [0, 1]."""
    if len(b) != 784:
        raise ValueError(f"expected 784 bytes, got {len(b)}")
    return np.frombuffer(bytes(b), dtype=np.uint8).reshape(28, 28).astype(np.float32) / 255.0
