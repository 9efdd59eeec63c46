"""Retraining runs: the retrain lock (one live run, reaped when its worker dies), queueing a run, the
threshold that starts one early, and running one: rank labels, assemble the data, train a candidate,
gate it against the active model (recognizer.promotion), retry without the accounts that drive a
refusal, and activate it atomically.

The Celery tasks (recognizer.tasks), the `retrain` command, the admin and the API call these."""

from __future__ import annotations

import functools
import logging
import os
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Self

import numpy as np
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Q
from django.db.models.functions import Least
from django.utils import timezone

from recognizer import dispatch, feedback, promotion, training, trust, versions
from recognizer.ml import store as ml_store
from recognizer.models import Drawing, ModelVersion, TrainingRun

logger = logging.getLogger(__name__)

Progress = Callable[[str, float], None]


# --- The retrain lock ------------------------------------------------------------------------------


def _this_worker() -> str:
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


def new_trusted_since_last_run() -> int:
    last = (TrainingRun.objects.filter(status__in=[TrainingRun.Status.PROMOTED, TrainingRun.Status.NOT_PROMOTED])
            .order_by("-started_at").values_list("started_at", flat=True).first())
    qs = Drawing.objects.trusted()
    if last is not None:
        qs = qs.filter(Q(labelled_at__gt=last) | Q(reviewed_at__gt=last))
    return qs.count()


def maybe_retrain_after_new_labels() -> TrainingRun | None:
    """Start a retrain early once RECOGNIZER_RETRAIN_AFTER new trusted drawings have arrived."""
    if live_run() is not None or new_trusted_since_last_run() < settings.RECOGNIZER_RETRAIN_AFTER:
        return None
    run, created = start_retrain(TrainingRun.Trigger.THRESHOLD)
    return run if created else None


# --- Running a retrain -------------------------------------------------------------------------------


class _RunReporter:
    """progress(stage, fraction) that writes to the run row (throttled) and keeps its heartbeat alive."""

    def __init__(self, run: TrainingRun, echo: Progress | None = None, span: tuple[float, float] = (0.0, 1.0)) -> None:
        self.run = run
        self.echo = echo
        self.span = span  # where this process's share of the run lies (after a spread run's parts: the rest)
        self._last_write = 0.0
        self._last_stage = ""
        self._stop = threading.Event()
        interval = max(1.0, settings.RECOGNIZER_RETRAIN_LOCK_TIMEOUT / 4)
        self._thread = threading.Thread(target=self._beat, args=(interval,), daemon=True, name="retrain-heartbeat")

    def _write(self, **fields) -> None:
        TrainingRun.objects.filter(pk=self.run.pk, holds_lock=True).update(heartbeat_at=timezone.now(), **fields)

    def _beat(self, interval: float) -> None:
        # Long steps (feature extraction, evaluation) report no progress; the heartbeat must not stop.
        try:
            while not self._stop.wait(interval):
                try:
                    self._write()
                except Exception:
                    logger.warning("Could not write the retrain heartbeat", exc_info=True)
        finally:
            connection.close()

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()

    def __call__(self, stage: str, fraction: float) -> None:
        fraction = float(max(0.0, min(1.0, fraction)))
        fraction = self.span[0] + (self.span[1] - self.span[0]) * fraction
        if self.echo:
            self.echo(stage, fraction)
        now = time.monotonic()
        if now - self._last_write >= 1.0 or fraction >= 1.0 or stage != self._last_stage:
            self._last_write, self._last_stage = now, stage
            self._write(stage=stage[:120], progress=fraction)

    def scaled(self, start: float, end: float) -> Progress:
        return lambda stage, fraction: self(stage, start + (end - start) * fraction)


def _active_estimator() -> tuple[ModelVersion | None, object | None]:
    active = ModelVersion.objects.filter(is_active=True).first()
    if active is None:
        return None, None
    try:
        return active, versions.load_estimator(active.file, active.sha256)
    except (ml_store.CorruptModelError, OSError) as exc:
        logger.error("The active model v%s cannot be loaded for comparison: %s", active.pk, exc)
        return active, None


def _reconnect_if_broken() -> None:
    """After a failure the connection may be dead (the database restarted): take a fresh one to record it.
    A working connection is kept: closing it would break a caller's open transaction."""
    if connection.in_atomic_block or connection.connection is None:
        return
    if not connection.is_usable():
        connection.close()


def execute_run(run: TrainingRun, echo: Progress | None = None, *, spread: bool = False) -> TrainingRun:
    """Run a queued retrain to its end; the run row records everything, including a failure.

    `spread` (the Celery task): when many drawings need the ranking's per-drawing searches, send them to the
    workers in parts and return; the last part's chord runs the rest (finish_spread_run), still under this
    run's lock."""
    now = timezone.now()
    claimed = TrainingRun.objects.filter(pk=run.pk, status=TrainingRun.Status.QUEUED, holds_lock=True).update(
        status=TrainingRun.Status.RUNNING, started_at=now, heartbeat_at=now, worker=_this_worker(), stage="starting")
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
        worker=_this_worker(), heartbeat_at=timezone.now(), stage="continuing")
    run = TrainingRun.objects.filter(pk=run_id).first()
    if not claimed:  # reaped meanwhile, or delivered twice
        logger.warning("Training run %s is not waiting for its parts: nothing to do", run_id)
        return run
    return _run_to_end(run, None, parts=_parts_summary(parts or []))


def _run_to_end(run: TrainingRun, echo: Progress | None, *, spread: bool = False, parts: dict | None = None
                ) -> TrainingRun:
    try:
        with _RunReporter(run, echo, span=(SPREAD_SHARE, 1.0) if parts is not None else (0.0, 1.0)) as report:
            loaded = None
            if spread:
                sent, loaded = _spread_evidence(run, report)
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


def _train_candidate(run: TrainingRun, data: feedback.TrainingData, defaults: dict | None, progress: Progress,
                     previous: tuple[ModelVersion, object] | None = None):
    """One candidate: MNIST (and the pen data) plus the training drawings, with their vote weights; in the
    active model's feature space when it can be kept (training.refit_in_space)."""
    train, holdout = data.train, data.holdout
    extra = training.ExtraTrainingData(
        images=train.images, labels=train.labels, groups=train.users, weight=data.weights, strokes=train.strokes,
        ids=train.ids,
        metadata={"training_run": run.pk, "user_drawings": {
            "train": len(train), "holdout": len(holdout), "weight": settings.RECOGNIZER_USER_SAMPLE_WEIGHT,
            "left_out_accounts": data.report.get("left_out_accounts", [])}},
    )
    return training.train_new_model(limit=settings.RECOGNIZER_TRAIN_LIMIT, activate=False,
                                    cv=settings.RECOGNIZER_RETRAIN_CV, progress=progress, extra=extra,
                                    defaults=defaults, kind=settings.RECOGNIZER_RETRAIN_KIND, previous=previous)


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


def _retrain(run: TrainingRun, report: _RunReporter, parts: dict | None = None,
             loaded: tuple[ModelVersion | None, object | None] | None = None) -> dict:
    """`loaded`: (the active version, its estimator) when the caller has loaded them already."""
    report("ranking labels and accounts", 0.01)
    active, active_estimator = loaded if loaded is not None else _active_estimator()
    ranking = feedback.flag_suspicious_labels(active_estimator) if active_estimator is not None else {}
    if parts:
        ranking["spread"] = parts
    report("collecting trusted drawings", 0.04)
    data = feedback.assemble_training_data()
    counts = _data_counts(data, ranking)
    TrainingRun.objects.filter(pk=run.pk).update(data_counts=counts)
    defaults = None
    if not settings.RECOGNIZER_RETRAIN_CV and active is not None:
        hp = active.metadata.get("hyperparameters") or {}
        defaults = {k: hp[src] for k, src in (("pca_components", "n_components"), ("k", "n_neighbors"),
                                              ("weights", "weights")) if src in hp}
    retries = settings.RECOGNIZER_GATE_RETRIES
    attempts, left_out, search = [], [], {}
    # The active model's MNIST test figures as measured when it was trained: the same estimator on the same
    # test set (when its data source is this run's) answers the same, so they are not measured again.
    stored = ((active.metrics or {}).get("mnist_test") or {}) if active is not None else {}
    active_cache: dict = {("mnist", active.data_source): stored} if "per_digit" in stored else {}
    for attempt in range(retries + 1):
        span = (0.05, 0.8) if attempt == 0 else (0.8 + 0.12 * (attempt - 1) / retries, 0.8 + 0.12 * attempt / retries)
        outcome = _train_candidate(run, data, defaults, report.scaled(*span),
                                   previous=(active, active_estimator) if active_estimator is not None else None)
        mnist = outcome.extra["data"]
        estimator = outcome.extra["estimator"]
        counts.update(outcome.version.metadata.get("counts", {}))
        report("evaluating the candidate", span[1])
        judged = promotion.judged_holdout(data.holdout, settings.RECOGNIZER_GATE_HOLDOUT_MAX)
        candidate_figures = promotion.gate_figures(estimator, mnist, judged, mnist_metrics=outcome.metrics["mnist_test"],
                                     data_source=outcome.version.data_source)
        report("evaluating the active model", span[1])
        if active_estimator is not None:
            active_figures = promotion.gate_figures(active_estimator, mnist, judged, data_source=active.data_source,
                                      cache=active_cache)
        else:  # none, or its file cannot be loaded: only what it was trained on can be compared
            active_figures = None if active is None else {"data_source": active.data_source}
        decision = promotion.gate(candidate_figures, active_figures)
        attempts.append({"candidate": outcome.version.pk, "promote": decision["promote"],
                         "reasons": decision["reasons"], "left_out": [c["user"] for c in left_out],
                         "user_train": len(data.train), "holdout": len(data.holdout), "holdout_judged": len(judged)})
        metrics = {**outcome.metrics, "holdout": candidate_figures["holdout"]}
        ModelVersion.objects.filter(pk=outcome.version.pk).update(
            metrics=metrics, metadata={**outcome.version.metadata, "gate": decision})
        if decision["promote"] or attempt == retries or active_figures is None:
            break
        report("measuring which accounts drive the failure", span[1])
        culprits, search = promotion.find_culprits(estimator, mnist, judged, candidate_figures, active_figures,
                                         data.trust, data.train.users)
        if not culprits:
            decision["reasons"].append("leaving accounts out does not fix this: not retried")
            break
        names = dict(get_user_model().objects.filter(pk__in=[c["user"] for c in culprits])
                     .values_list("pk", "username"))
        for c in culprits:
            c["username"] = names.get(c["user"], "")
            c["attempt"] = attempt + 1
        left_out += culprits
        data = data.without([c["user"] for c in left_out])
        logger.warning("Run %s: candidate v%s refused (%s); training again without accounts %s", run.pk,
                       outcome.version.pk, "; ".join(decision["reasons"]), [c["user"] for c in culprits])
    counts.update(_data_counts(data, ranking))
    counts["left_out_accounts"] = [c["user"] for c in left_out]
    decision.update({
        "candidate": {"version": outcome.version.pk, **candidate_figures},
        "active": {"version": active.pk if active else None, **(active_figures or {})},
        "tolerance": {"mnist_test": settings.RECOGNIZER_PROMOTION_TOLERANCE,
                      "holdout": settings.RECOGNIZER_HOLDOUT_TOLERANCE,
                      "mnist_test_digit": settings.RECOGNIZER_DIGIT_TOLERANCE,
                      "holdout_digit": settings.RECOGNIZER_HOLDOUT_DIGIT_TOLERANCE},
        "attempts": attempts, "retries": len(attempts) - 1, "left_out": left_out, "culprit_search": search,
    })
    status = TrainingRun.Status.NOT_PROMOTED
    if not TrainingRun.objects.filter(pk=run.pk, holds_lock=True).exists():
        # Reaped as dead meanwhile (e.g. the database was unreachable for the heartbeat): another run may
        # hold the lock now, so this one must not touch the active model.
        raise RuntimeError("This run lost the retrain lock before the gate; the candidate was not activated.")
    if decision["promote"]:
        report("activating", 0.98)
        if versions.activate(outcome.version, if_active_is=active.pk if active else None):
            status = TrainingRun.Status.PROMOTED
        else:
            decision["promote"] = False
            decision["reasons"].append("another version was activated while this run was training")
    return {"status": status, "data_counts": counts, "metrics": metrics, "decision": decision,
            "model_version_id": outcome.version.pk}


# --- Spreading a retrain's per-drawing work over the workers -----------------------------------------

SPREAD_STAGE = "computing drawing evidence"
SPREAD_SHARE = 0.4  # of a spread run's progress bar: its parts, then the rest


def _spread_evidence(run: TrainingRun, report: _RunReporter
                     ) -> tuple[bool, tuple[ModelVersion | None, object | None] | None]:
    """Send the ranking's per-drawing searches (decoding, features, out-of-sample probabilities) to the
    workers as a chord of parts when at least RECOGNIZER_RETRAIN_SPREAD_MIN drawings need them.
    (sent, the active version and estimator when it loaded them: the run goes on with them when not sent).

    They are most of a retrain's cost after a promotion (every drawing's probabilities change with the
    model) and all of it after the feature space changes; everything else stays in one process."""
    threshold = settings.RECOGNIZER_RETRAIN_SPREAD_MIN
    if not threshold or Drawing.objects.not_rejected().count() < threshold:  # a small site: not even a look
        return False, None
    report("finding the drawings to rank", 0.005)
    active, estimator = loaded = _active_estimator()
    if estimator is None:
        return False, loaded
    todo = feedback.evidence_to_compute(estimator)
    if len(todo) < threshold:
        return False, loaded
    size = settings.RECOGNIZER_RETRAIN_PART_SIZE
    parts = [todo[s: s + size].tolist() for s in range(0, len(todo), size)]
    # No worker id while the parts run: the one that sent them may be recycled meanwhile, and the parts
    # keep the heartbeat alive; a part lost with its worker lets the heartbeat lapse and the reaper frees the lock.
    TrainingRun.objects.filter(pk=run.pk, holds_lock=True).update(
        worker="", stage=f"{SPREAD_STAGE}: {len(todo)} drawings in {len(parts)} parts", progress=0.01,
        heartbeat_at=timezone.now())
    # a broker that is down raises here: the run fails and frees the lock
    dispatch.send_evidence_parts(run.pk, active.pk, parts, SPREAD_SHARE / len(parts))
    return True, loaded


def compute_evidence_part(run_id: int, version_id: int, ids: list[int], share: float = 0.0) -> dict:
    """One part of a spread run: store the ranking's evidence of `ids` under the version the run started
    from, and move the run's progress on by `share`. Never raises: what a part could not do, the ranking
    does itself."""
    if not TrainingRun.objects.filter(pk=run_id, holds_lock=True).exists():
        return {"drawings": len(ids), "skipped": "the run no longer holds the retrain lock"}
    try:
        version = ModelVersion.objects.get(pk=version_id)
        estimator, lists = _part_estimator(version.file, version.sha256)
        counts = feedback.precompute_evidence(estimator, ids, lists)
    except Exception as exc:  # noqa: BLE001 - the ranking recomputes the part; the run must go on
        logger.exception("Run %s: an evidence part of %d drawings failed", run_id, len(ids))
        return {"drawings": len(ids), "error": f"{type(exc).__name__}: {exc}"[:500]}
    TrainingRun.objects.filter(pk=run_id, holds_lock=True, stage__startswith=SPREAD_STAGE).update(
        heartbeat_at=timezone.now(), progress=Least(F("progress") + share, SPREAD_SHARE))
    return counts


@functools.lru_cache(maxsize=1)
def _part_estimator(file: str, sha256: str) -> tuple[object, feedback.TrainingLists]:
    """(a version's estimator, its feedback.TrainingLists), loaded and named once per worker process for all
    the parts of a run it takes (the last version only)."""
    estimator = versions.load_estimator(file, sha256)
    return estimator, feedback.TrainingLists(estimator, trust.model_id(estimator), trust.feature_space_id(estimator))


def _parts_summary(results: list) -> dict:
    results = [r for r in results if isinstance(r, dict)]
    return {"parts": len(results), "drawings": sum(r.get("drawings", 0) for r in results),
            "computed": sum(r.get("computed", 0) for r in results),
            "failed": [r["error"] for r in results if r.get("error")][:5],
            "skipped": sum(1 for r in results if r.get("skipped"))}


def retrain_in_foreground(trigger: str = TrainingRun.Trigger.COMMAND, user=None,
                          echo: Progress | None = None) -> tuple[TrainingRun, bool]:
    """The `retrain` command: the same run, in this process. (live run, False) when one holds the lock."""
    run, created = start_retrain(trigger, user, enqueue=False)
    if not created:
        return run, False
    return execute_run(run, echo), True
