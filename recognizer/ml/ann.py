"""Approximate nearest neighbours for a reference set too large for the exact search to stay fast.

Every labelled user drawing joins the k-NN's reference set, so the exact search's cost per query grows
with the site's history (recognizer.ml.knn's pruned search reads n x 24 floats a query: 1.7 ms at
today's 75k rows, 17-27 ms at 1M, one thread). An HNSW graph (faiss ``IndexHNSWFlat``: the vectors
themselves, uncompressed, plus each row's graph links) answers in 0.1-0.4 ms from 10k to 1M rows,
with the exact search's k=4 vote on writers the model has never seen to within 0.07 points.
Measured by ``bench/ann.py`` against faiss IVF-Flat, voyager, hnswlib, usearch and pynndescent: see
bench/README.md for the table and why faiss's HNSW. Not so on the growth benchmark's 1M synthetic rows (near
copies of 12,000 pen renders; 638,160 of 887,690 rows have an exact copy): 1.2 points lost there, see
bench/README.md, "Growth".

recognizer.ml.model.DigitClassifier builds one over its training rows once they number ANN_MIN_ROWS, and so
does the stroke k-NN (recognizer.ml.strokes.StrokeClassifier) over its stroke rows; a retrain that only appends
rows extends the previous model's graph (``NeighbourIndex.extended``, through ``index_rows``).
Personal examples (a user's own drawings) stay on the exact search: there are few of them.
Plain Python, no Django.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ANN_MIN_ROWS", "EF_CONSTRUCTION", "EF_SEARCH", "HNSW_M", "NeighbourIndex", "index_rows"]

# Reference sets of at least this many rows are searched through the graph. bench/ann.py, one
# thread, exact pruned vs graph (ef 64) p50: 10k 0.39 vs 0.13 ms, 20k 0.51 vs 0.15, 40k 0.89 vs 0.21,
# 75k 1.72 vs 0.24. 40k is the first size where the graph saves over half a millisecond (about half
# of what the features of one drawing cost); below it the exact search is worth its small extra
# time: it is exact, and costs no build at training and no bytes in the model file.
ANN_MIN_ROWS = 40_000

# Graph links per row (2M on the bottom layer) and the build's candidate list: the measured setting
# (recall@4 0.999+ at ef 64 from 75k to 1M rows); more links cost memory (8 bytes per link per row)
# and build time for recall the vote does not need.
HNSW_M = 16
EF_CONSTRUCTION = 100
# The search's candidate list. bench/ann.py at 1M rows: ef 32 recall@4 0.9965, 0.28 ms; ef 64 recall
# 0.9998, 0.41 ms; the vote was the exact one's at both. 64 keeps recall >= 0.999 from 40k to 1M rows
# for about 0.1 ms more than 32.
EF_SEARCH = 64

_STATE_VERSION = 1
_HNSW_SEED = 12345  # faiss's HNSW() seeds its level draws with this: a loaded graph starts from it


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
    distances float32 (n, k)), nearest first, k cut to the number of rows.
    Building with one thread (the default) is deterministic: the same rows give the same graph and so
    the same answers; more build threads insert rows concurrently, in no fixed order.
    Pickles (joblib too) as the serialised faiss index, vectors included.
    """

    def __init__(self, index, ef_search: int = EF_SEARCH, threads: int = 1):
        self._index = index
        self.ef_search = int(ef_search)
        self.threads = int(threads)

    # -- building
    @classmethod
    def build(cls, R: np.ndarray, *, m: int = HNSW_M, ef_construction: int = EF_CONSTRUCTION,
              ef_search: int = EF_SEARCH, threads: int = 1) -> NeighbourIndex:
        """The graph over the rows of R (n, d). One thread, 80 columns, 2 shared cores: 29 s at 75k rows,
        6 min at 1M; a second thread barely helped there (measured 381 s) and loses determinism."""
        faiss = _faiss()
        R = np.ascontiguousarray(R, dtype=np.float32)
        if R.ndim != 2 or len(R) == 0 or R.shape[1] == 0:
            raise ValueError(f"need a non-empty (n, d) array of reference rows, got shape {R.shape}")
        if not np.isfinite(R).all():
            raise ValueError("reference rows must be finite")
        index = faiss.IndexHNSWFlat(R.shape[1], int(m))
        index.hnsw.efConstruction = int(ef_construction)
        previous = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(max(1, int(threads)))
        try:
            index.add(R)
        finally:
            faiss.omp_set_num_threads(previous)
        return cls(index, ef_search=ef_search, threads=1)

    def extended(self, R_new: np.ndarray) -> NeighbourIndex:
        """A new index: this one's graph and rows (ids 0..n-1) followed by the rows of R_new (ids n..).

        This index is left as it is (a model still serving may be reading it): its graph is copied and only
        the new rows are inserted, one thread, so a retrain that appends rows costs their insertion, not a
        whole build (6 min at 1M rows). The copy starts from the seed a built or loaded graph starts from,
        so the same index and rows give the same graph whether this index was just built or loaded from a
        file. The graph differs from a build over all the rows: HNSW depends on insertion order.
        """
        faiss = _faiss()
        R_new = np.ascontiguousarray(R_new, dtype=np.float32)
        if R_new.ndim != 2 or R_new.shape[1] != self.dim:
            raise ValueError(f"new rows must be (n, {self.dim}), got shape {R_new.shape}")
        if not np.isfinite(R_new).all():
            raise ValueError("reference rows must be finite")
        index = faiss.clone_index(self._index)
        # the level draws of new rows: faiss's HNSW seed, as in a freshly built or deserialised graph
        index.hnsw.rng = faiss.RandomGenerator(_HNSW_SEED)
        if len(R_new):
            previous = faiss.omp_get_max_threads()
            faiss.omp_set_num_threads(1)
            try:
                index.add(R_new)
            finally:
                faiss.omp_set_num_threads(previous)
        return type(self)(index, ef_search=self.ef_search, threads=self.threads)

    # -- reading
    def __len__(self) -> int:
        return int(self._index.ntotal)

    @property
    def dim(self) -> int:
        return int(self._index.d)

    @property
    def vectors(self) -> np.ndarray:
        """The stored rows (n, d) float32, read-only, without a copy: a model holding the index need
        not keep a second copy of its training vectors."""
        faiss = _faiss()
        flat = faiss.downcast_index(self._index.storage)
        n, d = len(self), self.dim
        if n == 0:
            return np.zeros((0, d), np.float32)
        view = faiss.rev_swig_ptr(flat.get_xb(), n * d).reshape(n, d).view(_Pinned)
        view._owner = self._index
        view.flags.writeable = False
        return view

    def serialized_nbytes(self) -> int:
        """Bytes the index takes in a model file (and, to within a few %, in memory)."""
        return int(_faiss().serialize_index(self._index).nbytes)

    def search(self, Q: np.ndarray, k: int, threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """For each row of Q, the k nearest stored rows: (indices, euclidean distances), nearest first."""
        Q = np.ascontiguousarray(np.atleast_2d(Q), dtype=np.float32)
        if Q.ndim != 2 or Q.shape[1] != self.dim:
            raise ValueError(f"queries must be (n, {self.dim}), got {Q.shape}")
        k = min(int(k), len(self))
        if k < 1:
            raise ValueError("k must be at least 1")
        sq, idx = self._raw_search(Q, k, self.threads if threads is None else int(threads))
        missing = (idx < 0).any(axis=1)
        if missing.any():  # the graph walk ran out of candidates (not seen in the bench): answer exactly
            sq[missing], idx[missing] = self._exact(Q[missing], k)
        dist = np.sqrt(np.maximum(sq, 0.0)).astype(np.float32, copy=False)
        order = np.argsort(dist, axis=1, kind="stable")
        return np.take_along_axis(idx, order, axis=1).astype(np.int64, copy=False), \
            np.take_along_axis(dist, order, axis=1)

    def _raw_search(self, Q: np.ndarray, k: int, threads: int) -> tuple[np.ndarray, np.ndarray]:
        """(squared distances, ids; -1 where none was found) from faiss."""
        faiss = _faiss()
        params = faiss.SearchParametersHNSW()
        params.efSearch = max(self.ef_search, k)
        # OpenMP's thread count is per calling thread: set on every call, as a web worker's threads differ
        faiss.omp_set_num_threads(max(1, threads))
        return self._index.search(Q, k, params=params)

    def _exact(self, Q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        R = self.vectors
        sq = np.einsum("ij,ij->i", Q, Q)[:, None] - 2.0 * (Q @ R.T) + np.einsum("ij,ij->i", R, R)[None, :]
        idx = np.argsort(sq, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(sq, idx, axis=1).astype(np.float32), idx.astype(np.int64)

    # -- pickling: faiss objects are not picklable, their serialised bytes are
    def __getstate__(self) -> dict:
        return {"version": _STATE_VERSION, "index": _faiss().serialize_index(self._index),
                "ef_search": self.ef_search, "threads": self.threads}

    def __setstate__(self, state: dict) -> None:
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"unknown NeighbourIndex state version {state.get('version')!r}")
        self._index = _faiss().deserialize_index(np.asarray(state["index"], dtype=np.uint8))
        self.ef_search = int(state["ef_search"])
        self.threads = int(state["threads"])

    def __repr__(self) -> str:
        return f"NeighbourIndex({len(self)} rows x {self.dim}, HNSW, ef_search={self.ef_search})"


def index_rows(R: np.ndarray, previous: NeighbourIndex | None = None) -> tuple[NeighbourIndex | None, str | None]:
    """(graph, origin) for a k-NN's reference rows R: (None, None) below ``ANN_MIN_ROWS`` rows (read at call
    time); ``previous`` extended by the rows after its own when its rows are exactly the first rows of R
    (origin "extended": a copy, ``previous`` may still be serving); else a new graph ("built")."""
    if len(R) < ANN_MIN_ROWS:
        return None, None
    if previous is not None and previous.dim == R.shape[1] and len(previous) <= len(R) \
            and np.array_equal(previous.vectors, R[:len(previous)]):
        return previous.extended(R[len(previous):]), "extended"
    return NeighbourIndex.build(R, threads=1), "built"
