"""Growth benchmark: what a retrain and a prediction cost as users' stored drawings grow.

The site's own code in a temporary directory (its own SQLite database and media): the default model
(MNIST plus the pen-data warm start, cross-validation off as the benchmark's only shortcut), then N
synthetic user drawings (the pen writers' replayed renders, shifted by a pixel or two, with their
strokes, over N/50 accounts, labelled), then:

- the first retrain over them (every drawing new to the model's feature space),
- a second retrain after 1% more drawings (incremental: only those are featurised; but the ranking searches
  every drawing's neighbours again, in the feature space the first retrain fitted),
- a third after 1% more again (incremental, the space kept: what a site pays at every retrain),
- the same last retrain from scratch (RECOGNIZER_RETRAIN_INCREMENTAL off), with --from-scratch,

and for the model serving afterwards: predict p50/p99 (the page's path, one PNG, one thread), the model file
size, the memory of a process that loads it, and accuracy on writers in no training set (image + strokes),
as served (through the neighbour graph once the model has ANN_MIN_ROWS rows) and with the exact search.
One table; the first row is the model before any user drawing.

    MNIST_DIR=/work/shared/data/mnist PENDIGITS_DIR=/work/shared/data/pendigits \\
        nice -n 10 .venv/bin/python -m bench.growth [--sizes 10000,100000] [--from-scratch] [--quick]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from bench._common import data_dirs, log, retrain_by_stage, retrain_site

warnings.filterwarnings("ignore", message="No directory at")  # whitenoise: no collectstatic in a benchmark

UNSEEN_WRITERS = 6


def unseen_writers(digits) -> set[int]:
    """The writers left out of the models' pen rows, whose digits the table's accuracy is measured on."""
    writers = sorted({d.writer for d in digits})
    return set(int(w) for w in np.random.default_rng(0).permutation(writers)[:UNSEEN_WRITERS])


def configure(tmp: Path, mnist_limit: int) -> None:
    retrain_site(tmp, mnist_limit, OMP_NUM_THREADS="2")


def synthetic_drawings(pen, n: int, rng) -> tuple[np.ndarray, np.ndarray, list]:
    """n drawings made from the pen renders: each image moved by up to two pixels, its strokes (when it has
    them) drawn again by ``redrawn``."""
    from scipy import ndimage

    picks = rng.integers(0, len(pen.labels), size=n)
    images = np.empty((n, 28, 28), np.float32)
    strokes = []
    for i, j in enumerate(picks):
        dx, dy = rng.integers(-2, 3, size=2)
        images[i] = ndimage.shift(pen.images[j], (dy, dx), order=0, mode="constant")
        strokes.append(redrawn(pen.strokes[j], rng) if pen.strokes[j] else pen.strokes[j])
    return images, pen.labels[picks].astype(np.int64), strokes


def redrawn(strokes: list, rng) -> list:
    """A trajectory drawn again: turned by a few degrees (sd 3), each point moved by about 1% of its size.

    Not the same points again: at 1M drawings each of the 7,000 pen trajectories would recur ~140 times, and
    exact duplicates crowd an HNSW graph's links (bench/README.md), as no user's strokes would."""
    xy = np.concatenate([np.asarray(s, np.float64)[:, :2] for s in strokes])
    centre, size = xy.mean(axis=0), max(float(np.ptp(xy, axis=0).max()), 1.0)
    a = rng.normal(0.0, np.radians(3.0))
    turn = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    out = []
    for s in strokes:
        s = np.array(s, np.float64)
        s[:, :2] = (s[:, :2] - centre) @ turn.T + centre + rng.normal(0.0, 0.01 * size, (len(s), 2))
        out.append(s)
    return out


def store(images, labels, strokes, first_user: int, users: int) -> None:
    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from recognizer.ml import preprocess as ml_preprocess
    from recognizer.ml import strokes as ml_strokes
    from recognizer.models import Drawing

    User = get_user_model()
    User.objects.bulk_create([User(username=f"user{first_user + u}") for u in range(users)], ignore_conflicts=True)
    ids = dict(User.objects.filter(username__startswith="user").values_list("username", "id"))
    owner = [ids[f"user{first_user + i % users}"] for i in range(len(labels))]
    now = timezone.now()
    batch = 2000
    for s in range(0, len(labels), batch):
        Drawing.objects.bulk_create([
            Drawing(user_id=owner[i], image="drawings/synthetic.png", preprocessed=ml_preprocess.to_uint8(images[i]),
                    predicted_digit=int(labels[i]), confidence=0.9, probabilities=[0.0] * 10, label=int(labels[i]),
                    labelled_at=now, strokes=ml_strokes.strokes_to_json(strokes[i]) if strokes[i] else None)
            for i in range(s, min(s + batch, len(labels)))])


def worker_memory_mb(version) -> float:
    """Peak RSS of a fresh process that loads the version the way a web worker does (MB).

    VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss across fork and exec, so a child reports
    this benchmark's own peak (gigabytes once it holds 100k drawings) instead of its own."""
    code = ("import django; django.setup(); from recognizer import serving; serving.model_cache.get(); "
            "print(int(open('/proc/self/status').read().split('VmHWM:')[1].split()[0]) / 1024)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def serving_row(name: str, pngs: list[bytes], unseen, retrain_s: str, extra: dict) -> dict:
    from threadpoolctl import threadpool_limits

    from recognizer import serving
    from recognizer.models import ModelVersion

    serving.model_cache.clear()
    loaded = serving.model_cache.get()
    version = ModelVersion.objects.get(pk=loaded.version_id)
    X, y, S = unseen
    with threadpool_limits(limits=1):
        for png in pngs[:5]:
            serving.predict_image(png, store=False)  # warm
        times = []
        for png in pngs:
            t0 = time.perf_counter()
            serving.predict_image(png, store=False)
            times.append((time.perf_counter() - t0) * 1000)
    est = loaded.estimator
    kw = {"strokes": S} if getattr(est, "reads_strokes", False) else {}
    accuracy = float((est.predict(X, **kw) == y).mean())
    # the same model searching exactly: its neighbour graph set aside (none below ANN_MIN_ROWS rows)
    exact = copy.copy(est)
    exact.__dict__.update(neighbour_index_=None)
    exact.__dict__.pop("_prune_index", None)
    strokes_graph = False
    if est.reads_strokes:  # its stroke k-NN's graph too; and the stroke k-NN alone, through its graph and exactly
        exact.stroke_model_ = copy.copy(est.stroke_model_)
        exact.stroke_model_.__dict__.update(neighbour_index_=None)
        strokes_graph = getattr(est.stroke_model_, "neighbour_index_", None) is not None
        extra = {**extra, "strokes": float((est.stroke_model_.predict(S) == y).mean()),
                 "strokes_exact": float((exact.stroke_model_.predict(S) == y).mean())}
    exact_accuracy = float((exact.predict(X, **kw) == y).mean())
    from django.conf import settings

    size_mb = (Path(settings.RECOGNIZER_MODEL_DIR) / version.file).stat().st_size / 1e6
    return {"name": name, "rows": len(est.train_labels_), "retrain": retrain_s,
            "p50": statistics.median(times), "p99": float(np.percentile(times, 99)), "size": size_mb,
            "rss": worker_memory_mb(version), "accuracy": accuracy, "exact": exact_accuracy,
            "graph": getattr(est, "neighbour_index_", None) is not None, "strokes_graph": strokes_graph, **extra}


def refitted_without_retrain(pen, users: int, rng, chunk: int = 50_000):
    """Activate the active model refitted (recognizer.ml.model.refit_knn, as a retrain in a kept space does)
    with synthetic drawings appended up to ``users`` user rows: their features computed here, in chunks,
    instead of storing, ranking and gating them, so serving at a size the benchmark cannot retrain to is
    measured on the model a retrain would serve. Returns (seconds to featurise, seconds to refit and save)."""
    from recognizer import feedback, modelfiles, serving, versions
    from recognizer.ml import model as ml_model
    from recognizer.ml import store as ml_store

    serving.model_cache.clear()
    active = serving.model_cache.get().estimator
    have = int((active.train_ids_ >= 0).sum())
    n = users - have
    t0 = time.perf_counter()
    F, S, y, with_strokes = [], [], [], []
    for start in range(0, n, chunk):
        images, labels, strokes = synthetic_drawings(pen, min(chunk, n - start), rng)
        F.append(active.transform(images))
        has = feedback.has_strokes(strokes)
        S.append(active.stroke_model_.features([s for s, h in zip(strokes, has) if h]))
        y.append(labels)
        with_strokes.append(has)
        log(f"  {start + len(labels)} of {n} synthetic rows featurised")
    featurised = time.perf_counter() - t0
    F, S, y, has = np.concatenate(F), np.concatenate(S), np.concatenate(y), np.concatenate(with_strokes)
    ids = np.arange(10**9, 10**9 + n, dtype=np.int64)  # ids no stored drawing has
    groups = 10**8 + np.arange(n, dtype=np.int64) // 50  # 50 drawings an account, as stored ones
    ones = np.ones(n, np.float32)
    t0 = time.perf_counter()
    est = ml_model.refit_knn(
        active, ml_model.knn_rows(active) + ml_model.KnnRows(F, y, ones, groups, ids),
        ml_model.knn_rows(active.stroke_model_) + ml_model.KnnRows(S, y[has], ones[has], groups[has], ids[has]))
    log(f"  refitted: image graph {est.neighbour_index_origin_}, stroke graph "
        f"{est.stroke_model_.neighbour_index_origin_} ({time.perf_counter() - t0:.0f} s)")
    saved = ml_store.save_model(est, {"hyperparameters": {"refit": {"benchmark": "refitted without a retrain"}}},
                                modelfiles.staging_dir())
    versions.activate(versions.register_model(saved, kind="knn", data_source="growth benchmark", metrics={}))
    return featurised, time.perf_counter() - t0


def timed_retrain(label: str) -> tuple[float, dict]:
    from recognizer.models import ModelVersion

    run, seconds, durations = retrain_by_stage()
    if run.status == "failed":
        raise RuntimeError(f"{label}: the retrain failed: {run.error[:2000]}")
    version = ModelVersion.objects.get(pk=run.model_version_id)
    if not version.is_active:  # the table is about cost: serve what was trained even if the gate said no
        from recognizer import versions

        versions.activate(version)
    refit = (version.metadata.get("hyperparameters") or {}).get("refit") or {}
    if run.status != "promoted":
        log(f"{label}: the gate said {'; '.join((run.decision or {}).get('reasons', []))[:600]}")
    peak_mb = int(Path("/proc/self/status").read_text().split("VmHWM:")[1].split()[0]) / 1024
    log(f"{label}: {run.status} in {seconds:.0f} s (this process's peak memory so far {peak_mb:.0f} MB); "
        f"refit {json.dumps(refit)[:200]}; ranking {json.dumps(run.data_counts.get('ranking', {}))[:500]}")
    return seconds, {**refit, "stages": durations}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000", help="stored user drawings, cumulative")
    parser.add_argument("--mnist-limit", type=int, default=0, help="MNIST training digits (0 = all 60,000)")
    parser.add_argument("--predictions", type=int, default=200, help="timed predictions per row")
    parser.add_argument("--from-scratch", action="store_true", help="also time the last retrain from scratch")
    parser.add_argument("--serving-sizes", default="",
                        help="user rows to serve after the retrains, reached by refitting the active model with "
                             "synthetic rows (no retrain timed), e.g. 1000000")
    parser.add_argument("--quick", action="store_true", help="--sizes 2000 --mnist-limit 10000 --predictions 50")
    parser.add_argument("--resume", metavar="DIR",
                        help="go on with the site an earlier run left in DIR: its base model (the baseline row), "
                             "stored drawings and active model are kept, and its first retrain reuses what the "
                             "earlier run stored (its timing is not a first retrain's)")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.mnist_limit, args.predictions = "2000", 10000, 50
    _mnist_dir, pen_dir = data_dirs()
    tmp = Path(args.resume) if args.resume else Path(tempfile.mkdtemp(prefix="digitsite-growth-bench-"))
    configure(tmp, args.mnist_limit)

    from django.conf import settings

    from recognizer import training
    from recognizer.ml import load_pendigits, render_png
    from recognizer.ml import warmstart as ml_warmstart
    from recognizer.ml.evaluate import render_canvas_images

    digits = load_pendigits(pen_dir)
    unseen_w = unseen_writers(digits)
    original = ml_warmstart.pen_training_set
    ml_warmstart.pen_training_set = lambda path, **kw: original(path, exclude_writers=sorted(unseen_w), **kw)
    settings.PENDIGITS_DIR = str(pen_dir)
    unseen = [d for d in digits if d.writer in unseen_w]
    X_unseen, y_unseen, _ = render_canvas_images(unseen, seed=1)
    unseen_set = (X_unseen, y_unseen, [d.strokes for d in unseen])
    rng = np.random.default_rng(0)
    pngs = [render_png(unseen[i], np.random.default_rng(i)) for i in rng.choice(len(unseen), args.predictions)]
    pen, _why = training.pen_warm_start()

    stored = 0
    if args.resume:  # the stopped retrain's run is reaped (its process is gone) by the next retrain
        from recognizer.models import Drawing

        stored = Drawing.objects.count()
        log(f"resumed {tmp}: {stored} drawings stored")
    else:
        t0 = time.perf_counter()
        training.train_new_model(limit=args.mnist_limit, activate=True, cv=False)
        log(f"base model in {time.perf_counter() - t0:.0f} s")
    from recognizer import versions
    from recognizer.models import ModelVersion

    # the baseline serves the base model, whatever a resumed run's earlier run left active; then back to that
    left_active, base = ModelVersion.objects.get(is_active=True), ModelVersion.objects.order_by("id").first()
    if base != left_active:
        versions.activate(base)
    rows = [serving_row("no user drawings", pngs, unseen_set, "-", {"drawings": 0})]
    if base != left_active:
        versions.activate(left_active)
    for size in [int(s) for s in args.sizes.split(",")]:
        if size > stored:
            images, labels, strokes = synthetic_drawings(pen, size - stored, rng)
            t0 = time.perf_counter()
            store(images, labels, strokes, first_user=stored // 50, users=max(1, (size - stored) // 50))
            stored = size
            log(f"{size} drawings stored ({time.perf_counter() - t0:.0f} s)")
        first, _ = timed_retrain(f"{size}: first retrain")
        new = max(1, size // 100)
        images, labels, strokes = synthetic_drawings(pen, new, rng)
        store(images, labels, strokes, first_user=10**6 + stored // 50, users=max(1, new // 50))
        stored += new
        second, refit = timed_retrain(f"{size}: +1% incremental retrain")
        # once more: the first retrain fitted a new feature space, so the second searched every drawing's
        # neighbours again; from here on a retrain keeps them (what a site pays at every retrain)
        images, labels, strokes = synthetic_drawings(pen, new, rng)
        store(images, labels, strokes, first_user=2 * 10**6 + stored // 50, users=max(1, new // 50))
        stored += new
        third, refit = timed_retrain(f"{size}: +1% more, incremental again")
        extra = {"drawings": stored, "refit": refit}
        retrain_s = f"{first:.0f} / {second:.0f} / {third:.0f}"
        if args.from_scratch:
            settings.RECOGNIZER_RETRAIN_INCREMENTAL = False
            scratch, _ = timed_retrain(f"{size}: the same retrain from scratch")
            settings.RECOGNIZER_RETRAIN_INCREMENTAL = True
            retrain_s += f" / {scratch:.0f}"
        rows.append(serving_row(f"{stored} user drawings", pngs, unseen_set, retrain_s, extra))
    for size in [int(s) for s in args.serving_sizes.split(",") if s]:
        featurise_s, refit_s = refitted_without_retrain(pen, size, rng)
        rows.append(serving_row(f"{size} user rows*", pngs, unseen_set, "-",
                                {"drawings": size, "refit": {"featurise": featurise_s, "refit_and_save": refit_s}}))

    print(f"\nSetup: MNIST {args.mnist_limit or 60000} + the pen warm start ({len(pen.labels) if pen else 0} renders, "
          f"{len({d.writer for d in digits}) - UNSEEN_WRITERS} writers), cross-validation off; {UNSEEN_WRITERS} "
          f"writers in no training "
          f"set; predictions: {args.predictions} canvas PNGs of theirs, one BLAS thread. Retrain: first over all the "
          f"drawings / after 1% more (incremental, in the space the first fitted) / after 1% more again"
          + (" / the same from scratch" if args.from_scratch else "") + "."
          + (f" Resumed from {args.resume}: the first retrain reused what the earlier run had stored (after a "
               f"promotion there, it is a retrain after a promotion)." if args.resume
             else ""))
    print(f"{'':<24}{'rows':>9}{'search':>13}{'retrain s':>20}{'p50 ms':>8}{'p99 ms':>8}{'file MB':>9}"
          f"{'worker MB':>10}{'unseen':>8}{'exact':>8}{'strokes':>9}{'exact':>8}")
    for r in rows:
        search = f"{'graph' if r['graph'] else 'exact'}/{'graph' if r['strokes_graph'] else 'exact'}"
        print(f"{r['name']:<24}{r['rows']:>9}{search:>13}{r['retrain']:>20}{r['p50']:>8.2f}"
              f"{r['p99']:>8.2f}{r['size']:>9.1f}{r['rss']:>10.0f}{r['accuracy'] * 100:>7.2f}%{r['exact'] * 100:>7.2f}%"
              f"{r.get('strokes', float('nan')) * 100:>8.2f}%{r.get('strokes_exact', float('nan')) * 100:>7.2f}%")
    print("(search: image k-NN / stroke k-NN; unseen: what the served model reads on the unseen writers, image and "
          "strokes fused; exact: the same model searching exactly; strokes: the stroke k-NN alone, as served and "
          "exactly)")
    if args.serving_sizes:
        print("*: the active model refitted with synthetic rows up to that many user rows, no retrain (featurised, "
              "refitted and saved by the benchmark: the model a retrain in the kept space would serve)")
    base = rows[0]["p50"]
    for r in rows[1:]:
        refit = r["refit"]
        if "featurise" in refit:
            print(f"{r['name']}: p50 {r['p50'] / base:.2f}x the p50 with no user drawings; rows featurised in "
                  f"{refit['featurise']:.0f} s, refitted (graphs) and saved in {refit['refit_and_save']:.0f} s")
            continue
        print(f"{r['name']}: p50 {r['p50'] / base:.2f}x the p50 with no user drawings; second retrain featurised "
              f"{refit.get('computed', '-')} drawings, took {refit.get('rows', '-')} from the active model "
              f"and {refit.get('label_evidence', '-')} from the ranking's store; neighbour graphs (image, strokes) "
              f"{refit.get('neighbour_index') or 'none'}, {refit.get('stroke_neighbour_index') or 'none'}")
        stages = refit.get("stages") or {}
        print("  its last retrain, stage by stage (s; a stage lasts until the next is reported): "
              + ", ".join(f"{stage} {t:.1f}" for stage, t in stages.items() if t >= 0.05))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
