"""Service functions: the one path that the page, the REST API, the management commands and the
Celery tasks all call. Views and commands stay thin; the machine learning lives in recognizer.ml."""

from __future__ import annotations

import io
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from django.conf import settings
from django.core.files.base import ContentFile
from django.db import DatabaseError, transaction
from django.utils import timezone

from recognizer.ml import cnn as ml_cnn  # no JAX import: only its training does
from recognizer.ml import mnist as ml_mnist
from recognizer.ml import model as ml_model
from recognizer.ml import pendigits as ml_pendigits
from recognizer.ml import preprocess as ml_preprocess
from recognizer.ml import store as ml_store
from recognizer.ml import strokes as ml_strokes
from recognizer.ml.evaluate import canvas_dataset, evaluate
from recognizer.models import Drawing, ModelVersion

logger = logging.getLogger(__name__)

Progress = Callable[[str, float], None]


class NoActiveModel(Exception):
    """No model version is active, or none could be loaded."""


@dataclass
class PredictionResult:
    digit: int
    confidence: float
    probabilities: list[float]
    model_version: int
    uncertain: bool
    top_two: list[dict]
    drawing: Drawing | None = None
    strokes_used: bool = False  # the serving model read the pen strokes too, not only the image


# --- Serving the active model ------------------------------------------------------------------


@dataclass
class LoadedModel:
    version_id: int
    sha256: str
    estimator: object


class ActiveModelCache:
    """Holds this process's in-memory model and swaps it when the database activates another.

    A request takes one reference to a LoadedModel and uses only that, so a swap between requests
    never mixes two models inside one answer. The database is asked at most every
    RECOGNIZER_MODEL_CHECK_SECONDS; a version that fails to load leaves the previous one serving, is
    logged once, and is not read (nor hashed) again until another version becomes active or
    RECOGNIZER_MODEL_RETRY_SECONDS have passed (a file restored in place is picked up then).

    `last_error` is for staff and the logs (it may name files); `public_error` is what anyone may read.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loaded: LoadedModel | None = None
        self._checked_at = 0.0
        self._failed: tuple[int, str] | None = None  # (version id, sha256) that would not load
        self._failed_at = 0.0
        self.last_error: str = ""
        self.public_error: str = ""

    def clear(self) -> None:
        with self._lock:
            self._loaded = None
            self._checked_at = 0.0
            self._failed = None
            self._failed_at = 0.0
            self.last_error = ""
            self.public_error = ""

    def get(self) -> LoadedModel:
        now = time.monotonic()
        loaded = self._loaded
        if loaded is not None and now - self._checked_at < settings.RECOGNIZER_MODEL_CHECK_SECONDS:
            return loaded
        with self._lock:
            if self._loaded is not None and time.monotonic() - self._checked_at < settings.RECOGNIZER_MODEL_CHECK_SECONDS:
                return self._loaded
            self._refresh()
            self._checked_at = time.monotonic()
            if self._loaded is None:
                raise NoActiveModel(self.public_error or NO_MODEL_YET)
            return self._loaded

    def _refresh(self) -> None:
        try:
            active = ModelVersion.objects.filter(is_active=True).values("id", "file", "sha256").first()
        except DatabaseError as exc:
            # A database restart must not stop predictions: keep serving what is loaded.
            self.last_error = f"The database could not be asked for the active model: {exc}"
            self.public_error = "The database cannot be reached."
            logger.warning("%s", self.last_error)
            return
        if active is None:
            if self._loaded is None:
                self.last_error = self.public_error = NO_MODEL_YET
            return
        if self._loaded is not None and self._loaded.version_id == active["id"]:
            # Back to the serving version (a rollback, the database is back): a broken version activated
            # again later is tried again.
            self._failed = None
            self.last_error = self.public_error = ""
            return
        wanted = (active["id"], active["sha256"])
        if self._failed == wanted and time.monotonic() - self._failed_at < settings.RECOGNIZER_MODEL_RETRY_SECONDS:
            return  # known broken: neither hashed nor logged again
        try:
            estimator = ml_store.load_model(model_path(active["file"]), expected_sha256=active["sha256"])
        except (ml_store.CorruptModelError, OSError) as exc:
            self.last_error = f"Model v{active['id']} could not be loaded: {exc}"
            self.public_error = f"Model v{active['id']} could not be loaded."
            if self._failed != wanted:
                logger.error("%s; %s", self.last_error,
                             "keeping the previous model" if self._loaded else "no model to serve")
            self._failed, self._failed_at = wanted, time.monotonic()
            return
        self._loaded = LoadedModel(version_id=active["id"], sha256=active["sha256"], estimator=estimator)
        self._failed = None
        self.last_error = self.public_error = ""
        logger.info("Serving model v%s", active["id"])

    @property
    def serving_version(self) -> int | None:
        loaded = self._loaded
        return loaded.version_id if loaded else None


NO_MODEL_YET = "No model is active yet: run `python manage.py train_model`."

model_cache = ActiveModelCache()


def model_path(relative: str) -> Path:
    return Path(settings.MEDIA_ROOT) / relative


# --- Predicting and labelling ------------------------------------------------------------------


def is_uncertain(probabilities: list[float], unfamiliar: bool = False) -> bool:
    """Unsure when the best digit is weak, the runner-up is close behind it, or the drawing is far
    from every digit the model knows (a scribble can still win a confident vote)."""
    best, second = sorted(probabilities, reverse=True)[:2]
    return (unfamiliar or best < settings.RECOGNIZER_UNSURE_CONFIDENCE
            or best - second < settings.RECOGNIZER_UNSURE_MARGIN)


def check_upload_size(data: bytes) -> None:
    if len(data) > settings.RECOGNIZER_MAX_UPLOAD_BYTES:
        raise ml_preprocess.ImageTooLarge(
            f"The image is {len(data)} bytes; the limit is {settings.RECOGNIZER_MAX_UPLOAD_BYTES} bytes."
        )


def preprocess_upload(data: bytes) -> np.ndarray:
    """Decode and bring an uploaded drawing into the MNIST frame (raises ml_preprocess.DrawingError)."""
    check_upload_size(data)
    return ml_preprocess.preprocess_drawing(data, max_pixels=settings.RECOGNIZER_MAX_PIXELS)


def predict_image(data: bytes, user=None, *, store: bool = True, strokes: list[np.ndarray] | None = None
                  ) -> PredictionResult:
    """Predict the digit in an uploaded drawing; a logged-in user's drawing is stored with the answer
    (`store=False`: the page's live previews while drawing, answered the same way but not kept).

    `strokes`: the pen trajectories drawn with it, already validated by recognizer.ml.strokes.parse_strokes
    (None: the image alone). A serving model that reads strokes uses them; they are stored either way."""
    image28 = preprocess_upload(data)
    loaded = model_cache.get()
    result = predict_array(image28, loaded, personal_kwargs(user, loaded), strokes=strokes)
    if store and user is not None and user.is_authenticated:
        result.drawing = store_drawing(user, data, image28, result, strokes=strokes)
    return result


def personal_kwargs(user, loaded: LoadedModel) -> dict:
    from recognizer.training import personal_predict_kwargs  # the feedback loop imports this module

    # A logged-in user's own labelled drawings are searched too: a correction counts at once, for them only.
    return personal_predict_kwargs(user, loaded)


def reads_strokes(estimator) -> bool:
    """Whether a serving model takes the pen strokes (`predict_one(image28, strokes=...)`)."""
    return bool(getattr(estimator, "reads_strokes", False))


def predict_array(image28: np.ndarray, loaded: LoadedModel, predict_kwargs: dict,
                  strokes: list[np.ndarray] | None = None) -> PredictionResult:
    """One preprocessed 28x28 digit through the serving model (`predict_kwargs`: personal_kwargs).

    `strokes` go to the model only when it reads them; any other model is called with the image alone."""
    if strokes and reads_strokes(loaded.estimator):
        prediction = loaded.estimator.predict_one(image28, strokes=strokes, **predict_kwargs)
    else:
        prediction = loaded.estimator.predict_one(image28, **predict_kwargs)
    probabilities = [float(p) for p in prediction.probabilities]
    order = np.argsort(probabilities)[::-1][:2]
    result = PredictionResult(
        digit=int(prediction.digit),
        confidence=float(prediction.confidence),
        probabilities=probabilities,
        model_version=loaded.version_id,
        uncertain=is_uncertain(probabilities, prediction.unfamiliar),
        top_two=[{"digit": int(d), "probability": probabilities[d]} for d in order],
        strokes_used=bool(getattr(prediction, "used_strokes", False)),
    )
    return result


@dataclass
class NumberDigit:
    result: PredictionResult
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in the uploaded image's pixels


@dataclass
class NumberResult:
    number: str
    digits: list[NumberDigit]
    model_version: int
    uncertain: bool


def predict_number(data: bytes, user=None, *, store: bool = True) -> NumberResult:
    """Split a drawing of a number into digits (recognizer.ml.segment) and predict each one as a single
    drawn digit; a logged-in user's digits are each stored as their own Drawing (the digit's crop)."""
    from recognizer.ml import segment as ml_segment

    check_upload_size(data)
    image = ml_preprocess.decode_image(data, max_pixels=settings.RECOGNIZER_MAX_PIXELS)
    pieces = []
    for segment in ml_segment.split_number(image):
        try:
            pieces.append((segment, ml_segment.segment_image28(segment)))
        except ml_preprocess.EmptyDrawing:
            continue  # a dot next to the digits
    if not pieces:
        raise ml_preprocess.EmptyDrawing("that is only dots, not a number: draw bigger digits")
    loaded = model_cache.get()
    kwargs = personal_kwargs(user, loaded)
    digits = [NumberDigit(predict_array(image28, loaded, kwargs), segment.box) for segment, image28 in pieces]
    if store and user is not None and user.is_authenticated:
        with transaction.atomic():
            for digit, (segment, image28) in zip(digits, pieces):
                digit.result.drawing = store_drawing(user, segment.png(), image28, digit.result)
    return NumberResult(
        number="".join(str(d.result.digit) for d in digits),
        digits=digits,
        model_version=loaded.version_id,
        uncertain=any(d.result.uncertain for d in digits),
    )


def store_drawing(user, data: bytes, image28: np.ndarray, result: PredictionResult,
                  strokes: list[np.ndarray] | None = None) -> Drawing:
    drawing = Drawing(
        user=user,
        preprocessed=ml_preprocess.to_uint8(image28),
        predicted_digit=result.digit,
        confidence=result.confidence,
        probabilities=result.probabilities,
        model_version_id=result.model_version,
        strokes=ml_strokes.strokes_to_json(strokes) if strokes else None,
    )
    drawing.image.save("drawing.png", ContentFile(as_png(data)), save=False)
    drawing.save()
    return drawing


PNG_MODES = {"1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA"}


def as_png(data: bytes) -> bytes:
    """Store every drawing as PNG whatever format it came in, so it can be served as one type."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return data
    image = ml_preprocess.decode_image(data, max_pixels=settings.RECOGNIZER_MAX_PIXELS)
    if image.mode not in PNG_MODES:  # e.g. a CMYK JPEG
        image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def label_drawing(drawing: Drawing, label: int) -> Drawing:
    """The owner (or staff) says which digit the drawing really is."""
    if not 0 <= int(label) <= 9:
        raise ValueError("A label is a digit from 0 to 9.")
    drawing.label = int(label)
    drawing.labelled_at = timezone.now()
    drawing.save(update_fields=["label", "labelled_at"])
    from recognizer.tasks import request_threshold_check  # tasks imports training, which imports this module

    # Enough new trusted drawings start a retrain before the nightly one. A worker counts them, after
    # this transaction commits: the labelling request makes no count, and at most one broker call a window.
    transaction.on_commit(request_threshold_check)
    return drawing


# --- Training and the model store --------------------------------------------------------------


def mnist_directory() -> Path:
    """MNIST_DIR when set, otherwise where fetch_mnist downloads to."""
    if settings.MNIST_DIR:
        return Path(settings.MNIST_DIR)
    return Path(settings.RECOGNIZER_DATA_DIR) / "mnist"


def pendigits_path() -> Path | None:
    """PENDIGITS_DIR when set, otherwise where fetch_pendigits downloads to if the file is there."""
    from recognizer.ml.pendigits import PENDIGITS_FILE

    if settings.PENDIGITS_DIR:
        return Path(settings.PENDIGITS_DIR)
    fetched = Path(settings.RECOGNIZER_DATA_DIR) / "pendigits"
    return fetched if (fetched / PENDIGITS_FILE).is_file() else None


@dataclass
class TrainingOutcome:
    version: ModelVersion
    metrics: dict
    warning: str = ""
    activated: bool = False
    extra: dict = field(default_factory=dict)


@dataclass
class ExtraTrainingData:
    """Samples trained on next to MNIST: float images in [0, 1], labels, who drew them, their vote weight,
    and their pen strokes (one stroke list or None per sample) for the stroke model."""

    images: np.ndarray
    labels: np.ndarray
    groups: np.ndarray
    weight: float = 1.0
    metadata: dict = field(default_factory=dict)
    strokes: list | None = None


def pen_warm_start(progress: Progress | None = None) -> tuple["ExtraTrainingData | None", str]:
    """(the pendigits training writers replayed as canvas drawings, or None; why not, when None)."""
    if not settings.RECOGNIZER_PEN_WARM_START:
        return None, "the pen-data warm start is off (RECOGNIZER_PEN_WARM_START)"
    path = pendigits_path()
    if path is None or not (path if path.is_file() else path / "pendigits-orig.tra").is_file():
        return None, ("no pen data: this model trained on MNIST alone and will read canvas drawings less well "
                      "(run `manage.py fetch_pendigits` or set PENDIGITS_DIR)")
    from recognizer.ml import warmstart as ml_warmstart

    pen = ml_warmstart.pen_training_set(
        path, cache_dir=Path(settings.RECOGNIZER_DATA_DIR) / "cache",
        progress=(lambda f: progress("rendering the pen data", 0.05 * f)) if progress else None)
    groups = np.array([ml_warmstart.writer_group(w) for w in pen.writers], np.int64)
    return ExtraTrainingData(images=pen.images, labels=pen.labels, groups=groups, strokes=pen.strokes,
                             metadata=pen.metadata), ""


def evaluation_metrics(estimator, data: ml_mnist.MnistData, progress: Progress | None = None,
                       seen_writers=()) -> dict:
    """The figures recorded with every model: MNIST test, and canvas drawings when pendigits is there
    (the writers the model did not train on; when it saw them all, marked so: not an unseen-writer figure)."""
    metrics = {"mnist_test": evaluate(estimator, data.test_images / 255.0, data.test_labels)}
    pendigits = pendigits_path()
    if pendigits is not None and pendigits.exists():
        if progress:
            progress("evaluating on canvas drawings", 0.95)
        digits = ml_pendigits.load_pendigits(pendigits)
        unseen = [d for d in digits if d.writer not in set(seen_writers)]
        pool = unseen or digits
        if len(pool) > 2000:  # the same 2,000 every time, so versions compare
            pick = np.sort(np.random.default_rng(0).choice(len(pool), size=2000, replace=False))
            pool = [pool[i] for i in pick]
        X, y, _writers = canvas_dataset(pool, seed=0)
        kw = {"strokes": [d.strokes for d in pool]} if getattr(estimator, "reads_strokes", False) else {}
        metrics["canvas"] = evaluate(estimator, X, y, **kw)
        metrics["canvas"]["writers_seen_in_training"] = not unseen
    return metrics


def train_new_model(
    *, limit: int = 0, activate: bool | None = None, cv: bool = True, progress: Progress | None = None,
    extra: "ExtraTrainingData | None" = None, defaults: dict | None = None, kind: str = "knn",
) -> TrainingOutcome:
    """Train on MNIST (or the loud fallback) plus `extra` samples, evaluate, store the file, and
    register the version. The retrain (recognizer.training) passes the trusted user drawings as `extra`.

    `activate=None` activates the new version only when no version is active yet. `kind` is one of
    recognizer.ml.model.MODEL_KINDS ("knn", the one the retrain uses, or "svm").
    """
    if kind not in ml_model.MODEL_KINDS:
        raise ValueError(f"unknown model kind {kind!r}: one of {', '.join(ml_model.MODEL_KINDS)}")
    if kind == "cnn":  # the optional extra: refused (ValueError naming requirements-cnn.txt) before any work
        ml_cnn.require_backend()
    data = ml_mnist.load_training_data(mnist_directory())
    warning = getattr(data, "warning", "") or ""
    images, labels = data.train_images, data.train_labels
    if limit:
        images, labels = images[:limit], labels[:limit]
    images = images / 255.0
    counts = {"mnist_train": int(len(labels)), "mnist_test": int(len(data.test_labels))}
    pen, pen_warning = pen_warm_start(progress)
    if pen_warning:
        warning = f"{warning}\n{pen_warning}".strip()
    if pen is not None:
        counts["pen_train"] = int(len(pen.labels))
    parts = [p for p in (pen, extra) if p is not None and len(p.labels)]
    n_mnist = len(labels)
    weights = groups = strokes = None
    if parts:
        images = np.concatenate([images] + [p.images for p in parts])
        labels = np.concatenate([labels] + [p.labels for p in parts]).astype(np.int64)
        weights = np.concatenate([np.ones(n_mnist, np.float32)]
                                 + [np.full(len(p.labels), p.weight, np.float32) for p in parts])
        groups = np.concatenate([np.full(n_mnist, -1, np.int64)] + [np.asarray(p.groups, np.int64) for p in parts])
        strokes = [None] * n_mnist
        for p in parts:
            strokes += list(p.strokes) if p.strokes is not None else [None] * len(p.labels)
    if extra is not None and len(extra.labels):
        counts["user_train"] = int(len(extra.labels))
    train_progress = progress
    if progress is not None and pen is not None:  # the first 5% went to rendering the pen data
        def train_progress(stage, fraction):
            progress(stage, 0.05 + 0.95 * fraction)
    result = ml_model.train_model(images, labels, progress=train_progress, cv=cv, sample_weight=weights,
                                  defaults=defaults, kind=kind, strokes=strokes if kind == "knn" else None)
    if groups is not None and kind == "knn":
        # Who drew each training sample (-1 = MNIST): lets label ranking leave a user's own drawings out.
        result.estimator.train_groups_ = groups
        if result.estimator.reads_strokes:
            with_strokes = [i for i, s in enumerate(strokes) if s is not None and len(s)]
            result.estimator.stroke_model_.train_groups_ = groups[with_strokes]
    metrics = evaluation_metrics(result.estimator, data, progress,
                                 seen_writers=pen.metadata["pendigits_writers"] if pen is not None else ())
    metadata = {
        "data_source": data.source,
        "data_warning": warning,
        # Exactly which pendigits writers the model saw (none: trained without pen data).
        "pen_data": pen.metadata if pen is not None else None,
        "counts": counts,
        "hyperparameters": result.hyperparameters,
        "cv_curve": result.cv_curve,
        "train_seconds": result.train_seconds,
        "metrics": metrics,
        **(extra.metadata if extra is not None else {}),
    }
    if progress:
        progress("saving", 0.98)
    saved = ml_store.save_model(result.estimator, metadata, Path(settings.RECOGNIZER_MODEL_DIR))
    version = register_model(saved, kind=kind, data_source=data.source, metrics=metrics)
    if activate is None:
        activate = not ModelVersion.objects.filter(is_active=True).exists()
    if activate:
        activate_version(version)
    return TrainingOutcome(version=version, metrics=metrics, warning=warning, activated=activate,
                           extra={"data": data, "estimator": result.estimator})


def register_model(saved: "ml_store.SavedModel", *, kind: str, data_source: str, metrics: dict) -> ModelVersion:
    relative = Path(saved.path).resolve().relative_to(Path(settings.MEDIA_ROOT).resolve())
    return ModelVersion.objects.create(
        kind=kind,
        file=str(relative),
        sha256=saved.sha256,
        data_source=data_source,
        metadata=saved.metadata,
        metrics=metrics,
    )


def activate_version(version: ModelVersion) -> ModelVersion:
    """Point the site at a version in one transaction; the file is verified (whole, unchanged) first."""
    ml_store.verify_model(model_path(version.file), expected_sha256=version.sha256)
    with transaction.atomic():
        ModelVersion.objects.select_for_update().filter(is_active=True).exclude(pk=version.pk).update(is_active=False)
        ModelVersion.objects.filter(pk=version.pk).update(is_active=True, activated_at=timezone.now())
    version.refresh_from_db()
    return version
