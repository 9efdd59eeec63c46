"""A candidate's figures with accounts left out: what a k-NN candidate predicts on fixed evaluation sets as if
some accounts' drawings had not been trained on, without training it again (recognizer.promotion uses it to
find the accounts that drive a refusal)."""

from __future__ import annotations

import numpy as np

from .out_of_sample import image_part, rows_with_strokes, stroke_part


class LeaveOutEvaluator:
    """Predictions of a k-NN candidate on fixed evaluation sets as if some accounts' drawings had not
    been trained on: only the rows with one of their drawings among the k nearest are searched again.

    `sets`: name -> (images, labels, strokes or None).
    """

    def __init__(self, estimator, sets: dict) -> None:
        self.estimator = estimator
        self.image = image_part(estimator)
        if self.image is None:
            raise ValueError("only a k-NN can leave accounts out without training again")
        self.strokes = stroke_part(estimator)
        self.sets = {}
        for name, (images, labels, strokes) in sets.items():
            Q = estimator.transform(images)
            idx, dist = self.image.search(Q)
            entry = {"Q": Q, "idx": idx, "p": self.image.vote(idx, dist), "y": np.asarray(labels, np.int64)}
            rows = rows_with_strokes(strokes) if self.strokes is not None else []
            if rows:
                SQ = estimator.stroke_model_.features([strokes[i] for i in rows])
                sidx, sdist = self.strokes.search(SQ)
                entry.update(rows=np.asarray(rows), SQ=SQ, sidx=sidx, ps=self.strokes.vote(sidx, sdist))
            self.sets[name] = entry

    def accounts(self, name: str, rows: np.ndarray | None = None) -> dict[int, int]:
        """{account: how many of the set's rows (all, or `rows`) it has a neighbour of}: who could matter."""
        e = self.sets[name]
        sel = np.ones(len(e["y"]), bool) if rows is None else np.asarray(rows, bool)
        groups = self.image.groups[e["idx"][sel]]
        counts: dict[int, int] = {}
        for g in np.unique(groups[groups >= 0]):
            counts[int(g)] = int((groups == g).any(axis=1).sum())
        if "sidx" in e:
            srows = sel[e["rows"]]
            sgroups = self.strokes.groups[e["sidx"][srows]]
            for g in np.unique(sgroups[sgroups >= 0]):
                counts[int(g)] = counts.get(int(g), 0) + int((sgroups == g).any(axis=1).sum())
        return counts

    def predictions(self, name: str, excluded=()) -> np.ndarray:
        e = self.sets[name]
        p = e["p"].copy()
        excluded = {int(g) for g in excluded}
        if excluded:
            ex = self.image.excluded(excluded)
            hit = np.flatnonzero(ex[e["idx"]].any(axis=1))
            if len(hit):
                idx, dist = self.image.search(e["Q"][hit], ex)
                p[hit] = self.image.vote(idx, dist, ex)
        if "sidx" in e:
            ps = e["ps"]
            if excluded:
                ps = ps.copy()
                sex = self.strokes.excluded(excluded)
                shit = np.flatnonzero(sex[e["sidx"]].any(axis=1))
                if len(shit):
                    idx, dist = self.strokes.search(e["SQ"][shit], sex)
                    ps[shit] = self.strokes.vote(idx, dist, sex)
            w = float(self.estimator.stroke_weight_)
            p[e["rows"]] = (1.0 - w) * p[e["rows"]] + w * ps
        return p.argmax(axis=1)

    def labels(self, name: str) -> np.ndarray:
        return self.sets[name]["y"]
