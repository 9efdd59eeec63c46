"""How well a stored model's neighbour graphs find the exact neighbours, by the search's candidate list (ef).

For a model file (e.g. the one bench/growth.py left at 1M drawings): the image graph's recall@k on 1,000 MNIST
test digits and the stroke graph's on 1,000 pendigits trajectories, against the exact search of the same rows,
at ef 64, 128 and 256 (one thread), and how many of the image rows are exact copies of another.
With --settings: image graphs built again over the model's rows with other links per row (M) and build lists
(efConstruction), e.g. ``--settings 16:100,32:200``: their build time, size, distance recall@k (a copy of a
neighbour counts as found) and the model's accuracy on bench/growth.py's unseen writers through each of them
at each ef, the image alone and fused with the served stroke k-NN, next to the exact search's.

    MNIST_DIR=/work/shared/data/mnist PENDIGITS_DIR=/work/shared/data/pendigits \\
        nice .venv/bin/python -m bench.graph_recall MODEL.joblib
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np
from threadpoolctl import threadpool_limits

from bench._common import data_dirs
from bench.growth import unseen_writers
from recognizer.ml import ann, load_mnist, load_pendigits, store
from recognizer.ml.knn import knn_sorted


def recall_by_ef(index: ann.NeighbourIndex, R: np.ndarray, sq: np.ndarray, Q: np.ndarray, k: int) -> list[tuple]:
    exact, _ = knn_sorted(Q, R, sq, k)
    out, served = [], index.ef_search  # the list the model was saved with (tuned at its fit)
    for ef in (64, 128, 256):
        (found, _), ms = timed_search(index, Q, k, ef)
        out.append((ef, float(np.mean([len(set(a) & set(b)) / k for a, b in zip(found, exact)])), ms))
    index.ef_search = served
    return out


def timed_search(index: ann.NeighbourIndex, Q: np.ndarray, k: int, ef: int) -> tuple[tuple, float]:
    """(index.search's answer at search list `ef`, ms a query, one thread); the index keeps that ef."""
    index.ef_search = ef
    t0 = time.perf_counter()
    with threadpool_limits(1):
        found = index.search(Q, k, threads=1)
    return found, (time.perf_counter() - t0) / len(Q) * 1000


def distance_recall(found: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean(np.abs(found - exact) <= 1e-3 * np.maximum(exact, 1e-3)))


def compare_settings(est, R: np.ndarray, Q: np.ndarray, k: int, digits, settings: str) -> None:
    X, y, S = unseen_set(digits)
    exact_model = copy.copy(est)
    exact_model.__dict__.update(neighbour_index_=None)
    exact_model.__dict__.pop("_prune_index", None)
    print(f"\nunseen writers ({len(y)} digits), exact image search: image alone "
          f"{(exact_model.predict(X) == y).mean():.4f}, with the served stroke k-NN "
          f"{(exact_model.predict(X, strokes=S) == y).mean():.4f}")
    _, exact = knn_sorted(Q, R, est.train_sq_, k)
    print(f"{'M':>3}{'efC':>5}{'build s':>9}{'MB':>7}{'ef':>5}{'recall':>8}{'ms':>7}{'image':>8}{'fused':>8}")
    for pair in settings.split(","):
        m, ef_construction = (int(v) for v in pair.split(":"))
        t0 = time.perf_counter()
        graph = ann.NeighbourIndex.build(R, m=m, ef_construction=ef_construction, threads=2)
        build_s, mb = time.perf_counter() - t0, graph.serialized_nbytes() / 1e6
        model = copy.copy(est)
        model.__dict__.update(neighbour_index_=graph)
        for ef in (64, 128, 256):
            (_, found), ms = timed_search(graph, Q, k, ef)
            print(f"{m:>3}{ef_construction:>5}{build_s:>9.0f}{mb:>7.0f}{ef:>5}{distance_recall(found, exact):>8.4f}"
                  f"{ms:>7.3f}{(model.predict(X) == y).mean():>8.4f}{(model.predict(X, strokes=S) == y).mean():>8.4f}")


def unseen_set(digits):
    """bench/growth.py's unseen writers' digits: (canvas images, labels, strokes)."""
    from recognizer.ml.evaluate import render_canvas_images

    unseen = [d for d in digits if d.writer in unseen_writers(digits)]
    X, y, _ = render_canvas_images(unseen, seed=1)
    return X, y, [d.strokes for d in unseen]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a model file (joblib) with neighbour graphs")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--settings", default="", help="M:efConstruction pairs of image graphs to build and compare")
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
    copies = np.bincount(np.unique(R, axis=0, return_inverse=True)[1].ravel())
    print(f"\nimage rows {len(R)}: {len(copies)} distinct vectors ({est.neighbour_index_.nodes} graph nodes), "
          f"{int(copies[copies > 1].sum())} rows with an exact copy, at most {int(copies.max())} copies of one")
    if args.settings:
        compare_settings(est, R, Q, k, digits, args.settings)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
