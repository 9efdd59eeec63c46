"""Celery tasks: thin wrappers around recognizer.training."""

from __future__ import annotations

import logging

from celery import shared_task
from django.conf import settings
from django.core.cache import cache

from recognizer import idempotency, training
from recognizer.models import TrainingRun

logger = logging.getLogger(__name__)


@shared_task(name="recognizer.tasks.retrain", bind=True, acks_late=False, ignore_result=False)
def retrain(self, run_id: int | None = None, trigger: str = TrainingRun.Trigger.SCHEDULE) -> dict:
    """Run a queued retrain (from the API or admin), or take the lock and run one (from beat)."""
    if run_id is None:
        run, created = training.start_retrain(trigger, enqueue=False, task_id=self.request.id or "")
        if not created:
            return {"run": run.pk, "status": run.status, "skipped": "another retrain is running"}
    else:
        run = TrainingRun.objects.get(pk=run_id)
    run = training.execute_run(run)
    return {"run": run.pk, "status": run.status, "model_version": run.model_version_id}


@shared_task(name="recognizer.tasks.reap_stale_training_runs")
def reap_stale_training_runs() -> list[int]:
    """Periodic: mark failed the runs whose worker died, which also frees the retrain lock."""
    return training.reap_stale_runs()


@shared_task(name="recognizer.tasks.check_retrain_threshold")
def check_retrain_threshold() -> int | None:
    """Count the trusted drawings new since the last retrain, and start one past RECOGNIZER_RETRAIN_AFTER."""
    run = training.maybe_retrain_after_new_labels()
    return run.pk if run else None


THRESHOLD_CHECK_QUEUED = "recognizer:threshold-check-queued"


def request_threshold_check() -> None:
    """After a label commits: have a worker run check_retrain_threshold RECOGNIZER_RETRAIN_CHECK_DELAY seconds
    later. One task covers every label of its window (it counts them all when it runs), so the labels of a
    busy minute cost one broker call, not one each; a broker that is down costs the label nothing but a log line."""
    delay = settings.RECOGNIZER_RETRAIN_CHECK_DELAY
    if delay and not cache.add(THRESHOLD_CHECK_QUEUED, True, timeout=delay):
        return  # a check already queued runs after this label
    try:
        # One attempt: a broker that is down refuses in milliseconds, where retrying would hold the label.
        check_retrain_threshold.apply_async(countdown=delay or None, retry_policy={"max_retries": 0})
    except Exception:  # noqa: BLE001 - kombu raises several types for an unreachable broker
        cache.delete(THRESHOLD_CHECK_QUEUED)  # the next label tries again
        logger.warning("Could not queue the retrain threshold check (is the broker down?)", exc_info=True)


@shared_task(name="recognizer.tasks.purge_predict_requests")
def purge_predict_requests() -> int:
    """Periodic: forget stored predict answers whose Idempotency-Key window has passed."""
    return idempotency.purge_expired()


@shared_task(name="recognizer.tasks.retry_unqueued_retrain")
def retry_unqueued_retrain() -> int | None:
    """Periodic: a retrain asked for while the broker was down is sent once it is back."""
    run = training.retry_unqueued_retrain()
    return run.pk if run else None
