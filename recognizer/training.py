"""The feedback loop: which drawings are trusted (and quarantined), the held-out users, the label ranking
and per-account trust (recognizer.trust does the arithmetic), retraining with the lock, the per-digit
promotion gate and its retry without the accounts that drive a refusal, and the per-user examples used
for personalisation.

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
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Self

import numpy as np
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, connection, transaction
from django.db.models import Count, Max, Q, QuerySet
from django.utils import timezone

from recognizer import services, trust
from recognizer.ml import preprocess as ml_preprocess
from recognizer.ml import store as ml_store
from recognizer.ml import strokes as ml_strokes
from recognizer.models import Drawing, ModelVersion, TrainingRun, UserTrust

logger = logging.getLogger(__name__)

Progress = Callable[[str, float], None]


# --- Which labels are trusted, and who is held out ----------------------------------------------


def quarantined_drawings() -> QuerySet:
    """Labels the ranking found suspicious from an account whose trust is below the threshold, not yet
    reviewed: they stay out of the global model (training and the held-out set) until staff approve them.
    An account with no trust measured yet is not low-trust."""
    return Drawing.objects.filter(label__isnull=False, status=Drawing.Status.PENDING, suspicious=True,
                                  user__trust__score__lt=settings.RECOGNIZER_TRUST_THRESHOLD)


def trusted_drawings() -> QuerySet:
    """Drawings whose label may be trained on.

    Approved by staff always counts. Without RECOGNIZER_REQUIRE_REVIEW an owner's label also counts
    unless staff rejected it, or it is quarantined: suspicious, from a low-trust account, and not yet
    approved. Suspicious labels of trusted accounts still count (the flag puts them in the review
    queue): they are mostly writer styles the model does not know yet, what the feedback loop learns
    from (bench/feedback_loop.py), and the caps and the gate bound what they can do.
    """
    labelled = Drawing.objects.filter(label__isnull=False, label__gte=0, label__lte=9)
    if settings.RECOGNIZER_REQUIRE_REVIEW:
        return labelled.filter(status=Drawing.Status.APPROVED)
    return labelled.exclude(status=Drawing.Status.REJECTED).exclude(pk__in=quarantined_drawings().values("pk"))


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
    approved: np.ndarray | None = None  # per drawing: staff approved its label
    suspicion: np.ndarray | None = None  # per drawing: the last ranking's chance that its label is wrong (0: none)

    def __len__(self) -> int:
        return len(self.labels)

    def by_label(self) -> dict[str, int]:
        values, counts = np.unique(self.labels, return_counts=True)
        return {str(int(v)): int(c) for v, c in zip(values, counts)}

    def pick(self, mask) -> DrawingSet:
        mask = np.asarray(mask)
        rows = np.flatnonzero(mask) if mask.dtype == bool else mask
        return DrawingSet(
            self.images[rows], self.labels[rows], self.users[rows], self.ids[rows],
            None if self.strokes is None else [self.strokes[i] for i in rows],
            None if self.approved is None else self.approved[rows],
            None if self.suspicion is None else self.suspicion[rows],
        )

    def __add__(self, other: DrawingSet) -> DrawingSet:
        def both(a, b, n_a, n_b, fill):
            if a is None and b is None:
                return None
            a = np.full(n_a, fill) if a is None else a
            b = np.full(n_b, fill) if b is None else b
            return np.concatenate([a, b])

        n, m = len(self), len(other)
        return DrawingSet(
            np.concatenate([self.images, other.images]), np.concatenate([self.labels, other.labels]),
            np.concatenate([self.users, other.users]), np.concatenate([self.ids, other.ids]),
            (self.strokes or [None] * n) + (other.strokes or [None] * m),
            both(self.approved, other.approved, n, m, False), both(self.suspicion, other.suspicion, n, m, 0.0),
        )


def _stored_strokes(raw) -> list | None:
    """A Drawing's stored strokes as arrays (None when it has none or they no longer parse)."""
    if not raw:
        return None
    try:
        return ml_strokes.parse_strokes(raw)
    except ml_strokes.InvalidStrokes:
        return None


def drawing_set(drawings) -> DrawingSet:
    fields = ("id", "user_id", "label", "preprocessed", "strokes", "status", "suspicion_score")
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
        approved=np.array([r[5] == Drawing.Status.APPROVED for r in rows], bool),
        suspicion=np.array([r[6] or 0.0 for r in rows], np.float64),
    )


def stored_trust(user_ids=None) -> dict[int, float]:
    """{user: trust score} as the last ranking stored it (accounts not ranked yet are absent)."""
    qs = UserTrust.objects.all()
    if user_ids is not None:
        qs = qs.filter(user_id__in=[int(u) for u in user_ids])
    return dict(qs.values_list("user_id", "score"))


@dataclass
class TrainingData:
    """What a retrain trains on and judges with, after the quarantine, the caps and the per-digit fill."""

    train: DrawingSet
    holdout: DrawingSet
    weights: np.ndarray  # per training drawing: its vote weight
    trust: dict  # {user: trust score} of the accounts in it
    report: dict

    def without(self, accounts) -> TrainingData:
        """The same data with every drawing of `accounts` left out (a retry after the gate)."""
        accounts = np.asarray(sorted(int(a) for a in accounts), np.int64)
        keep_train = ~np.isin(self.train.users, accounts)
        keep_held = ~np.isin(self.holdout.users, accounts)
        report = {**self.report, "left_out_accounts": [int(a) for a in accounts],
                  "left_out_drawings": int((~keep_train).sum() + (~keep_held).sum())}
        return TrainingData(self.train.pick(keep_train), self.holdout.pick(keep_held), self.weights[keep_train],
                            self.trust, report)


def assemble_training_data() -> TrainingData:
    """The trusted drawings split into training and held-out drawings, with bounded influence.

    - Held-out users' drawings are only validated on (is_holdout_user).
    - No account supplies more than RECOGNIZER_USER_CLASS_SHARE of a digit's drawings on either side
      (or RECOGNIZER_USER_CLASS_FLOOR drawings when that is more); its least suspicious ones are kept,
      and staff-approved ones always are.
    - Every digit users drew has held-out drawings: when held-out users drew fewer than
      RECOGNIZER_HOLDOUT_MIN_PER_DIGIT of it, training accounts' drawings of that digit are held out
      (trust.holdout_fill; never a low-trust account's).
    - A training drawing's vote weight is RECOGNIZER_USER_SAMPLE_WEIGHT scaled down by its account's
      trust below RECOGNIZER_TRUST_THRESHOLD (staff-approved drawings keep the full weight).
    """
    trusted = drawing_set(trusted_drawings().order_by("id"))
    scores = stored_trust(np.unique(trusted.users))
    threshold = settings.RECOGNIZER_TRUST_THRESHOLD
    held = np.array([is_holdout_user(int(u)) for u in trusted.users], bool)
    train, holdout = trusted.pick(~held), trusted.pick(held)
    caps = {"share": settings.RECOGNIZER_USER_CLASS_SHARE, "floor": settings.RECOGNIZER_USER_CLASS_FLOOR}
    keep, capped_train = trust.cap_accounts(train.users, train.labels, train.suspicion, train.approved, **caps)
    train = train.pick(keep)
    keep, capped_held = trust.cap_accounts(holdout.users, holdout.labels, holdout.suspicion, holdout.approved, **caps)
    holdout = holdout.pick(keep)
    eligible = {int(u) for u in np.unique(train.users) if scores.get(int(u), 1.0) >= threshold}
    move, filled = trust.holdout_fill(train.users, train.labels, train.ids, holdout.labels, eligible,
                                      min_per_digit=settings.RECOGNIZER_HOLDOUT_MIN_PER_DIGIT,
                                      share=settings.RECOGNIZER_HOLDOUT_SHARE or 0.2)
    if move.any():
        holdout, train = holdout + train.pick(move), train.pick(~move)
    weights = (settings.RECOGNIZER_USER_SAMPLE_WEIGHT
               * trust.vote_weights(train.users, scores, threshold, approved=train.approved)).astype(np.float32)
    quarantined = dict(quarantined_drawings().values("user_id").annotate(n=Count("id")).values_list("user_id", "n"))
    report = {
        "quarantined": int(sum(quarantined.values())),
        "quarantined_by_user": {str(u): n for u, n in quarantined.items()},
        "capped": {str(u): d for u, d in capped_train.items()},
        "capped_holdout": {str(u): d for u, d in capped_held.items()},
        "holdout_filled": filled,
        "low_trust_users": sorted(int(u) for u, s in scores.items() if s < threshold),
        "down_weighted": int((weights < settings.RECOGNIZER_USER_SAMPLE_WEIGHT - 1e-6).sum()),
    }
    return TrainingData(train, holdout, weights, scores, report)


def split_trusted() -> tuple[DrawingSet, DrawingSet]:
    """(training drawings, held-out drawings) among the trusted ones (assemble_training_data)."""
    data = assemble_training_data()
    return data.train, data.holdout


# --- Suspicious labels and trust -----------------------------------------------------------------


def out_of_sample_probabilities(estimator, images: np.ndarray, users: np.ndarray, strokes=None,
                                features: np.ndarray | None = None) -> np.ndarray:
    """Class probabilities for users' drawings from neighbours that are not their own drawings, fused
    with the stroke model's (again without their own strokes) for drawings that have strokes.

    Leaving out the whole user (not just the one drawing) is what stops one person from vouching
    for their own labels: a user who labels many 1s as 7 gets no support from those same 7s.
    MNIST (group -1) and the pendigits writers (groups <= -1000) are never anyone's own.
    """
    return trust.neighbour_probabilities(estimator, images, strokes, users=users, features=features)


def find_label_issues(labels: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """Boolean mask of likely wrong labels by the model alone (recorded next to the ranking for comparison).

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
    """Rank every labelled, not-rejected drawing and measure every account's trust (recognizer.trust).

    Stored: on the drawings, suspicious and suspicion_score (the chance the label is wrong, from the
    out-of-sample model, other accounts' labels of similar drawings and the account's trust), and one
    UserTrust per account. The admin sorts suspicious drawings first; suspicious labels of low-trust
    accounts are quarantined (trusted_drawings).
    """
    if estimator is None:
        try:
            estimator = services.model_cache.get().estimator
        except services.NoActiveModel:
            return {"ranked": 0, "suspicious": 0}
    candidates = Drawing.objects.filter(label__isnull=False).exclude(status=Drawing.Status.REJECTED)
    ds = drawing_set(candidates.order_by("id"))
    rejected = dict(Drawing.objects.filter(label__isnull=False, status=Drawing.Status.REJECTED)
                    .values("user_id").annotate(n=Count("id")).values_list("user_id", "n"))
    if not len(ds) and not rejected:
        return {"ranked": 0, "suspicious": 0}
    features = None
    if len(ds) and hasattr(estimator, "transform"):
        features = estimator.transform(ds.images)
    probabilities = out_of_sample_probabilities(estimator, ds.images, ds.users, ds.strokes, features=features) \
        if len(ds) else np.zeros((0, 10))
    ranking = trust.rank_labels(ds.labels, ds.users, probabilities, features,
                                radius=getattr(estimator, "novelty_distance_", None), approved=ds.approved,
                                rejected_by_user=rejected, threshold=settings.RECOGNIZER_SUSPICION_THRESHOLD)
    model_alone = find_label_issues(ds.labels, probabilities) if len(ds) else np.zeros(0, bool)
    updates = [Drawing(pk=int(pk), suspicious=bool(ranking.suspicious[i]), suspicion_score=float(ranking.suspicion[i]))
               for i, pk in enumerate(ds.ids)]
    with transaction.atomic():
        Drawing.objects.bulk_update(updates, ["suspicious", "suspicion_score"], batch_size=500)
        UserTrust.objects.bulk_create(
            [UserTrust(user_id=u, score=t.score, n_labels=t.n_labels, n_agree=t.n_agree, n_disagree=t.n_disagree,
                       n_flagged=t.n_flagged, updated_at=timezone.now()) for u, t in ranking.trust.items()],
            update_conflicts=True, unique_fields=["user"],
            update_fields=["score", "n_labels", "n_agree", "n_disagree", "n_flagged", "updated_at"])
    low = sorted(u for u, t in ranking.trust.items() if t.score < settings.RECOGNIZER_TRUST_THRESHOLD)
    return {"ranked": len(ds), "suspicious": int(ranking.suspicious.sum()),
            "model_alone_issues": int(model_alone.sum()), "accounts": len(ranking.trust), "low_trust_users": low,
            "quarantined": quarantined_drawings().count()}


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
        if self.echo:
            self.echo(stage, fraction)
        now = time.monotonic()
        if now - self._last_write >= 1.0 or fraction >= 1.0 or stage != self._last_stage:
            self._last_write, self._last_stage = now, stage
            self._write(stage=stage[:120], progress=fraction)

    def scaled(self, start: float, end: float) -> Progress:
        return lambda stage, fraction: self(stage, start + (end - start) * fraction)


# Which training data a model's figures can be trusted against: a candidate trained on the offline
# fallback digits never replaces a model trained on MNIST, whatever its figures say.
DATA_SOURCE_RANK = {"mnist": 2, "sklearn-digits": 1}


def _source_rank(source) -> int:
    return DATA_SOURCE_RANK.get(str(source or ""), 0)


def _digit_value(figures: dict, check: str, digit: str | None = None):
    if check == "mnist_test":
        return figures.get("mnist_test")
    if check == "holdout":
        return figures.get("holdout")
    if check == "mnist_test_digit":
        return (figures.get("mnist_test_by_digit") or {}).get(digit)
    if check == "holdout_digit":
        entry = (figures.get("holdout_by_digit") or {}).get(digit)
        return None if entry is None else entry["accuracy"]
    return None


def gate(candidate: dict, active: dict | None) -> dict:
    """Promote unless the candidate is worse than the active model beyond a tolerance anywhere it is measured.

    Checks, in order: the training data (a model trained on the fallback digits never replaces one
    trained on MNIST); MNIST test accuracy, overall and for each digit (only when both figures are on the
    same test set); held-out users' accuracy, overall and for each digit (a digit blocks only when it also
    loses RECOGNIZER_HOLDOUT_DIGIT_MIN_LOST drawings: a few drawings are noisy). One digit dropping blocks
    even when the average holds: that is what a targeted attack does. `failed` lists each failing check
    with how far beyond its tolerance it is (`excess`), which the retry measures accounts against.
    """
    if active is None:
        return {"promote": True, "reasons": ["no model was active"], "failed": []}
    failed, notes = [], []

    def check(name, cand_value, act_value, tolerance, digit=None, n=None):
        if cand_value is None or act_value is None:
            return
        drop = act_value - cand_value
        if drop <= tolerance + 1e-12:
            return
        lost = None if n is None else round(drop * n)
        if lost is not None and lost < settings.RECOGNIZER_HOLDOUT_DIGIT_MIN_LOST:
            return
        what = {"mnist_test": "MNIST test accuracy", "holdout": "held-out drawings accuracy",
                "mnist_test_digit": f"MNIST test accuracy on {digit}s",
                "holdout_digit": f"held-out drawings accuracy on {digit}s"}[name]
        reason = f"{what} drops by {drop * 100:.2f} points (tolerance {tolerance * 100:.2f})"
        if name.endswith("_digit"):
            reason += f": {act_value * 100:.1f}% -> {cand_value * 100:.1f}%"
        if lost is not None:
            reason += f", {lost} of {n} drawings"
        failed.append({"check": name, "digit": digit, "drop": drop, "tolerance": tolerance,
                       "excess": drop - tolerance, "lost": lost, "reason": reason})

    c_src, a_src = candidate.get("data_source"), active.get("data_source")
    if _source_rank(c_src) < _source_rank(a_src):
        failed.append({"check": "data_source", "digit": None, "excess": 1.0,
                       "reason": f"the candidate trained on {c_src!s} cannot replace a model trained on {a_src!s}"})
    if candidate.get("mnist_test") is None or active.get("mnist_test") is None:
        notes.append("no MNIST test figures of both models to compare")
    elif candidate.get("test_set") != active.get("test_set"):
        notes.append(f"MNIST test figures are on different test sets ({candidate.get('test_set')} and "
                     f"{active.get('test_set')}): not compared")
    else:
        check("mnist_test", candidate["mnist_test"], active["mnist_test"], settings.RECOGNIZER_PROMOTION_TOLERANCE)
        a_digits = active.get("mnist_test_by_digit") or {}
        for digit, value in sorted((candidate.get("mnist_test_by_digit") or {}).items()):
            check("mnist_test_digit", value, a_digits.get(digit), settings.RECOGNIZER_DIGIT_TOLERANCE, digit)
    if candidate.get("holdout") is None or active.get("holdout") is None:
        notes.append("no held-out user drawings to compare on")
    else:
        check("holdout", candidate["holdout"], active["holdout"], settings.RECOGNIZER_HOLDOUT_TOLERANCE)
        a_digits = active.get("holdout_by_digit") or {}
        for digit, entry in sorted((candidate.get("holdout_by_digit") or {}).items()):
            other = a_digits.get(digit)
            if other is not None and other["n"] == entry["n"]:
                check("holdout_digit", entry["accuracy"], other["accuracy"],
                      settings.RECOGNIZER_HOLDOUT_DIGIT_TOLERANCE, digit, entry["n"])
    promote = not failed
    reasons = [f["reason"] for f in failed] + notes
    if promote:
        reasons.append("not worse than the active model beyond the tolerance")
    return {"promote": promote, "reasons": reasons, "failed": failed}


def _accuracy_figures(pred: np.ndarray, y: np.ndarray) -> tuple[float, dict]:
    pred, y = np.asarray(pred, np.int64), np.asarray(y, np.int64)
    by_digit = {}
    for digit in np.unique(y):
        rows = y == digit
        by_digit[str(int(digit))] = {"accuracy": float((pred[rows] == digit).mean()), "n": int(rows.sum())}
    return float((pred == y).mean()), by_digit


def _figures(estimator, data, holdout: DrawingSet, mnist_metrics: dict | None = None, data_source=None,
             cache: dict | None = None) -> dict:
    """The gate's figures: MNIST test accuracy overall and per digit (`mnist_metrics` when training
    already measured it; `cache` keeps the active model's between attempts), and the held-out drawings'."""
    from recognizer.ml.evaluate import evaluate

    key = ("mnist", data.source)
    if mnist_metrics is None and cache is not None and key in cache:
        mnist_metrics = cache[key]
    if mnist_metrics is None or "per_digit" not in mnist_metrics:
        mnist_metrics = evaluate(estimator, data.test_images / 255.0, data.test_labels)
    if cache is not None:
        cache[key] = mnist_metrics
    present = {int(d) for d in np.unique(data.test_labels)}
    out = {"data_source": data_source, "test_set": data.source, "mnist_test": mnist_metrics["accuracy"],
           "mnist_test_by_digit": {str(d): float(v) for d, v in enumerate(mnist_metrics["per_digit"]) if d in present},
           "holdout": None, "holdout_by_digit": {}}
    if len(holdout):
        # a model that reads strokes is judged on what it serves: the held-out drawings' strokes too
        kw = {"strokes": holdout.strokes} if getattr(estimator, "reads_strokes", False) and holdout.strokes else {}
        pred = estimator.predict(holdout.images, **kw)
        out["holdout"], out["holdout_by_digit"] = _accuracy_figures(pred, holdout.labels)
    return out


def _badness(decision: dict) -> float:
    return float(sum(f["excess"] for f in decision["failed"] if f["check"] != "data_source"))


def _describe(check: dict, before: dict, after: dict, active: dict) -> str:
    digit = check.get("digit")
    name = {"mnist_test": "MNIST test", "holdout": "held-out drawings", "mnist_test_digit": f"MNIST test {digit}s",
            "holdout_digit": f"held-out {digit}s"}[check["check"]]
    values = [_digit_value(f, check["check"], digit) for f in (before, after, active)]
    return f"{name}: {values[0] * 100:.1f}% -> {values[1] * 100:.1f}% without it (active {values[2] * 100:.1f}%)"


def find_culprits(estimator, data, holdout: DrawingSet, candidate: dict, active: dict, scores: dict,
                  train_users) -> tuple[list[dict], dict]:
    """(the accounts to leave out, how they were measured) after the gate refused `candidate`.

    A k-NN is measured without training again: for each account whose drawings are among the neighbours
    of the evaluation drawings the candidate gets wrong in the failing checks, the figures as if it had
    not been trained on (trust.LeaveOutEvaluator). Accounts are added greedily while each takes away at
    least a fifth of what is beyond the tolerances, at most RECOGNIZER_MAX_LEFT_OUT (two colluding
    accounts only show together). A model that is not a k-NN cannot be measured so: its low-trust
    accounts are left out.
    """
    decision = gate(candidate, active)
    if decision["promote"] or any(f["check"] == "data_source" for f in decision["failed"]):
        return [], {"measured": "nothing an account could fix"}
    threshold = settings.RECOGNIZER_TRUST_THRESHOLD
    if trust.image_part(estimator) is None:
        low = sorted(int(u) for u in np.unique(train_users) if scores.get(int(u), 1.0) < threshold)
        return ([{"user": u, "trust": scores.get(u), "why": "low trust; this model kind cannot measure one "
                  "account's effect without training again"} for u in low], {"measured": "trust only"})
    needs_mnist = any(f["check"].startswith("mnist") for f in decision["failed"])
    needs_holdout = any(f["check"].startswith("holdout") for f in decision["failed"]) and len(holdout)
    sets = {}
    if needs_mnist:
        sets["mnist"] = (data.test_images / 255.0, data.test_labels, None)
    if needs_holdout:
        sets["holdout"] = (holdout.images, holdout.labels, holdout.strokes)
    evaluator = trust.LeaveOutEvaluator(estimator, sets)

    def figures_without(excluded) -> dict:
        figs = dict(candidate)
        if "mnist" in sets:
            acc, by_digit = _accuracy_figures(evaluator.predictions("mnist", excluded), evaluator.labels("mnist"))
            figs.update(mnist_test=acc, mnist_test_by_digit={d: v["accuracy"] for d, v in by_digit.items()})
        if "holdout" in sets:
            figs["holdout"], figs["holdout_by_digit"] = _accuracy_figures(
                evaluator.predictions("holdout", excluded), evaluator.labels("holdout"))
        return figs

    base = figures_without(())
    base_decision = gate(base, active)
    implicated: dict[int, int] = {}
    for f in decision["failed"]:
        name = "mnist" if f["check"].startswith("mnist") else "holdout"
        y = evaluator.labels(name)
        wrong = evaluator.predictions(name) != y
        scope = wrong if f.get("digit") is None else wrong & (y == int(f["digit"]))
        for account, n in evaluator.accounts(name, scope).items():
            implicated[account] = implicated.get(account, 0) + n
    candidates = [a for a, _ in sorted(implicated.items(), key=lambda kv: (-kv[1], kv[0]))[:10]]
    current, current_figs, current_decision = _badness(base_decision), base, base_decision
    leave_one_out, chosen = {}, []
    for _ in range(settings.RECOGNIZER_MAX_LEFT_OUT):
        best = None
        for account in candidates:
            if account in [c["user"] for c in chosen]:
                continue
            figs = figures_without([c["user"] for c in chosen] + [account])
            d = gate(figs, active)
            bad = _badness(d)
            if not chosen:
                leave_one_out[str(account)] = round(bad, 6)
            if best is None or bad < best[1]:
                best = (account, bad, figs, d)
        if best is None or current <= 0 or best[1] > 0.8 * current:
            break
        account, bad, figs, d = best
        after = {(g["check"], g.get("digit")): g["excess"] for g in d["failed"]}
        improved = max(current_decision["failed"],
                       key=lambda f: f["excess"] - after.get((f["check"], f.get("digit")), 0.0))
        chosen.append({"user": int(account), "trust": scores.get(int(account)),
                       "why": _describe(improved, current_figs, figs, active),
                       "excess_before": round(current, 6), "excess_after": round(bad, 6)})
        current, current_figs, current_decision = bad, figs, d
        if current <= 0:
            break
    return chosen, {"measured": "leave-accounts-out k-NN figures", "implicated": {str(a): implicated[a] for a in candidates},
                    "leave_one_out_excess": leave_one_out, "excess": round(_badness(base_decision), 6)}


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


def _train_candidate(run: TrainingRun, data: TrainingData, defaults: dict | None, progress: Progress):
    """One candidate: MNIST (and the pen data) plus the training drawings, with their vote weights."""
    train, holdout = data.train, data.holdout
    extra = services.ExtraTrainingData(
        images=train.images, labels=train.labels, groups=train.users, weight=data.weights, strokes=train.strokes,
        metadata={"training_run": run.pk, "user_drawings": {
            "train": len(train), "holdout": len(holdout), "weight": settings.RECOGNIZER_USER_SAMPLE_WEIGHT,
            "left_out_accounts": data.report.get("left_out_accounts", [])}},
    )
    return services.train_new_model(limit=settings.RECOGNIZER_TRAIN_LIMIT, activate=False,
                                    cv=settings.RECOGNIZER_RETRAIN_CV, progress=progress, extra=extra,
                                    defaults=defaults, kind=settings.RECOGNIZER_RETRAIN_KIND)


def _data_counts(data: TrainingData, ranking: dict) -> dict:
    train, holdout = data.train, data.holdout
    return {
        "user_train": len(train), "user_train_by_label": train.by_label(),
        "user_train_users": len(np.unique(train.users)),
        "holdout": len(holdout), "holdout_by_label": holdout.by_label(),
        "holdout_users": len(np.unique(holdout.users)),
        "suspicious_unreviewed": Drawing.objects.filter(label__isnull=False, suspicious=True,
                                                        status=Drawing.Status.PENDING).count(),
        "user_sample_weight": settings.RECOGNIZER_USER_SAMPLE_WEIGHT, "ranking": ranking,
        **data.report,
    }


def _retrain(run: TrainingRun, report: _RunReporter) -> dict:
    report("ranking labels and accounts", 0.01)
    active, active_estimator = _active_estimator()
    ranking = flag_suspicious_labels(active_estimator) if active_estimator is not None else {}
    report("collecting trusted drawings", 0.04)
    data = assemble_training_data()
    counts = _data_counts(data, ranking)
    TrainingRun.objects.filter(pk=run.pk).update(data_counts=counts)
    defaults = None
    if not settings.RECOGNIZER_RETRAIN_CV and active is not None:
        hp = active.metadata.get("hyperparameters") or {}
        defaults = {k: hp[src] for k, src in (("pca_components", "n_components"), ("k", "n_neighbors"),
                                              ("weights", "weights")) if src in hp}
    retries = settings.RECOGNIZER_GATE_RETRIES
    attempts, left_out, search = [], [], {}
    active_cache: dict = {}
    for attempt in range(retries + 1):
        span = (0.05, 0.8) if attempt == 0 else (0.8 + 0.12 * (attempt - 1) / retries, 0.8 + 0.12 * attempt / retries)
        outcome = _train_candidate(run, data, defaults, report.scaled(*span))
        mnist = outcome.extra["data"]
        estimator = outcome.extra["estimator"]
        counts.update(outcome.version.metadata.get("counts", {}))
        report("evaluating the candidate", span[1])
        candidate_figures = _figures(estimator, mnist, data.holdout, mnist_metrics=outcome.metrics["mnist_test"],
                                     data_source=outcome.version.data_source)
        report("evaluating the active model", span[1])
        if active_estimator is not None:
            active_figures = _figures(active_estimator, mnist, data.holdout, data_source=active.data_source,
                                      cache=active_cache)
        else:  # none, or its file cannot be loaded: only what it was trained on can be compared
            active_figures = None if active is None else {"data_source": active.data_source}
        decision = gate(candidate_figures, active_figures)
        attempts.append({"candidate": outcome.version.pk, "promote": decision["promote"],
                         "reasons": decision["reasons"], "left_out": [c["user"] for c in left_out],
                         "user_train": len(data.train), "holdout": len(data.holdout)})
        metrics = {**outcome.metrics, "holdout": candidate_figures["holdout"]}
        ModelVersion.objects.filter(pk=outcome.version.pk).update(
            metrics=metrics, metadata={**outcome.version.metadata, "gate": decision})
        if decision["promote"] or attempt == retries or active_figures is None:
            break
        report("measuring which accounts drive the failure", span[1])
        culprits, search = find_culprits(estimator, mnist, data.holdout, candidate_figures, active_figures,
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
