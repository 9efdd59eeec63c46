"""Trust and suspicion: how far each account's labels can be trusted, and the chance each label is wrong.

- Trust of an account: a smoothed share of its labels that agree with the evidence where the evidence is
  confident (staff approvals count as agreement, rejections as disagreement). Two rounds: the second
  weights other accounts' votes by the trust the first round gave them, so colluding accounts do not
  vouch for each other.
- Suspicion of a label: the chance it is wrong given the evidence and the account's trust (a label is
  wrong with the chance 1 - trust, then any other digit).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from recognizer.ml.knn import N_CLASSES

# Called as peers.peer_neighbours: a spy put on recognizer.trust.peers (tests/test_ranking_incremental.py)
# sees rank_labels' own search too.
from . import peers

# A new account starts at 0.8 trust, worth 10 checked labels.
PRIOR_AGREE, PRIOR_DISAGREE = 8.0, 2.0
# Evidence this sure of one digit is a check of the label: agreement or disagreement.
CONFIDENT = 0.8
# The k-NN's probabilities are sharper than it is right on canvas drawings (an all-neighbours vote is
# 1.0): mixed with this much of uniform before they count as evidence.
MODEL_SMOOTHING = 0.2
# The weight of "no other account drew this" against other accounts' votes (recognizer.trust.peers).
PEER_PRIOR = 1.0


@dataclass
class AccountTrust:
    score: float
    n_labels: int = 0
    n_agree: int = 0
    n_disagree: int = 0
    n_flagged: int = 0


@dataclass
class Ranking:
    """One ranking of every labelled, not rejected drawing."""

    suspicion: np.ndarray  # chance that the label is wrong
    suspicious: np.ndarray  # bool: into the review queue
    evidence: np.ndarray  # (n, 10) the combined evidence for each drawing's digit
    trust: dict[int, AccountTrust] = field(default_factory=dict)

    def trust_of(self, users) -> np.ndarray:
        return np.array([self.trust[int(u)].score for u in users], np.float64)


def prior_trust() -> float:
    return PRIOR_AGREE / (PRIOR_AGREE + PRIOR_DISAGREE)


def combine_evidence(p_model: np.ndarray, votes: np.ndarray | None = None, mass: np.ndarray | None = None
                     ) -> np.ndarray:
    """The model's smoothed probabilities times the other accounts' (Dirichlet-smoothed) votes, normalised."""
    p = (1.0 - MODEL_SMOOTHING) * np.asarray(p_model, np.float64) + MODEL_SMOOTHING / N_CLASSES
    if votes is not None:
        p = p * (votes + PEER_PRIOR / N_CLASSES) / (mass + PEER_PRIOR)[:, None]
    return p / p.sum(axis=1, keepdims=True)


def suspicion(evidence: np.ndarray, labels: np.ndarray, trust: np.ndarray) -> np.ndarray:
    """P(label wrong | evidence, trust): the account gives the right digit with the chance `trust`,
    otherwise any of the nine others."""
    p = evidence[np.arange(len(labels)), labels]
    wrong = (1.0 - trust) * (1.0 - p) / (N_CLASSES - 1)
    return wrong / np.maximum(wrong + trust * p, 1e-12)


def _trust_from(evidence, labels, users_at, approved, rejected_by_user, accounts) -> dict[int, AccountTrust]:
    """`users_at`: each drawing's account as an index into `accounts` (counted with bincount: one pass
    over the drawings, not one per account)."""
    confident = evidence.max(axis=1) >= CONFIDENT
    agree = confident & (evidence.argmax(axis=1) == labels)
    disagree = confident & ~agree
    agree, disagree = agree | approved, disagree & ~approved  # staff have the last word
    n = len(accounts)
    n_agree = np.bincount(users_at, weights=agree, minlength=n)
    n_disagree = np.bincount(users_at, weights=disagree, minlength=n)
    n_rows = np.bincount(users_at, minlength=n)
    out = {}
    for i, user in enumerate(accounts):
        rejected = int(rejected_by_user.get(int(user), 0))
        a, d = int(n_agree[i]), int(n_disagree[i]) + rejected
        out[int(user)] = AccountTrust(score=(PRIOR_AGREE + a) / (PRIOR_AGREE + PRIOR_DISAGREE + a + d),
                                      n_labels=int(n_rows[i]) + rejected, n_agree=a, n_disagree=d)
    return out


def rank_labels(labels, users, p_model, features: np.ndarray | None = None, *, neighbours=None,
                radius: float | None = None, approved=None, rejected_by_user: dict | None = None,
                threshold: float = 0.5, rounds: int = 2) -> Ranking:
    """Trust every account and rank every label (see the docstrings of this module and of recognizer.trust).

    `p_model`: out-of-sample probabilities (neighbour_probabilities with users); `features`: the drawings
    in the model's feature space, for other accounts' similar drawings; or `neighbours`: (rows, distances)
    of each drawing's nearest other-account drawings as peer_neighbours finds them, -1 where one is gone
    (kept between rankings); neither: the model alone. `approved`: bool per drawing (staff approved it:
    never suspicious, and agreement); `rejected_by_user`: rejected labels per account (disagreement).
    """
    labels = np.asarray(labels, np.int64)
    users = np.asarray(users, np.int64)
    if len(labels) and (labels.min() < 0 or labels.max() >= N_CLASSES):
        raise ValueError("labels must be digits 0-9")
    approved = np.zeros(len(labels), bool) if approved is None else np.asarray(approved, bool)
    rejected_by_user = rejected_by_user or {}
    accounts = sorted({int(u) for u in users} | {int(u) for u in rejected_by_user})
    users_at = np.searchsorted(np.asarray(accounts, np.int64), users)
    if neighbours is None and features is not None and len(labels):
        neighbours = peers.peer_neighbours(features, users, k=peers.PEER_NEIGHBOURS)  # one search for both rounds
    with_peers = neighbours is not None and len(labels) > 0
    trust = {u: AccountTrust(prior_trust()) for u in accounts}
    evidence = combine_evidence(p_model)
    for _ in range(rounds if with_peers else 1):
        if with_peers:
            row_trust = np.array([trust[u].score for u in accounts], np.float64)[users_at]
            votes, mass = peers.votes_from_neighbours(neighbours[0], neighbours[1], users, labels, row_trust, radius)
            evidence = combine_evidence(p_model, votes, mass)
        trust = _trust_from(evidence, labels, users_at, approved, rejected_by_user, accounts)
    row_trust = np.array([trust[u].score for u in accounts], np.float64)[users_at]
    scores = suspicion(evidence, labels, row_trust) if len(labels) else np.zeros(0)
    flagged = (scores >= threshold) & ~approved
    n_flagged = np.bincount(users_at, weights=flagged, minlength=len(accounts))
    for i, user in enumerate(accounts):
        trust[user].n_flagged = int(n_flagged[i])
    return Ranking(suspicion=scores, suspicious=flagged, evidence=evidence, trust=trust)


def vote_weights(users, trust: dict[int, float], threshold: float, approved=None, floor: float = 0.1) -> np.ndarray:
    """Per drawing, its account's trust relative to the threshold (at most 1, at least `floor`): a
    low-trust account's labels that do train count for less. Staff-approved drawings count fully;
    an account with no trust yet counts fully."""
    users = np.asarray(users, np.int64)
    w = np.array([min(1.0, max(floor, trust[int(u)] / threshold)) if trust.get(int(u)) is not None else 1.0
                  for u in users], np.float32)
    if approved is not None:
        w[np.asarray(approved, bool)] = 1.0
    return w

