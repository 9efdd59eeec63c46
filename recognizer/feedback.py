"""The feedback loop's data: labelling (by owners and staff), which labels are trusted, the held-out users,
the label ranking and per-account trust (recognizer.trust does the arithmetic), and the training data a
retrain assembles from all that with bounded influence per account."""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, QuerySet, TextField
from django.db.models.functions import Cast
from django.utils import timezone
from threadpoolctl import threadpool_limits

from recognizer import dispatch, serving, trust
from recognizer.ml import preprocess as ml_preprocess
from recognizer.models import Drawing, LabelEvidence, TrainingRows, UserTrust
from recognizer.serving import stored_strokes

logger = logging.getLogger(__name__)


# --- Labels ----------------------------------------------------------------------------------------


def label_drawing(drawing: Drawing, label: int) -> Drawing:
    """The owner (or staff through the API) says which digit the drawing really is."""
    if not 0 <= int(label) <= 9:
        raise ValueError("A label is a digit from 0 to 9.")
    drawing.label = int(label)
    drawing.labelled_at = timezone.now()
    drawing.save(update_fields=["label", "labelled_at"])
    labels_changed()
    return drawing


def review(drawings: QuerySet, reviewer, status: str, label: int | None = None) -> int:
    """Staff approve or reject drawings, relabelling them first when `label` is given; how many changed.
    Approving needs a label: unlabelled drawings are left as they are."""
    now = timezone.now()
    fields = {"status": status, "reviewer": reviewer, "reviewed_at": now}
    if label is not None:
        if not 0 <= int(label) <= 9:
            raise ValueError("A label is a digit from 0 to 9.")
        fields.update(label=int(label), labelled_at=now)
    elif status == Drawing.Status.APPROVED:
        drawings = drawings.labelled()
    count = drawings.update(**fields)
    labels_changed()
    return count


def review_drawing(drawing: Drawing, reviewer, *, label_changed: bool) -> Drawing:
    """Staff edited one drawing's label or status (the admin's change form): stamp and save it."""
    now = timezone.now()
    drawing.reviewer, drawing.reviewed_at = reviewer, now
    if label_changed:
        drawing.labelled_at = now
    drawing.save()
    labels_changed()
    return drawing


def reject_pending_labels_of(user_ids, reviewer) -> int:
    """Bulk reject by account: every labelled drawing of these users that staff have not approved."""
    return review(Drawing.objects.filter(user_id__in=list(user_ids)).pending(), reviewer, Drawing.Status.REJECTED)


def labels_changed() -> None:
    # Enough new trusted drawings start a retrain before the nightly one. A worker counts them, after
    # this transaction commits: the request makes no count, and at most one broker call a window.
    transaction.on_commit(dispatch.request_threshold_check)


# --- Which labels are trusted, and who is held out ----------------------------------------------


def is_holdout_user(user_id: int) -> bool:
    """Deterministic by-user split: the same user's drawings are always on the same side."""
    digest = hashlib.sha256(f"digitsite-holdout:{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < settings.RECOGNIZER_HOLDOUT_SHARE


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
    trusted = drawing_set(Drawing.objects.trusted().order_by("id"))
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
    quarantined = dict(Drawing.objects.quarantined().values("user_id").annotate(n=Count("id")).values_list("user_id", "n"))
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

            # n_jobs=1: by default cleanlab forks a pool of processes and ends it with SIGTERM, which in a Celery
            # worker the children answer with the worker's own warm-shutdown handler instead of exiting: the
            # retrain then waits for them forever (seen with 3,000 drawings). One process costs milliseconds.
            return np.asarray(cleanlab_issues(labels, probabilities, filter_by="prune_by_noise_rate", n_jobs=1), bool)
        except ImportError:
            pass
        except Exception as exc:  # noqa: BLE001 - cleanlab rejects some degenerate inputs
            logger.warning("cleanlab could not rank the labels (%s); using the plain rule", exc)
    return strong_disagreement


# New drawings are decoded, projected and searched this many at a time: it bounds the images held at
# once, and stays under SQLite's 999 variables in an IN list.
_BATCH = 900


class TrainingLists:
    """The out-of-sample searches of one k-NN estimator as kept lists (recognizer.trust.training_neighbours):
    each drawing's nearest training rows of other accounts, for the image k-NN and, when it reads strokes, the
    stroke k-NN. A list kept under an earlier model in the same space is extended with the rows that model did
    not have (TrainingRows records each model's rows), so a promotion costs the new rows' search, not a search
    of every row again; the probabilities are then arithmetic on the lists."""

    def __init__(self, estimator, model: str, space: str | None) -> None:
        """`model`, `space`: trust.model_id and trust.feature_space_id of `estimator`."""
        self.estimator, self.model, self.space = estimator, model, space
        self.image = trust.image_part(estimator)
        self.stroke = trust.stroke_part(estimator) if self.image is not None else None
        self.ki = trust.training_list_length(self.image) if self.image is not None else 0
        self.ks = trust.training_list_length(self.stroke) if self.stroke is not None else 0
        self.ds = self.stroke.F.shape[1] if self.stroke is not None else 0
        self._digest: str | None = None
        self._since: dict[str, tuple | None] = {}

    @property
    def digest(self) -> str:
        if self._digest is None:
            self._digest = trust.training_rows_digest(
                self.space, self.image, self.stroke,
                self.estimator.stroke_model_.feature_params if self.stroke is not None else None)
        return self._digest

    def empty(self, n: int) -> dict:
        return {"tk": np.full((n, self.ki), trust.PAD_KEY, np.int64), "td": np.full((n, self.ki), np.inf, np.float32),
                "sk": np.full((n, self.ks), trust.PAD_KEY, np.int64), "sd": np.full((n, self.ks), np.inf, np.float32),
                "SF": np.zeros((n, self.ds), np.float32), "has_S": np.zeros(n, bool), "has_T": np.zeros(n, bool),
                "source": np.full(n, "", object),
                # lists extended (not searched in full) now, and which of them the new rows changed
                "extended": np.zeros(n, bool), "changed": np.zeros(n, bool)}

    def load(self, out: dict, rows: list, at: np.ndarray) -> None:
        """Stored lists of drawings whose features are in the space (`rows`: LabelEvidence values at `at`)."""
        if self.image is None:
            return
        for r, i in zip(rows, at):
            keys, dist, sf, skeys, sdist = (bytes(b) for b in r[7:12])
            if len(keys) != 8 * self.ki or len(dist) != 4 * self.ki:
                continue
            if self.stroke is not None and sf:
                if len(sf) != 4 * self.ds or len(skeys) != 8 * self.ks or len(sdist) != 4 * self.ks:
                    continue
                out["SF"][i] = np.frombuffer(sf, np.float32)
                out["sk"][i], out["sd"][i] = np.frombuffer(skeys, np.int64), np.frombuffer(sdist, np.float32)
                out["has_S"][i] = True
            out["tk"][i], out["td"][i] = np.frombuffer(keys, np.int64), np.frombuffer(dist, np.float32)
            out["has_T"][i], out["source"][i] = True, r[1]

    def rows_since(self, source: str) -> tuple[np.ndarray, np.ndarray] | None:
        """(image rows, stroke rows) of this model that lists kept under `source` never saw; None: unknown."""
        if source not in self._since:
            found = TrainingRows.objects.filter(model=source).values_list("digest", "image_keys", "stroke_keys").first()
            since = None
            if found is not None and found[0] == self.digest:
                since = (np.flatnonzero(~np.isin(self.image.keys, np.frombuffer(bytes(found[1]), np.int64))),
                         np.zeros(0, np.int64) if self.stroke is None else
                         np.flatnonzero(~np.isin(self.stroke.keys, np.frombuffer(bytes(found[2]), np.int64))))
            self._since[source] = since
        return self._since[source]

    def record(self) -> None:
        """Stores this model's rows (before any list kept under it is)."""
        TrainingRows.objects.get_or_create(model=self.model, defaults={
            "digest": self.digest, "image_keys": self.image.keys.tobytes(),
            "stroke_keys": b"" if self.stroke is None else self.stroke.keys.tobytes()})

    def search(self, ev: dict, rows: np.ndarray, users: np.ndarray) -> None:
        """The full searches of `rows` (features in ev["F"], strokes' in ev["SF"] where ev["has_S"])."""
        ev["tk"][rows], ev["td"][rows] = trust.training_neighbours(self.image, ev["F"][rows], users[rows])
        strokes = rows[ev["has_S"][rows]]
        if len(strokes):
            ev["sk"][strokes], ev["sd"][strokes] = trust.training_neighbours(self.stroke, ev["SF"][strokes], users[strokes])
        ev["has_T"][rows] = True

    def extend(self, ev: dict, rows: np.ndarray, users: np.ndarray, since: tuple) -> int:
        """The kept lists of `rows` made this model's (trust.extend_training_lists); how many were searched again."""
        tk, td = ev["tk"][rows], ev["td"][rows]
        again = trust.extend_training_lists(self.image, ev["F"][rows], users[rows], tk, td, since[0])
        changed = (tk != ev["tk"][rows]).any(axis=1) | (td != ev["td"][rows]).any(axis=1)
        ev["tk"][rows], ev["td"][rows] = tk, td
        strokes = rows[ev["has_S"][rows]]
        if len(strokes):
            sk, sd = ev["sk"][strokes], ev["sd"][strokes]
            again_s = trust.extend_training_lists(self.stroke, ev["SF"][strokes], users[strokes], sk, sd, since[1])
            changed[ev["has_S"][rows]] |= (sk != ev["sk"][strokes]).any(axis=1) | (sd != ev["sd"][strokes]).any(axis=1)
            ev["sk"][strokes], ev["sd"][strokes] = sk, sd
            again[np.isin(rows, strokes[again_s])] = True
        ev["extended"][rows] = True
        ev["changed"][rows] |= changed
        return int(again.sum())

    def probabilities(self, ev: dict, rows: np.ndarray) -> np.ndarray:
        """trust.neighbour_probabilities' answer for `rows`, from their lists: image and strokes fused."""
        p = trust.probabilities_from_lists(self.image, ev["tk"][rows], ev["td"][rows])
        strokes = np.flatnonzero(ev["has_S"][rows])
        if len(strokes):
            w = float(self.estimator.stroke_weight_)
            at = rows[strokes]
            p[strokes] = (1.0 - w) * p[strokes] + w * trust.probabilities_from_lists(self.stroke, ev["sk"][at], ev["sd"][at])
        return p

    def fields(self, ev: dict, i: int) -> dict:
        """LabelEvidence's list fields of row `i` (empty when it has none)."""
        if not ev["has_T"][i]:
            return {"training_neighbours": b"", "training_distances": b"", "stroke_features": b"",
                    "stroke_neighbours": b"", "stroke_distances": b""}
        strokes = bool(ev["has_S"][i])
        return {"training_neighbours": ev["tk"][i].tobytes(), "training_distances": ev["td"][i].tobytes(),
                "stroke_features": ev["SF"][i].tobytes() if strokes else b"",
                "stroke_neighbours": ev["sk"][i].tobytes() if strokes else b"",
                "stroke_distances": ev["sd"][i].tobytes() if strokes else b""}


_LIST_FIELDS = ["training_neighbours", "training_distances", "stroke_features", "stroke_neighbours", "stroke_distances"]


def _out_of_sample(estimator, lists: TrainingLists, space: str | None, ids: np.ndarray, users: np.ndarray, ev: dict,
                   need: np.ndarray, features_for: np.ndarray, drawings: QuerySet, counts: dict) -> np.ndarray:
    """Fills `ev` (_load_evidence's arrays) with the out-of-sample probabilities of the drawings `need` (bool per
    id), their features and kept training lists, and the features of `features_for`. A drawing with lists kept
    under an earlier model in this space is not decoded: its lists are extended with the rows new to this model.
    The others are decoded (from `drawings`) and searched in full. Returns which drawings were found."""
    here = np.ones(len(ids), bool)
    extend = np.zeros(len(ids), bool)
    if lists.image is not None and len(ids):
        for source in np.unique(ev["source"][need & ev["has_T"]]):
            since = lists.rows_since(source)
            if since is not None:
                extend |= need & ev["has_T"] & (ev["source"] == source)
    decode = np.flatnonzero((need & ~extend) | features_for)
    # by account: the out-of-sample search runs once per account in a batch, not per drawing
    decode = decode[np.argsort(users[decode], kind="stable")]
    p, has_p = ev["p"], ev["has_p"]
    for s in range(0, len(decode), _BATCH):
        rows = np.sort(decode[s: s + _BATCH])  # in id order, as drawing_set returns them
        ds = drawing_set(drawings.filter(pk__in=ids[rows].tolist()).order_by("id"))
        found = np.isin(ids[rows], ds.ids)
        here[rows[~found]] = False
        rows = rows[found]
        if not len(rows):
            continue
        features = estimator.transform(ds.images) if space is not None else None
        if features is not None:
            if ev["F"] is None:
                ev["F"] = np.zeros((len(ids), features.shape[1]), np.float32)
            fresh = ~ev["has_peers"][rows]  # a drawing's cached features are kept: it sits in others' lists there
            ev["F"][rows[fresh]] = features[fresh]
            ev["has_F"][rows] = True
        wanted = need[rows]
        if not wanted.any():
            continue
        sub, at = ds.pick(wanted), rows[wanted]
        if lists.image is None:  # not a k-NN: its plain probabilities (nothing to leave out, nothing to keep)
            p[at] = out_of_sample_probabilities(estimator, sub.images, sub.users, sub.strokes,
                                                features=None if features is None else features[wanted])
        else:
            if lists.stroke is not None:
                with_strokes = has_strokes(sub.strokes)
                ev["has_S"][at] = with_strokes
                if with_strokes.any():
                    ev["SF"][at[with_strokes]] = estimator.stroke_model_.features(
                        [st for st, w in zip(sub.strokes, with_strokes) if w])
            lists.search(ev, at, users)
            p[at] = lists.probabilities(ev, at)
        has_p[at] = True
        counts["searched_in_full"] = counts.get("searched_in_full", 0) + len(at)
    rows = np.flatnonzero(extend & here)
    for source in np.unique(ev["source"][rows]):
        part = rows[ev["source"][rows] == source]
        since = lists.rows_since(source)
        for s in range(0, len(part), 20000):  # bounds the candidate arrays held at once
            chunk = part[s: s + 20000]
            counts["training_lists_searched_again"] = counts.get("training_lists_searched_again", 0) + \
                lists.extend(ev, chunk, users, since)
            p[chunk] = lists.probabilities(ev, chunk)
        has_p[part] = True
        counts["training_lists_extended"] = counts.get("training_lists_extended", 0) + len(part)
        counts["training_rows_new"] = max(counts.get("training_rows_new", 0), len(since[0]))
    return here


@dataclass
class _Evidence:
    """Per ranked drawing, in id order: what the ranking's searches found, cached or new."""

    ids: np.ndarray
    probabilities: np.ndarray  # (n, 10) out of sample
    neighbour_ids: np.ndarray | None  # (n, trust.PEER_KEPT) drawing ids, -1 pad; None: the model has no features
    neighbour_dist: np.ndarray | None
    write: list  # LabelEvidence rows of drawings searched now, to store
    lists: list  # (neighbour ids, distances, drawing id) of old drawings only a new drawing's entry changed
    orphans: list  # drawing ids whose stored evidence is no longer ranked (rejected): to delete
    counts: dict
    model: str = ""  # trust.model_id of the estimator: every ranked drawing's evidence is under it once stored
    training_lists: TrainingLists | None = None  # to record the rows the written training lists are over
    # (model, probabilities, updated_at, id) and (model, probabilities, 4 list fields, updated_at, id): rows
    # whose training lists were extended, updated in place
    probabilities_only: list = field(default_factory=list)
    with_lists: list = field(default_factory=list)


def _load_evidence(ids: np.ndarray, model: str, space: str | None, lists: TrainingLists | None = None,
                   *, only_ids: bool = False) -> dict:
    """The stored evidence of `ids` that is still valid, as arrays; stored evidence of other drawings is
    returned as orphans (those not ranked now: whoever is ranked again later is new to everyone's list).
    `lists`: also the kept training lists in its shapes, with the model each was kept under (`source`).
    `only_ids`: read only the evidence of `ids` (a part of them), not the whole table."""
    n, K = len(ids), trust.PEER_KEPT
    out = {"p": np.zeros((n, trust.N_CLASSES)), "has_p": np.zeros(n, bool), "has_peers": np.zeros(n, bool),
           "F": None, "has_F": np.zeros(n, bool), "nb": np.full((n, K), -1, np.int64),
           "nd": np.full((n, K), np.inf, np.float32), "orphans": []}
    if lists is not None:
        out.update(lists.empty(n))
    fields = ("drawing_id", "model", "space", "probabilities", "features", "neighbour_ids", "neighbour_distances",
              "training_neighbours", "training_distances", "stroke_features", "stroke_neighbours", "stroke_distances")
    if only_ids:
        rows = itertools.chain.from_iterable(
            LabelEvidence.objects.filter(drawing_id__in=ids[s: s + _BATCH].tolist()).values_list(*fields)
            for s in range(0, n, _BATCH))
    else:
        rows = LabelEvidence.objects.values_list(*fields).iterator(chunk_size=2000)
    while chunk := list(itertools.islice(rows, 10000)):
        pks = np.array([r[0] for r in chunk], np.int64)
        at = np.minimum(np.searchsorted(ids, pks), max(n - 1, 0))
        ranked = (ids[at] == pks) if n else np.zeros(len(pks), bool)
        out["orphans"] += pks[~ranked].tolist()
        p_ok = [j for j, r in enumerate(chunk) if ranked[j] and r[1] == model and len(r[3]) == 8 * trust.N_CLASSES]
        if p_ok:
            out["p"][at[p_ok]] = np.frombuffer(b"".join(chunk[j][3] for j in p_ok), np.float64).reshape(-1, trust.N_CLASSES)
            out["has_p"][at[p_ok]] = True
        # features without neighbour lists: computed ahead of the ranking by a worker (precompute_evidence)
        f_ok = [j for j, r in enumerate(chunk) if ranked[j] and space is not None and r[2] == space and len(r[4])]
        if f_ok:
            F = np.frombuffer(b"".join(chunk[j][4] for j in f_ok), np.float32).reshape(len(f_ok), -1)
            if out["F"] is None:
                out["F"] = np.zeros((n, F.shape[1]), np.float32)
            out["F"][at[f_ok]] = F
            out["has_F"][at[f_ok]] = True
        s_ok = [j for j in f_ok if len(chunk[j][5]) == 8 * K]
        if s_ok:
            out["nb"][at[s_ok]] = np.frombuffer(b"".join(chunk[j][5] for j in s_ok), np.int64).reshape(-1, K)
            out["nd"][at[s_ok]] = np.frombuffer(b"".join(chunk[j][6] for j in s_ok), np.float32).reshape(-1, K)
            out["has_peers"][at[s_ok]] = True
        if lists is not None:
            lists.load(out, [chunk[j] for j in f_ok], at[f_ok])
    return out


def _rows_of(ids: np.ndarray, neighbour_ids: np.ndarray) -> np.ndarray:
    """Neighbour lists of drawing ids as rows of `ids` (sorted): -1 for padding and for drawings not ranked now."""
    if not len(ids):
        return np.full(neighbour_ids.shape, -1, np.int64)
    top = int(max(ids[-1], neighbour_ids.max(initial=-1)))
    if top <= 8 * len(ids) + 1_000_000:  # ids are dense: a lookup table, not 40 binary searches a drawing
        table = np.full(top + 2, -1, np.int64)
        table[ids] = np.arange(len(ids))
        return table[np.where(neighbour_ids >= 0, neighbour_ids, top + 1)]
    at = np.minimum(np.searchsorted(ids, neighbour_ids), len(ids) - 1)
    return np.where((neighbour_ids >= 0) & (ids[at] == neighbour_ids), at, -1)


def label_evidence(estimator, ids: np.ndarray, users: np.ndarray) -> _Evidence:
    """The searches of a ranking of the drawings `ids` (sorted; `users` their accounts), from stored
    evidence where it is valid: only drawings new to it (never ranked, or ranked in another feature space)
    are decoded and searched, and the stored lists they fall into are updated. A drawing ranked under another
    model in this space has its kept training lists extended with the model's new rows (_out_of_sample).

    A drawing deleted meanwhile is left out of the result (compare its ids with `ids`).
    """
    model, space = trust.model_id(estimator), trust.feature_space_id(estimator)
    lists = TrainingLists(estimator, model, space)
    ev = _load_evidence(ids, model, space, lists)
    has_peers = ev["has_peers"]
    new = ~has_peers if space is not None else np.zeros(len(ids), bool)
    searched = ~ev["has_p"] | new
    counts: dict = {}
    here = _out_of_sample(estimator, lists, space, ids, users, ev, ~ev["has_p"], new & ~ev["has_F"], Drawing.objects,
                          counts)
    if not here.all():
        ids, users, new, searched = ids[here], users[here], new[here], searched[here]
        for key, value in ev.items():
            if isinstance(value, np.ndarray) and len(value) == len(here):
                ev[key] = value[here]
    p, F, nb, nd, has_peers = ev["p"], ev["F"], ev["nb"], ev["nd"], ev["has_peers"]
    stale = np.zeros(len(ids), bool)
    entered = np.zeros(0, np.int64)
    if space is not None and len(ids):
        stale = has_peers & trust.lists_to_research(nb, _rows_of(ids, nb))
        search = np.flatnonzero(new | stale)
        if len(search):
            idx, dist = trust.peer_neighbours(F, users, rows=search)
            nb[search] = np.where(idx >= 0, ids[np.maximum(idx, 0)], -1)
            nd[search] = dist
        # Old lists the new drawings enter: a search from the new drawings into the old ones, not of all.
        old = np.flatnonzero(has_peers & ~stale)
        src, dst, dist = trust.neighbours_reached(F, users, np.flatnonzero(new), old, nd[old, -1])
        entered = trust.merge_neighbours(nb, nd, dst, ids[src], dist)
        searched |= stale
    # A drawing whose training lists were only extended keeps its features and peer lists: it is updated in place
    # (model, probabilities and the lists if new rows entered them), not written whole: at every promotion that
    # is every drawing, and most of a row's bytes did not change.
    in_place = searched & ev["extended"] & ~new & ~stale
    whole = searched & ~in_place
    write = [LabelEvidence(drawing_id=int(ids[i]), model=model, space=space or "",
                           probabilities=p[i].astype(np.float64).tobytes(),
                           features=b"" if space is None else F[i].tobytes(),
                           neighbour_ids=b"" if space is None else nb[i].tobytes(),
                           neighbour_distances=b"" if space is None else nd[i].tobytes(), **lists.fields(ev, i))
             for i in np.flatnonzero(whole)]
    now = connection.ops.adapt_datetimefield_value(timezone.now())  # for a raw UPDATE's parameters
    probabilities_only, with_lists = [], []
    for i in np.flatnonzero(in_place):
        if ev["changed"][i]:
            f = lists.fields(ev, i)
            with_lists.append((model, p[i].astype(np.float64).tobytes(), f["training_neighbours"],
                               f["training_distances"], f["stroke_neighbours"], f["stroke_distances"], now, int(ids[i])))
        else:
            probabilities_only.append((model, p[i].astype(np.float64).tobytes(), now, int(ids[i])))
    entered_lists = [(nb[i].tobytes(), nd[i].tobytes(), int(ids[i])) for i in entered if not whole[i]]
    counts = {"searched": int(searched.sum()), "reused": int((~searched).sum()),
              "lists_entered": len(entered), "lists_searched_again": int(stale.sum()),
              "updated_in_place": int(in_place.sum()), "lists_changed_in_place": len(with_lists), **counts}
    return _Evidence(ids, p, None if space is None else nb, None if space is None else nd, write, entered_lists,
                     ev["orphans"], counts, model, lists if lists.image is not None and ev["has_T"].any() else None,
                     probabilities_only, with_lists)


def _store_evidence(evidence: _Evidence) -> None:
    """In the ranking's transaction, after its first write (on SQLite the write lock: no drawing can be
    deleted under it now; elsewhere the drawings are locked)."""
    for s in range(0, len(evidence.orphans), _BATCH):
        LabelEvidence.objects.filter(pk__in=evidence.orphans[s: s + _BATCH]).delete()
    if evidence.training_lists is not None:
        evidence.training_lists.record()
    for s in range(0, len(evidence.write), _BATCH):
        batch = evidence.write[s: s + _BATCH]
        alive = set(Drawing.objects.select_for_update().filter(pk__in=[e.drawing_id for e in batch])
                    .values_list("pk", flat=True))
        LabelEvidence.objects.bulk_create(
            [e for e in batch if e.drawing_id in alive], update_conflicts=True, unique_fields=["drawing"],
            update_fields=["model", "space", "probabilities", "features", "neighbour_ids", "neighbour_distances",
                           *_LIST_FIELDS, "updated_at"])
    # every ranked drawing's evidence is now under this ranking's model: the rows of earlier ones are not needed
    TrainingRows.objects.exclude(model=evidence.model).delete()
    # Lists a new drawing entered: the two columns, as one prepared UPDATE (a drawing deleted meanwhile
    # updates nothing). About PEER_KEPT of them a new drawing: model instances would cost more than the search.
    _update_columns(LabelEvidence, ["neighbour_ids", "neighbour_distances"], evidence.lists)
    _update_columns(LabelEvidence, ["model", "probabilities", "updated_at"], evidence.probabilities_only)
    _update_columns(LabelEvidence, ["model", "probabilities", "training_neighbours", "training_distances",
                                    "stroke_neighbours", "stroke_distances", "updated_at"], evidence.with_lists)


def _update_columns(model, fields: list[str], rows: list[tuple]) -> None:
    """UPDATE these columns of `model` from rows of (their values..., primary key), as one prepared statement
    run over all of them: bulk_update builds a CASE of every row in Python (2 s for 2,000 drawings), and a row
    deleted meanwhile updates nothing."""
    meta = model._meta
    qn = connection.ops.quote_name
    columns = ", ".join(f"{qn(meta.get_field(name).column)} = %s" for name in fields)
    sql = f"UPDATE {qn(meta.db_table)} SET {columns} WHERE {qn(meta.pk.column)} = %s"
    with connection.cursor() as cursor:
        for s in range(0, len(rows), 5000):
            cursor.executemany(sql, rows[s: s + 5000])


def _write_suspicion(updates: list[tuple[bool, float, int]]) -> None:
    """(suspicious, suspicion_score, id) per drawing: most scores move a little at every ranking."""
    _update_columns(Drawing, ["suspicious", "suspicion_score"], updates)


def flag_suspicious_labels(estimator=None) -> dict:
    """Rank every labelled, not-rejected drawing and measure every account's trust (recognizer.trust).

    Stored: on the drawings, suspicious and suspicion_score (the chance the label is wrong, from the
    out-of-sample model, other accounts' labels of similar drawings and the account's trust), and one
    UserTrust per account. The admin sorts suspicious drawings first; suspicious labels of low-trust
    accounts are quarantined (DrawingQuerySet.trusted).

    The searches behind it (the out-of-sample probabilities, each drawing's nearest other-account
    drawings) are kept in LabelEvidence: a ranking searches only drawings new to it (label_evidence),
    then recomputes votes, trust and suspicion of every drawing from the kept evidence and the current
    labels, statuses and accounts: the same decisions as searching everything again, at the cost of
    the new drawings' searches plus arithmetic over all of them. Under a newly promoted model in the same
    space, every drawing's out-of-sample probabilities are voted again from its kept training lists, which
    are searched only among the rows the model added.
    """
    if estimator is None:
        try:
            estimator = serving.model_cache.get().estimator
        except serving.NoActiveModel:
            return {"ranked": 0, "suspicious": 0}
    fields = ("id", "user_id", "label", "status", "suspicious", "suspicion_score")
    rows = list(Drawing.objects.not_rejected().order_by("id").values_list(*fields))
    rejected = dict(Drawing.objects.labelled().filter(status=Drawing.Status.REJECTED)
                    .values("user_id").annotate(n=Count("id")).values_list("user_id", "n"))
    if not rows and not rejected:
        LabelEvidence.objects.all().delete()
        return {"ranked": 0, "suspicious": 0}
    ids = np.array([r[0] for r in rows], np.int64)
    users = np.array([r[1] for r in rows], np.int64)
    # One BLAS thread: on a busy 2-core machine a threaded product of one account's few new drawings with
    # every drawing took 12 ms against 0.3 ms (bench/ranking.py), and large blocks gain nothing either.
    with threadpool_limits(limits=1, user_api="blas"):
        evidence = label_evidence(estimator, ids, users)
    keep = np.isin(ids, evidence.ids)  # drawings deleted while it searched are left out
    rows = [r for r, k in zip(rows, keep) if k]
    ids, users = ids[keep], users[keep]
    labels = np.array([r[2] for r in rows], np.int64)
    approved = np.array([r[3] == Drawing.Status.APPROVED for r in rows], bool)
    probabilities = evidence.probabilities
    neighbours = None
    if evidence.neighbour_ids is not None and len(ids):
        neighbours = (_rows_of(ids, evidence.neighbour_ids), evidence.neighbour_dist)
    ranking = trust.rank_labels(labels, users, probabilities, neighbours=neighbours,
                                radius=getattr(estimator, "novelty_distance_", None), approved=approved,
                                rejected_by_user=rejected, threshold=settings.RECOGNIZER_SUSPICION_THRESHOLD)
    model_alone = find_label_issues(labels, probabilities) if len(ids) else np.zeros(0, bool)
    updates = [(bool(ranking.suspicious[i]), float(ranking.suspicion[i]), int(pk))
               for i, (pk, r) in enumerate(zip(ids, rows))
               if r[4] != bool(ranking.suspicious[i]) or r[5] != float(ranking.suspicion[i])]
    with transaction.atomic():
        _write_suspicion(updates)
        UserTrust.objects.bulk_create(
            [UserTrust(user_id=u, score=t.score, n_labels=t.n_labels, n_agree=t.n_agree, n_disagree=t.n_disagree,
                       n_flagged=t.n_flagged, updated_at=timezone.now()) for u, t in ranking.trust.items()],
            update_conflicts=True, unique_fields=["user"],
            update_fields=["score", "n_labels", "n_agree", "n_disagree", "n_flagged", "updated_at"])
        _store_evidence(evidence)
    low = sorted(u for u, t in ranking.trust.items() if t.score < settings.RECOGNIZER_TRUST_THRESHOLD)
    return {"ranked": len(ids), "suspicious": int(ranking.suspicious.sum()),
            "model_alone_issues": int(model_alone.sum()), "accounts": len(ranking.trust), "low_trust_users": low,
            "quarantined": Drawing.objects.quarantined().count(), **evidence.counts}


# --- The ranking's per-drawing searches, ahead of it and spread over workers (recognizer.retraining) ---


def evidence_to_compute(estimator) -> np.ndarray:
    """Ids of the labelled, not rejected drawings that a ranking under `estimator` would decode and search
    for out-of-sample probabilities (none stored under this very model), by account and then id: parts cut
    from it keep most accounts whole, and one account's drawings are searched in one batch."""
    model = trust.model_id(estimator)
    rows = np.array(Drawing.objects.not_rejected().order_by("user_id", "id").values_list("id", "user_id"),
                    np.int64).reshape(-1, 2)
    done = np.fromiter(LabelEvidence.objects.filter(model=model).values_list("drawing_id", flat=True), np.int64)
    return rows[~np.isin(rows[:, 0], done), 0]


def precompute_evidence(estimator, ids, lists: TrainingLists | None = None) -> dict:
    """Store what the next ranking under `estimator` would otherwise compute for each of the drawings `ids`:
    its features, out-of-sample probabilities and kept training lists (label_evidence, through the same
    _out_of_sample: a drawing with lists kept under an earlier model in this space is not decoded). Exactly
    the same values (each drawing's search leaves out its own account, whatever else is in the batch), so
    ranking after any number of these, in any order, on any worker, decides what ranking alone decides.

    A drawing that already has neighbour lists in this feature space keeps them and its features (it sits in
    others' lists there); one without gets its features and no lists: the ranking searches its neighbours and
    enters it into the others' lists, as for any drawing new to it. Drawings with valid evidence, rejected or
    deleted meanwhile are skipped. `lists`: the estimator's TrainingLists, when a worker keeps one for all the
    parts it runs (its ids pickle the whole estimator, its rows' digest and records are read once)."""
    if lists is None:
        lists = TrainingLists(estimator, trust.model_id(estimator), trust.feature_space_id(estimator))
    model, space = lists.model, lists.space
    # in the order given (evidence_to_compute's: by account), without repeats: a batch then holds whole
    # accounts, and the out-of-sample search runs once per account in it
    ids = np.asarray(ids, np.int64)
    ids = ids[np.sort(np.unique(ids, return_index=True)[1])]
    counts = {"drawings": len(ids), "computed": 0, "kept_lists": 0}
    recorded = False
    with threadpool_limits(limits=1, user_api="blas"):  # see flag_suspicious_labels
        for s in range(0, len(ids), _BATCH):
            batch = np.array(sorted(Drawing.objects.not_rejected().filter(pk__in=ids[s: s + _BATCH].tolist())
                                    .values_list("id", "user_id")), np.int64).reshape(-1, 2)
            ev = _load_evidence(batch[:, 0], model, space, lists, only_ids=True)
            todo = ~ev["has_p"]
            if not todo.any():
                continue
            here = _out_of_sample(estimator, lists, space, batch[:, 0], batch[:, 1], ev, todo,
                                  np.zeros(len(batch), bool), Drawing.objects.not_rejected(), counts)
            done = np.flatnonzero(todo & here)
            if not len(done):
                continue
            keep_lists = ev["has_peers"][done]
            rows = [LabelEvidence(drawing_id=int(batch[i, 0]), model=model, space=space or "",
                                  probabilities=ev["p"][i].astype(np.float64).tobytes(),
                                  features=b"" if ev["F"] is None else ev["F"][i].tobytes(),
                                  neighbour_ids=b"", neighbour_distances=b"", **lists.fields(ev, i))
                    for i in done]
            with transaction.atomic():
                if not recorded and lists.image is not None:
                    lists.record()
                    recorded = True
                alive = set(Drawing.objects.select_for_update().filter(pk__in=batch[done, 0].tolist())
                            .values_list("pk", flat=True))
                for mask, fields in ((keep_lists, ["model", "probabilities", *_LIST_FIELDS, "updated_at"]),
                                     (~keep_lists, ["model", "space", "probabilities", "features", "neighbour_ids",
                                                    "neighbour_distances", *_LIST_FIELDS, "updated_at"])):
                    LabelEvidence.objects.bulk_create(
                        [r for r, m in zip(rows, mask) if m and r.drawing_id in alive], update_conflicts=True,
                        unique_fields=["drawing"], update_fields=fields)
            counts["computed"] += len(done)
            counts["kept_lists"] += int(keep_lists.sum())
    return counts
