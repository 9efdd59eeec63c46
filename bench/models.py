"""Model kinds side by side: k-NN (the one served and retrained) and the RBF SVM, on the same data.

For each kind: MNIST test accuracy, accuracy on replayed pendigits drawings (rendered like a browser
canvas, through the real preprocessing), training time (including its cross-validation), model file
size (joblib, as the store writes it) and the latency of one 280x280 PNG from decode to answer with
one BLAS thread (bench.recognition's helper).

Usage (data dirs come from the environment, there is no default):
    MNIST_DIR=/path/to/mnist PENDIGITS_DIR=/path/to/pendigits \\
        .venv/bin/python -m bench.models [--quick] [--kinds knn,svm] [--no-cv] [--svm-max-train N]
"""

from __future__ import annotations

import argparse
import os
import sys

from threadpoolctl import threadpool_info

from bench._common import data_dirs, log
from bench.recognition import latency, model_mb
from recognizer.ml import MODEL_KINDS, evaluate, format_metrics_table, load_mnist, load_pendigits, train_model
from recognizer.ml.evaluate import canvas_dataset

QUICK = {"train_limit": 10000, "test_limit": 2000, "canvas_limit": 1000, "latency_n": 100}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kinds", default=",".join(MODEL_KINDS), help="comma-separated, default: all kinds")
    ap.add_argument("--quick", action="store_true",
                    help="subsets: " + ", ".join(f"{k.replace('_', '-')} {v}" for k, v in QUICK.items()))
    ap.add_argument("--train-limit", type=int, default=None, help="first N MNIST training images (default all)")
    ap.add_argument("--test-limit", type=int, default=None, help="first N MNIST test images (default all)")
    ap.add_argument("--canvas-limit", type=int, default=None, help="random N replayed drawings (default all)")
    ap.add_argument("--latency-n", type=int, default=300)
    ap.add_argument("--latency-blas-threads", type=int, default=1,
                    help="BLAS threads while timing single predictions (0 = library default)")
    ap.add_argument("--no-cv", action="store_true", help="skip cross-validation (default hyperparameters)")
    ap.add_argument("--svm-max-train", type=int, default=None, help="cap the SVM's final training set")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    for k, v in QUICK.items():
        if args.quick and getattr(args, k) in (None, ap.get_default(k)):
            setattr(args, k, v)
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    unknown = set(kinds) - set(MODEL_KINDS)
    if unknown:
        ap.error(f"unknown kinds {sorted(unknown)}; known: {', '.join(MODEL_KINDS)}")

    mnist_dir, pen_dir = data_dirs()


    data = load_mnist(mnist_dir)
    Xtr, ytr = data.train_images[: args.train_limit] / 255.0, data.train_labels[: args.train_limit]
    Xte, yte = data.test_images[: args.test_limit] / 255.0, data.test_labels[: args.test_limit]
    digits = load_pendigits(pen_dir)
    log(f"rendering {args.canvas_limit or len(digits)} replayed drawings")
    Xc, yc, _writers = canvas_dataset(digits, seed=args.seed, limit=args.canvas_limit)

    rows, chosen = {}, {}
    for kind in kinds:
        log(f"{kind}: training on {len(ytr)} MNIST images (cv={not args.no_cv})")
        extra = {"max_train_samples": args.svm_max_train} if kind == "svm" else {}
        result = train_model(Xtr, ytr, kind=kind, cv=not args.no_cv, random_state=args.seed, **extra)
        est = result.estimator
        chosen[kind] = result.hyperparameters
        log(f"{kind}: trained in {result.train_seconds:.1f}s: {result.hyperparameters}")
        mnist_acc = evaluate(est, Xte, yte)["accuracy"]
        canvas = evaluate(est, Xc, yc)
        med, p99 = latency(est, digits, args.latency_n, args.seed, args.latency_blas_threads)
        rows[kind] = {
            "mnist_test": mnist_acc,
            "canvas": canvas["accuracy"],
            "canvas_worst_digit": min(canvas["per_digit"]),
            "train_samples": int(result.n_train),
            "train_s": round(result.train_seconds, 1),
            "model_MB": round(model_mb(est), 2),
            "latency_med_ms": round(med, 3),
            "latency_p99_ms": round(p99, 3),
        }
        log(f"{kind}: {rows[kind]}")

    blas = ", ".join(sorted({f"{i.get('internal_api')} {i.get('num_threads')}" for i in threadpool_info()
                             if i.get("user_api") == "blas"}))
    print()
    print(f"MNIST train n={len(ytr)}, test n={len(yte)}; canvas n={len(yc)} replayed pendigits drawings "
          f"(280x280 RGBA, seed {args.seed}); cv={'off' if args.no_cv else 'on'}")
    for kind in kinds:
        hp = {k: v for k, v in chosen[kind].items() if k not in ("augment", "deskew", "blur_sigma")}
        print(f"{kind}: {hp}")
    print(f"train_s: train_model() wall time including CV, BLAS default ({blas} threads); "
          f"latency: one 280x280 PNG, decode -> preprocess -> predict_one, in process, "
          f"BLAS threads={args.latency_blas_threads or 'default'}, n={args.latency_n}; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(format_metrics_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
