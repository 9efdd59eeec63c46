"""The training data a retrain assembles: which labels are trusted (DrawingQuerySet.trusted: not quarantined),
who is held out, the caps on each account's share of a digit, the per-digit fill of the held-out side and the
vote weights from each account's trust (recognizer.trust does the arithmetic)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.db.models import Count

from recognizer import trust
from recognizer.feedback.drawings import DrawingSet, drawing_set
from recognizer.models import Drawing, UserTrust


def is_holdout_user(user_id: int) -> bool:
    """Deterministic by-user split: the same user's drawings are always on the same side."""
    digest = hashlib.sha256(f"digitsite-holdout:{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < settings.RECOGNIZER_HOLDOUT_SHARE


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
    train, capped_train = _capped(trusted.pick(~held))
    holdout, capped_held = _capped(trusted.pick(held))
    train, holdout, filled = _fill_holdout(train, holdout, scores, threshold)
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


def _capped(drawings: DrawingSet) -> tuple[DrawingSet, dict]:
    """One side's drawings with no account over its share of a digit (trust.cap_accounts), and what was left out."""
    caps = {"share": settings.RECOGNIZER_USER_CLASS_SHARE, "floor": settings.RECOGNIZER_USER_CLASS_FLOOR}
    keep, capped = trust.cap_accounts(drawings.users, drawings.labels, drawings.suspicion, drawings.approved, **caps)
    return drawings.pick(keep), capped


def _fill_holdout(train: DrawingSet, holdout: DrawingSet, scores: dict, threshold: float
                  ) -> tuple[DrawingSet, DrawingSet, dict]:
    """(training drawings, held-out drawings, {digit: what was moved}) once trusted accounts' training drawings
    of the digits that held-out users drew too few of are held out (trust.holdout_fill)."""
    eligible = {int(u) for u in np.unique(train.users) if scores.get(int(u), 1.0) >= threshold}
    move, filled = trust.holdout_fill(train.users, train.labels, train.ids, holdout.labels, eligible,
                                      min_per_digit=settings.RECOGNIZER_HOLDOUT_MIN_PER_DIGIT,
                                      share=settings.RECOGNIZER_HOLDOUT_SHARE or 0.2)
    if move.any():
        holdout, train = holdout + train.pick(move), train.pick(~move)
    return train, holdout, filled


def split_trusted() -> tuple[DrawingSet, DrawingSet]:
    """(training drawings, held-out drawings) among the trusted ones (assemble_training_data)."""
    data = assemble_training_data()
    return data.train, data.holdout
