"""The names cached evidence is kept under: the feature space drawings are searched in (feature_space_id),
the fitted model whose votes they are (model_id), and what the kept training lists' row keys mean
(training_rows_digest). Evidence kept under another name is searched again, never mixed with new."""

from __future__ import annotations

import hashlib
import pickle

import numpy as np

from .out_of_sample import KnnPart
from .peers import PEER_KEPT
from .training_lists import TRAINING_SPARE

# Part of every cached evidence's id: bumped when features or searches change meaning, so that the next
# ranking searches everything again instead of mixing old and new evidence.
EVIDENCE_VERSION = 1


def _array_digest(h, a) -> None:
    a = np.ascontiguousarray(a)
    h.update(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.tobytes())


def feature_space_id(estimator) -> str | None:
    """Names the space estimator.transform maps drawings into (equal ids: the same drawing has the same
    features, so neighbour lists stay valid); None when the estimator has no such space.

    A retrain that promotes a model fits a new PCA basis: another id, and every drawing is searched again."""
    if not hasattr(estimator, "transform"):
        return None
    h = hashlib.sha256(f"evidence v{EVIDENCE_VERSION} k{PEER_KEPT} {type(estimator).__module__}."
                       f"{type(estimator).__qualname__}".encode())
    if hasattr(estimator, "mean_") and hasattr(estimator, "components_"):
        h.update(repr((getattr(estimator, "features", "pixels"), getattr(estimator, "deskew", None),
                       getattr(estimator, "blur_sigma", None))).encode())
        _array_digest(h, estimator.mean_)
        _array_digest(h, estimator.components_)
        if getattr(estimator, "cnn", None) is not None:  # the deep k-NN's features come out of its network
            h.update(pickle.dumps(estimator.cnn, protocol=5))
    else:  # a transform this module does not know: only the whole estimator names it
        h.update(pickle.dumps(estimator, protocol=5))
    return h.hexdigest()


def model_id(estimator) -> str:
    """Names what the out-of-sample probabilities depend on: the estimator's whole fitted state (training
    features, labels, weights, groups, the stroke model), not only its feature space."""
    h = hashlib.sha256(f"evidence v{EVIDENCE_VERSION}".encode())
    h.update(pickle.dumps(estimator, protocol=5))
    return h.hexdigest()



def training_rows_digest(space: str | None, image: KnnPart, stroke: KnnPart | None, stroke_params: dict | None) -> str:
    """Names what the kept lists' row keys mean beyond the drawings' ids: the feature space (feature_space_id),
    and the data sets' rows (features, labels, who drew them) of the image and stroke k-NNs (image_part,
    stroke_part; the stroke features' parameters). Lists kept under a model with another digest are searched
    again."""
    h = hashlib.sha256(f"training lists v{EVIDENCE_VERSION} spare {TRAINING_SPARE} {space}".encode())
    for part, params in ((image, None), (stroke, stroke_params)):
        if part is None:
            h.update(b"none")
            continue
        h.update(repr((part.k, part.weights, params)).encode())
        base = part.keys < 0
        for a in (part.F[base], part.labels[base], part.groups[base]):
            _array_digest(h, a)
    return h.hexdigest()
