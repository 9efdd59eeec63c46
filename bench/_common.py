"""What every benchmark needs: the data directories from the environment, and a timestamped log."""

from __future__ import annotations

import os
import sys
import time


def data_dirs() -> tuple[str, str]:
    """(MNIST_DIR, PENDIGITS_DIR); the benchmark stops with status 2 when either is not set."""
    mnist_dir, pen_dir = os.environ.get("MNIST_DIR"), os.environ.get("PENDIGITS_DIR")
    if not mnist_dir or not pen_dir:
        print("Set MNIST_DIR and PENDIGITS_DIR.", file=sys.stderr)
        raise SystemExit(2)
    return mnist_dir, pen_dir


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def throwaway_site(tmp, **env: str) -> None:
    """Point Django at a new site under `tmp` (its own SQLite database and media), with `env` on top of the
    development settings, and migrate it: a benchmark touches nothing else."""
    from pathlib import Path

    tmp = Path(tmp)
    os.environ.update({
        "DJANGO_SETTINGS_MODULE": "digitsite.settings.base",
        "DATABASE_URL": f"sqlite:///{tmp / 'db.sqlite3'}",
        "DJANGO_MEDIA_ROOT": str(tmp / "media"),
        "DJANGO_DEBUG": "false",
        **env,
    })
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def retrain_site(tmp, mnist_limit: int, *, pen_warm_start: bool = True, **env: str) -> None:
    """throwaway_site for a benchmark that trains and retrains itself: MNIST cut to `mnist_limit` digits (0: all),
    no cross-validation, the pen warm start on or off, the pen renderings' cache shared between runs, no
    retrain started by labels, Celery tasks run in this process, and `env` on top."""
    from pathlib import Path

    throwaway_site(tmp, **{
        "RECOGNIZER_TRAIN_LIMIT": str(mnist_limit),
        "RECOGNIZER_RETRAIN_CV": "false",
        "RECOGNIZER_PEN_WARM_START": "true" if pen_warm_start else "false",
        "RECOGNIZER_DATA_DIR": str(Path(".cache/bench").resolve()),  # the pen renderings' cache
        "RECOGNIZER_RETRAIN_AFTER": str(10**9),  # the benchmark starts the retrains itself
        "CELERY_TASK_ALWAYS_EAGER": "true",
        "DJANGO_LOG_LEVEL": "ERROR",
        **env,
    })


def retrain_by_stage():
    """A retrain in this process (`manage.py retrain`'s code): (its run, seconds, {stage: seconds}); a stage
    lasts from when the run first reported it until the next one."""
    from recognizer import retraining

    stages: dict[str, float] = {}  # stage: when it was first reported (s from the start)
    t0 = time.perf_counter()
    run, _created = retraining.retrain_in_foreground(
        echo=lambda stage, _fraction: stages.setdefault(stage, time.perf_counter() - t0))
    seconds = time.perf_counter() - t0
    starts = sorted(stages.items(), key=lambda item: item[1]) + [("end", seconds)]
    return run, seconds, {stage: later - at for (stage, at), (_next, later) in zip(starts, starts[1:])}
