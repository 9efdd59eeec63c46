"""Handing work to the Celery workers. The service modules below recognizer.tasks look its tasks up by
name in the app's registry (Celery's own convention, like send_task) instead of importing them, so the
imports only go one way; unlike send_task, a task found so still honours CELERY_TASK_ALWAYS_EAGER."""

from __future__ import annotations

import logging

from celery import chord, current_app
from django.conf import settings
from django.core.cache import cache

logger = logging.getLogger(__name__)

RETRAIN = "recognizer.tasks.retrain"
CHECK_RETRAIN_THRESHOLD = "recognizer.tasks.check_retrain_threshold"
EVIDENCE_PART = "recognizer.tasks.compute_evidence_part"
FINISH_SPREAD_RETRAIN = "recognizer.tasks.finish_spread_retrain"
THRESHOLD_CHECK_QUEUED = "recognizer:threshold-check-queued"


def task(name: str):
    return current_app.tasks[name]  # registered by RecognizerConfig.ready, in every process


def send_retrain(run_id: int, task_id: str) -> None:
    """Queue a retrain run under its own task id (raises whatever the broker client raises)."""
    task(RETRAIN).apply_async(kwargs={"run_id": run_id}, task_id=task_id)


def send_evidence_parts(run_id: int, version_id: int, parts: list[list[int]], share: float) -> None:
    """A chord: every part to any worker, then finish_spread_retrain with their results once all have ended."""
    header = [task(EVIDENCE_PART).si(run_id, version_id, ids, share) for ids in parts]
    chord(header)(task(FINISH_SPREAD_RETRAIN).s(run_id=run_id))


def request_threshold_check() -> None:
    """After a label commits: have a worker run check_retrain_threshold RECOGNIZER_RETRAIN_CHECK_DELAY seconds
    later. One task covers every label of its window (it counts them all when it runs), so the labels of a
    busy minute cost one broker call, not one each; a broker that is down costs the label nothing but a log line."""
    delay = settings.RECOGNIZER_RETRAIN_CHECK_DELAY
    if delay and not cache.add(THRESHOLD_CHECK_QUEUED, True, timeout=delay):
        return  # a check already queued runs after this label
    try:
        # One attempt: a broker that is down refuses in milliseconds, where retrying would hold the label.
        task(CHECK_RETRAIN_THRESHOLD).apply_async(countdown=delay or None, retry_policy={"max_retries": 0})
    except Exception:  # noqa: BLE001 - kombu raises several types for an unreachable broker
        cache.delete(THRESHOLD_CHECK_QUEUED)  # the next label tries again
        logger.warning("Could not queue the retrain threshold check (is the broker down?)", exc_info=True)
