"""Running a retrain under its lock, to its end: rank labels, assemble the data, the attempts (train, gate,
retry without the accounts that drive a refusal), then record the decision and activate the candidate
atomically. The run row records everything, including a failure; a spread run's ranking searches run on the
workers first (recognizer.retraining.spread) and the rest here once they have ended."""

from __future__ import annotations

import logging
import traceback

import numpy as np
from django.conf import settings
from django.db import connection
from django.utils import timezone

from recognizer import feedback, versions
from recognizer.models import Drawing, ModelVersion, TrainingRun
from recognizer.retraining.attempts import Attempts, active_estimator, train_and_gate
from recognizer.retraining.lock import start_retrain, this_worker
from recognizer.retraining.progress import Progress, RunReporter
from recognizer.retraining.spread import SPREAD_SHARE, SPREAD_STAGE, parts_summary, spread_evidence

logger = logging.getLogger(__name__)


def retrain_in_foreground(trigger: str = TrainingRun.Trigger.COMMAND, user=None,
                          echo: Progress | None = None) -> tuple[TrainingRun, bool]:
    """The `retrain` command: the same run, in this process. (live run, False) when one holds the lock."""
    run, created = start_retrain(trigger, user, enqueue=False)
    if not created:
        return run, False
    return execute_run(run, echo), True


def execute_run(run: TrainingRun, echo: Progress | None = None, *, spread: bool = False) -> TrainingRun:
    """Run a queued retrain to its end; the run row records everything, including a failure.

    `spread` (the Celery task): when many drawings need the ranking's per-drawing searches, send them to the
    workers in parts and return; the last part's chord runs the rest (finish_spread_run), still under this
    run's lock."""
    now = timezone.now()
    claimed = TrainingRun.objects.filter(pk=run.pk, status=TrainingRun.Status.QUEUED, holds_lock=True).update(
        status=TrainingRun.Status.RUNNING, started_at=now, heartbeat_at=now, worker=this_worker(), stage="starting")
    run.refresh_from_db()
    if not claimed:  # delivered twice, or reaped before a worker got to it
        logger.warning("Training run %s is %s, not queued: nothing to do", run.pk, run.status)
        return run
    return _run_to_end(run, echo, spread=spread)


def finish_spread_run(run_id: int, parts: list | None = None) -> TrainingRun | None:
    """The chord's body: every part of a spread run has ended (stored its evidence or given up); the rest of
    the retrain runs here, the ranking computing whatever a failed part left."""
    claimed = TrainingRun.objects.filter(pk=run_id, status=TrainingRun.Status.RUNNING, holds_lock=True,
                                         stage__startswith=SPREAD_STAGE).update(
        worker=this_worker(), heartbeat_at=timezone.now(), stage="continuing")
    run = TrainingRun.objects.filter(pk=run_id).first()
    if not claimed:  # reaped meanwhile, or delivered twice
        logger.warning("Training run %s is not waiting for its parts: nothing to do", run_id)
        return run
    return _run_to_end(run, None, parts=parts_summary(parts or []))


def _run_to_end(run: TrainingRun, echo: Progress | None, *, spread: bool = False, parts: dict | None = None
                ) -> TrainingRun:
    try:
        with RunReporter(run, echo, span=(SPREAD_SHARE, 1.0) if parts is not None else (0.0, 1.0)) as report:
            loaded = None
            if spread:
                sent, loaded = spread_evidence(run, report)
                if sent:
                    run.refresh_from_db()
                    return run
            result = _retrain(run, report, parts=parts, loaded=loaded)
        TrainingRun.objects.filter(pk=run.pk).update(**result, holds_lock=False, progress=1.0, stage="done",
                                                     finished_at=timezone.now(), heartbeat_at=timezone.now())
    except BaseException as exc:
        error = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        logger.exception("Training run %s failed", run.pk)
        _reconnect_if_broken()
        TrainingRun.objects.filter(pk=run.pk).update(
            status=TrainingRun.Status.FAILED, holds_lock=False, finished_at=timezone.now(),
            error=f"{error}\n\n{traceback.format_exc()[-4000:]}")
        if not isinstance(exc, Exception):
            raise
    run.refresh_from_db()
    return run


def _reconnect_if_broken() -> None:
    """After a failure the connection may be dead (the database restarted): take a fresh one to record it.
    A working connection is kept: closing it would break a caller's open transaction."""
    if connection.in_atomic_block or connection.connection is None:
        return
    if not connection.is_usable():
        connection.close()


def _retrain(run: TrainingRun, report: RunReporter, parts: dict | None = None,
             loaded: tuple[ModelVersion | None, object | None] | None = None) -> dict:
    """The retrain itself, returning the run row's fields. `loaded`: (the active version, its estimator)
    when the caller has loaded them already."""
    report("ranking labels and accounts", 0.01)
    active, estimator = loaded if loaded is not None else active_estimator()
    ranking = feedback.flag_suspicious_labels(estimator) if estimator is not None else {}
    if parts:
        ranking["spread"] = parts
    report("collecting trusted drawings", 0.04)
    data = feedback.assemble_training_data()
    counts = _data_counts(data, ranking)
    TrainingRun.objects.filter(pk=run.pk).update(data_counts=counts)
    tried = train_and_gate(run, report, data, counts, active, estimator)
    counts.update(_data_counts(tried.data, ranking))
    counts["left_out_accounts"] = [c["user"] for c in tried.left_out]
    decision = _decision_record(tried, active)
    status = _activate_if_promoted(run, report, tried.outcome.version, decision, active)
    return {"status": status, "data_counts": counts, "metrics": tried.metrics, "decision": decision,
            "model_version_id": tried.outcome.version.pk}


def _data_counts(data: feedback.TrainingData, ranking: dict) -> dict:
    train, holdout = data.train, data.holdout
    return {
        "user_train": len(train), "user_train_by_label": train.by_label(),
        "user_train_users": len(np.unique(train.users)),
        "holdout": len(holdout), "holdout_by_label": holdout.by_label(),
        "holdout_users": len(np.unique(holdout.users)),
        "suspicious_unreviewed": Drawing.objects.pending().filter(suspicious=True).count(),
        "user_sample_weight": settings.RECOGNIZER_USER_SAMPLE_WEIGHT, "ranking": ranking,
        **data.report,
    }


def _decision_record(tried: Attempts, active: ModelVersion | None) -> dict:
    """The last gate decision with what it compared, the tolerances, and every attempt and account left out."""
    decision = tried.decision
    decision.update({
        "candidate": {"version": tried.outcome.version.pk, **tried.candidate_figures},
        "active": {"version": active.pk if active else None, **(tried.active_figures or {})},
        "tolerance": {"mnist_test": settings.RECOGNIZER_PROMOTION_TOLERANCE,
                      "holdout": settings.RECOGNIZER_HOLDOUT_TOLERANCE,
                      "mnist_test_digit": settings.RECOGNIZER_DIGIT_TOLERANCE,
                      "holdout_digit": settings.RECOGNIZER_HOLDOUT_DIGIT_TOLERANCE},
        "attempts": tried.attempts, "retries": len(tried.attempts) - 1, "left_out": tried.left_out,
        "culprit_search": tried.culprit_search,
    })
    return decision


def _activate_if_promoted(run: TrainingRun, report: RunReporter, candidate: ModelVersion, decision: dict,
                          active: ModelVersion | None) -> str:
    """The run's status: the candidate activated when the gate promoted it and the active model is still the
    one it was gated against; raises when this run no longer holds the lock."""
    status = TrainingRun.Status.NOT_PROMOTED
    if not TrainingRun.objects.filter(pk=run.pk, holds_lock=True).exists():
        # Reaped as dead meanwhile (e.g. the database was unreachable for the heartbeat): another run may
        # hold the lock now, so this one must not touch the active model.
        raise RuntimeError("This run lost the retrain lock before the gate; the candidate was not activated.")
    if decision["promote"]:
        report("activating", 0.98)
        if versions.activate(candidate, if_active_is=active.pk if active else None):
            status = TrainingRun.Status.PROMOTED
        else:
            decision["promote"] = False
            decision["reasons"].append("another version was activated while this run was training")
    return status
