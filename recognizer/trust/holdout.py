"""The per-digit held-out set: for each digit the held-out accounts drew too few times, training drawings moved
to the set a candidate is judged on, account by account (holdout_fill)."""

from __future__ import annotations

import hashlib

import numpy as np


def digit_user_order(digit: int, user: int) -> int:
    """The place of `user` in the order accounts are held out in for `digit`: fixed, and another per digit."""
    return int.from_bytes(hashlib.sha256(f"digitsite-holdout-digit:{digit}:{user}".encode()).digest()[:8], "big")


def holdout_fill(train_users, train_labels, train_ids, held_labels, eligible: set, *, min_per_digit: int,
                 share: float) -> tuple[np.ndarray, dict[str, dict]]:
    """(bool per training drawing: move it to the held-out set, {digit: what was moved}).

    For each digit the held-out users drew fewer than `min_per_digit` times, the training users'
    drawings of that digit are held out user by user (a deterministic order per digit, `eligible`
    accounts only: a low-trust account never judges the candidate), as long as at least half of the
    digit's drawings stay in training. When no whole account can go (one account drew the digit), a
    deterministic `share` of that digit's drawings is held out instead.
    """
    train_users = np.asarray(train_users, np.int64)
    train_labels = np.asarray(train_labels, np.int64)
    held_labels = np.asarray(held_labels, np.int64)
    move = np.zeros(len(train_labels), bool)
    report: dict[str, dict] = {}
    for digit in np.unique(train_labels):
        held = int((held_labels == digit).sum())
        if held >= min_per_digit:
            continue
        of_digit = train_labels == digit
        total = int(of_digit.sum()) + held
        target = min(min_per_digit, max(1, total // 2))
        if held >= target:
            continue
        moved_users = []
        accounts = sorted((int(u) for u in np.unique(train_users[of_digit]) if int(u) in eligible),
                          key=lambda u: digit_user_order(int(digit), u))
        for user in accounts:
            if held >= target:
                break
            mine = of_digit & (train_users == user)
            n = int(mine.sum())
            if int((of_digit & ~move).sum()) - n < total / 2:
                continue
            move |= mine
            held += n
            moved_users.append(user)
        if held == 0:
            candidates = np.flatnonzero(of_digit & np.isin(train_users, sorted(eligible)))
            if len(candidates) >= 2:
                count = max(1, round(share * len(candidates)))
                order = sorted(candidates, key=lambda i: digit_user_order(int(digit), -int(train_ids[i])))
                move[order[:count]] = True
                held = count
        if moved_users or held:
            report[str(int(digit))] = {"users": moved_users, "held_out": int(held),
                                       "moved": int((move & of_digit).sum())}
    return move, report
