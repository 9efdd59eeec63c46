"""A k-NN's training rows in its feature space (KnnRows, knn_rows), and refitting a k-NN on such rows in a
kept feature space (refit_knn): what a retrain does when it can keep the active model's PCA basis and stroke
features (recognizer.training.refit_in_space). recognizer.ml.model imports these names, so they stay
importable from there.

This module does not import recognizer.ml.model (which imports it): refit_knn builds the new model as an
instance of ``previous``'s class, a DigitClassifier."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from .common import check_digit_labels
from .knn import N_CLASSES
from .strokes import StrokeClassifier

__all__ = ["KnnRows", "knn_rows", "refit_knn"]


@dataclass
class KnnRows:
    """Training rows of a k-NN already in its feature space: the image model's (PCA features) or the stroke
    model's (stroke features), with who drew each (-1 MNIST, <= -1000 a pendigits writer, else a user id)
    and which stored drawing it is (-1: not a drawing)."""

    features: np.ndarray
    labels: np.ndarray
    weights: np.ndarray
    groups: np.ndarray
    ids: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def pick(self, mask: ArrayLike) -> KnnRows:
        return KnnRows(self.features[mask], self.labels[mask], self.weights[mask], self.groups[mask], self.ids[mask])

    def __add__(self, other: KnnRows) -> KnnRows:
        return KnnRows(np.concatenate([self.features, other.features]).astype(np.float32),
                       np.concatenate([self.labels, other.labels]).astype(np.int64),
                       np.concatenate([self.weights, other.weights]).astype(np.float32),
                       np.concatenate([self.groups, other.groups]).astype(np.int64),
                       np.concatenate([self.ids, other.ids]).astype(np.int64))


def knn_rows(model) -> KnnRows:
    """A fitted image k-NN's (DigitClassifier) or stroke k-NN's (StrokeClassifier) training rows (models saved
    before rows knew their drawing: ids -1)."""
    n = len(model.train_labels_)
    groups = getattr(model, "train_groups_", None)
    ids = getattr(model, "train_ids_", None)
    weights = model.sample_weight_
    return KnnRows(model.train_features_, model.train_labels_.astype(np.int64),
                   np.ones(n, np.float32) if weights is None else np.asarray(weights, np.float32),
                   np.full(n, -1, np.int64) if groups is None else np.asarray(groups, np.int64),
                   np.full(n, -1, np.int64) if ids is None else np.asarray(ids, np.int64))


def refit_knn(previous, image_rows: KnnRows, stroke_rows: KnnRows | None = None):
    """A k-NN (a DigitClassifier, as ``previous`` is) in ``previous``'s feature space (its PCA and its stroke
    features) with its hyperparameters, trained on rows already in that space: nothing is decoded, featurised
    or projected again.

    The retrain takes the rows of the data sets and of the drawings ``previous`` trained on from it, and
    computes only the drawings that are new to the space (recognizer.training), so its cost grows with the
    new drawings, not with every drawing ever made. The same holds for the neighbour graph of a large model:
    when ``previous``'s rows are the first rows here, a copy of its graph takes only the rows after them
    (``neighbour_index_origin_`` "extended"); otherwise the graph is built anew ("built").
    """
    previous._check()
    if image_rows.features.shape[1:] != previous.train_features_.shape[1:]:
        raise ValueError(f"rows must be in the model's feature space: (n, {previous.train_features_.shape[1]}) "
                         f"features, got {image_rows.features.shape}")
    est = type(previous)(**previous.get_params())
    est.mean_, est.components_ = previous.mean_, previous.components_
    est.train_features_ = np.ascontiguousarray(image_rows.features, dtype=np.float32)
    est.train_sq_ = np.einsum("ij,ij->i", est.train_features_, est.train_features_)
    est.train_labels_ = check_digit_labels(est.train_features_, image_rows.labels).astype(np.uint8)
    est._index_training_rows(previous)
    weights = np.asarray(image_rows.weights, np.float32)
    est.sample_weight_ = None if np.all(weights == 1.0) else weights
    est.train_groups_, est.train_ids_ = image_rows.groups, image_rows.ids
    est.space_user_rows_ = getattr(previous, "space_user_rows_", 0)  # when its PCA basis was fitted
    est.classes_ = np.arange(N_CLASSES)
    est.n_features_in_ = 784
    est.metric_ = getattr(previous, "metric_", None)  # learned in this feature space: it still applies
    est.novelty_distance_ = est._typical_distance()
    est.stroke_model_ = None
    if stroke_rows is not None and len(stroke_rows) and previous.reads_strokes:
        est.attach_stroke_model(_refit_stroke_model(previous.stroke_model_, stroke_rows), previous.stroke_weight_)
    return est


def _refit_stroke_model(old: StrokeClassifier, rows: KnnRows) -> StrokeClassifier:
    """A stroke k-NN with ``old``'s settings on ``rows`` (in its stroke feature space); ``old``'s neighbour graph
    is extended when its rows come first."""
    strokes = StrokeClassifier(n_neighbors=old.n_neighbors, weights=old.weights, **old.feature_params)
    sw = np.asarray(rows.weights, np.float32)
    strokes.fit_features(rows.features, rows.labels, None if np.all(sw == 1.0) else sw, previous=old)
    strokes.train_groups_, strokes.train_ids_ = rows.groups, rows.ids
    return strokes
