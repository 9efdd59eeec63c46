"""The recognizer's settings in six groups, each read and checked once from the environment.

Every group is a frozen dataclass whose field defaults are the site's defaults; ``from_env(environ)`` reads
its ``RECOGNIZER_*`` variables and refuses a value it cannot use with a ``SettingsError`` that names the
variable, what it got and what is allowed. base.py builds each group once and copies its fields to the flat
Django settings (``RECOGNIZER_UNSURE_CONFIDENCE`` ...) that the code and the tests read.

``Env`` is the one reader of the environment for every settings module (the Django and Celery variables too).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
_RATE = re.compile(r"[0-9]+/[smhd][a-z]*")  # what rest_framework's throttles parse: 60/minute, 20/hour, 5/s
RETRAIN_KINDS = ("knn", "svm", "cnn")  # recognizer.ml.kinds.MODEL_KINDS (a test keeps the two the same)


class SettingsError(ImproperlyConfigured, ValueError):
    """A variable of the environment has a value the site cannot use; the message names it. Django's own error for
    settings, as the rest of the settings raised before the groups."""


def _bounds(minimum: float | None, maximum: float | None) -> str:
    if minimum is not None and maximum is not None:
        return f" between {minimum:g} and {maximum:g}"
    if minimum is not None:
        return f" of at least {minimum:g}"
    return f" of at most {maximum:g}" if maximum is not None else ""


class Env:
    """Typed reads of one environment. A blank number means its default; a blank boolean is false."""

    def __init__(self, environ: Mapping[str, str]):
        self.environ = environ

    def text(self, name: str, default: str = "") -> str:
        return self.environ.get(name, default)

    def boolean(self, name: str, default: bool) -> bool:
        raw = self.environ.get(name)
        if raw is None:
            return default
        if raw.strip().lower() in _TRUE | _FALSE:
            return raw.strip().lower() in _TRUE
        raise SettingsError(f'{name} must be a boolean (1/0, true/false, yes/no, on/off), got "{raw}"')

    def integer(self, name: str, default: int, minimum: int | None = None) -> int:
        raw = self.environ.get(name)
        if raw is None or not raw.strip():
            return default
        try:
            value = int(raw)
        except ValueError:
            value = None
        if value is None or (minimum is not None and value < minimum):
            raise SettingsError(f'{name} must be a whole number{_bounds(minimum, None)}, got "{raw}"')
        return value

    def number(self, name: str, default: float, minimum: float | None = None, maximum: float | None = None) -> float:
        raw = self.environ.get(name)
        if raw is None or not raw.strip():
            return default
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or (minimum is not None and value < minimum) or (
                maximum is not None and value > maximum):
            raise SettingsError(f'{name} must be a number{_bounds(minimum, maximum)}, got "{raw}"')
        return value

    def items(self, name: str, default: list[str]) -> list[str]:
        """A comma-separated list; blank items are dropped."""
        raw = self.environ.get(name)
        if raw is None:
            return default
        return [item.strip() for item in raw.split(",") if item.strip()]

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.environ.get(name, default)
        if value not in choices:
            raise SettingsError(f'{name} must be one of {", ".join(choices)}, got "{value}"')
        return value

    def rate(self, name: str, default: str) -> str:
        value = self.environ.get(name, default)
        if not _RATE.fullmatch(value):
            raise SettingsError(f"{name} must be a number of requests per second, minute, hour or day "
                                f'(e.g. 60/minute or 20/hour), got "{value}"')
        return value

    def cron(self, name: str, default: str) -> str:
        """A cron line of five fields, checked as Celery beat will read it."""
        value = self.environ.get(name, default)
        if len(value.split()) != 5:
            raise SettingsError(f'{name} must be a cron line of five fields (e.g. "0 3 * * *"), got "{value}"')
        try:
            cron_schedule(value)
        except ValueError as exc:
            raise SettingsError(f'{name} must be a valid cron line (e.g. "0 3 * * *"), got "{value}" ({exc})') from None
        return value


def cron_schedule(line: str):
    """Celery beat's schedule for a cron line of five fields (minute hour day-of-month month day-of-week)."""
    from celery.schedules import crontab

    minute, hour, day_of_month, month_of_year, day_of_week = line.split()
    return crontab(minute=minute, hour=hour, day_of_month=day_of_month, month_of_year=month_of_year,
                   day_of_week=day_of_week)


@dataclass(frozen=True)
class StorageSettings:
    """Where the data sets, the downloads and the model files are."""

    # Where MNIST is read from (fetch_mnist downloads into data_dir/mnist when mnist_dir is blank) and the
    # caches are kept (default: data/ next to the code).
    data_dir: Path
    mnist_dir: str = ""
    pendigits_dir: str = ""
    # Model files are read and written through Django's storage API (recognizer/modelfiles.py). Blank: a
    # FileSystemStorage at MEDIA_ROOT/models, read in place (a volume every machine mounts). s3://bucket/prefix
    # ?endpoint_url=... keeps them in a bucket through django-storages (the URL is checked, and made a STORAGES
    # entry, by digitsite.env.model_storage_from_url); each machine then loads verified copies from
    # model_cache_dir (blank: data_dir/model-cache).
    model_storage_url: str = ""
    model_cache_dir: str = ""

    @classmethod
    def from_env(cls, environ: Mapping[str, str], base_dir: Path) -> StorageSettings:
        env = Env(environ)
        return cls(
            data_dir=Path(env.text("RECOGNIZER_DATA_DIR", str(base_dir / "data"))),
            mnist_dir=env.text("MNIST_DIR", cls.mnist_dir),
            pendigits_dir=env.text("PENDIGITS_DIR", cls.pendigits_dir),
            model_storage_url=env.text("RECOGNIZER_MODEL_STORAGE_URL", cls.model_storage_url),
            model_cache_dir=env.text("RECOGNIZER_MODEL_CACHE_DIR", cls.model_cache_dir),
        )


@dataclass(frozen=True)
class ServingSettings:
    """How a drawing is answered: uploads, the unsure answer, personal drawings, and the served model."""

    # Below this confidence, or with the two best digits this close, the answer is "unsure".
    unsure_confidence: float = 0.6
    unsure_margin: float = 0.15
    max_upload_bytes: int = 2 * 1024 * 1024
    max_pixels: int = 4096 * 4096
    # Vote weight of a user's own drawings (at most this many) searched alongside the training set.
    personal_weight: float = 3.0
    personal_max_drawings: int = 200
    # How often a web worker checks the database for a newly activated model version (seconds).
    model_check_seconds: float = 2.0
    # A model file that fails to load is not read again before this many seconds (unless another version
    # becomes active): a corrupt file is not re-hashed, and logged, at every check.
    model_retry_seconds: float = 600.0
    # How long an Idempotency-Key on POST /api/v1/predict returns the first answer (recognizer/idempotency.py).
    idempotency_seconds: int = 24 * 3600

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> ServingSettings:
        env = Env(environ)
        return cls(
            unsure_confidence=env.number("RECOGNIZER_UNSURE_CONFIDENCE", cls.unsure_confidence, 0, 1),
            unsure_margin=env.number("RECOGNIZER_UNSURE_MARGIN", cls.unsure_margin, 0, 1),
            max_upload_bytes=env.integer("RECOGNIZER_MAX_UPLOAD_BYTES", cls.max_upload_bytes, minimum=1024),
            max_pixels=env.integer("RECOGNIZER_MAX_PIXELS", cls.max_pixels, minimum=28 * 28),
            personal_weight=env.number("RECOGNIZER_PERSONAL_WEIGHT", cls.personal_weight, minimum=0),
            personal_max_drawings=env.integer("RECOGNIZER_PERSONAL_MAX_DRAWINGS", cls.personal_max_drawings, minimum=0),
            model_check_seconds=env.number("RECOGNIZER_MODEL_CHECK_SECONDS", cls.model_check_seconds, minimum=0),
            model_retry_seconds=env.number("RECOGNIZER_MODEL_RETRY_SECONDS", cls.model_retry_seconds, minimum=0),
            idempotency_seconds=env.integer("RECOGNIZER_IDEMPOTENCY_SECONDS", cls.idempotency_seconds, minimum=1),
        )


@dataclass(frozen=True)
class ThrottleSettings:
    """Requests allowed per client, as REST_FRAMEWORK's DEFAULT_THROTTLE_RATES."""

    anon_predict: str = "60/minute"
    user_predict: str = "600/minute"
    login: str = "10/minute"
    export: str = "20/hour"

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> ThrottleSettings:
        env = Env(environ)
        return cls(
            anon_predict=env.rate("RECOGNIZER_ANON_PREDICT_RATE", cls.anon_predict),
            user_predict=env.rate("RECOGNIZER_USER_PREDICT_RATE", cls.user_predict),
            login=env.rate("RECOGNIZER_LOGIN_RATE", cls.login),
            export=env.rate("RECOGNIZER_EXPORT_RATE", cls.export),
        )

    def rates(self) -> dict[str, str]:
        """The throttle scopes (recognizer/api/throttles.py) and their rates."""
        return {field.name: getattr(self, field.name) for field in fields(self)}


@dataclass(frozen=True)
class FeedbackSettings:
    """Which users' labels train, and the defences against one bad account (recognizer/feedback, /trust)."""

    # Off in development: an owner's label is trusted unless staff reject it.
    require_review: bool = False
    # A label is suspicious when the chance that it is wrong (out-of-sample model, other accounts' labels of
    # similar drawings, the account's trust) is at least this; suspicious labels of an account whose trust is
    # below trust_threshold stay out of the global model until staff approve them (issue 10, bench/poisoning.py).
    suspicion_threshold: float = 0.5
    trust_threshold: float = 0.8
    # One account supplies at most this share of a digit's user drawings in training (and in the held-out
    # set), or this many drawings of it when that is more (a small site's first users are not starved).
    user_class_share: float = 0.25
    user_class_floor: int = 30
    # Share of users whose trusted drawings are never trained on (the validation set of the canvas); each
    # digit users drew has at least holdout_min_per_digit held-out drawings (taken from training users by a
    # per-digit user split when the held-out users drew fewer).
    holdout_share: float = 0.2
    holdout_min_per_digit: int = 10

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> FeedbackSettings:
        env = Env(environ)
        return cls(
            require_review=env.boolean("RECOGNIZER_REQUIRE_REVIEW", cls.require_review),
            suspicion_threshold=env.number("RECOGNIZER_SUSPICION_THRESHOLD", cls.suspicion_threshold, 0, 1),
            trust_threshold=env.number("RECOGNIZER_TRUST_THRESHOLD", cls.trust_threshold, 0, 1),
            user_class_share=env.number("RECOGNIZER_USER_CLASS_SHARE", cls.user_class_share, 0, 1),
            user_class_floor=env.integer("RECOGNIZER_USER_CLASS_FLOOR", cls.user_class_floor, minimum=1),
            holdout_share=env.number("RECOGNIZER_HOLDOUT_SHARE", cls.holdout_share, 0, 1),
            holdout_min_per_digit=env.integer("RECOGNIZER_HOLDOUT_MIN_PER_DIGIT", cls.holdout_min_per_digit, minimum=1),
        )


@dataclass(frozen=True)
class RetrainSettings:
    """When the site trains a model, what it trains on, and how a retrain runs on the workers."""

    # A retrain starts once this many new trusted drawings are there, and on the schedule (cron, UTC).
    after: int = 200
    schedule: str = "0 3 * * *"
    # A label asks a Celery worker to count the new trusted drawings (and start a retrain past `after`) this
    # many seconds later, at most once per such window (0: at once, every label).
    check_delay: int = 30
    # The model kind the retrain trains: knn (instant personalisation, seconds to retrain), svm, or cnn (needs
    # `pip install -r requirements-cnn.txt` on the Celery workers; web workers serve a CNN without it).
    kind: str = "knn"
    # Training-size cap for the first model the quickstart trains (0 = all of MNIST).
    train_limit: int = 0
    # Train on the pendigits training writers' trajectories replayed as canvas drawings next to MNIST (the
    # canvas-domain warm start) when the file is there; their renderings are cached under data_dir/cache.
    pen_warm_start: bool = True
    # Vote weight of a user drawing next to an MNIST digit in the retrained k-NN. Measured with
    # bench/feedback_loop.py (60k MNIST + 4.1k drawings of 17 writers): weight 1 gave +3.5 canvas points on
    # unseen writers and +0.04 MNIST; 3 and 10 gave +2.9 and -0.24 (cross-validation then picks k=1). k-NN
    # needs no up-weighting: a canvas query lands next to the user drawings however many MNIST digits there are.
    user_sample_weight: float = 1.0
    # Cross-validate k and the PCA size when a retrain trains from scratch (False reuses the active model's
    # choice); an incremental retrain keeps the active model's.
    cross_validate: bool = True
    # Keep the active k-NN's feature space and hyperparameters when it trained on the same data sets, and
    # featurise only drawings new to it (recognizer.training.refit_in_space); false: every retrain from scratch.
    # A retrain starts from scratch anyway (new PCA basis, cross-validation) once the user drawings are more than
    # twice as many as when the space was fitted, or when they bring strokes and the active model reads none.
    incremental: bool = True
    # A queued or running retrain whose heartbeat is older than this (seconds) is dead and marked failed.
    lock_timeout: int = 600
    # A retrain run by a Celery worker sends the label ranking's per-drawing work (decoding, features,
    # out-of-sample probabilities) to all the workers, in parts of part_size drawings, once at least spread_min
    # drawings need it (after a promotion: every drawing; 0: never). `manage.py retrain` runs in one process.
    spread_min: int = 20000
    part_size: int = 2000

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> RetrainSettings:
        env = Env(environ)
        return cls(
            after=env.integer("RECOGNIZER_RETRAIN_AFTER", cls.after, minimum=1),
            schedule=env.cron("RECOGNIZER_RETRAIN_SCHEDULE", cls.schedule),
            check_delay=env.integer("RECOGNIZER_RETRAIN_CHECK_DELAY", cls.check_delay, minimum=0),
            kind=env.choice("RECOGNIZER_RETRAIN_KIND", cls.kind, RETRAIN_KINDS),
            train_limit=env.integer("RECOGNIZER_TRAIN_LIMIT", cls.train_limit, minimum=0),
            pen_warm_start=env.boolean("RECOGNIZER_PEN_WARM_START", cls.pen_warm_start),
            user_sample_weight=env.number("RECOGNIZER_USER_SAMPLE_WEIGHT", cls.user_sample_weight, minimum=0),
            cross_validate=env.boolean("RECOGNIZER_RETRAIN_CV", cls.cross_validate),
            incremental=env.boolean("RECOGNIZER_RETRAIN_INCREMENTAL", cls.incremental),
            lock_timeout=env.integer("RECOGNIZER_RETRAIN_LOCK_TIMEOUT", cls.lock_timeout, minimum=5),
            spread_min=env.integer("RECOGNIZER_RETRAIN_SPREAD_MIN", cls.spread_min, minimum=0),
            part_size=env.integer("RECOGNIZER_RETRAIN_PART_SIZE", cls.part_size, minimum=1),
        )


@dataclass(frozen=True)
class GateSettings:
    """When a retrained candidate replaces the active model (recognizer/promotion.py)."""

    # The candidate replaces the active model only if it is no worse than this (accuracy, 0.003 = 0.3 points)
    # on the MNIST test set, and than the second on held-out users.
    promotion_tolerance: float = 0.003
    holdout_tolerance: float = 0.01
    # Per digit: a digit's MNIST test accuracy may drop by this much; its held-out accuracy by the second, and
    # only when that loses at least holdout_digit_min_lost drawings.
    digit_tolerance: float = 0.02
    holdout_digit_tolerance: float = 0.05
    holdout_digit_min_lost: int = 2
    # The gate judges candidates on at most this many held-out drawings (at most a tenth of it per digit;
    # 0: all of them), so a retrain's evaluation stops growing with the drawings users made.
    holdout_max: int = 10000
    # A refused candidate is trained again without the accounts that drive the failure (measured by leaving
    # each out), at most this many times, leaving out at most max_left_out accounts each.
    retries: int = 2
    max_left_out: int = 3

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> GateSettings:
        env = Env(environ)
        return cls(
            promotion_tolerance=env.number("RECOGNIZER_PROMOTION_TOLERANCE", cls.promotion_tolerance, 0, 1),
            holdout_tolerance=env.number("RECOGNIZER_HOLDOUT_TOLERANCE", cls.holdout_tolerance, 0, 1),
            digit_tolerance=env.number("RECOGNIZER_DIGIT_TOLERANCE", cls.digit_tolerance, 0, 1),
            holdout_digit_tolerance=env.number("RECOGNIZER_HOLDOUT_DIGIT_TOLERANCE", cls.holdout_digit_tolerance, 0, 1),
            holdout_digit_min_lost=env.integer("RECOGNIZER_HOLDOUT_DIGIT_MIN_LOST", cls.holdout_digit_min_lost, minimum=1),
            holdout_max=env.integer("RECOGNIZER_GATE_HOLDOUT_MAX", cls.holdout_max, minimum=0),
            retries=env.integer("RECOGNIZER_GATE_RETRIES", cls.retries, minimum=0),
            max_left_out=env.integer("RECOGNIZER_MAX_LEFT_OUT", cls.max_left_out, minimum=1),
        )
