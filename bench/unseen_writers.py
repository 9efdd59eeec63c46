"""Digits of writers the model has never seen: leave-writers-out cross-validation over the 30
pendigits writers, image-only, strokes-only and fused, before and after other writers' corrections;
MNIST test; and decode-to-answer latency next to scikit-learn's PCA(50) + brute-force k-NN.

Each fold holds out a group of writers (the test writers: in no training set, pen data included).
- "warm start": the model trains on MNIST plus every other writer's trajectories replayed as canvas
  drawings (the default model's recipe, recognizer.ml.warmstart) and reads the test writers' drawings.
- "feedback": the other writers split into pen data (the warm start) and users: the users draw on
  the site (their own canvases: recognizer.ml.evaluate.CANVAS_STYLES), correct every answer, and one
  retrain adds their drawings (images and strokes) to training, as the retrain does with trusted
  drawings. "before" is the warm start from the pen writers alone, "after" adds the users.
The test writers' drawings cycle through the five canvas styles (transparent, white, JPEG, blue ink,
a small canvas). Figures are medians over folds (means next to them).

Usage (data dirs from the environment):
    MNIST_DIR=... PENDIGITS_DIR=... .venv/bin/python -m bench.unseen_writers [--folds 5] [--tune]
        [--pen-variants N] [--mnist-limit N] [--latency-n N] [--folds-only | --model-only] [--no-feedback]
        [--candidates 24,16]
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from bench._common import data_dirs, log
from recognizer.ml import load_mnist, load_pendigits, preprocess_drawing, save_model
from recognizer.ml.evaluate import (
    CANVAS_STYLES,
    SCAN_STYLE,
    format_metrics_table,
    render_styled_png,
    styled_canvas_images,
)
from recognizer.ml.kinds import train_model
from recognizer.ml.metric import RERANK_CANDIDATES
from recognizer.ml.warmstart import PEN_VARIANTS, pen_training_set

AFTER = "feedback: after the users' corrections"
WARM = "warm start (MNIST + other writers' pen data)"
CACHE = Path(os.environ.get("BENCH_CACHE", ".cache/bench"))


def training_data(mnist_limit: int = 0):
    """(MNIST, its first ``mnist_limit`` training images and labels (0: all), the pendigits digits, their pen
    renders for training): what a leave-writers-out benchmark trains its folds on."""
    mnist_dir, pen_dir = data_dirs()
    data = load_mnist(mnist_dir)
    Xm, ym = data.train_images, data.train_labels
    if mnist_limit:
        Xm, ym = Xm[:mnist_limit], ym[:mnist_limit]
    log("rendering the pen data for training (cached after the first run)")
    return data, (Xm, ym), load_pendigits(pen_dir), pen_training_set(pen_dir, cache_dir=CACHE)


def writer_folds(writers, n_folds: int, seed: int):
    order = np.random.default_rng(seed).permutation(sorted(writers))
    return [sorted(int(w) for w in f) for f in np.array_split(order, n_folds)]


def test_drawings(digits, seed: int, styles=CANVAS_STYLES):
    """(X, y, writers, style of each) of the test writers' drawings, in turn in each of ``styles`` (cached)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    name = "styled" if tuple(styles) == CANVAS_STYLES else "-".join(styles)
    f = CACHE / f"{name}-{seed}-{len(digits)}.npz"
    if f.is_file():
        with np.load(f) as z:
            if "s" in z:  # sets cached before the styles were kept are rendered again
                return z["X"], z["y"], z["w"], z["s"]
    X, y, w, used = styled_canvas_images(digits, seed=seed, styles=styles)
    np.savez_compressed(f, X=X, y=y, w=w, s=np.array(used))
    return X, y, w, np.array(used)


FOLD_PCA = 80  # the PCA size the default model's cross-validation picks (its table, below)


def fit(mnist, pen, pen_rows, users=None, variants=PEN_VARIANTS, cv=False, pca=FOLD_PCA):
    """train_model on MNIST + the pen rows (+ users' corrected drawings with strokes); without ``cv``, with
    ``pca`` components and the other settings train_knn defaults to."""
    Xm, ym = mnist
    imgs, labels, strokes = [Xm / 255.0], [ym.astype(np.int64)], [None] * len(ym)
    imgs.append(pen.images[pen_rows])
    labels.append(pen.labels[pen_rows])
    strokes += [pen.strokes[i] for i in pen_rows]
    if users is not None:
        Xu, yu, su = users
        imgs.append(Xu)
        labels.append(yu)
        strokes += list(su)
    return train_model(np.concatenate(imgs), np.concatenate(labels), cv=cv, strokes=strokes,
                       defaults={"pca_components": pca})


def copy_with(est, **params):
    """A copy of ``est`` with ``params`` set: the same fitted model read another way, side by side."""
    out = copy.copy(est)
    out.__dict__.update(params)
    return out


def plainly(est):
    """A copy of ``est`` that ranks its neighbours plainly (no learned-metric re-rank): the side-by-side rows."""
    return copy_with(est, metric_weight=0.0)


def scores(est, X, y, strokes, weights=None, styles=None, scans=None, candidates=()) -> dict:
    """Accuracy image-only, strokes-only and fused (at the model's weight, or each of ``weights``), each also
    with the image k-NN ranking plainly; image-only by canvas style (``styles``: one name per row) and on the
    ``scans`` (X, y) of the same digits; image-only, scanned and fused with each of ``candidates`` re-ranked."""
    out = _scores(est, X, y, strokes, weights, styles, scans)
    if not candidates or est.metric_ is None:
        return out
    p_str = est.stroke_model_.predict_proba(strokes) if est.reads_strokes else None
    for n in candidates:
        other = copy_with(est, rerank_candidates=n)
        p = other.predict_proba(X)
        out[f"image, {n} candidates"] = float((p.argmax(1) == y).mean())
        if scans is not None:
            out[f"image, scanned, {n} candidates"] = float((other.predict(scans[0]) == scans[1]).mean())
        if p_str is not None:
            w = est.stroke_weight_
            out[f"fused, {n} candidates"] = float((((1 - w) * p + w * p_str).argmax(1) == y).mean())
    return out


def _scores(est, X, y, strokes, weights=None, styles=None, scans=None) -> dict:
    p_img = est.predict_proba(X)
    p_plain = plainly(est).predict_proba(X) if est.metric_ is not None else None
    out = {"image": float((p_img.argmax(1) == y).mean())}
    if p_plain is not None:
        out["image, plain k-NN"] = float((p_plain.argmax(1) == y).mean())
    if scans is not None:
        out["image, scanned"] = float((est.predict(scans[0]) == scans[1]).mean())
        if p_plain is not None:
            out["image, scanned, plain k-NN"] = float((plainly(est).predict(scans[0]) == scans[1]).mean())
    if styles is not None:
        for style in CANVAS_STYLES:
            rows = np.asarray(styles) == style
            out[f"image, {style}"] = float((p_img[rows].argmax(1) == y[rows]).mean())
    if not est.reads_strokes:  # --pen-variants 0: no trajectories in training
        return out
    p_str = est.stroke_model_.predict_proba(strokes)
    out["strokes"] = float((p_str.argmax(1) == y).mean())
    for w in weights or [est.stroke_weight_]:
        key = "fused" if weights is None else f"fused@{w:.2f}"
        out[key] = float((((1 - w) * p_img + w * p_str).argmax(1) == y).mean())
        if p_plain is not None:
            out[key + ", plain k-NN"] = float((((1 - w) * p_plain + w * p_str).argmax(1) == y).mean())
    return out


def latency(est, sk, digits, n: int, candidates=()) -> dict:
    """Median / p99 ms from PNG bytes to an answer: ours (image, image ranked plainly, and image + strokes; image
    with each of ``candidates`` re-ranked) and ``sk``, scikit-learn's PCA(50) + KNeighborsClassifier(
    algorithm="brute") fitted on the same images."""
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(5)
    pick = rng.choice(len(digits), size=min(n, len(digits)), replace=False)
    pngs = [(render_styled_png(digits[i], np.random.default_rng([9, i]), "transparent"), digits[i].strokes)
            for i in pick]
    res = {}
    plain = plainly(est)
    fns = {
        "ours, image": lambda b, s: est.predict_one(preprocess_drawing(b)),
        "ours, image, plain k-NN": lambda b, s: plain.predict_one(preprocess_drawing(b)),
        "ours, image + strokes": lambda b, s: est.predict_one(preprocess_drawing(b), strokes=s),
    }
    for c in candidates:
        other = copy_with(est, rerank_candidates=c)
        fns[f"ours, image, {c} candidates"] = lambda b, s, other=other: other.predict_one(preprocess_drawing(b))
    fns["sklearn PCA(50) + brute k-NN"] = lambda b, s: sk.predict(preprocess_drawing(b).reshape(1, -1))
    with threadpool_limits(limits=1):  # one BLAS thread per web worker, as wsgi.py sets
        for name, fn in fns.items():
            for b, s in pngs[:20]:
                fn(b, s)
            times = []
            for i in rng.permutation(len(pngs)):
                b, s = pngs[i]
                t = time.perf_counter()
                fn(b, s)
                times.append((time.perf_counter() - t) * 1000)
            res[name] = {"p50_ms": float(np.median(times)), "p99_ms": float(np.percentile(times, 99))}
    return res


def print_folds(rows: dict[str, list[dict]], folds: list) -> None:
    print(f"\nUnseen writers: leave-writers-out, {len(folds)} folds of {len(folds[0])}-{len(folds[-1])} writers, "
          "median over folds (mean in brackets)")
    by_style = {f"image, {style}" for style in CANVAS_STYLES}
    for title, keys in (("By input kind", lambda k: k not in by_style),
                        ("Image only, by canvas style (re-ranked)", lambda k: k in by_style)):
        print(f"\n{title}\n")
        print(format_metrics_table({
            name: {key: f"{statistics.median(v):.4f} ({np.mean(v):.4f})"
                   for key in rs[0] if keys(key) for v in [[r[key] for r in rs]]}
            for name, rs in rows.items()}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tune", action="store_true", help="print accuracy for each fusion weight (0.2-0.8)")
    ap.add_argument("--weights", help="comma-separated fusion weights to print (implies --tune)")
    parts = ap.add_mutually_exclusive_group()
    parts.add_argument("--folds-only", action="store_true", help="skip the default model's MNIST test and latency")
    parts.add_argument("--model-only", action="store_true", help="only the default model's MNIST test and latency")
    ap.add_argument("--mnist-limit", type=int, default=0, help="train on the first N MNIST digits (quick runs)")
    ap.add_argument("--latency-n", type=int, default=300)
    ap.add_argument("--pca", type=int, default=FOLD_PCA, help="PCA components of the fold models")
    ap.add_argument("--no-feedback", action="store_true")
    ap.add_argument("--candidates", default="",
                    help=f"comma-separated re-rank candidate counts to read with too, side by side with the "
                         f"model's ({RERANK_CANDIDATES}): image, scanned and fused accuracy, MNIST test, latency")
    ap.add_argument("--pen-variants", type=int, default=len(PEN_VARIANTS),
                    help="train on the first N pen renderings of each digit (PEN_VARIANTS: 0, MNIST alone; 2, the "
                         "pens as written; default: all four, as the site trains)")
    args = ap.parse_args()
    t0 = time.perf_counter()
    data, (Xm, ym), digits, pen = training_data(args.mnist_limit)
    log("rendering the test drawings in five canvas styles (cached)")
    Xt, yt, wt, style_t = test_drawings(digits, seed=1)
    log("rendering the test writers' digits as scans (cached)")
    Xs, ys, _ws, _s = test_drawings(digits, seed=3, styles=(SCAN_STYLE,))
    st = [d.strokes for d in digits]
    Xu_all, _yu, _wu, _su = test_drawings(digits, seed=2)  # the same writers drawing again, as site users
    folds = writer_folds({d.writer for d in digits}, args.folds, args.seed)
    weights = [round(w, 2) for w in np.arange(0.2, 0.81, 0.1)] if args.tune else None
    if args.weights:
        weights = [float(w) for w in args.weights.split(",")]
    candidates = [int(n) for n in args.candidates.split(",") if n.strip()]
    rows: dict[str, list[dict]] = {}
    for fi, test_w in enumerate([] if args.model_only else folds):
        users_w = folds[(fi + 1) % len(folds)]
        te = np.isin(wt, test_w)
        log(f"fold {fi + 1}/{len(folds)}: test writers {test_w}")
        others = ~np.isin(pen.writers, test_w) & (pen.variant < args.pen_variants)
        est = fit((Xm, ym), pen, np.flatnonzero(others), pca=args.pca).estimator
        rows.setdefault(WARM, []).append(
            scores(est, Xt[te], yt[te], [st[i] for i in np.flatnonzero(te)], weights, style_t[te], (Xs[te], ys[te]),
                   candidates))
        log(f"  warm start: {rows[WARM][-1]}")
        if args.no_feedback:
            continue
        pen_only = np.flatnonzero(others & ~np.isin(pen.writers, users_w))
        est_before = fit((Xm, ym), pen, pen_only, pca=args.pca).estimator
        rows.setdefault("feedback: before (MNIST + pen writers)", []).append(
            scores(est_before, Xt[te], yt[te], [st[i] for i in np.flatnonzero(te)], weights))
        u = np.flatnonzero(np.isin(wt, users_w))
        est_after = fit((Xm, ym), pen, pen_only, users=(Xu_all[u], yt[u], [st[i] for i in u]), pca=args.pca).estimator
        rows.setdefault(AFTER, []).append(
            scores(est_after, Xt[te], yt[te], [st[i] for i in np.flatnonzero(te)], weights))
        log(f"  after the users' corrections: {rows[AFTER][-1]}")
    if rows:
        print_folds(rows, folds)
    if args.folds_only:
        return

    trained_on = (f"MNIST + the 30 pendigits writers, {args.pen_variants} renders of each digit" if args.pen_variants
                  else "MNIST alone")
    log(f"the default model ({trained_on}): cross-validated, timed")
    t = time.perf_counter()
    served = np.flatnonzero(pen.variant < args.pen_variants)
    result = fit((Xm, ym), pen, served, cv=True)
    train_s = time.perf_counter() - t
    est = result.estimator
    mnist_acc = float((est.predict(data.test_images) == data.test_labels).mean())
    mnist_plain = float((plainly(est).predict(data.test_images) == data.test_labels).mean())
    mnist_by_candidates = {f"mnist_test, {c} candidates": float(
        (copy_with(est, rerank_candidates=c).predict(data.test_images) == data.test_labels).mean()) for c in candidates}
    with tempfile.TemporaryDirectory() as tmp:
        saved = save_model(est, {}, tmp)
        size_mb = saved.path.stat().st_size / 1e6
    from sklearn.decomposition import PCA
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline

    train_imgs = np.concatenate([Xm / 255.0, pen.images[served]]).reshape(-1, 784)
    train_y = np.concatenate([ym, pen.labels[served]])
    sk = make_pipeline(PCA(50, random_state=0), KNeighborsClassifier(
        n_neighbors=est.n_neighbors, algorithm="brute")).fit(train_imgs, train_y)
    lat = latency(est, sk, digits, args.latency_n, candidates)
    print(f"\nThe default model ({trained_on}), k-NN\n")
    print(format_metrics_table({"k-NN, gradient features": {
        "mnist_test": mnist_acc, "mnist_test, plain k-NN": mnist_plain, **mnist_by_candidates, "train_s": train_s,
        "file_MB": size_mb,
        "n_train": result.n_train, "k": est.n_neighbors, "pca": est.n_components,
        "search list": "exact" if est.neighbour_index_ is None else est.neighbour_index_.ef_search}}))
    print("\nDecode to answer, one 280x280 PNG, one BLAS thread (ms)\n")
    base = lat["sklearn PCA(50) + brute k-NN"]["p50_ms"]
    print(format_metrics_table({k: {**v, "speed-up vs sklearn": base / v["p50_ms"]} for k, v in lat.items()}))
    log(f"done in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
