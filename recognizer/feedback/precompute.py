"""The ranking's per-drawing searches, ahead of it and spread over workers (recognizer.retraining): which
drawings a ranking under a model would search, and storing their evidence part by part."""

from __future__ import annotations

import numpy as np
from django.db import transaction
from threadpoolctl import threadpool_limits

from recognizer import trust
from recognizer.feedback.evidence import load_evidence
from recognizer.feedback.out_of_sample import BATCH, search_out_of_sample
from recognizer.feedback.training_lists import LIST_FIELDS, TrainingLists
from recognizer.models import Drawing, LabelEvidence


def evidence_to_compute(estimator) -> np.ndarray:
    """Ids of the labelled, not rejected drawings that a ranking under `estimator` would decode and search
    for out-of-sample probabilities (none stored under this very model), by account and then id: parts cut
    from it keep most accounts whole, and one account's drawings are searched in one batch."""
    model = trust.model_id(estimator)
    rows = np.array(Drawing.objects.not_rejected().order_by("user_id", "id").values_list("id", "user_id"),
                    np.int64).reshape(-1, 2)
    done = np.fromiter(LabelEvidence.objects.filter(model=model).values_list("drawing_id", flat=True), np.int64)
    return rows[~np.isin(rows[:, 0], done), 0]


def precompute_evidence(estimator, ids, lists: TrainingLists | None = None) -> dict:
    """Store what the next ranking under `estimator` would otherwise compute for each of the drawings `ids`:
    its features, out-of-sample probabilities and kept training lists (label_evidence, through the same
    search_out_of_sample: a drawing with lists kept under an earlier model in this space is not decoded).
    Exactly the same values (each drawing's search leaves out its own account, whatever else is in the batch),
    so ranking after any number of these, in any order, on any worker, decides what ranking alone decides.

    A drawing that already has neighbour lists in this feature space keeps them and its features (it sits in
    others' lists there); one without gets its features and no lists: the ranking searches its neighbours and
    enters it into the others' lists, as for any drawing new to it. Drawings with valid evidence, rejected or
    deleted meanwhile are skipped. `lists`: the estimator's TrainingLists, when a worker keeps one for all the
    parts it runs (its ids pickle the whole estimator, its rows' digest and records are read once)."""
    if lists is None:
        lists = TrainingLists(estimator, trust.model_id(estimator), trust.feature_space_id(estimator))
    model, space = lists.model, lists.space
    # in the order given (evidence_to_compute's: by account), without repeats: a batch then holds whole
    # accounts, and the out-of-sample search runs once per account in it
    ids = np.asarray(ids, np.int64)
    ids = ids[np.sort(np.unique(ids, return_index=True)[1])]
    counts = {"drawings": len(ids), "computed": 0, "kept_lists": 0}
    recorded = False
    with threadpool_limits(limits=1, user_api="blas"):  # see flag_suspicious_labels
        for s in range(0, len(ids), BATCH):
            batch = np.array(sorted(Drawing.objects.not_rejected().filter(pk__in=ids[s: s + BATCH].tolist())
                                    .values_list("id", "user_id")), np.int64).reshape(-1, 2)
            ev = load_evidence(batch[:, 0], model, space, lists, only_ids=True)
            todo = ~ev["has_p"]
            if not todo.any():
                continue
            here = search_out_of_sample(estimator, lists, space, batch[:, 0], batch[:, 1], ev, todo,
                                        np.zeros(len(batch), bool), Drawing.objects.not_rejected(), counts)
            done = np.flatnonzero(todo & here)
            if not len(done):
                continue
            keep_lists = ev["has_peers"][done]
            record = not recorded and lists.image is not None
            _store_part(lists, ev, batch[:, 0], done, keep_lists, record=record)
            recorded = recorded or record
            counts["computed"] += len(done)
            counts["kept_lists"] += int(keep_lists.sum())
    return counts


def _store_part(lists: TrainingLists, ev: dict, ids: np.ndarray, done: np.ndarray, keep_lists: np.ndarray, *,
                record: bool) -> None:
    """The evidence computed for the drawings `done` (rows of `ids`), stored in one transaction, with the model's
    training rows first when `record`. A drawing that keeps its neighbour lists (`keep_lists`) keeps its
    features and lists too; a drawing deleted meanwhile is skipped."""
    rows = [LabelEvidence(drawing_id=int(ids[i]), model=lists.model, space=lists.space or "",
                          probabilities=ev["p"][i].astype(np.float64).tobytes(),
                          features=b"" if ev["F"] is None else ev["F"][i].tobytes(),
                          neighbour_ids=b"", neighbour_distances=b"", **lists.fields(ev, i))
            for i in done]
    with transaction.atomic():
        if record:
            lists.record()
        alive = set(Drawing.objects.select_for_update().filter(pk__in=ids[done].tolist())
                    .values_list("pk", flat=True))
        for mask, fields in ((keep_lists, ["model", "probabilities", *LIST_FIELDS, "updated_at"]),
                             (~keep_lists, ["model", "space", "probabilities", "features", "neighbour_ids",
                                            "neighbour_distances", *LIST_FIELDS, "updated_at"])):
            LabelEvidence.objects.bulk_create(
                [r for r, m in zip(rows, mask) if m and r.drawing_id in alive], update_conflicts=True,
                unique_fields=["drawing"], update_fields=fields)
