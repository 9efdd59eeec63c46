"""Celery tasks: thin wrappers around recognizer.training."""

from __future__ import annotations

from celery import shared_task

from recognizer import training
from recognizer.models import TrainingRun


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
    run = training.maybe_retrain_after_new_labels()
    return run.pk if run else None


@shared_task(name="recognizer.tasks.retry_unqueued_retrain")
def retry_unqueued_retrain() -> int | None:
    """Periodic: a retrain asked for while the broker was down is sent once it is back."""
    run = training.retry_unqueued_retrain()
    return run.pk if run else None
