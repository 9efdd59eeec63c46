"""The model kinds the site can train and serve, in one registry, and what a served model offers.

Each kind is one ``ModelKind``: its name (stored as ModelVersion.kind), how it trains, whether it can be
trained on this machine (the CNN needs an optional extra), and what it offers beyond a prediction, so
callers ask ``get_kind(name).stroke_fusion`` instead of comparing names. Whatever the kind, the estimator
it trains offers ``ServingEstimator``: that is all the site may assume of a stored model.

To add a kind: a module with an estimator offering ServingEstimator and a train function returning a
TrainingResult (recognizer.ml.svm is the smallest example), then one entry in ``KINDS``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import ArrayLike

from . import cnn, model, svm
from .common import KindUnavailable, Prediction, TrainingResult

__all__ = ["KINDS", "MODEL_KINDS", "ModelKind", "ServingEstimator", "get_kind", "train_model"]


@runtime_checkable
class ServingEstimator(Protocol):
    """What the site calls on a stored model of any kind (recognizer.serving, .training, .promotion, and
    recognizer.trust for a kind that is not a k-NN); the classes are always the digits 0..9.

    Only the k-NN has the following, so the site probes them with hasattr/getattr: ``transform(X)`` (the
    features that ``extra_features`` are given in), ``stroke_model_`` (its StrokeClassifier, when
    ``reads_strokes``), ``novelty_distance_``, ``train_groups_`` (set by the site: who drew each training
    sample), and the training set that recognizer.trust.image_part reads.
    """

    classes_: np.ndarray

    @property
    def reads_strokes(self) -> bool:
        """Whether the predictions read ``strokes=`` (the pen trajectory: one stroke list per image)."""
        ...

    def predict_one(self, img28: ArrayLike, **extras: Any) -> Prediction:
        """One preprocessed 28x28 image -> Prediction. ``extras``: ``strokes`` when reads_strokes, and the
        personalisation keyword arguments (``extra_X`` or ``extra_features``, ``extra_y``, ``extra_weight``,
        ``extra_stroke_features``, ``extra_stroke_y``), which a kind that cannot use them accepts and ignores."""
        ...

    def predict_proba(self, X: ArrayLike, **extras: Any) -> np.ndarray:
        """(n, 10) probabilities for (n, 28, 28) images in [0, 1]; ``extras`` as predict_one's, per image."""
        ...

    def predict(self, X: ArrayLike, **extras: Any) -> np.ndarray:
        """(n,) digits, predict_proba's most probable."""
        ...


@dataclass(frozen=True)
class ModelKind:
    name: str
    description: str
    trainer: Callable[..., TrainingResult]  # (images, labels, *, progress, cv, sample_weight, defaults, ...)
    estimator_class: type
    # What the kind offers beyond a prediction:
    stroke_fusion: bool = False  # trains on pen strokes too and reads them when predicting (strokes=...)
    leave_out: bool = False  # keeps its training set, so accounts can be left out without training again
    #                          (recognizer.trust; the site records who drew each sample as train_groups_)
    personalises: bool = False  # a user's own drawings (the extra_* keyword arguments) change its answers
    check: Callable[[], object] | None = None  # raises KindUnavailable naming the extra to install

    def unavailable_reason(self) -> str | None:
        """Why this kind cannot be trained here (what to install), or None when it can."""
        try:
            self.require_available()
        except KindUnavailable as exc:
            return str(exc)
        return None

    @property
    def available(self) -> bool:
        return self.unavailable_reason() is None

    def require_available(self) -> None:
        """Raise KindUnavailable (a ValueError) naming what to install, before any work is done."""
        if self.check is not None:
            self.check()

    def train(self, images: ArrayLike, labels: ArrayLike, *, strokes: Sequence[Any] | None = None,
              **kwargs: Any) -> TrainingResult:
        """Train this kind with its trainer's keyword arguments. ``strokes`` (one stroke list or None per
        image) reach a kind with stroke_fusion; any other trains on the images of the same samples."""
        self.require_available()
        if self.stroke_fusion:
            kwargs["strokes"] = strokes
        return self.trainer(images, labels, **kwargs)


KINDS: dict[str, ModelKind] = {k.name: k for k in (
    ModelKind("knn", "k-NN over gradient-direction features (PCA), fused with a stroke k-NN when drawings "
                     "have strokes; the default, and the kind the retrain uses",
              model.train_knn, model.DigitClassifier, stroke_fusion=True, leave_out=True, personalises=True),
    ModelKind("svm", "RBF SVM on deskewed pixels (PCA), temperature-scaled probabilities",
              svm.train_svm, svm.SvmDigitClassifier),
    ModelKind("cnn", f"the Keras-tutorial CNN, trained with JAX (`{cnn.CNN_INSTALL_HINT}`), served with NumPy",
              cnn.train_cnn, cnn.CnnDigitClassifier, check=cnn.require_backend),
)}
MODEL_KINDS: tuple[str, ...] = tuple(KINDS)


def get_kind(name: str) -> ModelKind:
    """The registered kind called ``name``; ValueError naming the known ones otherwise."""
    try:
        return KINDS[name]
    except KeyError:
        raise ValueError(f"unknown model kind {name!r}: one of {', '.join(MODEL_KINDS)}") from None


def train_model(images: ArrayLike, labels: ArrayLike, *, kind: str = "knn", **kwargs: Any) -> TrainingResult:
    """Train a model of ``kind`` (one of MODEL_KINDS): ``get_kind(kind).train(images, labels, **kwargs)``."""
    return get_kind(kind).train(images, labels, **kwargs)
