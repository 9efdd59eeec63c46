"""Recognition benchmark: MNIST test accuracy, replayed-canvas accuracy, personalisation,
latency, model size and training time, with baselines side by side.

Usage (data dirs come from the environment, there is no default):
    MNIST_DIR=/path/to/mnist PENDIGITS_DIR=/path/to/pendigits \\
        .venv/bin/python -m bench.recognition [--train-limit N] [--canvas-limit N] [--no-cv]
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time

import numpy as np
from PIL import Image

from bench._common import data_dirs, log
from recognizer.ml import (
    DigitClassifier,
    evaluate,
    format_metrics_table,
    load_mnist,
    load_pendigits,
    preprocess_drawing,
    render_drawing,
    save_model,
    split_writers,
    train_model,
)
from recognizer.ml.preprocess import ink_array


def naive_resize(img: Image.Image) -> np.ndarray:
    """Baseline: the whole canvas resized to 28x28 (ink = alpha), no cropping/centring."""
    ink = ink_array(img)
    return np.asarray(
        Image.fromarray(ink.astype(np.float32), mode="F").resize((28, 28), Image.BOX), dtype=np.float32
    ).clip(0, 1)


def render_canvas(digits, seed: int):
    """Render every digit once and preprocess it three ways."""
    n = len(digits)
    out = {k: np.empty((n, 28, 28), np.float32) for k in ("ours", "no_thickness", "naive")}
    for i, d in enumerate(digits):
        img = render_drawing(d, np.random.default_rng([seed, i]))
        out["ours"][i] = preprocess_drawing(img)
        out["no_thickness"][i] = preprocess_drawing(img, max_stroke_width=None)
        out["naive"][i] = naive_resize(img)
    y = np.array([d.label for d in digits])
    w = np.array([d.writer for d in digits])
    return out, y, w


def latency(estimator, digits, n: int, seed: int, blas_threads: int | None = 1) -> tuple[float, float]:
    """Median and p99 ms for one 280x280 PNG: decode, preprocess, predict_one.

    BLAS is limited to ``blas_threads`` (as a web worker should run with OPENBLAS_NUM_THREADS=1:
    on a busy 2-core machine threaded BLAS turned a 1 ms median into 15 ms); 0 = library default."""
    if blas_threads:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=blas_threads, user_api="blas"):
            return latency(estimator, digits, n, seed, blas_threads=0)
    rng = np.random.default_rng(seed)
    pngs = []
    for i in rng.choice(len(digits), size=min(n, len(digits)), replace=False):
        buf = io.BytesIO()
        render_drawing(digits[i], np.random.default_rng([seed, int(i)])).save(buf, format="PNG")
        pngs.append(buf.getvalue())
    for b in pngs[:20]:  # warm-up
        estimator.predict_one(preprocess_drawing(b))
    times = []
    for b in pngs:
        t = time.perf_counter()
        estimator.predict_one(preprocess_drawing(b))
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1e3), float(np.percentile(times, 99) * 1e3)


def model_mb(estimator) -> float:
    with tempfile.TemporaryDirectory() as d:
        saved = save_model(estimator, {}, d)
        return saved.path.stat().st_size / 1e6


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train-limit", type=int, default=None, help="use the first N MNIST training images")
    ap.add_argument("--test-limit", type=int, default=None, help="use the first N MNIST test images")
    ap.add_argument("--canvas-limit", type=int, default=None, help="random subset of N replayed drawings")
    ap.add_argument("--no-cv", action="store_true", help="skip cross-validation (default hyperparameters)")
    ap.add_argument("--latency-n", type=int, default=300)
    ap.add_argument("--latency-blas-threads", type=int, default=1,
                    help="BLAS threads while timing single predictions (0 = library default)")
    ap.add_argument("--personal-test-fraction", type=float, default=0.3)
    ap.add_argument("--personal-splits", type=int, default=3,
                    help="extra writer splits (seeds seed+1..) averaged in the last rows")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--augment", default=None,
                    help="augment_images kwargs, e.g. 'thickness=1,fraction=0.5' or 'rotations=10:-10'")
    args = ap.parse_args(argv)

    mnist_dir, pen_dir = data_dirs()


    data = load_mnist(mnist_dir)
    Xtr, ytr = data.train_images[: args.train_limit], data.train_labels[: args.train_limit]
    Xte, yte = data.test_images[: args.test_limit] / 255.0, data.test_labels[: args.test_limit]
    log(f"training on {len(ytr)} MNIST images (cv={not args.no_cv})")
    augment = None
    if args.augment:
        augment = {}
        for part in args.augment.split(","):
            k, v = part.split("=")
            augment[k] = tuple(float(x) for x in v.split(":")) if k in ("thickness", "rotations") else (
                int(v) if k == "shifts" else float(v))
    result = train_model(Xtr, ytr, cv=not args.no_cv, random_state=args.seed, augment=augment)
    ours = result.estimator
    log(f"trained in {result.train_seconds:.1f}s: {result.hyperparameters}")
    if result.cv_curve["k"]:
        log("cv accuracy by k: " + ", ".join(
            f"k={k}:{a:.4f}" for k, a in zip(result.cv_curve["k"], result.cv_curve["accuracy"])))
    t = time.perf_counter()
    # the plain k-NN of the tutorials: raw pixels, no deskew, no learned re-rank
    no_deskew = DigitClassifier(
        n_components=ours.n_components, n_neighbors=ours.n_neighbors, weights=ours.weights, deskew=False,
        features="pixels", metric_weight=0.0,
    ).fit(Xtr, ytr)
    no_deskew_secs = time.perf_counter() - t
    t = time.perf_counter()
    # the model before gradient features (and before the learned re-rank): deskewed pixels
    pixels = DigitClassifier(
        n_components=ours.n_components, n_neighbors=ours.n_neighbors, weights=ours.weights, features="pixels",
        metric_weight=0.0,
    ).fit(Xtr, ytr)
    pixels_secs = time.perf_counter() - t

    digits = load_pendigits(pen_dir)
    if args.canvas_limit and args.canvas_limit < len(digits):
        sel = np.sort(np.random.default_rng(args.seed).choice(len(digits), args.canvas_limit, replace=False))
        digits = [digits[i] for i in sel]
    log(f"rendering {len(digits)} replayed drawings")
    canvas, cy, cw = render_canvas(digits, args.seed)

    # personalisation: replayed drawings of some writers join the training set; test on the others
    train_d, test_d = split_writers(digits, args.personal_test_fraction, args.seed)
    test_writers = {d.writer for d in test_d}
    te_mask = np.array([w in test_writers for w in cw])
    log(f"personalisation split: {len(train_d)} drawings of {len(set(cw[~te_mask]))} writers in training, "
        f"{int(te_mask.sum())} of {len(test_writers)} other writers for testing")
    Xp = np.concatenate([Xtr / 255.0, canvas["ours"][~te_mask]])
    yp = np.concatenate([ytr, cy[~te_mask]])
    t = time.perf_counter()
    personal = DigitClassifier(
        n_components=ours.n_components, n_neighbors=ours.n_neighbors, weights=ours.weights
    ).fit(Xp, yp)
    personal_secs = time.perf_counter() - t

    log("evaluating")
    rows = {}

    def row(name, est, canvas_X, secs, mnist=True, lat=False, size=False, held=None):
        r = {
            "mnist_test": evaluate(est, Xte, yte)["accuracy"] if mnist else None,
            "canvas_all": evaluate(est, canvas_X, cy)["accuracy"],
            "canvas_heldout_writers": evaluate(est, canvas_X[te_mask], cy[te_mask])["accuracy"]
            if held is None else held,
        }
        if lat:
            med, p99 = latency(est, digits, args.latency_n, args.seed, args.latency_blas_threads)
            r["latency_med_ms"], r["latency_p99_ms"] = round(med, 3), round(p99, 3)
        else:
            r["latency_med_ms"] = r["latency_p99_ms"] = None
        r["model_MB"] = round(model_mb(est), 2) if size else None
        r["train_s"] = round(secs, 1)
        rows[name] = r
        log(f"{name}: {r}")

    row("whole-canvas resize, no deskew", no_deskew, canvas["naive"], no_deskew_secs, mnist=False)
    row("whole-canvas resize -> ours", ours, canvas["naive"], result.train_seconds, mnist=False)
    row("mnist-frame, no deskew", no_deskew, canvas["no_thickness"], no_deskew_secs)
    row("mnist-frame+deskew (no thickness norm)", ours, canvas["no_thickness"], result.train_seconds, mnist=False)
    row("deskewed pixels (the k-NN before gradient features)", pixels, canvas["ours"], pixels_secs, lat=True)
    row("ours", ours, canvas["ours"], result.train_seconds, lat=True, size=True)
    held = evaluate(personal, canvas["ours"][te_mask], cy[te_mask])["accuracy"]
    row("ours + other writers' drawings in training", personal, canvas["ours"], personal_secs,
        lat=True, size=True, held=held)
    rows["ours + other writers' drawings in training"]["canvas_all"] = None  # includes its training data
    hook = ours.predict_proba(canvas["ours"][te_mask], extra_X=canvas["ours"][~te_mask], extra_y=cy[~te_mask])
    rows["ours + same drawings via extra_X hook"] = {
        "canvas_heldout_writers": float((hook.argmax(1) == cy[te_mask]).mean())
    }
    if args.personal_splits > 0:
        base_acc, pers_acc = [], []
        for s in range(args.personal_splits):
            _, test_s = split_writers(digits, args.personal_test_fraction, args.seed + 1 + s)
            ws = {d.writer for d in test_s}
            m = np.array([w in ws for w in cw])
            p = ours.predict_proba(canvas["ours"][m], extra_X=canvas["ours"][~m], extra_y=cy[~m])
            base_acc.append(evaluate(ours, canvas["ours"][m], cy[m])["accuracy"])
            pers_acc.append(float((p.argmax(1) == cy[m]).mean()))
        log(f"writer splits: base {np.round(base_acc, 4)} personalised {np.round(pers_acc, 4)}")
        n = args.personal_splits
        rows[f"ours, held-out writers, mean of {n} other splits"] = {"canvas_heldout_writers": float(np.mean(base_acc))}
        rows[f"ours + other writers (hook), mean of {n} splits"] = {"canvas_heldout_writers": float(np.mean(pers_acc))}

    print()
    print(f"MNIST train n={len(ytr)}, test n={len(yte)}; canvas n={len(cy)} replayed pendigits drawings "
          f"(280x280 RGBA, seed {args.seed}); held-out writers n={int(te_mask.sum())}")
    print(f"chosen: {result.hyperparameters}")
    print(f"latency: one 280x280 PNG, decode -> preprocess -> predict_one, in process, "
          f"BLAS threads={args.latency_blas_threads or 'default'}, n={args.latency_n}; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(format_metrics_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
