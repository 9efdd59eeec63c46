"""The label ranking's per-drawing evidence, kept in LabelEvidence between rankings: each drawing's out-of-sample
probabilities, its features and its nearest drawings of other accounts (the peer lists), and its kept training
lists. A ranking reads what is still valid (load_evidence), searches only what is new to it (label_evidence) and
stores the result in its own transaction (store_evidence)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
from django.db import connection
from django.utils import timezone

from recognizer import trust
from recognizer.feedback.out_of_sample import BATCH, search_out_of_sample
from recognizer.feedback.training_lists import LIST_FIELDS, TrainingLists
from recognizer.models import Drawing, LabelEvidence, TrainingRows


@dataclass
class RankingEvidence:
    """Per ranked drawing, in id order: what the ranking's searches found, cached or new."""

    ids: np.ndarray
    probabilities: np.ndarray  # (n, 10) out of sample
    neighbour_ids: np.ndarray | None  # (n, trust.PEER_KEPT) drawing ids, -1 pad; None: the model has no features
    neighbour_dist: np.ndarray | None
    write: list  # LabelEvidence rows of drawings searched now, to store
    lists: list  # (neighbour ids, distances, drawing id) of old drawings only a new drawing's entry changed
    orphans: list  # drawing ids whose stored evidence is no longer ranked (rejected): to delete
    counts: dict
    model: str = ""  # trust.model_id of the estimator: every ranked drawing's evidence is under it once stored
    training_lists: TrainingLists | None = None  # to record the rows the written training lists are over
    # (model, probabilities, updated_at, id) and (model, probabilities, 4 list fields, updated_at, id): rows
    # whose training lists were extended, updated in place
    probabilities_only: list = field(default_factory=list)
    with_lists: list = field(default_factory=list)


def load_evidence(ids: np.ndarray, model: str, space: str | None, lists: TrainingLists | None = None,
                  *, only_ids: bool = False) -> dict:
    """The stored evidence of `ids` that is still valid, as arrays; stored evidence of other drawings is
    returned as orphans (those not ranked now: whoever is ranked again later is new to everyone's list).
    `lists`: also the kept training lists in its shapes, with the model each was kept under (`source`).
    `only_ids`: read only the evidence of `ids` (a part of them), not the whole table."""
    n, K = len(ids), trust.PEER_KEPT
    out = {"p": np.zeros((n, trust.N_CLASSES)), "has_p": np.zeros(n, bool), "has_peers": np.zeros(n, bool),
           "F": None, "has_F": np.zeros(n, bool), "nb": np.full((n, K), -1, np.int64),
           "nd": np.full((n, K), np.inf, np.float32), "orphans": []}
    if lists is not None:
        out.update(lists.empty(n))
    fields = ("drawing_id", "model", "space", "probabilities", "features", "neighbour_ids", "neighbour_distances",
              "training_neighbours", "training_distances", "stroke_features", "stroke_neighbours", "stroke_distances")
    if only_ids:
        rows = itertools.chain.from_iterable(
            LabelEvidence.objects.filter(drawing_id__in=ids[s: s + BATCH].tolist()).values_list(*fields)
            for s in range(0, n, BATCH))
    else:
        rows = LabelEvidence.objects.values_list(*fields).iterator(chunk_size=2000)
    while chunk := list(itertools.islice(rows, 10000)):
        pks = np.array([r[0] for r in chunk], np.int64)
        at = np.minimum(np.searchsorted(ids, pks), max(n - 1, 0))
        ranked = (ids[at] == pks) if n else np.zeros(len(pks), bool)
        out["orphans"] += pks[~ranked].tolist()
        p_ok = [j for j, r in enumerate(chunk) if ranked[j] and r[1] == model and len(r[3]) == 8 * trust.N_CLASSES]
        if p_ok:
            out["p"][at[p_ok]] = np.frombuffer(b"".join(chunk[j][3] for j in p_ok), np.float64).reshape(-1, trust.N_CLASSES)
            out["has_p"][at[p_ok]] = True
        # features without neighbour lists: computed ahead of the ranking by a worker (precompute_evidence)
        f_ok = [j for j, r in enumerate(chunk) if ranked[j] and space is not None and r[2] == space and len(r[4])]
        if f_ok:
            F = np.frombuffer(b"".join(chunk[j][4] for j in f_ok), np.float32).reshape(len(f_ok), -1)
            if out["F"] is None:
                out["F"] = np.zeros((n, F.shape[1]), np.float32)
            out["F"][at[f_ok]] = F
            out["has_F"][at[f_ok]] = True
        s_ok = [j for j in f_ok if len(chunk[j][5]) == 8 * K]
        if s_ok:
            out["nb"][at[s_ok]] = np.frombuffer(b"".join(chunk[j][5] for j in s_ok), np.int64).reshape(-1, K)
            out["nd"][at[s_ok]] = np.frombuffer(b"".join(chunk[j][6] for j in s_ok), np.float32).reshape(-1, K)
            out["has_peers"][at[s_ok]] = True
        if lists is not None:
            lists.load(out, [chunk[j] for j in f_ok], at[f_ok])
    return out


def neighbour_rows(ids: np.ndarray, neighbour_ids: np.ndarray) -> np.ndarray:
    """Neighbour lists of drawing ids as rows of `ids` (sorted): -1 for padding and for drawings not ranked now."""
    if not len(ids):
        return np.full(neighbour_ids.shape, -1, np.int64)
    top = int(max(ids[-1], neighbour_ids.max(initial=-1)))
    if top <= 8 * len(ids) + 1_000_000:  # ids are dense: a lookup table, not 40 binary searches a drawing
        table = np.full(top + 2, -1, np.int64)
        table[ids] = np.arange(len(ids))
        return table[np.where(neighbour_ids >= 0, neighbour_ids, top + 1)]
    at = np.minimum(np.searchsorted(ids, neighbour_ids), len(ids) - 1)
    return np.where((neighbour_ids >= 0) & (ids[at] == neighbour_ids), at, -1)


def label_evidence(estimator, ids: np.ndarray, users: np.ndarray) -> RankingEvidence:
    """The searches of a ranking of the drawings `ids` (sorted; `users` their accounts), from stored
    evidence where it is valid: only drawings new to it (never ranked, or ranked in another feature space)
    are decoded and searched, and the stored lists they fall into are updated. A drawing ranked under another
    model in this space has its kept training lists extended with the model's new rows (search_out_of_sample).

    A drawing deleted meanwhile is left out of the result (compare its ids with `ids`).
    """
    model, space = trust.model_id(estimator), trust.feature_space_id(estimator)
    lists = TrainingLists(estimator, model, space)
    ev = load_evidence(ids, model, space, lists)
    new = ~ev["has_peers"] if space is not None else np.zeros(len(ids), bool)
    searched = ~ev["has_p"] | new
    counts: dict = {}
    here = search_out_of_sample(estimator, lists, space, ids, users, ev, ~ev["has_p"], new & ~ev["has_F"],
                                Drawing.objects, counts)
    if not here.all():
        ids, users, new, searched = ids[here], users[here], new[here], searched[here]
        for key, value in ev.items():
            if isinstance(value, np.ndarray) and len(value) == len(here):
                ev[key] = value[here]
    stale = np.zeros(len(ids), bool)
    entered = np.zeros(0, np.int64)
    if space is not None and len(ids):
        stale, entered = _search_peer_lists(ids, users, ev, new)
        searched |= stale
    # A drawing whose training lists were only extended keeps its features and peer lists: it is updated in place
    # (model, probabilities and the lists if new rows entered them), not written whole: at every promotion that
    # is every drawing, and most of a row's bytes did not change.
    in_place = searched & ev["extended"] & ~new & ~stale
    whole = searched & ~in_place
    write = _rows_written_whole(model, space, lists, ids, ev, whole)
    probabilities_only, with_lists = _rows_updated_in_place(model, lists, ids, ev, in_place)
    nb, nd = ev["nb"], ev["nd"]
    entered_lists = [(nb[i].tobytes(), nd[i].tobytes(), int(ids[i])) for i in entered if not whole[i]]
    counts = {"searched": int(searched.sum()), "reused": int((~searched).sum()),
              "lists_entered": len(entered), "lists_searched_again": int(stale.sum()),
              "updated_in_place": int(in_place.sum()), "lists_changed_in_place": len(with_lists), **counts}
    return RankingEvidence(ids, ev["p"], None if space is None else nb, None if space is None else nd, write,
                           entered_lists, ev["orphans"], counts, model,
                           lists if lists.image is not None and ev["has_T"].any() else None,
                           probabilities_only, with_lists)


def _search_peer_lists(ids: np.ndarray, users: np.ndarray, ev: dict, new: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The peer lists (ev["nb"], ev["nd"]) of the drawings `new` searched, and again those of drawings whose stored
    lists lost too many of their drawings (trust.lists_to_research); the new drawings entered into the old lists.
    Returns (bool per drawing: its list was searched again, rows whose lists a new drawing entered)."""
    F, nb, nd, has_peers = ev["F"], ev["nb"], ev["nd"], ev["has_peers"]
    stale = has_peers & trust.lists_to_research(nb, neighbour_rows(ids, nb))
    search = np.flatnonzero(new | stale)
    if len(search):
        idx, dist = trust.peer_neighbours(F, users, rows=search)
        nb[search] = np.where(idx >= 0, ids[np.maximum(idx, 0)], -1)
        nd[search] = dist
    # Old lists the new drawings enter: a search from the new drawings into the old ones, not of all.
    old = np.flatnonzero(has_peers & ~stale)
    src, dst, dist = trust.neighbours_reached(F, users, np.flatnonzero(new), old, nd[old, -1])
    entered = trust.merge_neighbours(nb, nd, dst, ids[src], dist)
    return stale, entered


def _rows_written_whole(model: str, space: str | None, lists: TrainingLists, ids: np.ndarray, ev: dict,
                        whole: np.ndarray) -> list[LabelEvidence]:
    """The LabelEvidence rows of the drawings `whole`, every field of them."""
    p, F, nb, nd = ev["p"], ev["F"], ev["nb"], ev["nd"]
    return [LabelEvidence(drawing_id=int(ids[i]), model=model, space=space or "",
                          probabilities=p[i].astype(np.float64).tobytes(),
                          features=b"" if space is None else F[i].tobytes(),
                          neighbour_ids=b"" if space is None else nb[i].tobytes(),
                          neighbour_distances=b"" if space is None else nd[i].tobytes(), **lists.fields(ev, i))
            for i in np.flatnonzero(whole)]


def _rows_updated_in_place(model: str, lists: TrainingLists, ids: np.ndarray, ev: dict, in_place: np.ndarray
                           ) -> tuple[list[tuple], list[tuple]]:
    """(model, probabilities, updated_at, id) of the drawings `in_place` whose extended lists did not change, and
    (model, probabilities, 4 list fields, updated_at, id) of those whose lists new rows entered."""
    now = connection.ops.adapt_datetimefield_value(timezone.now())  # for a raw UPDATE's parameters
    p = ev["p"]
    probabilities_only, with_lists = [], []
    for i in np.flatnonzero(in_place):
        if ev["changed"][i]:
            f = lists.fields(ev, i)
            with_lists.append((model, p[i].astype(np.float64).tobytes(), f["training_neighbours"],
                               f["training_distances"], f["stroke_neighbours"], f["stroke_distances"], now, int(ids[i])))
        else:
            probabilities_only.append((model, p[i].astype(np.float64).tobytes(), now, int(ids[i])))
    return probabilities_only, with_lists


def store_evidence(evidence: RankingEvidence) -> None:
    """In the ranking's transaction, after its first write (on SQLite the write lock: no drawing can be
    deleted under it now; elsewhere the drawings are locked)."""
    for s in range(0, len(evidence.orphans), BATCH):
        LabelEvidence.objects.filter(pk__in=evidence.orphans[s: s + BATCH]).delete()
    if evidence.training_lists is not None:
        evidence.training_lists.record()
    for s in range(0, len(evidence.write), BATCH):
        batch = evidence.write[s: s + BATCH]
        alive = set(Drawing.objects.select_for_update().filter(pk__in=[e.drawing_id for e in batch])
                    .values_list("pk", flat=True))
        LabelEvidence.objects.bulk_create(
            [e for e in batch if e.drawing_id in alive], update_conflicts=True, unique_fields=["drawing"],
            update_fields=["model", "space", "probabilities", "features", "neighbour_ids", "neighbour_distances",
                           *LIST_FIELDS, "updated_at"])
    # every ranked drawing's evidence is now under this ranking's model: the rows of earlier ones are not needed
    TrainingRows.objects.exclude(model=evidence.model).delete()
    # Lists a new drawing entered: the two columns, as one prepared UPDATE (a drawing deleted meanwhile
    # updates nothing). About PEER_KEPT of them a new drawing: model instances would cost more than the search.
    update_columns(LabelEvidence, ["neighbour_ids", "neighbour_distances"], evidence.lists)
    update_columns(LabelEvidence, ["model", "probabilities", "updated_at"], evidence.probabilities_only)
    update_columns(LabelEvidence, ["model", "probabilities", "training_neighbours", "training_distances",
                                   "stroke_neighbours", "stroke_distances", "updated_at"], evidence.with_lists)


def update_columns(model, fields: list[str], rows: list[tuple]) -> None:
    """UPDATE these columns of `model` from rows of (their values..., primary key), as one prepared statement
    run over all of them: bulk_update builds a CASE of every row in Python (2 s for 2,000 drawings), and a row
    deleted meanwhile updates nothing."""
    meta = model._meta
    qn = connection.ops.quote_name
    columns = ", ".join(f"{qn(meta.get_field(name).column)} = %s" for name in fields)
    sql = f"UPDATE {qn(meta.db_table)} SET {columns} WHERE {qn(meta.pk.column)} = %s"
    with connection.cursor() as cursor:
        for s in range(0, len(rows), 5000):
            cursor.executemany(sql, rows[s: s + 5000])
