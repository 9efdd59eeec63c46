"""The retrain lock: one live run at a time (the run row that holds_lock), taken by queueing a run, freed when
it ends, and reaped when its worker dies; a run the broker could not take is sent again once it is back."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from recognizer import dispatch
from recognizer.models import TrainingRun

logger = logging.getLogger(__name__)


def this_worker() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _worker_is_dead(worker: str) -> bool:
    """True only when we can tell: the run's process was on this host and no longer exists."""
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def reap_stale_runs() -> list[int]:
    """Mark failed the queued/running runs whose worker died: stale heartbeat, or a dead local PID."""
    limit = timezone.now() - timedelta(seconds=settings.RECOGNIZER_RETRAIN_LOCK_TIMEOUT)
    reaped = []
    for run in TrainingRun.objects.filter(holds_lock=True):
        beat = run.heartbeat_at or run.created_at
        if beat < limit:
            reason = (f"No heartbeat for more than {settings.RECOGNIZER_RETRAIN_LOCK_TIMEOUT} s: "
                      + ("the worker running it stopped." if run.status == TrainingRun.Status.RUNNING
                         else "no worker picked it up."))
        elif run.worker and _worker_is_dead(run.worker):
            reason = f"The worker process running it ({run.worker}) died."
        else:
            continue
        updated = TrainingRun.objects.filter(pk=run.pk, holds_lock=True, heartbeat_at=run.heartbeat_at).update(
            status=TrainingRun.Status.FAILED, holds_lock=False, finished_at=timezone.now(), error=reason)
        if updated:
            logger.warning("Training run %s marked failed: %s", run.pk, reason)
            reaped.append(run.pk)
    return reaped


def live_run() -> TrainingRun | None:
    return TrainingRun.objects.filter(holds_lock=True).first()


def start_retrain(trigger: str, user=None, *, enqueue: bool = True, task_id: str = "") -> tuple[TrainingRun, bool]:
    """Take the retrain lock by creating a queued run; (the live run, False) when one already holds it.

    With `enqueue` the Celery task is sent after the transaction commits, under the run's task id,
    so the caller can answer with that id at once.
    """
    reap_stale_runs()
    now = timezone.now()
    try:
        with transaction.atomic():
            run = TrainingRun.objects.create(
                trigger=trigger, started_by=user if user is not None and user.is_authenticated else None,
                status=TrainingRun.Status.QUEUED, holds_lock=True, task_id=task_id or str(uuid.uuid4()),
                heartbeat_at=now, stage="queued",
            )
    except IntegrityError:
        existing = live_run()
        if existing is None:  # it finished in between: try once more
            return start_retrain(trigger, user, enqueue=enqueue, task_id=task_id)
        return existing, False
    if enqueue:
        transaction.on_commit(lambda: _send(run))
    return run, True


class TrainingUnavailable(Exception):
    """The retrain could not be queued (the broker is down); nothing holds the lock."""


def _send(run: TrainingRun) -> None:
    try:
        dispatch.send_retrain(run.pk, run.task_id)
    except Exception as exc:
        # Release the lock at once: a run no worker will ever receive must not block the next request.
        TrainingRun.objects.filter(pk=run.pk, holds_lock=True).update(
            status=TrainingRun.Status.FAILED, holds_lock=False, finished_at=timezone.now(),
            error=f"{UNQUEUED}: {exc}")
        raise TrainingUnavailable(
            "Training is unavailable right now: the task queue cannot be reached. Predictions and labels "
            "keep working, and the retrain is sent again by itself once the queue is back."
        ) from exc


UNQUEUED = "The retrain could not be queued"


def retry_unqueued_retrain(max_age: timedelta = timedelta(days=1)) -> TrainingRun | None:
    """Send again the latest retrain that failed only because the broker was down.

    Beat runs this every minute; its messages reach a worker only once the broker is back, which is
    exactly when the retrain can be sent. A later run of any kind supersedes the failed one.
    """
    latest = TrainingRun.objects.order_by("-id").first()
    if (latest is None or latest.status != TrainingRun.Status.FAILED or not latest.error.startswith(UNQUEUED)
            or latest.created_at < timezone.now() - max_age):
        return None
    try:
        run, created = start_retrain(latest.trigger, latest.started_by)
    except TrainingUnavailable:
        return None
    return run if created else None
