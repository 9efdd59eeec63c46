"""Where one image prediction's time goes: each stage of decode-to-answer timed on its own, with the caches as a
web request finds them (a PNG decoded just before each timed call), next to the whole answer.

The model is the default recipe's without cross-validation (bench.unseen_writers.fit: MNIST plus the 30
pendigits writers' four renders, 80 PCA components, the learned re-rank), the PNGs are 280x280 transparent
canvases of pendigits digits, one BLAS thread. Stages: decode and preprocess; features (deskew, gradient
planes, PCA); the plain search for the re-rank's candidates; the re-rank; the whole answer re-ranked and plain.

Usage (data dirs from the environment):
    MNIST_DIR=... PENDIGITS_DIR=... .venv/bin/python -m bench.predict_stages [--n 300]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from bench._common import log
from bench.unseen_writers import fit, plainly, training_data
from recognizer.ml import preprocess_drawing
from recognizer.ml.evaluate import format_metrics_table, render_styled_png


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=300, help="PNGs timed per stage")
    args = ap.parse_args()
    from threadpoolctl import threadpool_limits

    _data, (Xm, ym), digits, pen = training_data()
    log("training the default recipe (no cross-validation)")
    est = fit((Xm, ym), pen, np.arange(len(pen.labels))).estimator
    plain = plainly(est)
    pick = np.random.default_rng(5).choice(len(digits), size=min(args.n, len(digits)), replace=False)
    pngs = [render_styled_png(digits[i], np.random.default_rng([9, i]), "transparent") for i in pick]
    imgs = [preprocess_drawing(b) for b in pngs]
    Q = [est.transform(x[None]) for x in imgs]
    found = [est.kneighbors_features(q, est.rerank_candidates) for q in Q]
    stages = {
        "decode and preprocess": lambda i: preprocess_drawing(pngs[i]),
        "features (deskew, gradients, PCA)": lambda i: est.transform(imgs[i][None]),
        f"search, {est.rerank_candidates} candidates": lambda i: est.kneighbors_features(Q[i], est.rerank_candidates),
        "re-rank": lambda i: est.metric_.rerank(Q[i], est.train_features_[found[i][0]], found[i][1],
                                                est.metric_weight),
        "answer from the image (predict_one)": lambda i: est.predict_one(imgs[i]),
        "answer, ranked plainly": lambda i: plain.predict_one(imgs[i]),
    }
    rows = {}
    with threadpool_limits(limits=1):  # one BLAS thread per web worker, as wsgi.py sets
        for name, stage in stages.items():
            for i in range(min(20, len(pngs))):
                stage(i)
            times = []
            for i in range(len(pngs)):
                preprocess_drawing(pngs[i])  # what a request does first: it leaves the caches as they are then
                t = time.perf_counter()
                stage(i)
                times.append((time.perf_counter() - t) * 1000)
            rows[name] = {"p50_ms": float(np.median(times)), "p99_ms": float(np.percentile(times, 99))}
    graph = est.neighbour_index_
    print(f"\nOne image prediction by stage ({len(est.train_labels_)} training rows, {est.n_components} PCA "
          f"components, search: {'exact' if graph is None else f'graph, list {graph.ef_search}'}), ms\n")
    print(format_metrics_table(rows))


if __name__ == "__main__":
    main()
