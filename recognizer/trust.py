"""Who the global model listens to: per-account trust, how suspicious each label is, caps on one
account's share of a digit, and a k-NN candidate's figures with accounts left out.

recognizer.feedback and recognizer.promotion call these at every label ranking and retrain; everything here takes arrays, so
tests and benchmarks can call it too. The numbers below were set with bench/poisoning.py.

- Evidence for a label: the k-NN's out-of-sample probabilities (the account's own drawings and
  strokes left out), combined with the labels other accounts gave their similar drawings (one vote
  per account, weighted by its trust, only drawings within the model's typical neighbour distance).
- Trust of an account: a smoothed share of its labels that agree with that evidence where the
  evidence is confident (staff approvals count as agreement, rejections as disagreement). Two
  rounds: the second weights other accounts' votes by the trust the first round gave them, so
  colluding accounts do not vouch for each other.
- Suspicion of a label: the chance it is wrong given the evidence and the account's trust (a label
  is wrong with the chance 1 - trust, then any other digit). An honest account whose style is new
  keeps a high trust, so the model disagreeing with a few of its labels does not flag them; an account
  that labels against confident predictions loses its trust, and then its every contradicted label is.
- Kept searches: a drawing's nearest other-account drawings (peer_neighbours) do not change when labels
  or trust do, so they are kept between rankings; new drawings are searched and put into the kept lists
  they fall into (neighbours_reached, merge_neighbours), and the votes are arithmetic on the lists
  (votes_from_neighbours): peer_votes' answer without searching every drawing again.
- The same for the out-of-sample probabilities: a drawing's nearest training rows of other accounts
  (training_neighbours) are kept too. A model refitted in the same space keeps its rows' features, so
  after a promotion only the rows it added are searched (extend_training_lists), and the vote is
  arithmetic on the lists with the new model's labels and weights (probabilities_from_lists).
"""

from __future__ import annotations

import hashlib
import math
import pickle
from dataclasses import dataclass, field

import numpy as np

from recognizer.ml import ann
from recognizer.ml.knn import N_CLASSES
from recognizer.ml.knn import knn_sorted as _knn_sorted  # local names kept: only the import moved to the public ones
from recognizer.ml.knn import vote as _vote

# A new account starts at 0.8 trust, worth 10 checked labels.
PRIOR_AGREE, PRIOR_DISAGREE = 8.0, 2.0
# Evidence this sure of one digit is a check of the label: agreement or disagreement.
CONFIDENT = 0.8
# The k-NN's probabilities are sharper than it is right on canvas drawings (an all-neighbours vote is
# 1.0): mixed with this much of uniform before they count as evidence.
MODEL_SMOOTHING = 0.2
# Other accounts' drawings searched for each label, and the weight of "no other account drew this".
PEER_NEIGHBOURS = 30
PEER_PRIOR = 1.0
# Neighbour lists kept between rankings hold this many more: a few of a drawing's neighbours deleted or
# rejected then leave its nearest PEER_NEIGHBOURS still known, with no new search.
PEER_SPARE = 10
PEER_KEPT = PEER_NEIGHBOURS + PEER_SPARE
# Part of every cached evidence's id: bumped when features or searches change meaning, so that the next
# ranking searches everything again instead of mixing old and new evidence.
EVIDENCE_VERSION = 1


# --- k-NN searches that leave accounts out -------------------------------------------------------


@dataclass
class KnnPart:
    """One k-NN's training set (the image model's or the stroke model's) as the searches here need it."""

    F: np.ndarray
    sq: np.ndarray
    labels: np.ndarray
    mult: np.ndarray | None
    groups: np.ndarray  # who drew each training sample: a user id, -1 MNIST, <= -1000 a pendigits writer
    k: int
    weights: str
    ids: np.ndarray | None = None  # which stored drawing each row is (-1: a data set's row); None: not known
    index: ann.NeighbourIndex | None = None  # the k-NN's HNSW graph over exactly these rows, when it has one
    _keys: np.ndarray | None = field(default=None, init=False, repr=False)
    _key_order: np.ndarray | None = field(default=None, init=False, repr=False)

    @property
    def keys(self) -> np.ndarray:
        """A name for each row that another model in the same feature space gives the same row: the drawing's id,
        or -1 - its place among the rows that are not drawings (the data sets' rows, always kept first and in
        order by a refit: recognizer.training.refit_in_space)."""
        if self._keys is None:
            ids = np.full(len(self.groups), -1, np.int64) if self.ids is None else np.asarray(self.ids, np.int64)
            keys = ids.copy()
            anonymous = ids < 0
            keys[anonymous] = -1 - np.arange(int(anonymous.sum()), dtype=np.int64)
            self._keys = keys
            self._key_order = np.argsort(keys, kind="stable")
        return self._keys

    def rows_of(self, keys: np.ndarray) -> np.ndarray:
        """The rows named by `keys` (any shape); -1 for padding and for rows this model does not have."""
        own = self.keys
        keys = np.asarray(keys, np.int64)
        if not len(own):
            return np.full(keys.shape, -1, np.int64)
        sorted_keys = own[self._key_order]
        at = np.minimum(np.searchsorted(sorted_keys, keys), len(own) - 1)
        return np.where(sorted_keys[at] == keys, self._key_order[at], -1)

    def search(self, Q: np.ndarray, excluded: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(indices, distances) of the k nearest training samples not `excluded` (bool per training row)."""
        n_ex = 0 if excluded is None else int(excluded.sum())
        if n_ex == 0:
            return _knn_sorted(Q, self.F, self.sq, self.k)
        if n_ex <= 1024:
            idx, dist = _knn_sorted(Q, self.F, self.sq, self.k + n_ex)
            keep = np.argsort(excluded[idx], axis=1, kind="stable")[:, : self.k]
            return np.take_along_axis(idx, keep, axis=1), np.take_along_axis(dist, keep, axis=1)
        rows = np.flatnonzero(~excluded)
        if not len(rows):  # everything left out: the vote below is uniform
            return _knn_sorted(Q, self.F, self.sq, self.k)
        sub, dist = _knn_sorted(Q, self.F[rows], self.sq[rows], self.k)
        return rows[sub], dist

    def vote(self, idx: np.ndarray, dist: np.ndarray, excluded: np.ndarray | None = None) -> np.ndarray:
        mult = self.mult[idx] if self.mult is not None else np.ones(idx.shape, np.float32)
        if excluded is not None:
            mult = mult * ~excluded[idx]
        return _vote(self.labels[idx].astype(np.int64), dist, mult, self.weights)

    def excluded(self, groups) -> np.ndarray:
        return np.isin(self.groups, np.asarray(sorted(groups), np.int64))


def _groups_or_mnist(model, n: int) -> np.ndarray:
    groups = getattr(model, "train_groups_", None)
    return np.full(n, -1, np.int64) if groups is None else np.asarray(groups, np.int64)


def image_part(estimator) -> KnnPart | None:
    """The image k-NN of `estimator`, or None when it is not a k-NN (nothing can be left out)."""
    if not hasattr(estimator, "train_features_") or not hasattr(estimator, "n_neighbors"):
        return None
    n = len(estimator.train_labels_)
    return KnnPart(estimator.train_features_, estimator.train_sq_, estimator.train_labels_,
                   estimator.sample_weight_, _groups_or_mnist(estimator, n), int(estimator.n_neighbors),
                   estimator.weights, getattr(estimator, "train_ids_", None),
                   getattr(estimator, "neighbour_index_", None))


def stroke_part(estimator) -> KnnPart | None:
    model = getattr(estimator, "stroke_model_", None) if getattr(estimator, "reads_strokes", False) else None
    if model is None:
        return None
    n = len(model.train_labels_)
    return KnnPart(model.train_features_, model.train_sq_, model.train_labels_, model.sample_weight_,
                   _groups_or_mnist(model, n), int(model.n_neighbors), model.weights, getattr(model, "train_ids_", None),
                   getattr(model, "neighbour_index_", None))


def _stroke_rows(strokes) -> list[int]:
    return [] if strokes is None else [i for i, s in enumerate(strokes) if s is not None and len(s)]


def neighbour_probabilities(estimator, images: np.ndarray, strokes=None, users=None, exclude=(),
                            features: np.ndarray | None = None) -> np.ndarray:
    """(n, 10) probabilities of `estimator` for `images`, fused with their strokes' when it reads strokes,
    from neighbours that are not in `exclude` (account ids) and, with `users` (one per image), not drawn
    by the image's own account: its own drawings cannot vouch for its labels.

    `features`: estimator.transform(images) when already computed. A model that is not a k-NN cannot
    leave anyone out: its plain probabilities are returned.
    """
    images = np.asarray(images)
    part = image_part(estimator)
    if part is None:
        kw = {"strokes": list(strokes)} if strokes is not None and getattr(estimator, "reads_strokes", False) else {}
        return np.asarray(estimator.predict_proba(images, **kw), np.float64)
    Q = estimator.transform(images) if features is None else features
    exclude = {int(g) for g in exclude}
    out = _part_probabilities(part, Q, users, exclude)
    spart = stroke_part(estimator)
    rows = _stroke_rows(strokes) if spart is not None else []
    if rows:
        SQ = estimator.stroke_model_.features([strokes[i] for i in rows])
        p_strokes = _part_probabilities(spart, SQ, None if users is None else np.asarray(users)[rows], exclude)
        w = float(estimator.stroke_weight_)
        out[rows] = (1.0 - w) * out[rows] + w * p_strokes
    return out


def _part_probabilities(part: KnnPart, Q: np.ndarray, users, exclude: set) -> np.ndarray:
    base = part.excluded(exclude) if exclude else np.zeros(len(part.groups), bool)
    if users is None:
        idx, dist = part.search(Q, base)
        return part.vote(idx, dist, base)
    users = np.asarray(users, np.int64)
    out = np.empty((len(Q), N_CLASSES))
    for user in np.unique(users):
        rows = np.flatnonzero(users == user)
        excluded = base | (part.groups == user)
        idx, dist = part.search(Q[rows], excluded)
        out[rows] = part.vote(idx, dist, excluded)
    return out


# --- The out-of-sample searches, kept between rankings -------------------------------------------------

# A drawing's kept list of training rows holds this many more than the k that vote: a few of them dropped
# from the next model (a drawing rejected, capped, quarantined) leave its k nearest still known.
TRAINING_SPARE = 8
PAD_KEY = np.iinfo(np.int64).min  # fills a list that holds every training row of other accounts


def training_list_length(part: KnnPart) -> int:
    return part.k + TRAINING_SPARE


# Candidates asked of a graph beyond the k wanted: the query's own account's rows among them are dropped, and
# a query left with fewer than k is searched exactly. An account's drawings of one digit rarely number more.
GRAPH_MARGIN = 16


def nearest_of_other_accounts(F: np.ndarray, sq: np.ndarray, groups: np.ndarray, Q: np.ndarray, users,
                              k: int, index: ann.NeighbourIndex | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(rows (n, k) int64, distances (n, k) float32): for each query, the k nearest rows of `F` (`sq`: their
    squared norms, `groups`: who drew each) not drawn by the query's own account (`users`), nearest first;
    -1 and inf where there are fewer. The peer lists (peer_neighbours) and the kept training lists
    (training_neighbours) are both this search.

    `index`: an HNSW graph over exactly the rows of F. The k + GRAPH_MARGIN nearest it finds are searched
    instead of every row, as served queries are (recognizer.ml.ann: at 1M rows an exact search of every
    drawing is O(n^2), hours); a query with fewer than k of other accounts among them is searched exactly."""
    idx_out = np.full((len(Q), k), -1, np.int64)
    dist_out = np.full((len(Q), k), np.inf, np.float32)
    if not len(F) or not len(Q):
        return idx_out, dist_out
    groups, users = np.asarray(groups, np.int64), np.asarray(users, np.int64)
    accounts, counts = np.unique(groups, return_counts=True)
    at = np.minimum(np.searchsorted(accounts, users), len(accounts) - 1)
    own = np.where(accounts[at] == users, counts[at], 0)

    def put(q, idx, dist, mine):
        keep = np.argsort(mine, axis=1, kind="stable")[:, :k]  # the account's own last: cut or padded
        idx, dist, mine = (np.take_along_axis(a, keep, axis=1) for a in (idx, dist, mine))
        idx_out[q, : idx.shape[1]] = np.where(mine, -1, idx)
        dist_out[q, : idx.shape[1]] = np.where(mine, np.inf, dist)

    exact = np.ones(len(Q), bool)
    if index is not None and len(index) == len(F):
        for s in range(0, len(Q), 50_000):  # bounds the candidate arrays held at once
            q = np.arange(s, min(s + 50_000, len(Q)))
            want = min(len(F), k + min(int(own[q].max()), GRAPH_MARGIN))
            idx, dist = index.search(Q[q], want)
            mine = groups[idx] == users[q][:, None]
            enough = (~mine).sum(axis=1) >= np.minimum(k, len(F) - own[q])
            put(q[enough], idx[enough], dist[enough], mine[enough])
            exact[q[enough]] = False
    small = np.flatnonzero((own <= _SMALL_ACCOUNT) & exact)
    for s in range(0, len(small), 4096):  # at most `own` of the k + own nearest are the query's own account's
        q = small[s: s + 4096]
        idx, dist = _knn_sorted(Q[q], F, sq, min(len(F), k + int(own[q].max())))
        put(q, idx, dist, groups[idx] == users[q][:, None])
    for user in np.unique(users[(own > _SMALL_ACCOUNT) & exact]):  # a big account: search the others only
        q = np.flatnonzero((users == user) & exact)
        others = np.flatnonzero(groups != user)
        if len(others):
            sub, dist = _knn_sorted(Q[q], F[others], sq[others], min(k, len(others)))
            idx = others[sub]
            put(q, idx, dist, np.zeros(idx.shape, bool))
    return idx_out, dist_out


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
    return _vote(part.labels[at].astype(np.int64), dist, mult, part.weights)


def training_rows_digest(space: str | None, image: KnnPart, stroke: KnnPart | None, stroke_params: dict | None) -> str:
    """Names what the kept lists' row keys mean beyond the drawings' ids: the feature space (feature_space_id),
    and the data sets' rows (features, labels, who drew them) of the image and stroke k-NNs (image_part,
    stroke_part; the stroke features' parameters). Lists kept under a model with another digest are searched
    again."""
    h = hashlib.sha256(f"training lists v{EVIDENCE_VERSION} spare {TRAINING_SPARE} {space}".encode())
    for part, params in ((image, None), (stroke, stroke_params)):
        if part is None:
            h.update(b"none")
            continue
        h.update(repr((part.k, part.weights, params)).encode())
        base = part.keys < 0
        for a in (part.F[base], part.labels[base], part.groups[base]):
            _array_digest(h, a)
    return h.hexdigest()


# --- Trust and suspicion ---------------------------------------------------------------------------


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


def peer_votes(features: np.ndarray, users: np.ndarray, labels: np.ndarray, row_trust: np.ndarray,
               radius: float | None = None, k: int = PEER_NEIGHBOURS) -> tuple[np.ndarray, np.ndarray]:
    """(votes (n, 10), mass (n,)): what other accounts labelled their drawings near each drawing.

    Each other account found among the k nearest (within `radius`) casts one vote, weighted by its
    trust (`row_trust`, per drawing) and split over the labels of its drawings found: an account with a
    thousand drawings of one kind counts as one voice, like an account with one.
    """
    F = np.ascontiguousarray(features, np.float32)
    sq = np.einsum("ij,ij->i", F, F)
    users = np.asarray(users, np.int64)
    labels = np.asarray(labels, np.int64)
    votes = np.zeros((len(F), N_CLASSES))
    mass = np.zeros(len(F))
    limit = np.inf if radius is None else float(radius)
    for user in np.unique(users):
        rows = np.flatnonzero(users == user)
        own = len(rows)
        if own == len(F):
            continue
        if own <= 1024:  # search everything and drop the account's own
            idx, dist = _knn_sorted(F[rows], F, sq, min(len(F), k + own))
            keep = np.argsort(users[idx] == user, axis=1, kind="stable")[:, :k]
            idx, dist = np.take_along_axis(idx, keep, axis=1), np.take_along_axis(dist, keep, axis=1)
        else:  # a big account: search the others only
            others = np.flatnonzero(users != user)
            sub, dist = _knn_sorted(F[rows], F[others], sq[others], min(len(others), k))
            idx = others[sub]
        acc = users[idx]
        valid = (acc != user) & (dist <= limit)
        same = (acc[:, :, None] == acc[:, None, :]) & valid[:, None, :]
        share = np.where(valid, row_trust[idx] / np.maximum(same.sum(axis=2), 1), 0.0)
        flat = (np.arange(len(rows))[:, None] * N_CLASSES + labels[idx]).ravel()
        votes[rows] = np.bincount(flat, weights=share.ravel(), minlength=len(rows) * N_CLASSES).reshape(-1, N_CLASSES)
        mass[rows] = share.sum(axis=1)
    return votes, mass


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
    """Trust every account and rank every label (see the module docstring).

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
        neighbours = peer_neighbours(features, users, k=PEER_NEIGHBOURS)  # one search for both rounds
    peers = neighbours is not None and len(labels) > 0
    trust = {u: AccountTrust(prior_trust()) for u in accounts}
    evidence = combine_evidence(p_model)
    for _ in range(rounds if peers else 1):
        if peers:
            row_trust = np.array([trust[u].score for u in accounts], np.float64)[users_at]
            votes, mass = votes_from_neighbours(neighbours[0], neighbours[1], users, labels, row_trust, radius)
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


# --- Neighbour lists kept between rankings ----------------------------------------------------------
#
# peer_votes searches every drawing's neighbours, twice a ranking: N searches of N drawings. The lists
# below are what those searches find, kept per drawing so that a ranking searches only new drawings
# (and inserts them into the old lists they fall into); the votes are then arithmetic on the lists.


# Accounts with at most this many drawings are searched together: one search of k + their largest count,
# then each row drops its own account's (a site's new drawings come from many accounts, a few each).
_SMALL_ACCOUNT = 128


# A search of this many drawings' peers among at least ann.ANN_MIN_ROWS goes through a graph built for it. An
# estimate from figures measured elsewhere, not a measurement of this choice: one thread builds a graph at about
# 0.36 ms a row with 16 links (ann.NeighbourIndex.build: 6 min at 1M) and searches it in under 1 ms a query, where the exact
# search costs n x 80 multiply-adds a query (about 6 us per 1,000 rows): from about 50,000 queries the build
# pays for itself. Fewer (a ranking's new drawings) are searched exactly.
PEER_GRAPH_MIN_QUERIES = 50_000


def peer_neighbours(features: np.ndarray, users, rows=None, k: int = PEER_KEPT) -> tuple[np.ndarray, np.ndarray]:
    """(indices (m, k) int64, distances (m, k) float32): for each of `rows` (default: every drawing), the k
    nearest drawings of other accounts among all `features`, nearest first; -1 and inf where there are fewer.
    Approximate (an HNSW graph over the drawings) for PEER_GRAPH_MIN_QUERIES rows or more among
    ann.ANN_MIN_ROWS drawings or more: a feature space's first ranking of a large site."""
    F = np.ascontiguousarray(features, np.float32)
    users = np.asarray(users, np.int64)
    rows = np.arange(len(F)) if rows is None else np.asarray(rows, np.int64)
    index = None
    if len(rows) >= PEER_GRAPH_MIN_QUERIES and len(F) >= ann.ANN_MIN_ROWS:
        # these lists hold 40 and more: a wider search than served queries', over a graph of 16 links and a build
        # list of 100 (half the build time of a model's, PEER_GRAPH_MIN_QUERIES's estimate) built once per space
        index = ann.NeighbourIndex.build(F, m=16, ef_construction=100, ef_search=2 * (k + GRAPH_MARGIN))
    return nearest_of_other_accounts(F, np.einsum("ij,ij->i", F, F), users, F[rows], users[rows], k, index)


def neighbours_reached(features: np.ndarray, users, sources, targets, reach, block: int = 1 << 25
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(source rows, target rows, distances) of every `sources` drawing closer to a `targets` drawing of
    another account than that target's `reach` (the distance of its list's last entry; inf when its
    list holds every other account's drawing): the old lists a new drawing enters. m x n distances, in
    blocks of about `block` of them: each block reads every target's features once, so a block of a few
    sources (the 4 of 1 << 22 values at 1M targets) spends its time reading them, not multiplying."""
    F = np.ascontiguousarray(features, np.float32)
    users = np.asarray(users, np.int64)
    sources, targets = np.asarray(sources, np.int64), np.asarray(targets, np.int64)
    reach = np.asarray(reach, np.float32)
    out_s, out_t, out_d = [], [], []
    if not len(sources) or not len(targets):
        empty = np.zeros(0, np.int64)
        return empty, empty, np.zeros(0, np.float32)
    T = F[targets]
    t_sq = np.einsum("ij,ij->i", T, T)
    t_users = users[targets]
    # A pair is a candidate when its squared distance, before the square root, is under the squared reach
    # (a little over it: the square root's rounding); the candidates' distances are then compared as they read.
    loose = np.where(np.isfinite(reach), reach.astype(np.float64) ** 2 * (1 + 1e-5) + 1e-6, np.inf).astype(np.float32)
    step = max(1, block // len(targets))
    for s in range(0, len(sources), step):
        src = sources[s: s + step]
        Q = F[src]
        D = (Q * np.float32(-2.0)) @ T.T  # the same arithmetic as knn_sorted, so a pair's distance reads the same
        D += t_sq[None, :]
        D += np.einsum("ij,ij->i", Q, Q)[:, None]
        i, j = np.nonzero(D < loose[None, :])
        d = np.sqrt(np.maximum(D[i, j], 0.0))
        hit = (d < reach[j]) & (users[src[i]] != t_users[j])
        out_s.append(src[i[hit]])
        out_t.append(targets[j[hit]])
        out_d.append(d[hit])
    return np.concatenate(out_s), np.concatenate(out_t), np.concatenate(out_d).astype(np.float32)


def merge_neighbours(idx: np.ndarray, dist: np.ndarray, rows, new_idx, new_dist) -> np.ndarray:
    """Merges candidates (list `rows`[i] gains `new_idx`[i] at `new_dist`[i]) into the lists `idx`, `dist`
    (n, k; -1 and inf pad) in place, keeping each list's k nearest, nearest first; a candidate a list
    already holds is skipped. Returns the rows whose list changed."""
    rows, new_idx = np.asarray(rows, np.int64), np.asarray(new_idx, np.int64)
    new_dist = np.asarray(new_dist, np.float32)
    fresh = ~(idx[rows] == new_idx[:, None]).any(axis=1)
    rows, new_idx, new_dist = rows[fresh], new_idx[fresh], new_dist[fresh]
    if not len(rows):
        return np.zeros(0, np.int64)
    order = np.lexsort((new_dist, rows))
    rows, new_idx, new_dist = rows[order], new_idx[order], new_dist[order]
    changed, start, count = np.unique(rows, return_index=True, return_counts=True)
    slot = np.arange(len(rows)) - np.repeat(start, count)
    line = np.repeat(np.arange(len(changed)), count)
    cand_i = np.full((len(changed), int(count.max())), -1, np.int64)
    cand_d = np.full(cand_i.shape, np.inf, np.float32)
    cand_i[line, slot], cand_d[line, slot] = new_idx, new_dist
    all_i = np.concatenate([idx[changed], cand_i], axis=1)
    all_d = np.concatenate([dist[changed], cand_d], axis=1)
    keep = np.argsort(all_d, axis=1, kind="stable")[:, : idx.shape[1]]  # a tie keeps the listed one first
    merged = np.take_along_axis(all_i, keep, axis=1)
    moved = (merged != idx[changed]).any(axis=1)  # candidates all beyond a full list's end change nothing
    changed = changed[moved]
    idx[changed] = merged[moved]
    dist[changed] = np.take_along_axis(all_d, keep, axis=1)[moved]
    return changed


def lists_to_research(stored_idx: np.ndarray, present_rows: np.ndarray, k: int = PEER_NEIGHBOURS, pad: int = -1
                      ) -> np.ndarray:
    """Bool per list: too many of its drawings are gone (deleted, rejected) to know the k nearest left.

    `stored_idx`: the lists as kept (-1 pad); `present_rows`: the same entries, -1 where the drawing is
    gone. A list that is not full held every other account's drawing: what is left of it is complete.
    A full one knows every drawing nearer than its last entry, so its first k present are the k nearest
    as long as k are present. `pad`: what fills a list that is not full."""
    full = stored_idx[:, -1] != pad
    return full & ((present_rows >= 0).sum(axis=1) < k)


def votes_from_neighbours(neighbours: np.ndarray, dist: np.ndarray, users, labels, row_trust,
                          radius: float | None = None, k: int = PEER_NEIGHBOURS, block: int = 4096
                          ) -> tuple[np.ndarray, np.ndarray]:
    """peer_votes from neighbour lists (peer_neighbours' rows; -1 where a drawing is gone, skipped): the
    first k present of each list, those within `radius`, one trust-weighted vote per account."""
    users = np.asarray(users, np.int64)
    labels = np.asarray(labels, np.int64)
    row_trust = np.asarray(row_trust, np.float64)
    n = len(neighbours)
    votes = np.zeros((n, N_CLASSES))
    mass = np.zeros(n)
    limit = np.inf if radius is None else float(radius)
    for s in range(0, n, block):
        nb, d = neighbours[s: s + block], dist[s: s + block]
        present = nb >= 0
        valid = present & (np.cumsum(present, axis=1) <= k) & (d <= limit)
        at = np.where(valid, nb, 0)
        acc = users[at]
        same = (acc[:, :, None] == acc[:, None, :]) & valid[:, None, :]
        share = np.where(valid, row_trust[at] / np.maximum(same.sum(axis=2), 1), 0.0)
        flat = (np.arange(len(nb))[:, None] * N_CLASSES + labels[at]).ravel()
        votes[s: s + len(nb)] = np.bincount(flat, weights=share.ravel(),
                                            minlength=len(nb) * N_CLASSES).reshape(-1, N_CLASSES)
        mass[s: s + len(nb)] = share.sum(axis=1)
    return votes, mass


def _array_digest(h, a) -> None:
    a = np.ascontiguousarray(a)
    h.update(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.tobytes())


def feature_space_id(estimator) -> str | None:
    """Names the space estimator.transform maps drawings into (equal ids: the same drawing has the same
    features, so neighbour lists stay valid); None when the estimator has no such space.

    A retrain that promotes a model fits a new PCA basis: another id, and every drawing is searched again."""
    if not hasattr(estimator, "transform"):
        return None
    h = hashlib.sha256(f"evidence v{EVIDENCE_VERSION} k{PEER_KEPT} {type(estimator).__module__}."
                       f"{type(estimator).__qualname__}".encode())
    if hasattr(estimator, "mean_") and hasattr(estimator, "components_"):
        h.update(repr((getattr(estimator, "features", "pixels"), getattr(estimator, "deskew", None),
                       getattr(estimator, "blur_sigma", None))).encode())
        _array_digest(h, estimator.mean_)
        _array_digest(h, estimator.components_)
        if getattr(estimator, "cnn", None) is not None:  # the deep k-NN's features come out of its network
            h.update(pickle.dumps(estimator.cnn, protocol=5))
    else:  # a transform this module does not know: only the whole estimator names it
        h.update(pickle.dumps(estimator, protocol=5))
    return h.hexdigest()


def model_id(estimator) -> str:
    """Names what the out-of-sample probabilities depend on: the estimator's whole fitted state (training
    features, labels, weights, groups, the stroke model), not only its feature space."""
    h = hashlib.sha256(f"evidence v{EVIDENCE_VERSION}".encode())
    h.update(pickle.dumps(estimator, protocol=5))
    return h.hexdigest()


# --- Caps and the per-digit held-out set -----------------------------------------------------------


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


def _digit_user_order(digit: int, user: int) -> int:
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
                          key=lambda u: _digit_user_order(int(digit), u))
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
                order = sorted(candidates, key=lambda i: _digit_user_order(int(digit), -int(train_ids[i])))
                move[order[:count]] = True
                held = count
        if moved_users or held:
            report[str(int(digit))] = {"users": moved_users, "held_out": int(held),
                                       "moved": int((move & of_digit).sum())}
    return move, report


# --- A candidate's figures with accounts left out --------------------------------------------------


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
            rows = _stroke_rows(strokes) if self.strokes is not None else []
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
