"""Drawings as arrays, as a retrain and the label ranking read them (DrawingSet, drawing_set), and their stored
strokes, parsed only when one is read (StoredStrokes)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from django.db.models import QuerySet, TextField
from django.db.models.functions import Cast

from recognizer.ml import preprocess as ml_preprocess
from recognizer.models import Drawing
from recognizer.serving import stored_strokes


class StoredStrokes(Sequence):
    """Drawings' stored strokes (their JSON text as drawing_set reads it, or JSON values), parsed into arrays
    only when one is read: a retrain that keeps its model's rows reads the strokes of new drawings only, and
    decoding and validating every drawing's at every retrain cost more than the rest of reading them."""

    def __init__(self, raw: list) -> None:
        self._raw = raw
        self._parsed: dict[int, list | None] = {}

    def __len__(self) -> int:
        return len(self._raw)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return StoredStrokes(self._raw[i])
        i = range(len(self._raw))[i]  # negative and out-of-range indices as a list has them
        if i not in self._parsed:
            raw = self._raw[i]
            if isinstance(raw, str):
                try:
                    raw = json.loads(raw)
                except ValueError:
                    raw = None
            self._parsed[i] = stored_strokes(raw)
        return self._parsed[i]

    def take(self, rows) -> StoredStrokes:
        return StoredStrokes([self._raw[i] for i in rows])

    def __add__(self, other):
        if isinstance(other, StoredStrokes):
            return StoredStrokes(self._raw + other._raw)
        other = list(other)
        # none stored reads as none; parsed strokes cannot join stored ones unparsed
        return StoredStrokes(self._raw + other) if all(o is None for o in other) else list(self) + other

    def __radd__(self, other):
        other = list(other)
        return StoredStrokes(other + self._raw) if all(o is None for o in other) else other + list(self)

    def present(self) -> np.ndarray:
        """Bool per drawing: it has strokes (stored ones that no longer parse read as none when parsed)."""
        return np.array([bool(r) and r not in ("null", "[]") for r in self._raw], bool)


def take_strokes(strokes: Sequence, rows) -> Sequence:
    """The stroke entries at `rows`, stored ones still unparsed."""
    return strokes.take(rows) if isinstance(strokes, StoredStrokes) else [strokes[i] for i in rows]


def has_strokes(strokes, parsed_before: np.ndarray | None = None) -> np.ndarray:
    """Bool per drawing of a stroke sequence: it has strokes. Stored strokes are parsed only where that is
    not known already: a stored value that no longer parses has none, unless `parsed_before` (bool per
    drawing) says it parsed (it is a stroke row of a model)."""
    if isinstance(strokes, StoredStrokes):
        present = strokes.present()
        check = present if parsed_before is None else present & ~np.asarray(parsed_before, bool)
        for i in np.flatnonzero(check):
            present[i] = strokes[i] is not None and len(strokes[i]) > 0
        return present
    return np.array([s is not None and len(s) > 0 for s in strokes], bool)


@dataclass
class DrawingSet:
    images: np.ndarray  # (n, 28, 28) float32 in [0, 1], exactly what the model saw at prediction time
    labels: np.ndarray
    users: np.ndarray
    ids: np.ndarray
    strokes: Sequence | None = None  # per drawing: its pen strokes (list of arrays) or None; StoredStrokes when read
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
            None if self.strokes is None else take_strokes(self.strokes, rows),
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


def drawing_set(drawings) -> DrawingSet:
    fields = ("id", "user_id", "label", "preprocessed", "strokes", "status", "suspicion_score")
    if isinstance(drawings, QuerySet):
        # the strokes as their JSON text, decoded only when read (StoredStrokes): not every drawing's at every retrain
        rows = list(drawings.annotate(strokes_text=Cast("strokes", TextField()))
                    .values_list(*fields[:4], "strokes_text", *fields[5:]))
    else:
        rows = [tuple(getattr(d, f) for f in fields) for d in drawings]
    images = np.empty((len(rows), 28, 28), np.float32)
    for i, row in enumerate(rows):
        images[i] = ml_preprocess.from_uint8(bytes(row[3]))
    return DrawingSet(
        images=images,
        labels=np.array([r[2] for r in rows], np.int64),
        users=np.array([r[1] for r in rows], np.int64),
        ids=np.array([r[0] for r in rows], np.int64),
        strokes=StoredStrokes([r[4] for r in rows]),
        approved=np.array([r[5] == Drawing.Status.APPROVED for r in rows], bool),
        suspicion=np.array([r[6] or 0.0 for r in rows], np.float64),
    )
