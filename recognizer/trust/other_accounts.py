"""The search every kept list is made of: for each query, the k nearest rows not drawn by the query's own
account (nearest_of_other_accounts). The peer lists (recognizer.trust.peers.peer_neighbours) search the
drawings with it, the kept training lists (recognizer.trust.training_lists) a k-NN's training rows."""

from __future__ import annotations

import numpy as np

from recognizer.ml import ann
from recognizer.ml.knn import knn_sorted

# Candidates asked of a graph beyond the k wanted: the query's own account's rows among them are dropped, and
# a query left with fewer than k is searched exactly. An account's drawings of one digit rarely number more.
GRAPH_MARGIN = 16

# Accounts with at most this many drawings are searched together: one search of k + their largest count,
# then each row drops its own account's (a site's new drawings come from many accounts, a few each).
_SMALL_ACCOUNT = 128


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
        idx, dist = knn_sorted(Q[q], F, sq, min(len(F), k + int(own[q].max())))
        put(q, idx, dist, groups[idx] == users[q][:, None])
    for user in np.unique(users[(own > _SMALL_ACCOUNT) & exact]):  # a big account: search the others only
        q = np.flatnonzero((users == user) & exact)
        others = np.flatnonzero(groups != user)
        if len(others):
            sub, dist = knn_sorted(Q[q], F[others], sq[others], min(k, len(others)))
            idx = others[sub]
            put(q, idx, dist, np.zeros(idx.shape, bool))
    return idx_out, dist_out
