"""The out-of-sample searches, kept between rankings: a drawing's nearest training rows of other accounts
(training_neighbours), named by row keys (KnnPart.keys). A model refitted in the same space keeps its rows'
features, so after a promotion only the rows it added are searched (extend_training_lists), and the vote is
arithmetic on the lists with the new model's labels and weights (probabilities_from_lists): what
recognizer.trust.out_of_sample.neighbour_probabilities answers, without searching every drawing again."""

from __future__ import annotations

import numpy as np

from recognizer.ml.knn import vote as knn_vote

from .other_accounts import nearest_of_other_accounts
from .out_of_sample import KnnPart
from .peers import lists_to_research, merge_neighbours

# A drawing's kept list of training rows holds this many more than the k that vote: a few of them dropped
# from the next model (a drawing rejected, capped, quarantined) leave its k nearest still known.
TRAINING_SPARE = 8
PAD_KEY = np.iinfo(np.int64).min  # fills a list that holds every training row of other accounts


def training_list_length(part: KnnPart) -> int:
    return part.k + TRAINING_SPARE


def _nearest_of_others(part: KnnPart, Q: np.ndarray, users: np.ndarray, k: int, among: np.ndarray | None = None
                       ) -> tuple[np.ndarray, np.ndarray]:
    """nearest_of_other_accounts among `among` (default: every row) of `part`, as row keys (PAD_KEY pads)."""
    index = None
    if among is None:  # every row: the arrays themselves, not a copy of them, and the model's graph over them
        F, sq, groups, keys, index = part.F, part.sq, part.groups, part.keys, part.index
    else:
        among = np.asarray(among, np.int64)
        F, sq, groups, keys = part.F[among], part.sq[among], part.groups[among], part.keys[among]
    idx, dist = nearest_of_other_accounts(F, sq, groups, Q, users, k, index)
    if not len(keys):  # no row to search among: every list is padding
        return np.full(idx.shape, PAD_KEY, np.int64), dist
    return np.where(idx >= 0, keys[np.maximum(idx, 0)], PAD_KEY), dist


def training_neighbours(part: KnnPart, Q: np.ndarray, users) -> tuple[np.ndarray, np.ndarray]:
    """Each query's kept list: its training_list_length(part) nearest training rows of other accounts, as
    (row keys, distances), nearest first; PAD_KEY and inf where there are fewer."""
    return _nearest_of_others(part, np.asarray(Q, np.float32), users, training_list_length(part))


def extend_training_lists(part: KnnPart, Q: np.ndarray, users, keys: np.ndarray, dist: np.ndarray,
                          new_rows: np.ndarray) -> np.ndarray:
    """Lists kept under an earlier model (`keys`, `dist`, in place) made this model's: its rows the lists never
    saw (`new_rows`: a model refitted in the same space keeps the others, with the same features) are searched
    and merged in; a row the model no longer has stays listed and is skipped when voting, as in the peer lists.
    A list left with fewer than k rows the model still has is searched again whole. Returns which were."""
    Q = np.asarray(Q, np.float32)
    users = np.asarray(users, np.int64)
    if len(new_rows) and len(Q):
        found, found_dist = _nearest_of_others(part, Q, users, keys.shape[1], among=new_rows)
        i, j = np.nonzero(found != PAD_KEY)
        merge_neighbours(keys, dist, i, found[i, j], found_dist[i, j])
    again = lists_to_research(keys, part.rows_of(keys), part.k, pad=PAD_KEY)
    if again.any():
        keys[again], dist[again] = training_neighbours(part, Q[again], users[again])
    return again


def probabilities_from_lists(part: KnnPart, keys: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """(n, 10): the vote of each list's first k rows that the model has, with its labels and weights: what
    searching the model for those queries with their own accounts left out answers."""
    rows = part.rows_of(keys)
    present = rows >= 0
    first = np.argsort(~present, axis=1, kind="stable")[:, : part.k]
    rows, dist, present = (np.take_along_axis(a, first, axis=1) for a in (rows, dist, present))
    at = np.maximum(rows, 0)
    mult = (np.ones(at.shape, np.float32) if part.mult is None else part.mult[at]) * present
    return knn_vote(part.labels[at].astype(np.int64), dist, mult, part.weights)
