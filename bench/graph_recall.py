"""How well a stored model's neighbour graphs find the exact neighbours, by the search's candidate list (ef).

For a model file (e.g. the one bench/growth.py left at 1M drawings): the image graph's recall@k on 1,000 MNIST
test digits and the stroke graph's on 1,000 pendigits trajectories, against the exact search of the same rows,
at ef 64, 128 and 256 (one thread); then how many of the image rows are exact copies of another, and the
image graph's distance recall (a copy of a neighbour counts as found) for the served graph and for a graph
built over the distinct vectors alone.

    MNIST_DIR=/work/shared/data/mnist PENDIGITS_DIR=/work/shared/data/pendigits \\
        nice .venv/bin/python -m bench.graph_recall MODEL.joblib
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from threadpoolctl import threadpool_limits

from bench._common import data_dirs
from recognizer.ml import ann, load_mnist, load_pendigits, store
from recognizer.ml.knn import knn_sorted


def recall_by_ef(index: ann.NeighbourIndex, R: np.ndarray, sq: np.ndarray, Q: np.ndarray, k: int) -> list[tuple]:
    exact, _ = knn_sorted(Q, R, sq, k)
    out = []
    for ef in (64, 128, 256):
        index.ef_search = ef
        t0 = time.perf_counter()
        with threadpool_limits(1):
            found, _ = index.search(Q, k, threads=1)
        ms = (time.perf_counter() - t0) / len(Q) * 1000
        out.append((ef, float(np.mean([len(set(a) & set(b)) / k for a, b in zip(found, exact)])), ms))
    index.ef_search = ann.EF_SEARCH
    return out


def distance_recall(found: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean(np.abs(found - exact) <= 1e-3 * np.maximum(exact, 1e-3)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a model file (joblib) with neighbour graphs")
    parser.add_argument("--queries", type=int, default=1000)
    args = parser.parse_args(argv)
    mnist_dir, pen_dir = data_dirs()
    est = store.load_model(args.model)
    k = int(est.n_neighbors)
    Q = est.transform(load_mnist(mnist_dir).test_images[: args.queries] / 255.0)
    digits = load_pendigits(pen_dir)
    pick = np.random.default_rng(0).choice(len(digits), min(args.queries, len(digits)), replace=False)
    rows = [("image", est, Q, k)]
    if est.reads_strokes and getattr(est.stroke_model_, "neighbour_index_", None) is not None:
        sm = est.stroke_model_
        rows.append(("strokes", sm, sm.features([digits[i].strokes for i in pick]), int(sm.n_neighbors)))
    print(f"{'graph':<9}{'rows':>9}{'k':>3}" + "".join(f"{f'recall@ef{ef}':>14}{'ms':>7}" for ef in (64, 128, 256)))
    for name, model, X, kk in rows:
        figures = recall_by_ef(model.neighbour_index_, model.train_features_, model.train_sq_, X, kk)
        print(f"{name:<9}{len(model.train_labels_):>9}{kk:>3}"
              + "".join(f"{r:>14.4f}{ms:>7.3f}" for _ef, r, ms in figures))

    R = np.ascontiguousarray(est.train_features_)
    _, exact = knn_sorted(Q, R, est.train_sq_, k)
    _, served = est.neighbour_index_.search(Q, k)
    distinct, at, copies = np.unique(R, axis=0, return_inverse=True, return_counts=True)
    distinct = np.ascontiguousarray(distinct, np.float32)
    print(f"\nimage rows {len(R)}: {len(distinct)} distinct vectors, {int((copies[at.ravel()] > 1).sum())} rows with "
          f"an exact copy, at most {int(copies.max())} copies of one")
    print(f"served graph: distance recall@{k} {distance_recall(served, exact):.4f} (ef {ann.EF_SEARCH})")
    graph = ann.NeighbourIndex.build(distinct, threads=2)
    _, exact_distinct = knn_sorted(Q, distinct, np.einsum("ij,ij->i", distinct, distinct), k)
    for ef in (64, 128):
        graph.ef_search = ef
        _, found = graph.search(Q, k)
        print(f"graph over the distinct vectors: distance recall@{k} {distance_recall(found, exact_distinct):.4f} "
              f"(ef {ef})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
