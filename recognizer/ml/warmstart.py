"""The canvas-domain warm start: the pendigits training writers' trajectories replayed as canvas
drawings, through the same preprocessing as a user's drawing, to train on next to MNIST.

MNIST was written with a pen on paper and scanned; canvas digits are drawn with a mouse or a finger.
Replaying real pen trajectories at several pen widths, sizes and positions gives the model the
writing styles MNIST lacks (the hooked 9, the crossed 7, the flagged 1) in the domain it serves.
Rendering 7,494 digits several times takes a minute, so the result is cached on disk, keyed by the
file's checksum and the render settings.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .common import cached_arrays
from .pendigits import PenDigit, load_pendigits, render_drawing
from .preprocess import DrawingError, preprocess_drawing

__all__ = ["PEN_VARIANTS", "POINTER_INPUT", "PenTrainingSet", "PenVariant", "pen_training_set", "pointer_strokes",
           "render_pen_variants", "writer_group"]

# (pen width range as a share of the canvas, digit height range[, pointer input]): one rendering of every digit
# per entry, the digit anywhere from a third to nine tenths of the canvas high: a thin and a bold pen replaying
# the trajectory as written, then the same trajectory as a mouse and a finger would have drawn it
# (POINTER_INPUT, pointer_strokes). Measured leave-writers-out (bench/unseen_writers.py --pen-variants N,
# --no-feedback --folds-only, median of 5 folds, mean in brackets): MNIST alone 95.3% of the five-style test
# drawings read from the image; the two pens 98.1% (plain k-NN, PCA 50) and 98.87% (99.07%) with the
# learned re-rank (PCA 80); all four 99.07% (99.21%), image and strokes 99.53% (99.51%). Every entry adds
# 7,494 training vectors, so training time, memory and latency.
PenVariant = tuple
POINTER_INPUT: dict[str, dict[str, float]] = {
    # wobble: the low-frequency sway's amplitude, a share of the digit's height; gaps: the share of a
    # stroke's points the events skip; hook: the chance of a hook at a stroke's end and its length (share of
    # the height)
    "mouse": {"wobble": 0.015, "gaps": 0.5, "hook_chance": 0.15, "hook": 0.04},
    "finger": {"wobble": 0.025, "gaps": 0.3, "hook_chance": 0.5, "hook": 0.07},
}
PEN_VARIANTS: tuple[PenVariant, ...] = (
    ((0.03, 0.05), (0.3, 0.9)),
    ((0.08, 0.12), (0.3, 0.9)),
    ((0.03, 0.06), (0.3, 0.9), "mouse"),
    ((0.09, 0.14), (0.3, 0.9), "finger"),
)
_RENDER_SIZE = 140  # px: the drawing ends in 28x28, so a 280 px canvas adds time and nothing else
_CACHE_VERSION = 1


def writer_group(writer: int) -> int:
    """The training-group id of a pendigits writer: negative, below MNIST's -1, never a user id."""
    return -1000 - int(writer)


@dataclass
class PenTrainingSet:
    images: np.ndarray  # (n, 28, 28) float32 in [0, 1]
    labels: np.ndarray  # (n,) int64
    writers: np.ndarray  # (n,) int64, the pendigits writer ids
    strokes: list = field(default_factory=list)  # (n,) stroke lists, the same trajectory for each variant
    metadata: dict = field(default_factory=dict)
    variant: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # (n,) index into the variants


def pointer_strokes(strokes: Sequence[np.ndarray], rng: np.random.Generator, *, wobble: float, gaps: float,
                    hook_chance: float, hook: float) -> list[np.ndarray]:
    """A pen trajectory as a mouse or a finger would have drawn it (pointer events, recognizer.ml.strokes).

    Each stroke keeps its first and last points and a random ``1 - gaps`` share of the rest (a pointer reports
    every few milliseconds, so a fast move becomes a few long straight segments), sways by a smooth random
    offset of up to ``wobble`` x the digit's height (a hand on a mouse or on glass is less steady than a pen
    on paper), and with chance ``hook_chance`` at each end gets a short hook, up to ``hook`` x the height long,
    at an angle to the stroke (the finger sliding as it lands or lifts)."""
    pts = np.concatenate([np.asarray(st, dtype=np.float64)[:, :2] for st in strokes])
    height = max(float(np.ptp(pts[:, 1])), float(np.ptp(pts[:, 0])), 1.0)
    out = []
    for st in strokes:
        a = np.asarray(st, dtype=np.float64)[:, :2]
        if len(a) > 2:
            inner = np.flatnonzero(rng.random(len(a) - 2) >= gaps) + 1
            a = a[np.concatenate([[0], inner, [len(a) - 1]])]
        t = np.linspace(0.0, 1.0, len(a))[:, None]
        phase, freq = rng.uniform(0, 2 * np.pi, size=2), rng.uniform(0.5, 1.5, size=2)
        a = a + wobble * height * np.sin(2 * np.pi * freq * t + phase)
        if len(a) > 1:
            a = _hook(a, rng, hook_chance, hook * height, at_start=True)
            a = _hook(a, rng, hook_chance, hook * height, at_start=False)
        out.append(a)
    return out


def _hook(a: np.ndarray, rng: np.random.Generator, chance: float, length: float, at_start: bool) -> np.ndarray:
    if rng.random() >= chance:
        return a
    end, inner = (a[0], a[1]) if at_start else (a[-1], a[-2])
    direction = end - inner
    norm = float(np.hypot(*direction))
    if norm == 0:
        return a
    angle = rng.choice([-1, 1]) * rng.uniform(np.pi / 3, 2 * np.pi / 3)  # bent away from the stroke's line
    c, s = np.cos(angle), np.sin(angle)
    turned = np.array([c * direction[0] - s * direction[1], s * direction[0] + c * direction[1]]) / norm
    tip = end + turned * rng.uniform(0.3, 1.0) * length
    return np.vstack([tip[None], a]) if at_start else np.vstack([a, tip[None]])


def render_pen_variants(digits: list[PenDigit], variants: Sequence[PenVariant] = PEN_VARIANTS, seed: int = 0,
                        progress: Callable[[float], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(images (n_variants * n, 28, 28), ok mask): every digit rendered once per variant, then
    preprocessed as a user's drawing would be; a rendering the preprocessing refuses is left out."""
    n = len(digits)
    out = np.zeros((len(variants) * n, 28, 28), dtype=np.float32)
    ok = np.ones(len(out), dtype=bool)
    for v, (pen_range, height_range, *pointer) in enumerate(variants):
        for i, d in enumerate(digits):
            rng = np.random.default_rng([seed, v, i])
            if pointer:
                d = PenDigit(d.writer, d.label, pointer_strokes(d.strokes, rng, **POINTER_INPUT[pointer[0]]))
            img = render_drawing(d, rng, size=_RENDER_SIZE, supersample=2, pen_range=pen_range,
                                 height_range=height_range)
            try:
                out[v * n + i] = preprocess_drawing(img)
            except DrawingError:
                ok[v * n + i] = False
            if progress is not None and i % 500 == 0:
                progress((v * n + i) / len(out))
    return out, ok


def _cache_key(source_sha: str, variants, seed: int, writers) -> str:
    spec = json.dumps({"v": _CACHE_VERSION, "sha": source_sha, "variants": variants, "seed": seed,
                       "size": _RENDER_SIZE, "writers": None if writers is None else sorted(int(w) for w in writers)})
    return hashlib.sha256(spec.encode()).hexdigest()[:20]


def pen_training_set(path: str | os.PathLike, *, variants: Sequence[PenVariant] = PEN_VARIANTS, seed: int = 0,
                     writers: Iterable[int] | None = None, exclude_writers: Iterable[int] | None = None, cache_dir: str | os.PathLike | None = None,
                     progress: Callable[[float], None] | None = None) -> PenTrainingSet:
    """The pendigits file at ``path`` (file or directory) rendered for training.

    ``writers``/``exclude_writers`` keep or drop writers (leave-writers-out validation);
    ``cache_dir`` keeps the renderings so the next training skips them.
    """
    p = Path(path)
    if p.is_dir():
        p = p / "pendigits-orig.tra"
    digits = load_pendigits(p)
    if writers is not None:
        keep = {int(w) for w in writers}
        digits = [d for d in digits if d.writer in keep]
    if exclude_writers is not None:
        drop = {int(w) for w in exclude_writers}
        digits = [d for d in digits if d.writer not in drop]
    variants = [tuple(r if isinstance(r, str) else tuple(float(x) for x in r) for r in v) for v in variants]
    cache_file = None
    if cache_dir is not None:
        source_sha = hashlib.sha256(p.read_bytes()).hexdigest()
        used_writers = sorted({d.writer for d in digits})
        cache_file = Path(cache_dir) / f"pen-renders-{_cache_key(source_sha, variants, seed, used_writers)}.npz"

    def render() -> dict[str, np.ndarray]:
        images, ok = render_pen_variants(digits, variants, seed, progress)
        return {"images": images, "ok": ok}

    arrays = cached_arrays(cache_file, render, fits=lambda a: len(a["ok"]) == len(variants) * len(digits))
    images, ok = arrays["images"], arrays["ok"]
    labels = np.tile([d.label for d in digits], len(variants)).astype(np.int64)
    wr = np.tile([d.writer for d in digits], len(variants)).astype(np.int64)
    strokes = [d.strokes for d in digits] * len(variants)
    # The stroke k-NN needs each trajectory once: the variants differ only as images.
    first = np.zeros(len(labels), dtype=bool)
    first[: len(digits)] = True
    strokes = [s if f else None for s, f in zip(strokes, first)]
    keep = np.flatnonzero(ok)
    return PenTrainingSet(
        images=images[keep], labels=labels[keep], writers=wr[keep], strokes=[strokes[i] for i in keep],
        variant=np.repeat(np.arange(len(variants)), len(digits))[keep],
        metadata={"pendigits_writers": sorted({int(d.writer) for d in digits}), "pen_variants": variants,
                  "pen_samples": len(keep), "pen_drawings": len(digits)},
    )
