"""Approximate nearest neighbours against the exact search, as the reference set grows with users' drawings.

The reference set is what the served k-NN searches: MNIST's 60,000 training digits, the pendigits
writers' trajectories replayed as canvas drawings (recognizer.ml.warmstart), then users' drawings.
Users' drawings are stood in for by (1) the same pen writers drawing again in the five canvas styles
(bench.unseen_writers' "users"), then (2) copies of every reference digit under a random affine warp
(rotation, scale, shear, shift) and an elastic distortion (Simard et al. 2003), some with a bolder pen,
each through the model's own deskew, gradient features and PCA: their neighbourhoods are those of
real digits, not of random Gaussian vectors. The sizes are nested: 175k holds the 75k set.

Held out: one fold of pendigits writers (bench.unseen_writers.writer_folds). Nothing of theirs is in
any reference set (pen renders, canvas re-drawings or their warped copies); their drawings, in the five
canvas styles through the real decode and preprocessing, are the queries.

Per size and method: build time, index memory (the serialised index: the vectors are in it for every
method here), single-query search latency p50/p99 (one thread everywhere: BLAS, OpenMP and the
library's own), predict p50 (features + search + vote, as DigitClassifier.predict_one does without
decoding), its ratio to the exact pruned search at the smallest size (today's serving cost), recall@k
against the exact neighbours, and the accuracy of the k=4 distance-weighted vote (recognizer.ml.knn's)
on the held-out writers, with its difference to the exact search in points.

Index builds use --build-threads (a training-time job); queries use one thread (a web worker).
The warped copies' projected features are cached in $BENCH_CACHE (default .cache/bench): the first
run at 1M computes ~925k images' features with two processes (~6 min), later runs load them.

Only faiss-cpu is in requirements.txt; the other candidates are compared when installed by hand
(`pip install voyager usearch pynndescent`; hnswlib has no wheel on PyPI and compiles), else skipped.

Usage (data dirs from the environment):
    MNIST_DIR=/work/shared/data/mnist PENDIGITS_DIR=/work/shared/data/pendigits \\
        nice .venv/bin/python -m bench.ann [--sizes 10000,...,1000000] [--methods ...|all] [--large-methods ...|all]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import multiprocessing as mp
import os
import pickle
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage
from threadpoolctl import threadpool_limits

from bench._common import data_dirs, log
from bench.unseen_writers import CACHE, test_drawings, writer_folds
from recognizer.ml import knn as ml_knn
from recognizer.ml import load_mnist, load_pendigits
from recognizer.ml.evaluate import format_metrics_table
from recognizer.ml.model import DigitClassifier
from recognizer.ml.warmstart import pen_training_set

# recognizer.ml.knn is being restructured (private helpers made public): take whichever name is there.
knn_sorted = ml_knn.__dict__.get("knn_sorted") or ml_knn.__dict__["_knn_sorted"]
vote = ml_knn.__dict__.get("vote") or ml_knn.__dict__["_vote"]

_AUG_VERSION = 1
_AUG_CHUNK = 4096


# ---------------------------------------------------------------- users' drawings, stood in for


def warp(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each image under its own random affine warp and elastic distortion, some with a bolder pen."""
    n = len(images)
    c = 13.5
    ang = np.deg2rad(rng.uniform(-12, 12, n))
    scale = rng.uniform(0.88, 1.12, n)
    shear = rng.uniform(-0.2, 0.2, n)
    shift = rng.uniform(-1.5, 1.5, (n, 2))
    # output pixel -> input pixel (the inverse map map_coordinates reads)
    cos, sin = np.cos(ang) / scale, np.sin(ang) / scale
    a = np.stack([np.stack([cos, -sin + shear * cos], -1), np.stack([sin, cos + shear * sin], -1)], 1)  # (n,2,2)
    yy, xx = np.mgrid[:28, :28].astype(np.float32) - c
    grid = np.stack([yy, xx])  # (2,28,28)
    src = np.einsum("nij,jhw->nihw", a, grid) + c + shift[:, :, None, None]
    # Simard's elastic field: alpha 30, sigma 4 px bends strokes by a pixel or two
    field = rng.uniform(-1, 1, (n, 2, 28, 28)).astype(np.float32)
    field = ndimage.gaussian_filter(field, sigma=(0, 0, 4, 4), mode="constant") * 30.0
    src = src + field
    z = np.broadcast_to(np.arange(n, dtype=np.float32)[:, None, None], (n, 28, 28))
    out = ndimage.map_coordinates(images, [z, src[:, 0], src[:, 1]], order=1, mode="constant", cval=0.0)
    bold = rng.random(n) < 0.2
    if bold.any():
        out[bold] = ndimage.grey_dilation(out[bold], footprint=np.ones((1, 2, 2), bool))
    return np.clip(out, 0.0, 1.0).astype(np.float32)


_POOL_STATE: dict = {}


def _warp_chunk(args) -> np.ndarray:
    """(seed, start, rows of the pool): the warped copies' PCA features; runs in a worker process."""
    seed, start, rows = args
    pool, est = _POOL_STATE["pool"], _POOL_STATE["est"]
    with threadpool_limits(limits=1):
        imgs = warp(pool[rows], np.random.default_rng([seed, start]))
        return est.transform(imgs)


def warped_features(pool: np.ndarray, rows: np.ndarray, est: DigitClassifier, seed: int, key: str,
                    processes: int) -> np.ndarray:
    """(len(rows), pca) features of warped copies of ``pool[rows]``, cached on disk under ``key``."""
    n = len(rows)
    f = CACHE / f"ann-warped-{key}-{n}.npy"
    if f.is_file():
        return np.load(f)
    # a larger cached run holds these as its prefix (the chunks are seeded by position)
    for other in sorted(CACHE.glob(f"ann-warped-{key}-*.npy")):
        m = int(other.stem.rsplit("-", 1)[1])
        if m >= n:
            return np.load(other, mmap_mode="r")[:n].copy()
    jobs = [(seed, s, rows[s : s + _AUG_CHUNK]) for s in range(0, n, _AUG_CHUNK)]
    _POOL_STATE.update(pool=pool, est=est)
    out = np.empty((n, est.components_.shape[0]), np.float32)
    t0 = time.perf_counter()
    ctx = mp.get_context("fork")  # the workers read the pool and the model without copying them
    with ctx.Pool(processes) as p:
        for i, block in enumerate(p.imap(_warp_chunk, jobs)):
            s = jobs[i][1]
            out[s : s + len(block)] = block
            if i % 20 == 0 or i == len(jobs) - 1:
                done = s + len(block)
                log(f"  warped copies: {done:,}/{n:,} ({time.perf_counter() - t0:.0f} s)")
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = f.with_suffix(".tmp.npy")
    np.save(tmp, out)
    os.replace(tmp, f)
    return out


def fitted_model(X, y, pca: int, k: int, key: str) -> DigitClassifier:
    """DigitClassifier fitted on the base reference set (features and PCA: ~90 s), cached on disk."""
    import joblib

    f = CACHE / f"ann-model-{key}-{pca}-{k}.joblib"
    if f.is_file():
        est = joblib.load(f)
        if len(est.train_labels_) == len(y):
            return est
    log(f"fitting the model's features and PCA ({pca} components) on the base reference set")
    est = DigitClassifier(n_components=pca, n_neighbors=k).fit(X, y)
    CACHE.mkdir(parents=True, exist_ok=True)
    joblib.dump(est, f)
    return est


# ---------------------------------------------------------------- methods


@dataclass
class Built:
    name: str
    params: str
    build_s: float
    index_mb: float
    search: object  # search(Q, k, threads) -> (indices (n,k) int64, euclidean distances (n,k))
    settings: list  # [(label, setter)] search-time settings to sweep; setter() applies one
    load_s: float = 0.0  # the serialised index back into a searchable one (a web worker's load)


def _load_seconds(load) -> float:
    t0 = time.perf_counter()
    load()
    return time.perf_counter() - t0


def _exact_pruned(R, build_threads):
    t0 = time.perf_counter()
    r_sq = np.einsum("ij,ij->i", R, R)
    index = ml_knn.prune_index(R)
    secs = time.perf_counter() - t0
    mb = (R.nbytes + r_sq.nbytes + (index[0].nbytes + index[1].nbytes if index else 0)) / 1e6

    def search(Q, k, threads):
        if len(Q) > 8:  # the batched path DigitClassifier takes: same answers
            return knn_sorted(Q, R, r_sq, k)
        return ml_knn.knn_sorted_pruned(Q, R, r_sq, k, index)

    return Built("exact (pruned)", f"head {ml_knn.PRUNE_DIMS}, {ml_knn.PRUNE_CANDIDATES} cand.", secs, mb,
                 search, [("", lambda: None)])


def _exact_brute(R, build_threads):
    r_sq = np.einsum("ij,ij->i", R, R)

    def search(Q, k, threads):
        return knn_sorted(Q, R, r_sq, k)

    return Built("exact (brute)", "", 0.0, (R.nbytes + r_sq.nbytes) / 1e6, search, [("", lambda: None)])


def _sqrt(d):
    return np.sqrt(np.maximum(np.asarray(d, np.float32), 0.0))


def _ivf_lists(n: int) -> int:
    return int(2 ** round(np.log2(4 * np.sqrt(n))))  # about 4 sqrt(n), faiss's rule of thumb


def _faiss_ivf(R, build_threads):
    import faiss

    nlist = _ivf_lists(len(R))
    faiss.omp_set_num_threads(build_threads)
    t0 = time.perf_counter()
    quant = faiss.IndexFlatL2(R.shape[1])
    index = faiss.IndexIVFFlat(quant, R.shape[1], nlist)
    index.cp.seed = 1234
    # k-means on 64 points a list (faiss's default is 256): at 1M rows a quarter of the build time,
    # and the lists' quality is what nprobe makes up for
    index.cp.max_points_per_centroid = 64
    index.train(R)
    index.add(R)
    secs = time.perf_counter() - t0

    def setter(p):
        return lambda: setattr(index, "nprobe", p)

    return _faiss_built("faiss IVF-Flat", f"nlist {nlist}", index, secs,
                        [(f"nprobe {p}", setter(p)) for p in (8, 16, 32)])


def _faiss_hnsw(R, build_threads):
    import faiss

    faiss.omp_set_num_threads(build_threads)
    t0 = time.perf_counter()
    index = faiss.IndexHNSWFlat(R.shape[1], 16)
    index.hnsw.efConstruction = 100
    index.add(R)
    secs = time.perf_counter() - t0

    def setter(ef):
        return lambda: setattr(index.hnsw, "efSearch", ef)

    return _faiss_built("faiss HNSW-Flat", "M 16, efC 100", index, secs, [(f"ef {e}", setter(e)) for e in (16, 32, 64)])


def _faiss_built(name, params, index, secs, settings):
    """A built faiss index measured the same way whatever its kind: serialised size, load time, search."""
    import faiss

    blob = faiss.serialize_index(index)
    mb, load_s = len(blob) / 1e6, _load_seconds(lambda: faiss.deserialize_index(blob))

    def search(Q, k, threads):
        faiss.omp_set_num_threads(threads)
        d, i = index.search(np.ascontiguousarray(Q, np.float32), k)
        return i.astype(np.int64), _sqrt(d)

    return Built(name, params, secs, mb, search, settings, load_s)


def _hnswlib(R, build_threads):
    import hnswlib

    t0 = time.perf_counter()
    index = hnswlib.Index(space="l2", dim=R.shape[1])
    index.init_index(max_elements=len(R), M=16, ef_construction=100, random_seed=100)
    index.set_num_threads(build_threads)
    index.add_items(R, np.arange(len(R)))
    secs = time.perf_counter() - t0
    with tempfile.NamedTemporaryFile() as f:
        index.save_index(f.name)
        mb = os.path.getsize(f.name) / 1e6
        load_s = _load_seconds(lambda: hnswlib.Index(space="l2", dim=R.shape[1]).load_index(f.name))

    def search(Q, k, threads):
        index.set_num_threads(threads)
        i, d = index.knn_query(Q, k)
        return i.astype(np.int64), _sqrt(d)

    def setter(ef):
        return lambda: index.set_ef(ef)

    return Built("hnswlib (sdist)", "M 16, efC 100", secs, mb, search, [(f"ef {e}", setter(e)) for e in (16, 32, 64)],
                 load_s)


def _usearch(R, build_threads):
    from usearch.index import Index

    t0 = time.perf_counter()
    index = Index(ndim=R.shape[1], metric="l2sq", dtype="f32", connectivity=16, expansion_add=100)
    index.add(np.arange(len(R)), R, threads=build_threads)
    secs = time.perf_counter() - t0
    blob = index.save()
    mb, load_s = len(blob) / 1e6, _load_seconds(lambda: Index.restore(blob))

    def search(Q, k, threads):
        m = index.search(np.ascontiguousarray(Q, np.float32), k, threads=threads)
        return np.asarray(m.keys, np.int64).reshape(len(Q), k), _sqrt(m.distances).reshape(len(Q), k)

    def setter(ef):
        return lambda: setattr(index, "expansion_search", ef)

    return Built("usearch", "conn. 16, exp.add 100", secs, mb, search, [(f"ef {e}", setter(e)) for e in (16, 32, 64)],
                 load_s)


def _voyager(R, build_threads):
    import voyager

    t0 = time.perf_counter()
    index = voyager.Index(voyager.Space.Euclidean, num_dimensions=R.shape[1], M=16, ef_construction=100,
                          random_seed=1, max_elements=len(R))
    index.add_items(R, np.arange(len(R)), num_threads=build_threads)
    secs = time.perf_counter() - t0
    blob = index.as_bytes()
    mb, load_s = len(blob) / 1e6, _load_seconds(lambda: voyager.Index.load(io.BytesIO(blob)))
    ef = {"v": 32}

    def search(Q, k, threads):
        i, d = index.query(np.ascontiguousarray(Q, np.float32), k, num_threads=threads, query_ef=ef["v"])
        return np.asarray(i, np.int64).reshape(len(Q), k), _sqrt(d).reshape(len(Q), k)

    def setter(e):
        return lambda: ef.update(v=e)

    return Built("voyager", "M 16, efC 100", secs, mb, search, [(f"ef {e}", setter(e)) for e in (16, 32, 64)],
                 load_s)


def _pynndescent(R, build_threads):
    import numba
    import pynndescent

    numba.set_num_threads(build_threads)
    t0 = time.perf_counter()
    # a random_state makes the build deterministic, and single-threaded with it
    index = pynndescent.NNDescent(R, metric="euclidean", n_neighbors=30, random_state=0, n_jobs=build_threads,
                                  low_memory=True)
    index.prepare()
    secs = time.perf_counter() - t0
    blob = pickle.dumps(index)
    mb, load_s = len(blob) / 1e6, _load_seconds(lambda: pickle.loads(blob))
    eps = {"v": 0.1}

    def search(Q, k, threads):
        numba.set_num_threads(threads)
        i, d = index.query(np.ascontiguousarray(Q, np.float32), k=k, epsilon=eps["v"])
        return i.astype(np.int64), np.asarray(d, np.float32)

    def setter(e):
        return lambda: eps.update(v=e)

    return Built("pynndescent", "n_neighbors 30", secs, mb, search, [(f"eps {e}", setter(e)) for e in (0.1, 0.2)],
                 load_s)


METHODS = {
    "exact-pruned": _exact_pruned, "exact-brute": _exact_brute, "faiss-ivf": _faiss_ivf,
    "faiss-hnsw": _faiss_hnsw, "hnswlib": _hnswlib, "usearch": _usearch, "voyager": _voyager,
    "pynndescent": _pynndescent,
}
DEFAULT_METHODS = "exact-pruned,exact-brute,faiss-ivf,faiss-hnsw,voyager"
LARGE_METHODS = "faiss-hnsw"


# ---------------------------------------------------------------- measuring


def timed_queries(est, built: Built, images, labels_ref, k, rounds: int, n_warm=20):
    """(search ms list, predict ms list) over ``images``, one at a time, one thread: the quietest of
    ``rounds`` passes (the one with the lowest median), since other work on a shared 2-core machine
    slows whole passes, not single queries."""
    best = None
    with threadpool_limits(limits=1):
        for _ in range(rounds):
            search_ms, predict_ms = [], []
            for j in range(n_warm + len(images)):
                img = images[j % len(images)][None]
                t0 = time.perf_counter()
                q = est.transform(img)
                t1 = time.perf_counter()
                idx, dist = built.search(q, k, 1)
                t2 = time.perf_counter()
                vote(labels_ref[idx].astype(np.int64), dist, np.ones(idx.shape, np.float32), "distance")
                t3 = time.perf_counter()
                if j >= n_warm:
                    search_ms.append((t2 - t1) * 1000)
                    predict_ms.append((t3 - t0) * 1000)
            if best is None or np.median(predict_ms) < np.median(best[1]):
                best = (search_ms, predict_ms)
    return best


def accuracy(idx, dist, labels_ref, y) -> float:
    p = vote(labels_ref[idx].astype(np.int64), dist, np.ones(idx.shape, np.float32), "distance")
    return float((p.argmax(1) == y).mean())


def recall(idx, exact_idx) -> float:
    k = exact_idx.shape[1]
    hits = sum(len(np.intersect1d(a, b, assume_unique=True)) for a, b in zip(idx, exact_idx))
    return hits / (k * len(exact_idx))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,20000,40000,75000,175000,1000000",
                    help="reference-set sizes, comma-separated (below today's ~78k: a random part of it)")
    ap.add_argument("--methods", default=DEFAULT_METHODS,
                    help=f"comma-separated, of {', '.join(METHODS)}, or 'all' (default: the candidates with "
                         "binary wheels that were in the running; hnswlib is source-only on PyPI, usearch was "
                         "2x slower, pynndescent missed recall 0.99 and takes minutes of numba compile)")
    ap.add_argument("--large-methods", default=LARGE_METHODS,
                    help="what sizes above 200k build besides the exact pruned search, or 'all' (each HNSW "
                         "build at 1M is 3-7 min on 2 cores: the default is the chosen library)")
    ap.add_argument("--pca", type=int, default=80,
                    help="PCA components (default 80: what train_model's cross-validation picks for the "
                         "default model, see bench/README.md)")
    ap.add_argument("--today", type=int, default=75000,
                    help="the size whose exact pruned predict p50 the others are compared with (no user drawings)")
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--fold", type=int, default=0, help="which of 5 writer folds is held out")
    ap.add_argument("--latency-n", type=int, default=300, help="single queries timed per method and setting")
    ap.add_argument("--rounds", type=int, default=3, help="latency passes per setting; the quietest is kept")
    ap.add_argument("--build-threads", type=int, default=2)
    ap.add_argument("--processes", type=int, default=2, help="for the warped copies' features")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="also write the rows to this file")
    args = ap.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    methods = list(METHODS) if args.methods == "all" else [m.strip() for m in args.methods.split(",") if m.strip()]
    large = set(METHODS) if args.large_methods == "all" else {m.strip() for m in args.large_methods.split(",")}
    unknown = set(methods) - set(METHODS)
    if unknown:
        ap.error(f"unknown methods: {', '.join(sorted(unknown))}")
    if "exact-pruned" not in methods:
        methods.insert(0, "exact-pruned")  # the reference every other row is compared with
    mnist_dir, pen_dir = data_dirs()
    t_start = time.perf_counter()

    log("loading MNIST, the pen renders and the canvas drawings (cached by bench.unseen_writers)")
    mnist = load_mnist(mnist_dir)
    digits = load_pendigits(pen_dir)
    pen = pen_training_set(pen_dir, cache_dir=CACHE)
    Xt_all, yt_all, wt_all, _st = test_drawings(digits, seed=1)
    Xu_all, yu_all, wu_all, _su = test_drawings(digits, seed=2)  # the same writers drawing again, as site users
    test_w = writer_folds({d.writer for d in digits}, 5, args.seed)[args.fold]
    te = np.isin(wt_all, test_w)
    Xt, yt = Xt_all[te], yt_all[te]
    pen_keep = ~np.isin(pen.writers, test_w)
    user_keep = np.flatnonzero(~np.isin(wu_all, test_w))
    user_keep = user_keep[np.random.default_rng(args.seed).permutation(len(user_keep))]
    X_base = np.concatenate([mnist.train_images.astype(np.float32) / 255.0, pen.images[pen_keep]])
    y_base = np.concatenate([mnist.train_labels.astype(np.int64), pen.labels[pen_keep]])
    log(f"held-out writers {test_w}: {len(yt)} test drawings; base reference {len(y_base):,} "
        f"(MNIST + other writers' pen renders), {len(user_keep):,} canvas re-drawings")

    est = fitted_model(X_base, y_base, args.pca, args.k, f"{args.fold}-{args.seed}-{len(y_base)}")
    F_base = est.train_features_
    F_user = est.transform(Xu_all[user_keep])
    pool = np.concatenate([X_base, Xu_all[user_keep]])
    y_pool = np.concatenate([y_base, yu_all[user_keep]])
    n_real = len(F_base) + len(F_user)
    n_warp = max(0, sizes[-1] - n_real)
    key = hashlib.sha256(json.dumps({"v": _AUG_VERSION, "pca": args.pca, "fold": args.fold, "seed": args.seed,
                                     "pool": len(pool), "mean": float(est.mean_.sum()),
                                     "comp": float(np.abs(est.components_).sum())}).encode()).hexdigest()[:16]
    log(f"warped copies of the reference and re-drawn digits: {n_warp:,}")
    # a draw's first m rows are the same for any longer draw, so a cached larger run serves a smaller one
    rows_warp = np.random.default_rng(args.seed).integers(0, len(pool), n_warp)
    F_warp = warped_features(pool, rows_warp, est, args.seed, key, args.processes) if n_warp else \
        np.zeros((0, args.pca), np.float32)
    F_all = np.concatenate([F_base, F_user, F_warp])
    y_all = np.concatenate([y_base, yu_all[user_keep], y_pool[rows_warp]]).astype(np.uint8)
    Q_test = est.transform(Xt)
    lat_pick = np.random.default_rng(5).choice(len(Xt), size=min(args.latency_n, len(Xt)), replace=False)
    X_lat = Xt[lat_pick]
    log(f"data ready in {time.perf_counter() - t_start:.0f} s")

    table: dict[str, dict] = {}
    records = []
    base_predict = None
    for size in sizes:
        if size > len(F_all):
            log(f"size {size:,} is more than the {len(F_all):,} rows there are: skipped")
            continue
        if size < len(F_base):  # below today's set: a random part of it, not MNIST's first digits alone
            part = np.sort(np.random.default_rng(args.seed).choice(len(F_base), size, replace=False))
        else:
            part = np.arange(size)
        R = np.ascontiguousarray(F_all[part])
        labels_ref = y_all[part]
        log(f"== {size:,} rows: exact neighbours of the {len(Q_test)} held-out drawings")
        with threadpool_limits(limits=args.build_threads):
            exact_idx, exact_dist = knn_sorted(Q_test, R, np.einsum("ij,ij->i", R, R), args.k)
        exact_acc = accuracy(exact_idx, exact_dist, labels_ref, yt)
        for m in methods:
            if size > 200_000 and m != "exact-pruned" and m not in large:
                continue
            log(f"  {m}: building")
            try:
                built = METHODS[m](R, args.build_threads)
            except ImportError as exc:  # only faiss-cpu is in requirements.txt; the other candidates by hand
                log(f"  {m}: skipped, not installed ({exc.name}: pip install it to compare)")
                continue
            log(f"  {m}: built in {built.build_s:.1f} s, {built.index_mb:.0f} MB")
            for label, apply in built.settings:
                apply()
                idx, dist = built.search(Q_test, args.k, args.build_threads)
                acc = accuracy(idx, dist, labels_ref, yt)
                rec = recall(idx, exact_idx)
                s_ms, p_ms = timed_queries(est, built, X_lat, labels_ref, args.k, args.rounds)
                pred50 = float(np.median(p_ms))
                if m == "exact-pruned" and size == args.today:
                    base_predict = pred50
                row = {
                    "build_s": built.build_s, "index_MB": built.index_mb, "load_s": built.load_s,
                    "search_p50_ms": float(np.median(s_ms)), "search_p99_ms": float(np.percentile(s_ms, 99)),
                    "predict_p50_ms": pred50, "predict_vs_today": np.nan,
                    f"recall@{args.k}": rec, "accuracy": acc, "diff_points": 100 * (acc - exact_acc),
                }
                name = f"{size // 1000}k  {built.name}" + (f"  {built.params}" if built.params else "") + \
                    (f"  {label}" if label else "")
                table[name] = row
                records.append({"size": size, "method": m, "params": built.params, "setting": label, **row})
                log(f"    {label or 'exact'}: recall {rec:.4f}, acc {acc:.4f} ({row['diff_points']:+.2f} pt), "
                    f"search p50 {row['search_p50_ms']:.3f} ms, predict p50 {pred50:.3f} ms")
            del built
    for row in table.values():  # the baseline is measured mid-run: ratios at the end
        row["predict_vs_today"] = row["predict_p50_ms"] / base_predict if base_predict else np.nan
    for r in records:
        r["predict_vs_today"] = r["predict_p50_ms"] / base_predict if base_predict else None
    print(f"\nNearest-neighbour search as the reference set grows: {len(yt)} drawings of held-out writers "
          f"{test_w}, k={args.k}, PCA {args.pca}; one thread per query; builds with {args.build_threads} threads")
    print("index_MB: the serialised index (vectors included); load_s: back from those bytes; predict: features "
          f"+ search + vote of one 28x28 image; predict_vs_today: over the exact pruned search at {args.today:,} "
          "rows\n")
    print(format_metrics_table(table))
    if args.json:
        Path(args.json).write_text(json.dumps(records, indent=2))
    log(f"done in {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
