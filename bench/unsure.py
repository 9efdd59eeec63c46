"""How often answers are shown as unsure: random scribbles against real digits.

The page offers its two best guesses instead of an answer when the model is unsure: low confidence,
the two best digits close, or a drawing far from every digit the model knows (`unfamiliar`). A
scribble should mostly land there, a real digit rarely. Scribbles are 1-3 random strokes of a round
pen on a 280x280 canvas, passed through the same preprocessing as every drawing.

    MNIST_DIR=/work/shared/data/mnist PENDIGITS_DIR=/work/shared/data/pendigits \\
        .venv/bin/python -m bench.unsure [--train-limit N] [--scribbles 400] [--digits 2000]
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from PIL import Image, ImageDraw

from bench._common import data_dirs
from recognizer.ml import EmptyDrawing, canvas_dataset, load_mnist, preprocess_drawing, train_model

CONFIDENCE, MARGIN = 0.6, 0.15  # the settings' defaults (RECOGNIZER_UNSURE_CONFIDENCE / _MARGIN)


def scribble(rng: np.random.Generator) -> Image.Image:
    image = Image.new("RGBA", (280, 280), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    for _stroke in range(rng.integers(1, 4)):
        points = [tuple(rng.uniform(30, 250, 2))]
        for _ in range(rng.integers(3, 12)):
            points.append(tuple(np.clip(np.array(points[-1]) + rng.normal(0, 60, 2), 10, 270)))
        draw.line(points, fill=(0, 0, 0, 255), width=int(rng.integers(14, 24)), joint="curve")
    return image


def shares(estimator, images) -> tuple[float, float, float]:
    """(unsure by confidence alone, unfamiliar alone, unsure as the site decides)."""
    by_confidence = unfamiliar = either = 0
    for image in images:
        p = estimator.predict_one(image)
        best, second = sorted(p.probabilities, reverse=True)[:2]
        weak = best < CONFIDENCE or best - second < MARGIN
        by_confidence += weak
        unfamiliar += p.unfamiliar
        either += weak or p.unfamiliar
    n = max(len(images), 1)
    return by_confidence / n, unfamiliar / n, either / n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-limit", type=int, default=0, help="MNIST training images (0 = all)")
    parser.add_argument("--scribbles", type=int, default=400)
    parser.add_argument("--digits", type=int, default=2000, help="replayed canvas digits and MNIST test digits")
    args = parser.parse_args(argv)
    mnist_dir, pen_dir = data_dirs()
    mnist = load_mnist(mnist_dir)
    limit = args.train_limit or len(mnist.train_labels)
    estimator = train_model(mnist.train_images[:limit] / 255.0, mnist.train_labels[:limit], cv=False).estimator
    rng = np.random.default_rng(5)
    scribbles = []
    for _ in range(args.scribbles):
        try:
            scribbles.append(preprocess_drawing(scribble(rng)))
        except EmptyDrawing:
            pass
    canvas, _y, _w = canvas_dataset(pen_dir, seed=0, limit=args.digits)
    rows = {"random scribbles": scribbles, "replayed canvas digits": canvas,
            "MNIST test digits": mnist.test_images[: args.digits] / 255.0}
    print(f"k-NN on {limit} MNIST digits; unfamiliar beyond a mean neighbour distance of "
          f"{estimator.novelty_distance_:.3f}; unsure below {CONFIDENCE} confidence or {MARGIN} margin")
    print(f"{'drawings':<24}{'n':>6}{'by confidence':>15}{'unfamiliar':>12}{'unsure (site)':>15}")
    for name, images in rows.items():
        confidence, unfamiliar, either = shares(estimator, images)
        print(f"{name:<24}{len(images):>6}{confidence:>15.1%}{unfamiliar:>12.1%}{either:>15.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
