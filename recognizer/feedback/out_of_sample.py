"""Out-of-sample probabilities: each drawing's class probabilities from training rows and drawings that are
not its own account's. A drawing whose training lists were kept under an earlier model in the same feature
space has them extended with the rows new to the model; the others are decoded and searched in full."""

from __future__ import annotations

import numpy as np
from django.db.models import QuerySet

from recognizer import trust
from recognizer.feedback.drawings import DrawingSet, drawing_set, has_strokes
from recognizer.feedback.training_lists import TrainingLists

# New drawings are decoded, projected and searched this many at a time: it bounds the images held at
# once, and stays under SQLite's 999 variables in an IN list.
BATCH = 900


def out_of_sample_probabilities(estimator, images: np.ndarray, users: np.ndarray, strokes=None,
                                features: np.ndarray | None = None) -> np.ndarray:
    """Class probabilities for users' drawings from neighbours that are not their own drawings, fused
    with the stroke model's (again without their own strokes) for drawings that have strokes.

    Leaving out the whole user (not just the one drawing) is what stops one person from vouching
    for their own labels: a user who labels many 1s as 7 gets no support from those same 7s.
    MNIST (group -1) and the pendigits writers (groups <= -1000) are never anyone's own.
    """
    return trust.neighbour_probabilities(estimator, images, strokes, users=users, features=features)


def search_out_of_sample(estimator, lists: TrainingLists, space: str | None, ids: np.ndarray, users: np.ndarray,
                         ev: dict, need: np.ndarray, features_for: np.ndarray, drawings: QuerySet,
                         counts: dict) -> np.ndarray:
    """Fills `ev` (load_evidence's arrays) with the out-of-sample probabilities of the drawings `need` (bool per
    id), their features and kept training lists, and the features of `features_for`. A drawing with lists kept
    under an earlier model in this space is not decoded: its lists are extended with the rows new to this model.
    The others are decoded (from `drawings`) and searched in full. Returns which drawings were found."""
    here = np.ones(len(ids), bool)
    extend = _lists_to_extend(lists, ev, need)
    decode = np.flatnonzero((need & ~extend) | features_for)
    # by account: the out-of-sample search runs once per account in a batch, not per drawing
    decode = decode[np.argsort(users[decode], kind="stable")]
    for s in range(0, len(decode), BATCH):
        rows = np.sort(decode[s: s + BATCH])  # in id order, as drawing_set returns them
        ds = drawing_set(drawings.filter(pk__in=ids[rows].tolist()).order_by("id"))
        found = np.isin(ids[rows], ds.ids)
        here[rows[~found]] = False
        rows = rows[found]
        if len(rows):
            _search_decoded(estimator, lists, space, users, ev, need, rows, ds, counts)
    _extend_kept_lists(lists, users, ev, np.flatnonzero(extend & here), counts)
    return here


def _lists_to_extend(lists: TrainingLists, ev: dict, need: np.ndarray) -> np.ndarray:
    """Bool per drawing of `need`: its training lists were kept under an earlier model in this space whose rows
    are known (TrainingLists.rows_since), so they are extended and the drawing is not decoded."""
    extend = np.zeros(len(need), bool)
    if lists.image is not None and len(need):
        for source in np.unique(ev["source"][need & ev["has_T"]]):
            since = lists.rows_since(source)
            if since is not None:
                extend |= need & ev["has_T"] & (ev["source"] == source)
    return extend


def _search_decoded(estimator, lists: TrainingLists, space: str | None, users: np.ndarray, ev: dict,
                    need: np.ndarray, rows: np.ndarray, ds: DrawingSet, counts: dict) -> None:
    """The decoded drawings `ds` (at `rows` of `ev`): their features, and for those in `need` the full
    out-of-sample search and its probabilities."""
    features = estimator.transform(ds.images) if space is not None else None
    if features is not None:
        if ev["F"] is None:
            ev["F"] = np.zeros((len(users), features.shape[1]), np.float32)
        fresh = ~ev["has_peers"][rows]  # a drawing's cached features are kept: it sits in others' lists there
        ev["F"][rows[fresh]] = features[fresh]
        ev["has_F"][rows] = True
    wanted = need[rows]
    if not wanted.any():
        return
    sub, at = ds.pick(wanted), rows[wanted]
    if lists.image is None:  # not a k-NN: its plain probabilities (nothing to leave out, nothing to keep)
        ev["p"][at] = out_of_sample_probabilities(estimator, sub.images, sub.users, sub.strokes,
                                                  features=None if features is None else features[wanted])
    else:
        if lists.stroke is not None:
            with_strokes = has_strokes(sub.strokes)
            ev["has_S"][at] = with_strokes
            if with_strokes.any():
                ev["SF"][at[with_strokes]] = estimator.stroke_model_.features(
                    [st for st, w in zip(sub.strokes, with_strokes) if w])
        lists.search(ev, at, users)
        ev["p"][at] = lists.probabilities(ev, at)
    ev["has_p"][at] = True
    counts["searched_in_full"] = counts.get("searched_in_full", 0) + len(at)


def _extend_kept_lists(lists: TrainingLists, users: np.ndarray, ev: dict, rows: np.ndarray, counts: dict) -> None:
    """The kept training lists of `rows` extended with the rows their model did not have, and their
    probabilities voted again from them."""
    for source in np.unique(ev["source"][rows]):
        part = rows[ev["source"][rows] == source]
        since = lists.rows_since(source)
        for s in range(0, len(part), 20000):  # bounds the candidate arrays held at once
            chunk = part[s: s + 20000]
            counts["training_lists_searched_again"] = counts.get("training_lists_searched_again", 0) + \
                lists.extend(ev, chunk, users, since)
            ev["p"][chunk] = lists.probabilities(ev, chunk)
        ev["has_p"][part] = True
        counts["training_lists_extended"] = counts.get("training_lists_extended", 0) + len(part)
        counts["training_rows_new"] = max(counts.get("training_rows_new", 0), len(since[0]))
