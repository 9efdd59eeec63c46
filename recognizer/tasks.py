"""Celery tasks: thin wrappers around recognizer.retraining and recognizer.idempotency. The layers below
queue them by name through recognizer.dispatch, never by importing this module."""

from __future__ import annotations

import logging

from celery import shared_task

from recognizer import dispatch, idempotency, retraining
from recognizer.models import TrainingRun

logger = logging.getLogger(__name__)


@shared_task(name=dispatch.RETRAIN, bind=True, acks_late=False, ignore_result=False)
def retrain(self, run_id: int | None = None, trigger: str = TrainingRun.Trigger.SCHEDULE) -> dict:
    """Run a queued retrain (from the API or admin), or take the lock and run one (from beat)."""
    if run_id is None:
        run, created = retraining.start_retrain(trigger, enqueue=False, task_id=self.request.id or "")
        if not created:
            return {"run": run.pk, "status": run.status, "skipped": "another retrain is running"}
    else:
        run = TrainingRun.objects.get(pk=run_id)
    run = retraining.execute_run(run, spread=True)
    return {"run": run.pk, "status": run.status, "model_version": run.model_version_id}


@shared_task(name=dispatch.EVIDENCE_PART)
def compute_evidence_part(run_id: int, version_id: int, ids: list[int], share: float = 0.0) -> dict:
    """One part of a spread retrain: the ranking's evidence of some drawings (recognizer.retraining)."""
    return retraining.compute_evidence_part(run_id, version_id, ids, share)


@shared_task(name=dispatch.FINISH_SPREAD_RETRAIN, ignore_result=False)
def finish_spread_retrain(parts: list, run_id: int) -> dict | None:
    """The chord's body: the rest of a spread retrain, once all its parts have ended."""
    run = retraining.finish_spread_run(run_id, parts)
    return None if run is None else {"run": run.pk, "status": run.status, "model_version": run.model_version_id}


@shared_task(name="recognizer.tasks.reap_stale_training_runs")
def reap_stale_training_runs() -> list[int]:
    """Periodic: mark failed the runs whose worker died, which also frees the retrain lock."""
    return retraining.reap_stale_runs()


@shared_task(name=dispatch.CHECK_RETRAIN_THRESHOLD)
def check_retrain_threshold() -> int | None:
    """Count the trusted drawings new since the last retrain, and start one past RECOGNIZER_RETRAIN_AFTER."""
    run = retraining.maybe_retrain_after_new_labels()
    return run.pk if run else None


@shared_task(name="recognizer.tasks.purge_predict_requests")
def purge_predict_requests() -> int:
    """Periodic: forget stored predict answers whose Idempotency-Key window has passed."""
    return idempotency.purge_expired()


@shared_task(name="recognizer.tasks.retry_unqueued_retrain")
def retry_unqueued_retrain() -> int | None:
    """Periodic: a retrain asked for while the broker was down is sent once it is back."""
    run = retraining.retry_unqueued_retrain()
    return run.pk if run else None
