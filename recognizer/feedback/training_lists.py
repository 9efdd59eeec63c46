"""A k-NN estimator's out-of-sample searches kept as lists per drawing (TrainingLists), so that a promotion in the
same feature space searches only the training rows the new model added."""

from __future__ import annotations

import numpy as np

from recognizer import trust
from recognizer.models import TrainingRows

# LabelEvidence's fields that hold a drawing's kept training lists (TrainingLists.fields).
LIST_FIELDS = ["training_neighbours", "training_distances", "stroke_features", "stroke_neighbours", "stroke_distances"]


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
