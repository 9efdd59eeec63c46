"""Serving: the active model in this process, predicting a drawing (or a number) with it, storing what
users draw, and personalisation (a user's own labelled drawings searched next to the training set).

Every prediction runs through here: the page, the REST API and the `predict` command."""

from __future__ import annotations

import io
import logging
import threading
import time
from dataclasses import dataclass

import numpy as np
from cachetools import LRUCache
from django.conf import settings
from django.core.files.base import ContentFile
from django.db import DatabaseError, transaction
from django.db.models import Count, Max, Q

from recognizer import versions
from recognizer.ml import common as ml_common
from recognizer.ml import numbers as ml_numbers
from recognizer.ml import preprocess as ml_preprocess
from recognizer.ml import store as ml_store
from recognizer.ml import strokes as ml_strokes
from recognizer.models import Drawing, ModelVersion

logger = logging.getLogger(__name__)


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
            estimator = versions.load_estimator(active["file"], active["sha256"])
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

# --- Predicting ------------------------------------------------------------------------------


def is_uncertain(probabilities: list[float], unfamiliar: bool = False) -> bool:
    """recognizer.ml.common.is_unsure with the site's RECOGNIZER_UNSURE_CONFIDENCE and _MARGIN."""
    return ml_common.is_unsure(probabilities, unfamiliar, settings.RECOGNIZER_UNSURE_CONFIDENCE,
                               settings.RECOGNIZER_UNSURE_MARGIN)


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
    result = predict_array(image28, loaded, personal_predict_kwargs(user, loaded), strokes=strokes)
    if store and user is not None and user.is_authenticated:
        result.drawing = store_drawing(user, data, image28, result, strokes=strokes)
    return result


def reads_strokes(estimator) -> bool:
    """Whether a serving model takes the pen strokes (`predict_one(image28, strokes=...)`)."""
    return bool(getattr(estimator, "reads_strokes", False))


def predict_array(image28: np.ndarray, loaded: LoadedModel, predict_kwargs: dict,
                  strokes: list[np.ndarray] | None = None) -> PredictionResult:
    """One preprocessed 28x28 digit through the serving model (`predict_kwargs`: personal_predict_kwargs).

    `strokes` go to the model only when it reads them; any other model is called with the image alone."""
    if strokes and reads_strokes(loaded.estimator):
        prediction = loaded.estimator.predict_one(image28, strokes=strokes, **predict_kwargs)
    else:
        prediction = loaded.estimator.predict_one(image28, **predict_kwargs)
    return prediction_result(prediction, loaded)


def prediction_result(prediction, loaded: LoadedModel) -> PredictionResult:
    """A model's Prediction (recognizer.ml.common) as the site answers it."""
    probabilities = [float(p) for p in prediction.probabilities]
    order = np.argsort(probabilities)[::-1][:2]
    return PredictionResult(
        digit=int(prediction.digit),
        confidence=float(prediction.confidence),
        probabilities=probabilities,
        model_version=loaded.version_id,
        uncertain=is_uncertain(probabilities, prediction.unfamiliar),
        top_two=[{"digit": int(d), "probability": probabilities[d]} for d in order],
        strokes_used=bool(getattr(prediction, "used_strokes", False)),
    )


@dataclass
class NumberDigit:
    result: PredictionResult
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in the uploaded image's pixels
    strokes: list[np.ndarray] | None = None  # this digit's pen strokes, in the uploaded image's pixels


@dataclass
class NumberResult:
    number: str
    digits: list[NumberDigit]
    model_version: int
    uncertain: bool  # a digit is unsure, or how the ink splits into digits is
    segmentation: str = "image"  # "strokes": the digits were grouped from the pen strokes; "image": from the ink
    segmentation_uncertain: bool = False
    alternative: str | None = None  # the second-best reading of the whole number


def predict_number(data: bytes, user=None, *, store: bool = True, strokes: list[np.ndarray] | None = None
                   ) -> NumberResult:
    """Read a drawing of a number digit by digit (recognizer.ml.numbers: grouped by its pen `strokes` when they
    come, else split from the ink); each digit is read as a single drawn digit is, with its own strokes, and a
    logged-in user's digits are each stored as their own Drawing (the digit's crop and its strokes)."""
    check_upload_size(data)
    image = ml_preprocess.decode_image(data, max_pixels=settings.RECOGNIZER_MAX_PIXELS)
    loaded = model_cache.get()
    reading = ml_numbers.read_number(image, strokes, loaded.estimator, **personal_predict_kwargs(user, loaded))
    digits = [NumberDigit(prediction_result(d.prediction, loaded), d.box, d.strokes) for d in reading.digits]
    if store and user is not None and user.is_authenticated:
        with transaction.atomic():
            for digit, read in zip(digits, reading.digits):
                digit.result.drawing = store_drawing(user, read.png(), read.image28, digit.result,
                                                     strokes=read.png_strokes())
    return NumberResult(
        number=reading.number,
        digits=digits,
        model_version=loaded.version_id,
        uncertain=reading.segmentation_uncertain or any(d.result.uncertain for d in digits),
        segmentation=reading.method,
        segmentation_uncertain=reading.segmentation_uncertain,
        alternative=reading.alternative,
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
        # The users who predicted most recently keep their entries; a returning user rebuilds theirs.
        self._cache: LRUCache[int, PersonalEntry] = LRUCache(maxsize=max_users)

    def clear(self) -> None:
        with self.lock:
            self._cache.clear()

    def entry(self, user) -> PersonalEntry | None:
        if settings.RECOGNIZER_PERSONAL_MAX_DRAWINGS <= 0 or user is None or not user.is_authenticated:
            return None
        stamp = tuple(Drawing.objects.filter(user_id=user.pk).aggregate(
            n=Count("id", filter=Q(label__isnull=False)), l=Max("labelled_at"), r=Max("reviewed_at"),
            s=Count("id", filter=Q(status=Drawing.Status.REJECTED))).values())
        if not stamp[0]:
            return None
        with self.lock:
            cached = self._cache.get(user.pk)
        if cached is not None and cached.stamp == stamp:
            return cached if len(cached.labels) else None
        rows = list(Drawing.objects.filter(user_id=user.pk).not_rejected().order_by("-labelled_at", "-id")
                    .values_list("label", "preprocessed", "strokes")[: settings.RECOGNIZER_PERSONAL_MAX_DRAWINGS])
        images = np.stack([ml_preprocess.from_uint8(bytes(p)) for _, p, _s in rows]) if rows \
            else np.empty((0, 28, 28))
        entry = PersonalEntry(stamp, images, np.array([lab for lab, _p, _s in rows], np.int64), {},
                              strokes=[stored_strokes(s) for _lab, _p, s in rows], stroke_features={})
        with self.lock:
            self._cache[user.pk] = entry
        return entry if len(entry.labels) else None

    def get(self, user) -> tuple[np.ndarray, np.ndarray] | None:
        entry = self.entry(user)
        return None if entry is None else (entry.images, entry.labels)


personal_examples = PersonalExamples()


def personal_predict_kwargs(user, loaded=None) -> dict:
    """Keyword arguments for DigitClassifier.predict_one that add the user's own drawings.

    With `loaded` (LoadedModel) their features under that model are cached with them, so a
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



def stored_strokes(raw) -> list | None:
    """A Drawing's stored strokes as arrays (None when it has none or they no longer parse)."""
    if not raw:
        return None
    try:
        return ml_strokes.parse_strokes(raw)
    except ml_strokes.InvalidStrokes:
        return None
