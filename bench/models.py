"""Model kinds side by side: k-NN (the one served and retrained), the RBF SVM, the tutorial CNN and the
deep k-NN (the k-NN over the CNN's 256-unit layer), on the same data.

For each kind: MNIST test accuracy, accuracy on replayed pendigits drawings (rendered like a browser
canvas, through the real preprocessing), training time (including its cross-validation), model file
size (joblib, as the store writes it) and the latency of one 280x280 PNG from decode to answer with
one BLAS thread (bench.recognition's helper).

Unseen writers (``--folds N``): leave-writers-out over the 30 pendigits writers. For each fold every kind
trains on MNIST (``--fold-mnist-limit``) plus the other writers' trajectories replayed as canvas drawings
(recognizer.ml.warmstart, as the site's default model trains), with default hyperparameters, and reads
the held-out writers' drawings in the five canvas styles (recognizer.ml.evaluate.styled_canvas_images).
Images only: the stroke k-NN is left out, so the kinds are compared on the same input.

The CNN kinds need the optional extra (requirements-cnn.txt); without it they are skipped with a note.
JAX runs with ``--xla-threads`` threads (default 1, set through XLA_FLAGS before JAX is imported).

Usage (data dirs come from the environment, there is no default):
    MNIST_DIR=/path/to/mnist PENDIGITS_DIR=/path/to/pendigits \\
        .venv/bin/python -m bench.models [--quick] [--kinds knn,svm,cnn,cnn-knn] [--no-cv] [--svm-max-train N]
        [--folds 3] [--fold-mnist-limit N] [--cnn-epochs N]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_info

from bench._common import data_dirs, log
from bench.recognition import latency, model_mb
from recognizer.ml import evaluate, format_metrics_table, load_mnist, load_pendigits
from recognizer.ml.evaluate import canvas_dataset, styled_canvas_images
from recognizer.ml.kinds import MODEL_KINDS, get_kind

QUICK = {"train_limit": 10000, "test_limit": 2000, "canvas_limit": 1000, "latency_n": 100, "fold_mnist_limit": 5000,
         "cnn_epochs": 2}
# Measured here but not a site kind: the deep k-NN (recognizer.ml.cnn.DeepKnnClassifier) over the CNN that the
# "cnn" kind trains, so it needs what that kind needs and reuses its CNN.
DERIVED_KINDS = {"cnn-knn": "cnn"}
KINDS = MODEL_KINDS + tuple(DERIVED_KINDS)
CACHE = Path(os.environ.get("BENCH_CACHE", ".cache/bench"))


def writer_folds(writers, n_folds: int, seed: int) -> list[list[int]]:
    order = np.random.default_rng(seed).permutation(sorted(writers))
    return [sorted(int(w) for w in f) for f in np.array_split(order, n_folds)]


def styled_test_set(digits, writers, seed: int):
    """The writers' drawings, each in the next canvas style in turn, through the real preprocessing (cached)."""
    picked = [d for d in digits if d.writer in set(writers)]
    CACHE.mkdir(parents=True, exist_ok=True)
    f = CACHE / f"models-styled-{seed}-{'-'.join(map(str, sorted(writers)))}-{len(picked)}.npz"
    if f.is_file():
        with np.load(f) as z:
            return z["X"], z["y"]
    X, y, _w, _styles = styled_canvas_images(picked, seed=seed)
    np.savez_compressed(f, X=X, y=y)
    return X, y


def trainer_options(kind: str, args) -> dict:
    """This benchmark's flags that reach a site kind's trainer."""
    options = {"svm": {"max_train_samples": args.svm_max_train},
               "cnn": {"defaults": {"epochs": args.cnn_epochs}} if args.cnn_epochs else {}}
    return options.get(kind, {})


def fit_kind(kind, X, y, args, fitted: dict, tag: str, cv: bool):
    """(estimator, hyperparameters, train seconds, training samples), kept in ``fitted`` under (kind, tag):
    cnn-knn reuses the CNN of ``tag``."""
    if kind in DERIVED_KINDS:
        from recognizer.ml.cnn import DeepKnnClassifier

        base = DERIVED_KINDS[kind]
        if (base, tag) not in fitted:
            fit_kind(base, X, y, args, fitted, tag, cv)
        cnn, _hp, cnn_s, _n = fitted[(base, tag)]
        t0 = time.perf_counter()
        est = DeepKnnClassifier(cnn, n_components=args.deep_knn_pca, n_neighbors=4).fit(X, y)
        knn_s = time.perf_counter() - t0
        hp = {"n_components": est.n_components, "n_neighbors": est.n_neighbors, "knn_fit_s": round(knn_s, 1)}
        return est, hp, cnn_s + knn_s, len(y)
    result = get_kind(kind).train(X, y, cv=cv, random_state=args.seed, **trainer_options(kind, args))
    out = (result.estimator, result.hyperparameters, result.train_seconds, int(result.n_train))
    fitted[(kind, tag)] = out
    return out


def unseen_writers(kinds, args, mnist, digits, pen_dir) -> dict:
    """{kind: {"folds": [accuracy per fold], "n": drawings}}: leave-writers-out, see the module docstring."""
    from recognizer.ml.warmstart import pen_training_set

    Xm, ym = mnist
    out = {k: {"folds": [], "n": 0, "train_s": []} for k in kinds}
    for fi, held in enumerate(writer_folds({d.writer for d in digits}, args.folds, args.seed)):
        Xt, yt = styled_test_set(digits, held, args.seed)
        pen = pen_training_set(pen_dir, exclude_writers=held, cache_dir=CACHE)
        X = np.concatenate([Xm, pen.images])
        y = np.concatenate([ym, pen.labels]).astype(np.int64)
        log(f"fold {fi + 1}/{args.folds}: held-out writers {held} ({len(yt)} drawings); "
            f"training on {len(ym)} MNIST + {len(pen.labels)} pen renders")
        fitted: dict = {}
        for kind in kinds:
            est, _hp, secs, _n = fit_kind(kind, X, y, args, fitted, f"fold{fi}", cv=False)
            acc = float((np.asarray(est.predict(Xt)) == yt).mean())
            out[kind]["folds"].append(acc)
            out[kind]["n"] += len(yt)
            out[kind]["train_s"].append(secs)
            log(f"fold {fi + 1}: {kind} {acc:.4f} (trained in {secs:.0f}s)")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kinds", default=",".join(KINDS), help="comma-separated, default: all kinds")
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
    ap.add_argument("--folds", type=int, default=0, help="leave-writers-out folds over the pendigits writers (0: none)")
    ap.add_argument("--fold-mnist-limit", type=int, default=None, help="first N MNIST images in each fold (default all)")
    ap.add_argument("--no-main", action="store_true", help="only the unseen-writer folds")
    ap.add_argument("--cnn-epochs", type=int, default=None, help="CNN epochs (default: recognizer.ml.cnn.CNN_DEFAULTS)")
    ap.add_argument("--deep-knn-pca", type=int, default=64, help="PCA size of the deep k-NN's features")
    ap.add_argument("--xla-threads", type=int, default=1, help="threads JAX may use (0: its default)")
    args = ap.parse_args(argv)
    for k, v in QUICK.items():
        if args.quick and getattr(args, k) in (None, ap.get_default(k)):
            setattr(args, k, v)
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    unknown = set(kinds) - set(KINDS)
    if unknown:
        ap.error(f"unknown kinds {sorted(unknown)}; known: {', '.join(KINDS)}")
    if args.xla_threads == 1:  # read when JAX starts: recognizer.ml.cnn imports it only to train
        os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
    unavailable = {k: get_kind(DERIVED_KINDS.get(k, k)).unavailable_reason() for k in kinds}
    for k in kinds:
        if unavailable[k]:
            log(f"{k} skipped: {unavailable[k]}")
    kinds = [k for k in kinds if not unavailable[k]]

    mnist_dir, pen_dir = data_dirs()

    data = load_mnist(mnist_dir)
    Xtr, ytr = data.train_images[: args.train_limit] / 255.0, data.train_labels[: args.train_limit]
    Xte, yte = data.test_images[: args.test_limit] / 255.0, data.test_labels[: args.test_limit]
    digits = load_pendigits(pen_dir)
    rows, chosen = {}, {}
    if not args.no_main:
        log(f"rendering {args.canvas_limit or len(digits)} replayed drawings")
        Xc, yc, _writers = canvas_dataset(digits, seed=args.seed, limit=args.canvas_limit)
        fitted: dict = {}
        for kind in kinds:
            log(f"{kind}: training on {len(ytr)} MNIST images (cv={not args.no_cv})")
            est, hp, secs, n_train = fit_kind(kind, Xtr, ytr, args, fitted, "main", cv=not args.no_cv)
            chosen[kind] = hp
            log(f"{kind}: trained in {secs:.1f}s: {hp}")
            mnist_acc = evaluate(est, Xte, yte)["accuracy"]
            canvas = evaluate(est, Xc, yc)
            med, p99 = latency(est, digits, args.latency_n, args.seed, args.latency_blas_threads)
            rows[kind] = {
                "mnist_test": mnist_acc,
                "canvas": canvas["accuracy"],
                "canvas_worst_digit": min(canvas["per_digit"]),
                "train_samples": int(n_train),
                "train_s": round(secs, 1),
                "model_MB": round(model_mb(est), 2),
                "latency_med_ms": round(med, 3),
                "latency_p99_ms": round(p99, 3),
            }
            log(f"{kind}: {rows[kind]}")
    folds = None
    if args.folds:
        limit = args.fold_mnist_limit
        folds = unseen_writers(kinds, args, (data.train_images[:limit] / 255.0, data.train_labels[:limit]),
                               digits, pen_dir)

    blas = ", ".join(sorted({f"{i.get('internal_api')} {i.get('num_threads')}" for i in threadpool_info()
                             if i.get("user_api") == "blas"}))
    print()
    if rows:
        print(f"MNIST train n={len(ytr)}, test n={len(yte)}; canvas n={len(yc)} replayed pendigits drawings "
              f"(280x280 RGBA, seed {args.seed}); cv={'off' if args.no_cv else 'on'}")
        for kind in kinds:
            hp = {k: v for k, v in chosen[kind].items() if k not in ("augment", "deskew", "blur_sigma", "network")}
            print(f"{kind}: {hp}")
        print(f"train_s: training wall time including CV (cnn-knn: the CNN's and the k-NN's), BLAS default "
              f"({blas} threads), XLA threads {args.xla_threads or 'default'}; "
              f"latency: one 280x280 PNG, decode -> preprocess -> predict_one, in process, "
              f"BLAS threads={args.latency_blas_threads or 'default'}, n={args.latency_n}; "
              f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    if folds:
        for kind in kinds:
            f = folds[kind]
            rows.setdefault(kind, {}).update({
                "unseen_writers": float(np.mean(f["folds"])),
                "unseen_min_fold": float(min(f["folds"])),
                "fold_train_s": round(float(np.mean(f["train_s"])), 1),
            })
        print(f"unseen_writers: mean accuracy over {args.folds} leave-writers-out folds "
              f"({folds[kinds[0]]['n']} drawings of the 30 pendigits writers, five canvas styles), each kind "
              f"trained on {args.fold_mnist_limit or 'all'} MNIST + the other writers' pen renders, default "
              f"hyperparameters, images only; fold_train_s: mean training time per fold")
        for kind in kinds:
            print(f"  {kind}: folds {[round(a, 4) for a in folds[kind]['folds']]}")
    print(format_metrics_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
