"""Approximate nearest neighbours for a reference set too large for the exact search to stay fast.

Every labelled user drawing joins the k-NN's reference set, so the exact search's cost per query grows
with the site's history (recognizer.ml.knn's pruned search reads n x 24 floats a query: 1.7 ms at
today's 75k rows, 17-27 ms at 1M, one thread). An HNSW graph (faiss ``IndexHNSWFlat``: the vectors
themselves, uncompressed, plus each row's graph links) answers in 0.1-0.4 ms from 10k to 1M rows,
with the exact search's k=4 vote on writers the model has never seen to within 0.07 points.
Measured by ``bench/ann.py`` against faiss IVF-Flat, voyager, hnswlib, usearch and pynndescent: see
bench/README.md for the table and why faiss's HNSW.

The graph holds each distinct vector once (a node) and a search hands back every copy of a node it finds, as
rows. Rows that are exact copies of each other cost HNSW its recall: their links point at one another, so a
walk that enters a heap of copies finds few ways out. The growth benchmark's 1M rows (638,160 of 887,690 rows
with an exact copy) lost 1.2 points on unseen writers against the exact search through a graph with a node per
row and 16 links; with copies sharing a node and 32 links (HNSW_M) they read as the exact search does
(bench/README.md, "Growth").

recognizer.ml.model.DigitClassifier builds one over its training rows once they number ANN_MIN_ROWS, and so
does the stroke k-NN (recognizer.ml.strokes.StrokeClassifier) over its stroke rows; a retrain that only appends
rows extends the previous model's graph (``NeighbourIndex.extended``, through ``index_rows``).
Personal examples (a user's own drawings) stay on the exact search: there are few of them.
Plain Python, no Django.
"""

from __future__ import annotations

import logging

import numpy as np

__all__ = ["ANN_MIN_ROWS", "EF_CONSTRUCTION", "EF_SEARCH", "HNSW_M", "LIST_RECALL", "SEARCH_LISTS", "NeighbourIndex",
           "index_rows"]

# Reference sets of at least this many rows are searched through the graph. bench/ann.py, one
# thread, exact pruned vs graph (ef 64) p50: 10k 0.39 vs 0.13 ms, 20k 0.51 vs 0.15, 40k 0.89 vs 0.21,
# 75k 1.72 vs 0.24. 40k is the first size where the graph saves over half a millisecond (about half
# of what the features of one drawing cost); below it the exact search is worth its small extra
# time: it is exact, and costs no build at training and no bytes in the model file.
ANN_MIN_ROWS = 40_000

# Graph links per row (2M on the bottom layer) and the build's candidate list. 16 and 100 were enough for
# the MNIST-like rows of bench/ann.py (recall@4 0.999+ at ef 64 from 75k to 1M rows), not for the growth
# benchmark's 1M rows, heaps of near copies (each pen render about 80 times, shifted a pixel or two).
# bench/graph_recall.py --settings 16:100,32:200 on its 920k-row model (481k distinct): distance recall@4 on
# MNIST test digits at ef 64/128/256 0.894/0.942/0.970 with 16 links, 0.939/0.969/0.987 with 32; unseen
# writers read 99.27/99.47/99.67% and 99.47/99.67/99.73% against the exact search's 99.73%. 32 links cost
# twice the build (70 s against 32 s there, two threads) and 128 more bytes a node in the model file.
HNSW_M = 32
EF_CONSTRUCTION = 200
# The search's candidate list: at 128 the graph above is within 0.1 point of the exact search, at 0.19 ms a
# query against 0.11 at 64 (one thread).
EF_SEARCH = 128
# A model fitted from its images searches with the shortest of these lists that finds LIST_RECALL of the
# exact search's neighbours for deformed copies of its training digits (NeighbourIndex.tune_search_list;
# recognizer.ml.model). At 0.995 the 1M rows above (recall@4 0.94 at 64 on MNIST test digits; not measured on
# deformed copies there) would keep 128, and a graph as easy to walk as the default model's (MNIST and the pen
# renders, 90k rows) gets 64 and answers sooner. bench.unseen_writers and bench.predict_stages print the list
# their model searches with.
SEARCH_LISTS = (64, EF_SEARCH)
LIST_RECALL = 0.995

_STATE_VERSION = 2  # 1: a node per row, no node_of_row (still read)
_HNSW_SEED = 12345  # faiss's HNSW() seeds its level draws with this: a loaded graph starts from it


# faiss's loader logs at INFO every CPU build it tries ("Loading faiss with AVX512 support", "Could not load
# library with AVX512 support due to: ModuleNotFoundError ...") and the site's root logger shows INFO: noise
# in a first training's output that says nothing is wrong. Its warnings and errors still show; a level set
# for it on purpose (Django's LOGGING, before this import) is kept.
_FAISS_LOADER_LOG = logging.getLogger("faiss.loader")
if _FAISS_LOADER_LOG.level == logging.NOTSET:
    _FAISS_LOADER_LOG.setLevel(logging.WARNING)


def _faiss():
    import faiss  # imported when an index is built or loaded: small models never need it

    return faiss


class _Pinned(np.ndarray):
    """An array over memory the faiss index owns: it holds the index so the memory outlives the view."""

    _owner = None

    def __reduce__(self):  # pickles as a plain array: the copy owns its memory
        return np.asarray(self).copy().__reduce__()


class NeighbourIndex:
    """The k nearest reference rows of a query, approximately, through an HNSW graph.

    ``search`` keeps ``recognizer.ml.knn.knn_sorted``'s contract: (indices int64 (n, k), euclidean
    distances float32 (n, k)), nearest first, k cut to the number of rows. Rows that are exact copies of one
    another share a graph node; a search finds nodes and answers with their rows, copies in row order.
    Building with one thread (the default) is deterministic: the same rows give the same graph and so
    the same answers; more build threads insert rows concurrently, in no fixed order.
    Pickles (joblib too) as the serialised faiss index, vectors included, and the node of each row.
    """

    def __init__(self, index, ef_search: int = EF_SEARCH, threads: int = 1, node_of_row: np.ndarray | None = None):
        self._index = index
        self.ef_search = int(ef_search)
        self.threads = int(threads)
        self._set_rows(node_of_row)
        # False for a graph saved before copies shared a node: a node per row, copies apart (their recall loss)
        self.merges_copies = True

    def _set_rows(self, node_of_row: np.ndarray | None) -> None:
        """None: row i is node i. Else the node of each row, and the rows of each node (rows grouped by node,
        in row order, and where each node's group starts) for the search to hand back."""
        if node_of_row is not None and len(node_of_row) == self._index.ntotal:
            node_of_row = None  # as many rows as nodes: each its own
        self._node_of_row = None if node_of_row is None else np.asarray(node_of_row, dtype=np.int32)
        # (rows, nodes, columns): the faiss index is complete before it is wrapped and never grows after (extended
        # grows a copy), and reading its sizes through SWIG costs microseconds a search
        nodes = int(self._index.ntotal)
        self._sizes = (nodes if self._node_of_row is None else len(self._node_of_row), nodes, int(self._index.d))
        if self._node_of_row is None:
            self._rows_by_node = self._node_start = None
            return
        self._rows_by_node = np.argsort(self._node_of_row, kind="stable").astype(np.int64)
        self._node_start = np.concatenate(([0], np.cumsum(np.bincount(self._node_of_row,
                                                                      minlength=self._index.ntotal))))

    # -- building
    @classmethod
    def build(cls, R: np.ndarray, *, m: int = HNSW_M, ef_construction: int = EF_CONSTRUCTION,
              ef_search: int = EF_SEARCH, threads: int = 1) -> NeighbourIndex:
        """The graph over the distinct rows of R (n, d). One thread, 80 columns, 2 shared cores, with 16 links
        and a build list of 100: 29 s at 75k rows, 6 min at 1M (bench/ann.py); a second thread barely helped
        there (measured 381 s) and loses determinism. The 32 links and 200 of today's defaults take about twice
        as long (HNSW_M)."""
        faiss = _faiss()
        R = _checked_rows(R)
        if len(R) == 0 or R.shape[1] == 0:
            raise ValueError(f"need a non-empty (n, d) array of reference rows, got shape {R.shape}")
        firsts, node_of_row = _distinct_rows(R)
        index = faiss.IndexHNSWFlat(R.shape[1], int(m))
        index.hnsw.efConstruction = int(ef_construction)
        _add(index, R if len(firsts) == len(R) else R[firsts], threads)
        return cls(index, ef_search=ef_search, threads=1, node_of_row=node_of_row)

    def extended(self, R_new: np.ndarray) -> NeighbourIndex:
        """A new index: this one's rows (ids 0..n-1) followed by the rows of R_new (ids n..).

        This index is left as it is (a model still serving may be reading it): its graph is copied and only
        the new rows that copy no stored vector are inserted, one thread, so a retrain that appends rows costs
        their insertion, not a whole build (minutes at 1M rows). The copy starts from the seed a built or loaded
        graph starts from, so the same index and rows give the same graph whether this index was just built or
        loaded from a file. The graph differs from a build over all the rows: HNSW depends on insertion order.
        """
        faiss = _faiss()
        R_new = _checked_rows(R_new)
        if R_new.shape[1] != self.dim:
            raise ValueError(f"new rows must be (n, {self.dim}), got shape {R_new.shape}")
        nodes = self.nodes
        firsts, at = _distinct_rows(np.concatenate([self._node_vectors(), R_new]))
        first = firsts[at[nodes:]]  # each new row's first occurrence: a stored node, or a new row
        fresh = firsts[firsts >= nodes]  # new rows that copy no stored vector nor an earlier new row
        new_nodes = np.where(first < nodes, first, nodes + np.searchsorted(fresh, first))
        index = faiss.clone_index(self._index)
        # the level draws of new rows: faiss's HNSW seed, as in a freshly built or deserialised graph
        index.hnsw.rng = faiss.RandomGenerator(_HNSW_SEED)
        if len(fresh):
            _add(index, R_new[fresh - nodes], threads=1)
        old_rows = np.arange(nodes, dtype=np.int32) if self._node_of_row is None else self._node_of_row
        # the default list, not this one's: a list tuned (tune_search_list) for these rows may be short for more
        grown = type(self)(index, ef_search=EF_SEARCH, threads=self.threads,
                           node_of_row=np.concatenate([old_rows, new_nodes.astype(np.int32)]))
        grown.merges_copies = self.merges_copies
        return grown

    def tune_search_list(self, R: np.ndarray, Q: np.ndarray, k: int, r_sq: np.ndarray | None = None) -> int:
        """Set ``ef_search`` to the shortest of SEARCH_LISTS whose search for queries ``Q`` finds at least
        LIST_RECALL of the k nearest of the index's rows ``R`` (``r_sq``: their squared norms) that the exact
        search finds (a row as near as the exact k-th counts: copies are interchangeable), and return it.
        ``Q`` should look like the queries to come and not be rows (a row finds itself at once: the model's own
        rows overstate the recall). The exact search is in blocks of 32 queries (32 x 1M distances: 128 MB)."""
        from .knn import knn_sorted

        R = np.asarray(R, dtype=np.float32)
        Q = np.ascontiguousarray(Q, dtype=np.float32)
        if len(R) != len(self) or R.shape[1] != self.dim or Q.ndim != 2 or Q.shape[1] != self.dim or not len(Q):
            raise ValueError(f"R must be this index's {len(self)} rows and Q queries, both of {self.dim} columns; "
                             f"got shapes {R.shape} and {Q.shape}")
        k = min(int(k), len(R))
        sq = np.einsum("ij,ij->i", R, R) if r_sq is None else r_sq
        bound = np.concatenate([knn_sorted(Q[s: s + 32], R, sq, k)[1][:, -1:] for s in range(0, len(Q), 32)])
        bound = bound * np.float32(1 + 1e-5) + np.float32(1e-6)  # the two searches round their sums apart
        for ef in SEARCH_LISTS[:-1]:
            self.ef_search = int(ef)
            if float((self.search(Q, k)[1] <= bound).mean()) >= LIST_RECALL:
                return self.ef_search
        self.ef_search = int(SEARCH_LISTS[-1])
        return self.ef_search

    # -- reading
    def __len__(self) -> int:
        return self._sizes[0]

    @property
    def nodes(self) -> int:
        """Graph nodes: the distinct rows."""
        return self._sizes[1]

    @property
    def dim(self) -> int:
        return self._sizes[2]

    def _node_vectors(self) -> np.ndarray:
        """The graph's vectors (nodes, d) float32, read-only, without a copy."""
        faiss = _faiss()
        flat = faiss.downcast_index(self._index.storage)
        n, d = self.nodes, self.dim
        if n == 0:
            return np.zeros((0, d), np.float32)
        view = faiss.rev_swig_ptr(flat.get_xb(), n * d).reshape(n, d).view(_Pinned)
        view._owner = self._index
        view.flags.writeable = False
        return view

    @property
    def vectors(self) -> np.ndarray:
        """The stored rows (n, d) float32, read-only: the graph's own memory when no row copies another (a model
        holding the index need not keep a second copy of its training vectors), else gathered from it."""
        nodes = self._node_vectors()
        if self._node_of_row is None:
            return nodes
        rows = np.asarray(nodes)[self._node_of_row]
        rows.flags.writeable = False
        return rows

    def serialized_nbytes(self) -> int:
        """Bytes the index takes in a model file (and, to within a few %, in memory)."""
        rows = 0 if self._node_of_row is None else self._node_of_row.nbytes
        return int(_faiss().serialize_index(self._index).nbytes) + rows

    def search(self, Q: np.ndarray, k: int, threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """For each row of Q, the k nearest stored rows: (indices, euclidean distances), nearest first."""
        Q = np.ascontiguousarray(np.atleast_2d(Q), dtype=np.float32)
        if Q.ndim != 2 or Q.shape[1] != self.dim:
            raise ValueError(f"queries must be (n, {self.dim}), got {Q.shape}")
        k = min(int(k), len(self))
        if k < 1:
            raise ValueError("k must be at least 1")
        # k nodes hold at least k rows, and the k nearest rows are copies of the k nearest nodes
        k_nodes = min(k, self.nodes)
        sq, idx = self._raw_search(Q, k_nodes, self.threads if threads is None else int(threads))
        missing = (idx < 0).any(axis=1)
        if missing.any():  # the graph walk ran out of candidates (not seen in the bench): answer exactly
            sq[missing], idx[missing] = self._exact(Q[missing], k_nodes)
        dist = np.sqrt(np.maximum(sq, 0.0)).astype(np.float32, copy=False)
        idx = idx.astype(np.int64, copy=False)
        # faiss answers nearest first: the sort (three NumPy calls a query) is then the identity
        if missing.any() or (dist[:, 1:] < dist[:, :-1]).any():
            order = np.argsort(dist, axis=1, kind="stable")
            idx = np.take_along_axis(idx, order, axis=1)
            dist = np.take_along_axis(dist, order, axis=1)
        if self._node_of_row is None:
            return idx, dist
        return self._rows_of(idx, dist, k)

    def _rows_of(self, nodes: np.ndarray, dist: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The first k rows of each query's nodes (nearest first, a node's copies in row order)."""
        count = self._node_start[nodes + 1] - self._node_start[nodes]
        out_idx = np.empty((len(nodes), k), np.int64)
        out_dist = np.empty((len(nodes), k), np.float32)
        q = np.arange(len(nodes))
        j = np.zeros(len(nodes), np.int64)  # each query's node being read, and how many of its rows were taken
        taken = np.zeros(len(nodes), np.int64)
        for t in range(k):  # every node holds a row, so the t-th row is in one of the first t + 1 nodes
            node = nodes[q, j]
            out_idx[:, t] = self._rows_by_node[self._node_start[node] + taken]
            out_dist[:, t] = dist[q, j]
            taken += 1
            done = taken == count[q, j]
            j[done] += 1
            taken[done] = 0
        return out_idx, out_dist

    def _raw_search(self, Q: np.ndarray, k: int, threads: int) -> tuple[np.ndarray, np.ndarray]:
        """(squared distances, node ids; -1 where none was found) from faiss."""
        faiss = _faiss()
        ef = max(self.ef_search, k)
        params = self.__dict__.get("_params")  # read-only in a search: one per index, shared by threads
        if params is None or params.efSearch != ef:
            params = faiss.SearchParametersHNSW()
            params.efSearch = ef
            self.__dict__["_params"] = params
        # OpenMP's thread count is per calling thread: set on every call, as a web worker's threads differ
        faiss.omp_set_num_threads(max(1, threads))
        return self._index.search(Q, k, params=params)

    def _exact(self, Q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(squared distances, node ids) of the k nearest nodes, exactly."""
        R = self._node_vectors()
        sq = np.einsum("ij,ij->i", Q, Q)[:, None] - 2.0 * (Q @ R.T) + np.einsum("ij,ij->i", R, R)[None, :]
        idx = np.argsort(sq, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(sq, idx, axis=1).astype(np.float32), idx.astype(np.int64)

    # -- pickling: faiss objects are not picklable, their serialised bytes are
    def __getstate__(self) -> dict:
        return {"version": _STATE_VERSION, "index": _faiss().serialize_index(self._index),
                "ef_search": self.ef_search, "threads": self.threads, "node_of_row": self._node_of_row}

    def __setstate__(self, state: dict) -> None:
        if state.get("version") not in (1, _STATE_VERSION):
            raise ValueError(f"unknown NeighbourIndex state version {state.get('version')!r}")
        self._index = _faiss().deserialize_index(np.asarray(state["index"], dtype=np.uint8))
        self.ef_search = int(state["ef_search"])
        self.threads = int(state["threads"])
        self._set_rows(state.get("node_of_row"))
        self.merges_copies = state["version"] >= 2

    def __repr__(self) -> str:
        return f"NeighbourIndex({len(self)} rows x {self.dim} in {self.nodes} nodes, HNSW, ef_search={self.ef_search})"


def _checked_rows(R: np.ndarray) -> np.ndarray:
    R = np.ascontiguousarray(R, dtype=np.float32)
    if R.ndim != 2:
        raise ValueError(f"reference rows must be a (n, d) array, got shape {R.shape}")
    if not np.isfinite(R).all():
        raise ValueError("reference rows must be finite")
    return R


def _add(index, R: np.ndarray, threads: int) -> None:
    faiss = _faiss()
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(max(1, int(threads)))
    try:
        index.add(np.ascontiguousarray(R))
    finally:
        faiss.omp_set_num_threads(previous)


def _distinct_rows(R: np.ndarray, chunk: int = 65_536) -> tuple[np.ndarray, np.ndarray]:
    """(firsts, node_of_row): the first row holding each distinct vector, in row order, and each row's node
    (the position of its vector's first row in ``firsts``). Bit for bit: -0.0 and 0.0 differ, harmlessly.

    Rows are grouped by a 64-bit hash of their bits, then each row is compared with the first of its group:
    0.25 s for 900k x 80 rows against 2 s for numpy.unique over whole rows. A row whose hash collides with a
    different vector's is its own node."""
    n = len(R)
    h = _row_hashes(R, chunk)
    order = np.argsort(h, kind="stable")
    hs = h[order]
    starts = np.flatnonzero(np.concatenate(([True], hs[1:] != hs[:-1])))
    first = np.empty(n, np.int64)  # the first row of each row's hash group (the stable sort keeps row order)
    first[order] = np.repeat(order[starts], np.diff(np.append(starts, n)))
    copies = np.flatnonzero(first != np.arange(n))
    for s in range(0, len(copies), chunk):
        rows = copies[s:s + chunk]
        differ = (R[rows] != R[first[rows]]).any(axis=1)
        first[rows[differ]] = rows[differ]  # a hash collision, not a copy
    firsts = np.flatnonzero(first == np.arange(n))
    return firsts, np.searchsorted(firsts, first)


def _row_hashes(R: np.ndarray, chunk: int = 65_536) -> np.ndarray:
    """A 64-bit hash of each row's bits (uint64, wrapping): its 32-bit words times fixed odd numbers, summed."""
    words = R.view(np.uint32).reshape(len(R), -1)
    multipliers = np.random.default_rng(0x5EED).integers(1, 2**63, words.shape[1], dtype=np.uint64) | np.uint64(1)
    h = np.zeros(len(R), np.uint64)
    for s in range(0, len(R), chunk):  # in blocks: the uint64 product of all rows at once is 8 bytes a word
        h[s:s + chunk] = (words[s:s + chunk].astype(np.uint64) * multipliers).sum(axis=1)
    return h


def index_rows(R: np.ndarray, previous: NeighbourIndex | None = None) -> tuple[NeighbourIndex | None, str | None]:
    """(graph, origin) for a k-NN's reference rows R: (None, None) below ``ANN_MIN_ROWS`` rows (read at call
    time); ``previous`` extended by the rows after its own when its rows are exactly the first rows of R
    (origin "extended": a copy, ``previous`` may still be serving); else a new graph ("built"). A graph saved
    before copies shared a node is built again, once: extending it would keep its copies apart."""
    if len(R) < ANN_MIN_ROWS:
        return None, None
    if previous is not None and previous.merges_copies and previous.dim == R.shape[1] \
            and len(previous) <= len(R) and np.array_equal(previous.vectors, R[:len(previous)]):
        return previous.extended(R[len(previous):]), "extended"
    return NeighbourIndex.build(R, threads=1), "built"
