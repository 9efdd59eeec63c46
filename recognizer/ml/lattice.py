"""The segmentation lattice a number is read through (plain Python, no Django): pieces left to right, candidate
digits that are runs of neighbouring pieces, and the best-scoring ways through them (``best_paths``), as
handwriting recognisers choose a segmentation by reading it. recognizer.ml.numbers builds the pieces and
scores; this module knows only scores.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["LOG_FLOOR", "Path", "alternative", "best_paths", "boundary_log_odds", "log_probabilities",
           "segmentation_margin"]

LOG_FLOOR = math.log(1e-4)  # a digit the vote gave nothing still costs a finite amount


@dataclass(frozen=True)
class Path:
    """One way to read the pieces: ``groups`` (first piece, piece after the last) with the ``digits`` read."""

    score: float
    groups: tuple[tuple[int, int], ...]
    digits: tuple[int, ...]

    @property
    def number(self) -> str:
        return "".join(str(d) for d in self.digits)


def best_paths(n: int, edges: dict[tuple[int, int], np.ndarray], boundary: np.ndarray | None = None,
               beam: int = 8, labels_per_edge: int = 3) -> list[Path]:
    """The best-scoring ways through ``n`` pieces, best first (at most ``beam``).

    ``edges[(i, j)]``: the score of pieces i..j-1 read as each digit (10,); ``boundary[k]``: (join, cut)
    log-probabilities between pieces k and k+1 (None: no preference). A path adds its digits' scores, a
    cut at each of its boundaries and a join inside each of its digits."""
    if boundary is None:
        boundary = np.zeros((max(n - 1, 0), 2))
    join_prefix = np.concatenate([[0.0], np.cumsum(boundary[:, 0])])
    ends: list[list[Path]] = [[] for _ in range(n + 1)]
    ends[0] = [Path(0.0, (), ())]
    for j in range(1, n + 1):
        found: list[Path] = []
        for i in range(j):
            scores = edges.get((i, j))
            if scores is None or not ends[i]:
                continue
            base = join_prefix[j - 1] - join_prefix[i] + (boundary[i - 1, 1] if i > 0 else 0.0)
            top = np.argsort(scores)[::-1][:labels_per_edge]
            for head in ends[i]:
                for d in top:
                    found.append(Path(head.score + base + float(scores[d]), (*head.groups, (i, j)),
                                      (*head.digits, int(d))))
        found.sort(key=lambda p: -p.score)
        ends[j] = found[:beam]
    return ends[n]


def log_probabilities(probabilities: ArrayLike) -> np.ndarray:
    """(10,) log probabilities, floored at LOG_FLOOR."""
    return np.maximum(np.log(np.maximum(np.asarray(probabilities, float), 1e-12)), LOG_FLOOR)


def boundary_log_odds(gaps: np.ndarray, centre: float, scale: float) -> np.ndarray:
    """(n - 1, 2): (join, cut) log-probabilities between neighbouring pieces from their gaps (a logistic in the
    gap: as likely at ``centre``, surer by one nat every ``scale``)."""
    z = (np.asarray(gaps, float) - centre) / scale
    if not len(z):
        return np.zeros((0, 2))
    return np.stack([-np.logaddexp(0.0, z), -np.logaddexp(0.0, -z)], axis=1)


def alternative(paths: Sequence[Path]) -> str | None:
    """The best path's runner-up that reads another number."""
    return next((p.number for p in paths[1:] if p.number != paths[0].number), None)


def segmentation_margin(paths: Sequence[Path]) -> float:
    """How far the best path is ahead of the best one that splits the pieces otherwise (inf: none does)."""
    other = next((p for p in paths[1:] if p.groups != paths[0].groups), None)
    return math.inf if other is None else paths[0].score - other.score
