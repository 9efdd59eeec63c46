"""Metrics, canvas (replayed pendigits) evaluation data, and a plain-text table."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike
from PIL import Image

from .common import cached_arrays
from .pendigits import PenDigit, load_pendigits, render_drawing
from .preprocess import preprocess_drawing

if TYPE_CHECKING:
    from .kinds import ServingEstimator

__all__ = [
    "CANVAS_STYLES",
    "SCAN_STYLE",
    "canvas_dataset",
    "evaluate",
    "format_evaluation",
    "format_metrics_table",
    "render_canvas_images",
    "render_styled_png",
    "styled_canvas_images",
]

# How people's canvases differ: transparent (the page), white background (most drawing apps),
# a JPEG of it, blue ink on white, and a small 140 px canvas. Outside checks of the shipped model
# tried all five; the benchmark cycles through them so no one style flatters the figures.
CANVAS_STYLES = ("transparent", "white", "jpeg", "blue", "small")
# A digit written on paper and scanned or photographed, as image-only clients send: grey, uneven paper with
# grain, grey ink, the blur of a scanner or a phone's lens, a strong JPEG. Not in the canvas cycle: the
# benchmark reports it on its own (bench/unseen_writers.py).
SCAN_STYLE = "scan"

_CANVAS_CACHE_VERSION = 1  # bump when rendering or preprocessing changes what a cached set holds


def evaluate(estimator: ServingEstimator, X: ArrayLike, y: ArrayLike, **predict_kw: Any) -> dict:
    """Accuracy, accuracy per digit and the confusion matrix (rows: the true digit, columns: the prediction)
    of ``estimator.predict(X, **predict_kw)`` against the labels ``y``."""
    from sklearn.metrics import confusion_matrix  # 0.2 s to import: training needs it, a web worker not

    y = np.asarray(y).astype(np.int64).ravel()
    pred = np.asarray(estimator.predict(X, **predict_kw)).astype(np.int64).ravel()
    if len(y):  # labels: all ten rows and columns even when a digit is missing
        conf = confusion_matrix(y, pred, labels=np.arange(10))
    else:  # scikit-learn refuses an empty input; nothing was counted
        conf = np.zeros((10, 10), dtype=np.int64)
    per = conf.diagonal() / np.maximum(conf.sum(axis=1), 1)
    return {
        "accuracy": float((pred == y).mean()) if len(y) else float("nan"),
        "n": len(y),
        "per_digit": [float(v) for v in per],
        "confusion": conf.tolist(),
    }


def render_canvas_images(digits: list[PenDigit], *, seed: int = 0, size: int = 280,
                         preprocess: Callable[[Image.Image], np.ndarray] | None = None
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render each PenDigit like a canvas (per-sample rng from (seed, i)) and preprocess it."""
    pre = preprocess or preprocess_drawing
    X = np.empty((len(digits), 28, 28), dtype=np.float32)
    for i, d in enumerate(digits):
        img = render_drawing(d, np.random.default_rng([seed, i]), size=size)
        X[i] = pre(img)
    y = np.array([d.label for d in digits], dtype=np.int64)
    w = np.array([d.writer for d in digits], dtype=np.int64)
    return X, y, w


def render_styled_png(digit: PenDigit, rng: np.random.Generator, style: str) -> bytes:
    """One trajectory replayed on a canvas of the given style (CANVAS_STYLES), as encoded bytes."""
    import io

    if style not in (*CANVAS_STYLES, SCAN_STYLE):
        raise ValueError(f"style must be one of {', '.join((*CANVAS_STYLES, SCAN_STYLE))}")
    rgba = render_drawing(digit, rng, size=140 if style == "small" else 280)
    alpha = rgba.getchannel("A")
    buf = io.BytesIO()
    if style == SCAN_STYLE:
        _scanned(alpha, rng).save(buf, format="JPEG", quality=int(rng.integers(40, 71)))
    elif style in ("transparent", "small"):
        rgba.save(buf, format="PNG")
    else:
        ink = (20, 40, 200) if style == "blue" else (0, 0, 0)
        page = Image.new("RGB", rgba.size, (255, 255, 255))
        page.paste(Image.new("RGB", rgba.size, ink), mask=alpha)
        if style == "jpeg":
            page.save(buf, format="JPEG", quality=75)
        else:
            page.save(buf, format="PNG")
    return buf.getvalue()


def _scanned(alpha: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Ink (the drawing's alpha) on grey paper: a brightness gradient across the page, grain, ink at 50-80% of
    black, then a Gaussian blur of 0.8-1.8 px (at 280 px)."""
    from PIL import ImageFilter

    w, h = alpha.size
    paper = rng.uniform(165, 225)
    tilt = rng.uniform(-25, 25) * np.linspace(-0.5, 0.5, w)[None, :] + rng.uniform(-15, 15) * np.linspace(
        -0.5, 0.5, h)[:, None]
    page = paper + tilt + rng.normal(0, 6, (h, w))
    ink_level = rng.uniform(0.5, 0.8)
    a = np.asarray(alpha, dtype=np.float32) / 255.0
    grey = page * (1 - ink_level * a)
    img = Image.fromarray(np.clip(grey, 0, 255).astype(np.uint8), "L")
    return img.filter(ImageFilter.GaussianBlur(rng.uniform(0.8, 1.8))).convert("RGB")


def styled_canvas_images(digits: list[PenDigit], *, seed: int = 0, styles: Sequence[str] = CANVAS_STYLES
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """(X, y, writers, styles used): each digit replayed in the next style in turn and preprocessed
    from its encoded bytes, exactly as an upload is."""
    X = np.empty((len(digits), 28, 28), dtype=np.float32)
    used = []
    for i, d in enumerate(digits):
        style = styles[i % len(styles)]
        X[i] = preprocess_drawing(render_styled_png(d, np.random.default_rng([seed, i]), style))
        used.append(style)
    y = np.array([d.label for d in digits], dtype=np.int64)
    w = np.array([d.writer for d in digits], dtype=np.int64)
    return X, y, w, used


def canvas_dataset(pendigits_path: str | os.PathLike | list[PenDigit], *, writers: Sequence[int] | None = None,
                   seed: int = 0, size: int = 280, limit: int | None = None,
                   cache_dir: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(X (n,28,28) float32, y, writer_ids): replayed drawings through the real preprocessing.

    ``cache_dir``: keep the rendered set there, named by what it was rendered from (the trajectories, labels,
    writers, seed and size), so the next call with the same digits skips the rendering (every retrain
    evaluates on the same 2,000 drawings: about 10 s of rendering each time)."""
    digits = pendigits_path if isinstance(pendigits_path, list) else load_pendigits(pendigits_path)
    if writers is not None:
        ws = {int(w) for w in writers}
        digits = [d for d in digits if d.writer in ws]
    if limit is not None and limit < len(digits):
        sel = np.sort(np.random.default_rng(seed).choice(len(digits), size=limit, replace=False))
        digits = [digits[i] for i in sel]
    if cache_dir is None:
        return render_canvas_images(digits, seed=seed, size=size)
    h = hashlib.sha256(f"canvas v{_CANVAS_CACHE_VERSION} seed {seed} size {size}".encode())
    for d in digits:
        h.update(f"{d.writer} {d.label} {len(d.strokes)}".encode())
        for stroke in d.strokes:
            h.update(np.ascontiguousarray(stroke, np.float64).tobytes())

    def render() -> dict[str, np.ndarray]:
        X, y, w = render_canvas_images(digits, seed=seed, size=size)
        return {"X": X, "y": y, "w": w}

    arrays = cached_arrays(os.path.join(cache_dir, f"canvas-{h.hexdigest()[:20]}.npz"), render,
                           fits=lambda a: len(a["y"]) == len(digits))
    return arrays["X"], arrays["y"], arrays["w"]


def format_metrics_table(metrics_by_name: dict) -> str:
    """{name: {column: value}} -> aligned plain-text table (4 decimals; 2 for *_ms/*_MB/*_s)."""
    cols: list[str] = []
    for m in metrics_by_name.values():
        for c in m:
            if c not in cols and c not in ("per_digit", "confusion"):
                cols.append(c)

    def fmt(v: object, col: str) -> str:
        if v is None:
            return "-"
        if isinstance(v, (float, np.floating)):
            if np.isnan(v):
                return "-"
            unit = col.endswith(("_ms", "_MB", "_s", "_mb", "seconds"))
            return f"{v:.2f}" if unit else f"{v:.4f}"
        return str(v)

    rows = [["name"] + cols] + [[str(n)] + [fmt(m.get(c), c) for c in cols] for n, m in metrics_by_name.items()]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(v.ljust(widths[i]) if i == 0 else v.rjust(widths[i]) for i, v in enumerate(r)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_evaluation(metrics_by_set: dict, confusion: bool = True) -> str:
    """{data set: evaluate() result} -> accuracy per set, per digit, and each set's confusion matrix."""
    sets = {name: m for name, m in metrics_by_set.items() if isinstance(m, dict) and "per_digit" in m}
    parts = [
        format_metrics_table({name: {"accuracy": m["accuracy"], "n": m["n"]} for name, m in sets.items()}),
        "\nAccuracy per digit\n" + format_metrics_table(
            {name: {str(d): v for d, v in enumerate(m["per_digit"])} for name, m in sets.items()}),
    ]
    if confusion:
        for name, m in sets.items():
            rows = [f"{'':>6}" + "".join(f"{d:>6}" for d in range(10))]
            rows += [f"{t:>6}" + "".join(f"{c:>6}" for c in row) for t, row in enumerate(m["confusion"])]
            parts.append(f"\nConfusion matrix, {name} (rows: the true digit, columns: the prediction)\n"
                         + "\n".join(rows))
    return "\n".join(parts)
