"""Personalisation benchmark: a user's corrections searched next to the training set.

For each pendigits writer, the writer's first N drawings (replayed like a browser canvas and passed
through the real preprocessing) are given with their true labels, as a user confirming or correcting
them would; accuracy is then measured on the rest of that writer's drawings, with and without those
N drawings as extra neighbours, for a few vote weights (RECOGNIZER_PERSONAL_WEIGHT is the one the
site uses). This is what serving.predict_image does for a logged-in user.

    MNIST_DIR=/work/shared/data/mnist PENDIGITS_DIR=/work/shared/data/pendigits \\
        .venv/bin/python -m bench.personalisation [--quick] [--first 20] [--weights 1,3,10]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from bench._common import data_dirs
from recognizer.ml import load_mnist, load_pendigits, train_model
from recognizer.ml.evaluate import render_canvas_images


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10k MNIST digits and 6 writers")
    parser.add_argument("--first", type=int, default=20, help="drawings per writer given as corrections")
    parser.add_argument("--weights", default="1,3,10", help="extra_weight values to compare")
    parser.add_argument("--writers", type=int, default=0, help="number of writers (0 = all)")
    args = parser.parse_args(argv)
    mnist_dir, pen_dir = data_dirs()
    weights = [float(w) for w in args.weights.split(",")]
    data = load_mnist(mnist_dir)
    n_train = 10000 if args.quick else len(data.train_labels)
    t0 = time.perf_counter()
    model = train_model(data.train_images[:n_train] / 255.0, data.train_labels[:n_train]).estimator
    print(f"Model: k-NN on {n_train} MNIST digits ({time.perf_counter() - t0:.1f} s), "
          f"k={model.n_neighbors}, {model.weights}, PCA {model.n_components}")

    digits = load_pendigits(pen_dir)
    writers = sorted({d.writer for d in digits})
    limit = args.writers or (6 if args.quick else 0)
    if limit:
        writers = writers[:limit]
    header = f"{'writer':>6} {'n test':>6} {'without':>8} " + " ".join(f"{'w=' + format(w, 'g'):>8}" for w in weights)
    print(f"\nAccuracy on each writer's drawings after their first {args.first}, without and with personalisation")
    print(header)
    print("-" * len(header))
    totals = np.zeros(1 + len(weights))
    n_total = 0
    for writer in writers:
        own = [d for d in digits if d.writer == writer]  # file order = the order they were drawn
        X, y, _ = render_canvas_images(own, seed=writer)
        Xc, yc, Xt, yt = X[: args.first], y[: args.first], X[args.first:], y[args.first:]
        row = [(model.predict(Xt) == yt).mean()]
        row += [(model.predict(Xt, extra_X=Xc, extra_y=yc, extra_weight=w) == yt).mean() for w in weights]
        totals += np.array(row) * len(yt)
        n_total += len(yt)
        print(f"{writer:>6} {len(yt):>6} " + " ".join(f"{v * 100:>7.1f}%" for v in row))
    print("-" * len(header))
    print(f"{'all':>6} {n_total:>6} " + " ".join(f"{v / n_total * 100:>7.1f}%" for v in totals))
    return 0


if __name__ == "__main__":
    sys.exit(main())
