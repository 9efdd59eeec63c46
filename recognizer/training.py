"""The feedback loop: which drawings are trusted, the held-out users, retraining with the lock and
the promotion gate, suspicious-label ranking, and the per-user examples used for personalisation.

Celery tasks (recognizer.tasks), the `retrain` command, the admin and the API all call these.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
import time
import traceback
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Callable

import numpy as np
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Count, Max, Q, QuerySet
from django.utils import timezone

from recognizer import services
from recognizer.ml import preprocess as ml_preprocess
from recognizer.ml import store as ml_store
from recognizer.ml import strokes as ml_strokes
from recognizer.models import Drawing, ModelVersion, TrainingRun

logger = logging.getLogger(__name__)

Progress = Callable[[str, float], None]


# --- Which labels are trusted, and who is held out ----------------------------------------------


def trusted_drawings() -> QuerySet:
    """Drawings whose label may be trained on.

    Approved by staff always counts. Without RECOGNIZER_REQUIRE_REVIEW an owner's label also counts
    unless staff rejected it. Suspicious labels still count there: the flag puts them first in the
    review queue. Leaving them out cost the feedback loop most of what it learns, since the labels the
    model disagrees with are the writer styles it does not know yet (bench/feedback_loop.py).
    """
    labelled = Drawing.objects.filter(label__isnull=False)
    if settings.RECOGNIZER_REQUIRE_REVIEW:
        return labelled.filter(status=Drawing.Status.APPROVED)
    return labelled.exclude(status=Drawing.Status.REJECTED)


def is_holdout_user(user_id: int) -> bool:
    """Deterministic by-user split: the same user's drawings are always on the same side."""
    digest = hashlib.sha256(f"digitsite-holdout:{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < settings.RECOGNIZER_HOLDOUT_SHARE


@dataclass
class DrawingSet:
    images: np.ndarray  # (n, 28, 28) float32 in [0, 1], exactly what the model saw at prediction time
    labels: np.ndarray
    users: np.ndarray
    ids: np.ndarray
    strokes: list | None = None  # per drawing: its pen strokes (list of arrays) or None

    def __len__(self) -> int:
        return len(self.labels)

    def by_label(self) -> dict[str, int]:
        values, counts = np.unique(self.labels, return_counts=True)
        return {str(int(v)): int(c) for v, c in zip(values, counts)}


def _stored_strokes(raw) -> list | None:
    """A Drawing's stored strokes as arrays (None when it has none or they no longer parse)."""
    if not raw:
        return None
    try:
        return ml_strokes.parse_strokes(raw)
    except ml_strokes.InvalidStrokes:
        return None


def drawing_set(drawings) -> DrawingSet:
    fields = ("id", "user_id", "label", "preprocessed", "strokes")
    rows = list(drawings.values_list(*fields)) if isinstance(drawings, QuerySet) \
        else [tuple(getattr(d, f) for f in fields) for d in drawings]
    images = np.empty((len(rows), 28, 28), np.float32)
    for i, row in enumerate(rows):
        images[i] = ml_preprocess.from_uint8(bytes(row[3]))
    return DrawingSet(
        images=images,
        labels=np.array([r[2] for r in rows], np.int64),
        users=np.array([r[1] for r in rows], np.int64),
        ids=np.array([r[0] for r in rows], np.int64),
        strokes=[_stored_strokes(r[4]) for r in rows],
    )


def split_trusted() -> tuple[DrawingSet, DrawingSet]:
    """(training drawings, held-out drawings) among the trusted ones."""
    trusted = drawing_set(trusted_drawings().order_by("id"))
    held = np.array([is_holdout_user(int(u)) for u in trusted.users], bool)

    def pick(mask):
        return DrawingSet(trusted.images[mask], trusted.labels[mask], trusted.users[mask], trusted.ids[mask],
                          [s for s, m in zip(trusted.strokes, mask) if m])

    return pick(~held), pick(held)


# --- Suspicious labels ---------------------------------------------------------------------------


def _vote(labels: np.ndarray, dist: np.ndarray, mult: np.ndarray, weights: str) -> np.ndarray:
    w = (1.0 / np.maximum(dist, 1e-6) if weights == "distance" else np.ones_like(dist)) * mult
    out = np.zeros((len(labels), 10))
    for c in range(10):
        out[:, c] = (w * (labels == c)).sum(axis=1)
    total = out.sum(axis=1, keepdims=True)
    return np.where(total > 0, out / np.where(total > 0, total, 1), 0.1)


def out_of_sample_probabilities(estimator, images: np.ndarray, users: np.ndarray) -> np.ndarray:
    """Class probabilities for users' drawings from neighbours that are not their own drawings.

    Leaving out the whole user (not just the one drawing) is what stops one person from vouching
    for their own labels: a user who labels many 1s as 7 gets no support from those same 7s.
    """
    groups = getattr(estimator, "train_groups_", None)
    if groups is None:  # trained on MNIST only: every user drawing is already out of sample
        return estimator.predict_proba(images)
    k = int(estimator.n_neighbors)
    Q = estimator.transform(images)
    out = np.empty((len(images), 10))
    for user in np.unique(users):
        rows = np.flatnonzero(users == user)
        own = groups == user
        idx, dist = estimator.kneighbors_features(Q[rows], k + int(own.sum()))
        keep = np.argsort(own[idx], axis=1, kind="stable")[:, :k]  # first k neighbours not drawn by `user`
        idx, dist = np.take_along_axis(idx, keep, axis=1), np.take_along_axis(dist, keep, axis=1)
        mult = estimator.sample_weight_[idx] if estimator.sample_weight_ is not None else np.ones(idx.shape)
        out[rows] = _vote(estimator.train_labels_[idx].astype(np.int64), dist, mult, estimator.weights)
    return out


def find_label_issues(labels: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """Boolean mask of likely wrong labels.

    cleanlab's confident learning (per-class thresholds from the out-of-sample probabilities, then
    pruning by the estimated noise rate) when it is installed and there is enough data for it;
    otherwise the plain rule it generalises: the model gives the given label under 5 %.
    """
    strong_disagreement = probabilities[np.arange(len(labels)), labels] < 0.05
    if len(labels) >= 20 and len(np.unique(labels)) >= 2:
        try:
            from cleanlab.filter import find_label_issues as cleanlab_issues

            return np.asarray(cleanlab_issues(labels, probabilities, filter_by="prune_by_noise_rate"), bool)
        except ImportError:
            pass
        except Exception as exc:  # noqa: BLE001 - cleanlab rejects some degenerate inputs
            logger.warning("cleanlab could not rank the labels (%s); using the plain rule", exc)
    return strong_disagreement


def flag_suspicious_labels(estimator=None) -> dict:
    """Rank every labelled, not-rejected drawing by how strongly the model disagrees with its label.

    Flags are stored on the drawings (suspicious, suspicion_score = 1 - p(label)); the admin sorts
    suspicious ones first, and unreviewed suspicious drawings are left out of training.
    """
    if estimator is None:
        try:
            estimator = services.model_cache.get().estimator
        except services.NoActiveModel:
            return {"ranked": 0, "suspicious": 0}
    candidates = Drawing.objects.filter(label__isnull=False).exclude(status=Drawing.Status.REJECTED)
    ds = drawing_set(candidates.order_by("id"))
    if not len(ds):
        return {"ranked": 0, "suspicious": 0}
    probabilities = out_of_sample_probabilities(estimator, ds.images, ds.users)
    issues = find_label_issues(ds.labels, probabilities)
    scores = 1.0 - probabilities[np.arange(len(ds)), ds.labels]
    approved = set(candidates.filter(status=Drawing.Status.APPROVED).values_list("id", flat=True))
    updates = []
    for i, pk in enumerate(ds.ids):
        updates.append(Drawing(pk=int(pk), suspicious=bool(issues[i]) and int(pk) not in approved,
                               suspicion_score=float(scores[i])))
    Drawing.objects.bulk_update(updates, ["suspicious", "suspicion_score"], batch_size=500)
    return {"ranked": len(ds), "suspicious": int(sum(u.suspicious for u in updates))}


# --- Personalisation -----------------------------------------------------------------------------


@dataclass
class PersonalEntry:
    stamp: tuple
    images: np.ndarray
    labels: np.ndarray
    features: dict  # model version id -> the images' PCA features under that model
    strokes: list | None = None  # per drawing: its strokes or None
    stroke_features: dict | None = None  # model version id -> (stroke features, their labels)


class PersonalExamples:
    """A user's own labelled drawings, searched next to the training set when they predict.

    Only the owner's predictions use them, so their own (even unreviewed) labels are safe to use:
    nobody else is affected. The cache key is a cheap aggregate over the user's drawings, so a new
    label, review or deletion in any process shows in the next prediction of every process.
    """

    def __init__(self, max_users: int = 256) -> None:
        self.lock = threading.Lock()
        self._cache: dict[int, PersonalEntry] = {}
        self._max_users = max_users

    def clear(self) -> None:
        with self.lock:
            self._cache.clear()

    @staticmethod
    def _queryset(user_id: int) -> QuerySet:
        return Drawing.objects.filter(user_id=user_id, label__isnull=False).exclude(status=Drawing.Status.REJECTED)

    def entry(self, user) -> PersonalEntry | None:
        if settings.RECOGNIZER_PERSONAL_MAX_DRAWINGS <= 0 or user is None or not user.is_authenticated:
            return None
        stamp = tuple(Drawing.objects.filter(user_id=user.pk).aggregate(
            n=Count("id", filter=Q(label__isnull=False)), l=Max("labelled_at"), r=Max("reviewed_at"),
            s=Count("id", filter=Q(status=Drawing.Status.REJECTED))).values())
        if not stamp[0]:
            return None
        cached = self._cache.get(user.pk)
        if cached is not None and cached.stamp == stamp:
            return cached if len(cached.labels) else None
        rows = list(self._queryset(user.pk).order_by("-labelled_at", "-id")
                    .values_list("label", "preprocessed", "strokes")[: settings.RECOGNIZER_PERSONAL_MAX_DRAWINGS])
        images = np.stack([ml_preprocess.from_uint8(bytes(p)) for _, p, _s in rows]) if rows \
            else np.empty((0, 28, 28))
        entry = PersonalEntry(stamp, images, np.array([lab for lab, _p, _s in rows], np.int64), {},
                              strokes=[_stored_strokes(s) for _lab, _p, s in rows], stroke_features={})
        with self.lock:
            if len(self._cache) >= self._max_users and user.pk not in self._cache:
                self._cache.pop(next(iter(self._cache)))
            self._cache[user.pk] = entry
        return entry if len(entry.labels) else None

    def get(self, user) -> tuple[np.ndarray, np.ndarray] | None:
        entry = self.entry(user)
        return None if entry is None else (entry.images, entry.labels)


personal_examples = PersonalExamples()


def personal_predict_kwargs(user, loaded=None) -> dict:
    """Keyword arguments for DigitClassifier.predict_one that add the user's own drawings.

    With `loaded` (services.LoadedModel) their features under that model are cached with them, so a
    prediction does not deskew and project the user's drawings again.
    """
    entry = personal_examples.entry(user)
    if entry is None:
        return {}
    kwargs = {"extra_y": entry.labels, "extra_weight": settings.RECOGNIZER_PERSONAL_WEIGHT}
    if loaded is None or not hasattr(loaded.estimator, "transform"):
        return {**kwargs, "extra_X": entry.images}
    features = entry.features.get(loaded.version_id)
    if features is None:
        features = loaded.estimator.transform(entry.images)
        entry.features = {loaded.version_id: features}  # only the serving model's are worth keeping
    kwargs["extra_features"] = features
    if getattr(loaded.estimator, "reads_strokes", False) and entry.strokes and any(s for s in entry.strokes):
        cached = (entry.stroke_features or {}).get(loaded.version_id)
        if cached is None:
            rows = [i for i, s in enumerate(entry.strokes) if s]
            cached = (loaded.estimator.stroke_model_.features([entry.strokes[i] for i in rows]), entry.labels[rows])
            entry.stroke_features = {loaded.version_id: cached}
        kwargs["extra_stroke_features"], kwargs["extra_stroke_y"] = cached
    return kwargs


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
    from recognizer import tasks

    try:
        tasks.retrain.apply_async(kwargs={"run_id": run.pk}, task_id=run.task_id)
    except Exception as exc:  # noqa: BLE001 - kombu raises several types for an unreachable broker
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
    qs = trusted_drawings()
    if last is not None:
        qs = qs.filter(Q(labelled_at__gt=last) | Q(reviewed_at__gt=last))
    return qs.count()


def maybe_retrain_after_new_labels() -> TrainingRun | None:
    """Start a retrain early once RECOGNIZER_RETRAIN_AFTER new trusted drawings have arrived."""
    if live_run() is not None or new_trusted_since_last_run() < settings.RECOGNIZER_RETRAIN_AFTER:
        return None
    run, created = start_retrain(TrainingRun.Trigger.THRESHOLD)
    return run if created else None


def schedule_threshold_check() -> None:
    """Called when a label changes: check the threshold after the transaction commits."""
    def check():
        try:
            maybe_retrain_after_new_labels()
        except Exception:  # noqa: BLE001 - labelling must never fail because the broker is down
            logger.exception("Could not start a retrain after new labels")

    transaction.on_commit(check)


# --- Running a retrain -------------------------------------------------------------------------------


class _RunReporter:
    """progress(stage, fraction) that writes to the run row (throttled) and keeps its heartbeat alive."""

    def __init__(self, run: TrainingRun, echo: Progress | None = None) -> None:
        self.run = run
        self.echo = echo
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
                except Exception:  # noqa: BLE001
                    logger.warning("Could not write the retrain heartbeat", exc_info=True)
        finally:
            connection.close()

    def __enter__(self) -> "_RunReporter":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()

    def __call__(self, stage: str, fraction: float) -> None:
        fraction = float(max(0.0, min(1.0, fraction)))
        if self.echo:
            self.echo(stage, fraction)
        now = time.monotonic()
        if now - self._last_write >= 1.0 or fraction >= 1.0 or stage != self._last_stage:
            self._last_write, self._last_stage = now, stage
            self._write(stage=stage[:120], progress=fraction)

    def scaled(self, start: float, end: float) -> Progress:
        return lambda stage, fraction: self(stage, start + (end - start) * fraction)


def gate(candidate: dict, active: dict | None) -> dict:
    """Promote unless the candidate is worse than the active model beyond the tolerance on either set."""
    if active is None:
        return {"promote": True, "reasons": ["no model was active"]}
    reasons, promote = [], True
    tol_mnist, tol_holdout = settings.RECOGNIZER_PROMOTION_TOLERANCE, settings.RECOGNIZER_HOLDOUT_TOLERANCE
    drop = active["mnist_test"] - candidate["mnist_test"]
    if drop > tol_mnist:
        promote = False
        reasons.append(f"MNIST test accuracy drops by {drop * 100:.2f} points (tolerance {tol_mnist * 100:.2f})")
    if candidate.get("holdout") is None or active.get("holdout") is None:
        reasons.append("no held-out user drawings to compare on")
    else:
        drop = active["holdout"] - candidate["holdout"]
        if drop > tol_holdout:
            promote = False
            reasons.append(f"held-out drawings accuracy drops by {drop * 100:.2f} points "
                           f"(tolerance {tol_holdout * 100:.2f})")
    if promote:
        reasons.append("not worse than the active model beyond the tolerance")
    return {"promote": promote, "reasons": reasons}


def _figures(estimator, data, holdout: DrawingSet, mnist_test: float | None = None) -> dict:
    """The gate's two figures; `mnist_test` when training already measured it."""
    from recognizer.ml.evaluate import evaluate

    if mnist_test is None:
        mnist_test = evaluate(estimator, data.test_images / 255.0, data.test_labels)["accuracy"]
    out = {"mnist_test": mnist_test, "holdout": None}
    if len(holdout):
        # a model that reads strokes is judged on what it serves: the held-out drawings' strokes too
        kw = {"strokes": holdout.strokes} if getattr(estimator, "reads_strokes", False) and holdout.strokes else {}
        out["holdout"] = evaluate(estimator, holdout.images, holdout.labels, **kw)["accuracy"]
    return out


def _active_estimator() -> tuple[ModelVersion | None, object | None]:
    active = ModelVersion.objects.filter(is_active=True).first()
    if active is None:
        return None, None
    try:
        return active, ml_store.load_model(services.model_path(active.file), expected_sha256=active.sha256)
    except (ml_store.CorruptModelError, OSError) as exc:
        logger.error("The active model v%s cannot be loaded for comparison: %s", active.pk, exc)
        return active, None


def promote(version: ModelVersion, expected_active_id: int | None) -> bool:
    """Activate `version` only if the active version is still the one it was compared with."""
    with transaction.atomic():
        current = (ModelVersion.objects.select_for_update().filter(is_active=True)
                   .values_list("id", flat=True).first())
        if current != expected_active_id:
            return False
        services.activate_version(version)
    return True


def _reconnect_if_broken() -> None:
    """After a failure the connection may be dead (the database restarted): take a fresh one to record it.
    A working connection is kept: closing it would break a caller's open transaction."""
    if connection.in_atomic_block or connection.connection is None:
        return
    if not connection.is_usable():
        connection.close()


def execute_run(run: TrainingRun, echo: Progress | None = None) -> TrainingRun:
    """Run a queued retrain to its end; the run row records everything, including a failure."""
    now = timezone.now()
    claimed = TrainingRun.objects.filter(pk=run.pk, status=TrainingRun.Status.QUEUED, holds_lock=True).update(
        status=TrainingRun.Status.RUNNING, started_at=now, heartbeat_at=now, worker=_this_worker(), stage="starting")
    run.refresh_from_db()
    if not claimed:  # delivered twice, or reaped before a worker got to it
        logger.warning("Training run %s is %s, not queued: nothing to do", run.pk, run.status)
        return run
    try:
        with _RunReporter(run, echo) as report:
            result = _retrain(run, report)
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


def _retrain(run: TrainingRun, report: _RunReporter) -> dict:
    report("ranking suspicious labels", 0.01)
    active, active_estimator = _active_estimator()
    suspicious = flag_suspicious_labels(active_estimator) if active_estimator is not None else {}
    report("collecting trusted drawings", 0.04)
    train, holdout = split_trusted()
    counts = {
        "user_train": len(train), "user_train_by_label": train.by_label(),
        "user_train_users": int(len(np.unique(train.users))),
        "holdout": len(holdout), "holdout_by_label": holdout.by_label(),
        "holdout_users": int(len(np.unique(holdout.users))),
        "suspicious_unreviewed": Drawing.objects.filter(label__isnull=False, suspicious=True,
                                                        status=Drawing.Status.PENDING).count(),
        "user_sample_weight": settings.RECOGNIZER_USER_SAMPLE_WEIGHT, "ranking": suspicious,
    }
    TrainingRun.objects.filter(pk=run.pk).update(data_counts=counts)
    defaults = None
    if not settings.RECOGNIZER_RETRAIN_CV and active is not None:
        hp = active.metadata.get("hyperparameters") or {}
        defaults = {k: hp[src] for k, src in (("pca_components", "n_components"), ("k", "n_neighbors"),
                                              ("weights", "weights")) if src in hp}
    extra = services.ExtraTrainingData(
        images=train.images, labels=train.labels, groups=train.users, weight=settings.RECOGNIZER_USER_SAMPLE_WEIGHT,
        strokes=train.strokes, metadata={"training_run": run.pk, "user_drawings": {"train": len(train), "holdout": len(holdout),
                                                            "weight": settings.RECOGNIZER_USER_SAMPLE_WEIGHT}},
    )
    outcome = services.train_new_model(limit=settings.RECOGNIZER_TRAIN_LIMIT, activate=False,
                                       cv=settings.RECOGNIZER_RETRAIN_CV, progress=report.scaled(0.05, 0.8),
                                       extra=extra, defaults=defaults)
    data = outcome.extra["data"]
    counts.update(outcome.version.metadata.get("counts", {}))
    report("evaluating the candidate", 0.85)
    candidate_figures = _figures(outcome.extra["estimator"], data, holdout,
                                 mnist_test=outcome.metrics["mnist_test"]["accuracy"])
    report("evaluating the active model", 0.92)
    active_figures = _figures(active_estimator, data, holdout) if active_estimator is not None else None
    decision = gate(candidate_figures, active_figures)
    decision.update({
        "candidate": {"version": outcome.version.pk, **candidate_figures},
        "active": {"version": active.pk if active else None, **(active_figures or {})},
        "tolerance": {"mnist_test": settings.RECOGNIZER_PROMOTION_TOLERANCE,
                      "holdout": settings.RECOGNIZER_HOLDOUT_TOLERANCE},
    })
    metrics = {**outcome.metrics, "holdout": candidate_figures["holdout"]}
    ModelVersion.objects.filter(pk=outcome.version.pk).update(
        metrics=metrics, metadata={**outcome.version.metadata, "gate": decision})
    status = TrainingRun.Status.NOT_PROMOTED
    if not TrainingRun.objects.filter(pk=run.pk, holds_lock=True).exists():
        # Reaped as dead meanwhile (e.g. the database was unreachable for the heartbeat): another run may
        # hold the lock now, so this one must not touch the active model.
        raise RuntimeError("This run lost the retrain lock before the gate; the candidate was not activated.")
    if decision["promote"]:
        report("activating", 0.98)
        if promote(outcome.version, active.pk if active else None):
            status = TrainingRun.Status.PROMOTED
        else:
            decision["promote"] = False
            decision["reasons"].append("another version was activated while this run was training")
    return {"status": status, "data_counts": counts, "metrics": metrics, "decision": decision,
            "model_version_id": outcome.version.pk}


def retrain_in_foreground(trigger: str = TrainingRun.Trigger.COMMAND, user=None,
                          echo: Progress | None = None) -> tuple[TrainingRun, bool]:
    """The `retrain` command: the same run, in this process. (live run, False) when one holds the lock."""
    run, created = start_retrain(trigger, user, enqueue=False)
    if not created:
        return run, False
    return execute_run(run, echo), True


def activate_for_staff(version: ModelVersion) -> ModelVersion:
    """Rollback (or forward) to any stored version; the file is verified before the switch."""
    activated = services.activate_version(version)
    logger.info("Model v%s activated by staff", version.pk)
    return activated
