"""Caps on one account's share of a digit: no account supplies more than a share of the drawings of any digit
a model trains on (or is judged on), however many it labels."""

from __future__ import annotations

import math

import numpy as np


def cap_accounts(users, labels, rank_key, exempt=None, *, share: float, floor: int
                 ) -> tuple[np.ndarray, dict[int, dict[str, int]]]:
    """(keep mask, {account: {digit: drawings left out}}): no account supplies more of a digit's
    drawings than `share` of them (its own counted in the total), or `floor` when that is more.

    The drawings kept are the account's least suspicious (`rank_key` ascending); `exempt` ones (staff
    approved) are always kept and count toward the account's share.
    """
    users = np.asarray(users, np.int64)
    labels = np.asarray(labels, np.int64)
    rank_key = np.asarray(rank_key, np.float64)
    exempt = np.zeros(len(users), bool) if exempt is None else np.asarray(exempt, bool)
    keep = np.ones(len(users), bool)
    dropped: dict[int, dict[str, int]] = {}
    if not len(users):
        return keep, dropped
    ratio = share / (1.0 - share) if share < 1.0 else math.inf
    if not math.isfinite(ratio):
        return keep, dropped
    # one pass over (digit, account) pairs, not a scan of every drawing per pair: at 1M drawings and 20k
    # accounts that scan was 200,000 passes over a million rows
    pairs, at, counts = np.unique(np.stack([labels, users], axis=1), axis=0, return_inverse=True,
                                  return_counts=True)
    at = at.ravel()
    digits, per_digit = np.unique(labels, return_counts=True)
    total = per_digit[np.searchsorted(digits, pairs[:, 0])]
    caps = np.maximum(floor, np.ceil(ratio * (total - counts)).astype(np.int64))
    over = np.flatnonzero(counts > caps)
    if not len(over):
        return keep, dropped
    order = np.argsort(at, kind="stable")  # the rows of each pair together, in row order
    starts = np.concatenate([[0], np.cumsum(counts)])
    for j in over:
        digit, user = int(pairs[j, 0]), int(pairs[j, 1])
        mine = order[starts[j]: starts[j + 1]]
        free = mine[~exempt[mine]]
        room = max(0, int(caps[j]) - int(exempt[mine].sum()))
        ranked = free[np.lexsort((free, rank_key[free]))]
        keep[ranked[room:]] = False
        if len(ranked) > room:
            dropped.setdefault(user, {})[str(digit)] = int(len(ranked) - room)
    return keep, dropped
