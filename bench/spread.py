"""Spread benchmark: a retrain's ranking work on one process, one Celery worker and two.

When the ranking's kept evidence is of no use for the active model (evidence from another model whose rows
are not recorded: a retrain from scratch, or the kept lists lost), the next retrain decodes, featurises and
searches every drawing again before it ranks: the part of a retrain that grows with the drawings users ever
made. (After a promotion in the same feature space it only extends each drawing's kept training lists with
the model's new rows: bench/growth.py.) A retrain run by a worker sends that work to every worker as a chord
of parts (recognizer.retraining); `manage.py retrain` does it in its own process.

The site's own code in a temporary directory (SQLite, real redis-server on loopback, real `celery worker`
processes with the solo pool): the default model (MNIST --mnist-limit plus the pen warm start), N synthetic
user drawings (bench/growth.py's), one retrain in the foreground to rank them and promote a model in the
same feature space. Then the same retrain, from the same state each time (that model active, its evidence
stale), three ways: in the foreground; through Celery with one worker; with two. Per way, --rounds times,
medians: the run, the ranking work (the parts, or the foreground's ranking stage), the rest.

    MNIST_DIR=/work/shared/data/mnist PENDIGITS_DIR=/work/shared/data/pendigits \\
        nice -n 10 .venv/bin/python -m bench.spread [--drawings 20000] [--rounds 3] [--part-size 2000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench._common import data_dirs, log, retrain_by_stage
from bench._server import ROOT, free_port
from bench.growth import configure, store, synthetic_drawings


def start_redis(tmp: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen([shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind",
                                "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(tmp)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return process, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("redis-server did not start")


def start_workers(n: int, tmp: Path, broker: str) -> list[subprocess.Popen]:
    env = {**os.environ, "CELERY_BROKER_URL": broker, "CELERY_RESULT_BACKEND": broker,
           "CELERY_TASK_ALWAYS_EAGER": "false", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT)}
    workers = []
    for i in range(n):
        log_path = tmp / f"worker-{len(list(tmp.glob('worker-*.log')))}.log"
        workers.append(subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "digitsite", "worker", "--pool=solo", "--concurrency=1",
             "--loglevel=INFO", "--without-mingle", "--without-gossip", "-n", f"bench{i}@%h"],
            cwd=ROOT, env=env, stdout=open(log_path, "w"), stderr=subprocess.STDOUT))
        deadline = time.monotonic() + 60
        while "ready." not in log_path.read_text():
            if workers[-1].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"a worker did not start: {log_path.read_text()[-2000:]}")
            time.sleep(0.2)
    return workers


def stop(processes) -> None:
    for p in processes:
        p.terminate()
    for p in processes:
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()


def reset(version) -> None:
    """The state every measured retrain starts from: `version` active, the ranking's evidence stale."""
    from recognizer import serving, versions
    from recognizer.models import LabelEvidence

    versions.activate(version)
    # the peer lists and features stay (the same space); the training lists name a model whose rows are not
    # recorded: every drawing's out-of-sample probabilities are searched in full
    LabelEvidence.objects.update(model="stale")
    serving.model_cache.clear()


def foreground() -> dict:
    run, total, durations = retrain_by_stage()
    if run.status == "failed":
        raise RuntimeError(run.error[:2000])
    ranking = durations.get("ranking labels and accounts", 0.0)
    return {"total": total, "ranking": ranking, "rest": total - ranking, "run": run, "stages": durations}


def through_celery(timeout: float) -> dict:
    from recognizer import retraining
    from recognizer.models import TrainingRun

    t0 = time.perf_counter()
    run, _ = retraining.start_retrain("staff")  # sent to the broker at once (autocommit)
    parts_done = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = TrainingRun.objects.get(pk=run.pk)
        if parts_done is None and run.status == "running" and run.stage and not run.stage.startswith(
                (retraining.SPREAD_STAGE, "starting", "finding", "queued")):
            parts_done = time.perf_counter() - t0
        if not run.holds_lock:
            break
        time.sleep(0.1)
    else:
        raise RuntimeError(f"the retrain did not finish in {timeout:.0f} s")
    total = time.perf_counter() - t0
    if run.status == "failed":
        raise RuntimeError(run.error[:2000])
    spread = (run.data_counts.get("ranking") or {}).get("spread")
    if not spread or spread["computed"] != spread["drawings"]:
        raise RuntimeError(f"the run did not spread its work as expected: {spread}")
    parts_done = total if parts_done is None else parts_done
    return {"total": total, "ranking": parts_done, "rest": total - parts_done, "run": run}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drawings", type=int, default=20000)
    parser.add_argument("--mnist-limit", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--part-size", type=int, default=2000)
    parser.add_argument("--timeout", type=float, default=1800, help="seconds one retrain may take")
    args = parser.parse_args(argv)
    _mnist_dir, pen_dir = data_dirs()
    tmp = Path(tempfile.mkdtemp(prefix="digitsite-spread-bench-"))
    redis, broker = start_redis(tmp)
    os.environ.update({"CELERY_BROKER_URL": broker, "CELERY_RESULT_BACKEND": broker,
                       "RECOGNIZER_RETRAIN_SPREAD_MIN": "1", "RECOGNIZER_RETRAIN_PART_SIZE": str(args.part_size),
                       "RECOGNIZER_RETRAIN_LOCK_TIMEOUT": str(int(args.timeout)), "PENDIGITS_DIR": pen_dir})
    configure(tmp, args.mnist_limit)
    from django.conf import settings

    settings.CELERY_TASK_ALWAYS_EAGER = False
    from celery import current_app

    current_app.conf.task_always_eager = False
    from recognizer import training
    from recognizer.models import ModelVersion

    workers: list = []
    try:
        t0 = time.perf_counter()
        training.train_new_model(limit=args.mnist_limit, activate=True, cv=False)
        pen, _why = training.pen_warm_start()
        images, labels, strokes = synthetic_drawings(pen, args.drawings, np.random.default_rng(0))
        store(images, labels, strokes, first_user=0, users=max(1, args.drawings // 50))
        log(f"base model and {args.drawings} drawings in {time.perf_counter() - t0:.0f} s")
        first = foreground()
        log(f"first retrain (ranks every drawing): {first['run'].status} in {first['total']:.0f} s")
        start = ModelVersion.objects.get(is_active=True)
        results = {}
        for way in ("one process", "1 worker", "2 workers"):
            if way != "one process":
                stop(workers)
                workers = start_workers(int(way[0]), tmp, broker)
            for r in range(args.rounds):
                reset(start)
                got = foreground() if way == "one process" else through_celery(args.timeout)
                results.setdefault(way, []).append(got)
                log(f"{way}, round {r + 1}: {got['total']:.1f} s, ranking work {got['ranking']:.1f} s")
    finally:
        stop(workers)
        stop([redis])

    print(f"\nA retrain with stale evidence, {args.drawings} stored drawings (every one's probabilities computed "
          f"again), MNIST {args.mnist_limit} + pen warm start, parts of {args.part_size}; medians of "
          f"{args.rounds} rounds, 2 shared cores.")
    print(f"{'':<14}{'run s':>8}{'ranking work s':>16}{'rest s':>8}{'ranking speed-up':>18}")
    base = statistics.median(g["ranking"] for g in results["1 worker"])
    for way, got in results.items():
        ranking = statistics.median(g["ranking"] for g in got)
        print(f"{way:<14}{statistics.median(g['total'] for g in got):>8.1f}{ranking:>16.1f}"
              f"{statistics.median(g['rest'] for g in got):>8.1f}{base / ranking:>17.2f}x")
    print("(ranking work: one process, its ranking stage; through Celery, from sending the run until the chord's "
          "body starts; speed-up against one worker)")
    print("\nWhere one process's retrain goes (medians, s; a stage lasts until the next one is reported):")
    for stage in results["one process"][0]["stages"]:
        print(f"  {stage:<40}{statistics.median(g['stages'].get(stage, 0.0) for g in results['one process']):>8.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
