"""Numbers benchmark: whole numbers built from 2-5 replayed pendigits drawings side by side on one
wide canvas, split into digits by recognizer.ml.segment and read by the k-NN trained on MNIST.

Each number takes its digits from one writer, drawn with one pen width and one digit height (like a
person writing a number), pasted left to right with random gaps and random vertical jitter. Reported
per number length and overall: segmentation accuracy (the right number of digits), per-digit accuracy
(digits read right at their position; a wrongly split number counts all its digits wrong), per-digit
accuracy given the right split, whole-number accuracy, and, as the ceiling, the accuracy on the same
digits each drawn alone on its own canvas. Two gap settings: "spaced" (gaps 10-40 % of the digit
height) and "tight" (-5 to +10 %: digits often touch), each with and without the cut of too-wide
pieces at their column of least ink (``split_touching``).

Usage (data dirs come from the environment, there is no default):
    MNIST_DIR=/work/shared/data/mnist PENDIGITS_DIR=/work/shared/data/pendigits \\
        .venv/bin/python -m bench.numbers [--quick] [--per-length N] [--train-limit N]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
from PIL import Image

from bench._common import data_dirs
from recognizer.ml import load_mnist, load_pendigits, preprocess_drawing, render_drawing, split_writers, train_model
from recognizer.ml.preprocess import DrawingError
from recognizer.ml.segment import segment_image28, split_number

GAPS = {"spaced": (0.10, 0.40), "tight": (-0.05, 0.10)}
HEIGHT = 280  # the canvas height; digits are 45-75 % of it


def crop_alpha(img: Image.Image) -> np.ndarray:
    a = np.asarray(img.getchannel("A"), dtype=np.float32) / 255.0
    rows, cols = np.flatnonzero(a.max(axis=1) > 0), np.flatnonzero(a.max(axis=0) > 0)
    return a[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def build_number(digits, rng: np.random.Generator, gap_range: tuple[float, float]):
    """One writer's digits side by side: (RGBA image, labels, crops drawn alone)."""
    pen = float(rng.uniform(0.06, 0.09))
    height = float(rng.uniform(0.45, 0.75))
    crops = []
    for d in digits:
        # Same pen and height for every digit of the number; the x position inside is irrelevant (cropped).
        img = render_drawing(d, np.random.default_rng(rng.integers(2**32)), size=HEIGHT,
                             pen_range=(pen, pen), height_range=(height, height))
        crops.append(crop_alpha(img))
    digit_h = height * HEIGHT
    margin = int(0.15 * HEIGHT)
    xs, x = [], margin
    for c in crops:
        xs.append(x)
        gap = float(rng.uniform(*gap_range)) * digit_h
        x = max(xs[-1] + 1, int(round(x + c.shape[1] + gap)))
    width = xs[-1] + crops[-1].shape[1] + margin
    canvas = np.zeros((HEIGHT, width), np.float32)
    base = (HEIGHT - max(c.shape[0] for c in crops)) / 2
    for c, x0 in zip(crops, xs):
        jitter = float(rng.uniform(-0.12, 0.12)) * digit_h
        y0 = int(np.clip(round(base + jitter + (digit_h - c.shape[0]) / 2), 0, HEIGHT - c.shape[0]))
        region = canvas[y0:y0 + c.shape[0], x0:x0 + c.shape[1]]
        np.maximum(region, c, out=region)
    alpha = Image.fromarray((canvas * 255 + 0.5).astype(np.uint8), mode="L")
    black = Image.new("L", alpha.size, 0)
    return Image.merge("RGBA", (black, black, black, alpha)), [d.label for d in digits], crops


def make_numbers(pool, lengths, per_length: int, seed: int, gap_range):
    by_writer: dict[int, list] = {}
    for d in pool:
        by_writer.setdefault(d.writer, []).append(d)
    writers = sorted(w for w, ds in by_writer.items() if len(ds) >= max(lengths))
    rng = np.random.default_rng(seed)
    out = []
    for n in lengths:
        for _ in range(per_length):
            ds = by_writer[int(rng.choice(writers))]
            picks = [ds[i] for i in rng.choice(len(ds), size=n, replace=False)]
            out.append(build_number(picks, rng, gap_range))
    return out


def read_number(estimator, img, split_touching: bool):
    try:
        segments = split_number(img, split_touching=split_touching)
    except DrawingError:
        return []
    images = []
    for s in segments:
        try:
            images.append(segment_image28(s))
        except DrawingError:
            continue
    if not images:
        return []
    return [int(p) for p in estimator.predict(np.stack(images))]


def score(estimator, numbers, split_touching: bool) -> dict[int, dict]:
    stats: dict[int, dict] = {}
    for img, labels, _crops in numbers:
        pred = read_number(estimator, img, split_touching)
        s = stats.setdefault(len(labels), {"numbers": 0, "seg_ok": 0, "digits": 0, "digits_ok": 0,
                                          "digits_ok_given_seg": 0, "digits_seg": 0, "number_ok": 0})
        s["numbers"] += 1
        s["digits"] += len(labels)
        if len(pred) == len(labels):
            s["seg_ok"] += 1
            right = sum(p == t for p, t in zip(pred, labels))
            s["digits_ok"] += right
            s["digits_ok_given_seg"] += right
            s["digits_seg"] += len(labels)
            s["number_ok"] += int(right == len(labels))
    return stats


def alone_accuracy(estimator, numbers) -> dict[int, float]:
    """The same digits each drawn alone (its crop on its own transparent canvas): the ceiling."""
    out = {}
    for n in sorted({len(lab) for _, lab, _ in numbers}):
        imgs, ys = [], []
        for _img, labels, crops in numbers:
            if len(labels) != n:
                continue
            for c, y in zip(crops, labels):
                imgs.append(preprocess_drawing(np.pad(c, 20)))
                ys.append(y)
        out[n] = float((estimator.predict(np.stack(imgs)) == np.array(ys)).mean())
    return out


def table(rows: list[dict]) -> str:
    cols = ["gaps", "cut_wide", "length", "numbers", "segmentation", "per_digit", "per_digit|seg", "whole_number",
            "alone_digit"]
    lines = [cols]
    for r in rows:
        lines.append([str(r[c]) if not isinstance(r[c], float) else f"{r[c]:.3f}" for c in cols])
    widths = [max(len(line[i]) for line in lines) for i in range(len(cols))]
    text = ["  ".join(v.rjust(widths[i]) if i > 2 else v.ljust(widths[i]) for i, v in enumerate(line))
            for line in lines]
    text.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(text)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="10k MNIST training images, 60 numbers per length")
    ap.add_argument("--per-length", type=int, default=None, help="numbers per length (default 300; quick 60)")
    ap.add_argument("--train-limit", type=int, default=None, help="first N MNIST training images (default all)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    mnist_dir, pen_dir = data_dirs()
    per_length = args.per_length or (60 if args.quick else 300)
    train_limit = args.train_limit or (10000 if args.quick else None)

    t0 = time.perf_counter()
    data = load_mnist(mnist_dir)
    X, y = data.train_images, data.train_labels
    if train_limit:
        X, y = X[:train_limit], y[:train_limit]
    estimator = train_model(X / 255.0, y, cv=False, random_state=args.seed).estimator  # the default k=4, PCA 50
    print(f"trained on {len(y)} MNIST images in {time.perf_counter() - t0:.1f} s (no CV: k=4, PCA 50, distance)")

    _train, test = split_writers(load_pendigits(pen_dir), seed=args.seed)  # held-out writers, as elsewhere
    lengths = [2, 3, 4, 5]
    rows = []
    for gap_name, gap_range in GAPS.items():
        numbers = make_numbers(test, lengths, per_length, args.seed, gap_range)
        if gap_name == "spaced":
            Image.fromarray(np.asarray(numbers[-1][0].getchannel("A"))).save("artifacts/bench_number.png") \
                if os.path.isdir("artifacts") else None
        alone = alone_accuracy(estimator, numbers)
        for cut in (False, True):
            t = time.perf_counter()
            stats = score(estimator, numbers, cut)
            total = {k: sum(s[k] for s in stats.values()) for k in next(iter(stats.values()))}
            for length, s in [*sorted(stats.items()), ("all", total)]:
                # "all": over every digit (a length-n row holds n digits per number)
                a = alone[length] if length != "all" else sum(n * v for n, v in alone.items()) / sum(alone)
                rows.append({
                    "gaps": gap_name, "cut_wide": "yes" if cut else "no", "length": length, "numbers": s["numbers"],
                    "segmentation": s["seg_ok"] / s["numbers"], "per_digit": s["digits_ok"] / s["digits"],
                    "per_digit|seg": s["digits_ok_given_seg"] / max(1, s["digits_seg"]),
                    "whole_number": s["number_ok"] / s["numbers"], "alone_digit": a,
                })
            print(f"{gap_name}, cut_wide={cut}: {time.perf_counter() - t:.1f} s", file=sys.stderr)
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
