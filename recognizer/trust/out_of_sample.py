"""A k-NN's out-of-sample probabilities: its training set as the searches need it (KnnPart), and its vote
for drawings with some accounts' training rows left out, the drawing's own account's always
(neighbour_probabilities): an account's own drawings cannot vouch for its labels."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from recognizer.ml import ann
from recognizer.ml.knn import N_CLASSES, knn_sorted
from recognizer.ml.knn import vote as knn_vote


@dataclass
class KnnPart:
    """One k-NN's training set (the image model's or the stroke model's) as the searches here need it."""

    F: np.ndarray
    sq: np.ndarray
    labels: np.ndarray
    mult: np.ndarray | None
    groups: np.ndarray  # who drew each training sample: a user id, -1 MNIST, <= -1000 a pendigits writer
    k: int
    weights: str
    ids: np.ndarray | None = None  # which stored drawing each row is (-1: a data set's row); None: not known
    index: ann.NeighbourIndex | None = None  # the k-NN's HNSW graph over exactly these rows, when it has one
    _keys: np.ndarray | None = field(default=None, init=False, repr=False)
    _key_order: np.ndarray | None = field(default=None, init=False, repr=False)

    @property
    def keys(self) -> np.ndarray:
        """A name for each row that another model in the same feature space gives the same row: the drawing's id,
        or -1 - its place among the rows that are not drawings (the data sets' rows, always kept first and in
        order by a refit: recognizer.training.refit_in_space)."""
        if self._keys is None:
            ids = np.full(len(self.groups), -1, np.int64) if self.ids is None else np.asarray(self.ids, np.int64)
            keys = ids.copy()
            anonymous = ids < 0
            keys[anonymous] = -1 - np.arange(int(anonymous.sum()), dtype=np.int64)
            self._keys = keys
            self._key_order = np.argsort(keys, kind="stable")
        return self._keys

    def rows_of(self, keys: np.ndarray) -> np.ndarray:
        """The rows named by `keys` (any shape); -1 for padding and for rows this model does not have."""
        own = self.keys
        keys = np.asarray(keys, np.int64)
        if not len(own):
            return np.full(keys.shape, -1, np.int64)
        sorted_keys = own[self._key_order]
        at = np.minimum(np.searchsorted(sorted_keys, keys), len(own) - 1)
        return np.where(sorted_keys[at] == keys, self._key_order[at], -1)

    def search(self, Q: np.ndarray, excluded: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(indices, distances) of the k nearest training samples not `excluded` (bool per training row)."""
        n_ex = 0 if excluded is None else int(excluded.sum())
        if n_ex == 0:
            return knn_sorted(Q, self.F, self.sq, self.k)
        if n_ex <= 1024:
            idx, dist = knn_sorted(Q, self.F, self.sq, self.k + n_ex)
            keep = np.argsort(excluded[idx], axis=1, kind="stable")[:, : self.k]
            return np.take_along_axis(idx, keep, axis=1), np.take_along_axis(dist, keep, axis=1)
        rows = np.flatnonzero(~excluded)
        if not len(rows):  # everything left out: the vote below is uniform
            return knn_sorted(Q, self.F, self.sq, self.k)
        sub, dist = knn_sorted(Q, self.F[rows], self.sq[rows], self.k)
        return rows[sub], dist

    def vote(self, idx: np.ndarray, dist: np.ndarray, excluded: np.ndarray | None = None) -> np.ndarray:
        mult = self.mult[idx] if self.mult is not None else np.ones(idx.shape, np.float32)
        if excluded is not None:
            mult = mult * ~excluded[idx]
        return knn_vote(self.labels[idx].astype(np.int64), dist, mult, self.weights)

    def excluded(self, groups) -> np.ndarray:
        return np.isin(self.groups, np.asarray(sorted(groups), np.int64))


def _groups_or_mnist(model, n: int) -> np.ndarray:
    groups = getattr(model, "train_groups_", None)
    return np.full(n, -1, np.int64) if groups is None else np.asarray(groups, np.int64)


def image_part(estimator) -> KnnPart | None:
    """The image k-NN of `estimator`, or None when it is not a k-NN (nothing can be left out)."""
    if not hasattr(estimator, "train_features_") or not hasattr(estimator, "n_neighbors"):
        return None
    n = len(estimator.train_labels_)
    return KnnPart(estimator.train_features_, estimator.train_sq_, estimator.train_labels_,
                   estimator.sample_weight_, _groups_or_mnist(estimator, n), int(estimator.n_neighbors),
                   estimator.weights, getattr(estimator, "train_ids_", None),
                   getattr(estimator, "neighbour_index_", None))


def stroke_part(estimator) -> KnnPart | None:
    model = getattr(estimator, "stroke_model_", None) if getattr(estimator, "reads_strokes", False) else None
    if model is None:
        return None
    n = len(model.train_labels_)
    return KnnPart(model.train_features_, model.train_sq_, model.train_labels_, model.sample_weight_,
                   _groups_or_mnist(model, n), int(model.n_neighbors), model.weights, getattr(model, "train_ids_", None),
                   getattr(model, "neighbour_index_", None))


def rows_with_strokes(strokes) -> list[int]:
    """The places in `strokes` (one entry per drawing, or None for none at all) that hold a stroke."""
    return [] if strokes is None else [i for i, s in enumerate(strokes) if s is not None and len(s)]


def neighbour_probabilities(estimator, images: np.ndarray, strokes=None, users=None, exclude=(),
                            features: np.ndarray | None = None) -> np.ndarray:
    """(n, 10) probabilities of `estimator` for `images`, fused with their strokes' when it reads strokes,
    from neighbours that are not in `exclude` (account ids) and, with `users` (one per image), not drawn
    by the image's own account: its own drawings cannot vouch for its labels.

    `features`: estimator.transform(images) when already computed. A model that is not a k-NN cannot
    leave anyone out: its plain probabilities are returned.
    """
    images = np.asarray(images)
    part = image_part(estimator)
    if part is None:
        kw = {"strokes": list(strokes)} if strokes is not None and getattr(estimator, "reads_strokes", False) else {}
        return np.asarray(estimator.predict_proba(images, **kw), np.float64)
    Q = estimator.transform(images) if features is None else features
    exclude = {int(g) for g in exclude}
    out = part_probabilities(part, Q, users, exclude)
    spart = stroke_part(estimator)
    rows = rows_with_strokes(strokes) if spart is not None else []
    if rows:
        SQ = estimator.stroke_model_.features([strokes[i] for i in rows])
        p_strokes = part_probabilities(spart, SQ, None if users is None else np.asarray(users)[rows], exclude)
        w = float(estimator.stroke_weight_)
        out[rows] = (1.0 - w) * out[rows] + w * p_strokes
    return out


def part_probabilities(part: KnnPart, Q: np.ndarray, users, exclude: set) -> np.ndarray:
    """(n, 10): the vote of `part` for queries `Q` without the rows of `exclude` (account ids) and, with
    `users` (one per query), without the rows of the query's own account."""
    base = part.excluded(exclude) if exclude else np.zeros(len(part.groups), bool)
    if users is None:
        idx, dist = part.search(Q, base)
        return part.vote(idx, dist, base)
    users = np.asarray(users, np.int64)
    out = np.empty((len(Q), N_CLASSES))
    for user in np.unique(users):
        rows = np.flatnonzero(users == user)
        excluded = base | (part.groups == user)
        idx, dist = part.search(Q[rows], excluded)
        out[rows] = part.vote(idx, dist, excluded)
    return out
