"""Other accounts' votes on a drawing's label: what they labelled their drawings near it, one trust-weighted
voice per account.

peer_votes searches every drawing's neighbours, twice a ranking: N searches of N drawings. The kept lists
are what those searches find: a drawing's nearest other-account drawings (peer_neighbours) do not change
when labels or trust do, so they are kept between rankings; new drawings are searched and put into the kept
lists they fall into (neighbours_reached, merge_neighbours), a list with too many of its drawings gone is
searched again (lists_to_research), and the votes are arithmetic on the lists (votes_from_neighbours):
peer_votes' answer without searching every drawing again.
"""

from __future__ import annotations

import numpy as np

from recognizer.ml import ann
from recognizer.ml.knn import N_CLASSES, knn_sorted

from .other_accounts import GRAPH_MARGIN, nearest_of_other_accounts

# Other accounts' drawings searched for each label.
PEER_NEIGHBOURS = 30
# Neighbour lists kept between rankings hold this many more: a few of a drawing's neighbours deleted or
# rejected then leave its nearest PEER_NEIGHBOURS still known, with no new search.
PEER_SPARE = 10
PEER_KEPT = PEER_NEIGHBOURS + PEER_SPARE

# A search of this many drawings' peers among at least ann.ANN_MIN_ROWS goes through a graph built for it. An
# estimate from figures measured elsewhere, not a measurement of this choice: one thread builds a graph at about
# 0.36 ms a row with 16 links (ann.NeighbourIndex.build: 6 min at 1M) and searches it in under 1 ms a query, where the exact
# search costs n x 80 multiply-adds a query (about 6 us per 1,000 rows): from about 50,000 queries the build
# pays for itself. Fewer (a ranking's new drawings) are searched exactly.
PEER_GRAPH_MIN_QUERIES = 50_000


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
            idx, dist = knn_sorted(F[rows], F, sq, min(len(F), k + own))
            keep = np.argsort(users[idx] == user, axis=1, kind="stable")[:, :k]
            idx, dist = np.take_along_axis(idx, keep, axis=1), np.take_along_axis(dist, keep, axis=1)
        else:  # a big account: search the others only
            others = np.flatnonzero(users != user)
            sub, dist = knn_sorted(F[rows], F[others], sq[others], min(len(others), k))
            idx = others[sub]
        acc = users[idx]
        valid = (acc != user) & (dist <= limit)
        same = (acc[:, :, None] == acc[:, None, :]) & valid[:, None, :]
        share = np.where(valid, row_trust[idx] / np.maximum(same.sum(axis=2), 1), 0.0)
        flat = (np.arange(len(rows))[:, None] * N_CLASSES + labels[idx]).ravel()
        votes[rows] = np.bincount(flat, weights=share.ravel(), minlength=len(rows) * N_CLASSES).reshape(-1, N_CLASSES)
        mass[rows] = share.sum(axis=1)
    return votes, mass


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


