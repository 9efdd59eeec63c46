"""The label ranking: every labelled, not-rejected drawing's chance that its label is wrong, and every account's
trust (recognizer.trust does the arithmetic), from the evidence the ranking keeps (recognizer.feedback.evidence)."""

from __future__ import annotations

import logging

import numpy as np
from django.conf import settings
from django.db import transaction
from django.db.models import Count
from django.utils import timezone
from threadpoolctl import threadpool_limits

from recognizer import serving, trust
from recognizer.feedback.evidence import RankingEvidence, label_evidence, neighbour_rows, store_evidence, update_columns
from recognizer.models import Drawing, LabelEvidence, UserTrust

# the name it logged under when the package was one module
logger = logging.getLogger("recognizer.feedback")


def find_label_issues(labels: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """Boolean mask of likely wrong labels by the model alone (recorded next to the ranking for comparison).

    cleanlab's confident learning (per-class thresholds from the out-of-sample probabilities, then
    pruning by the estimated noise rate) when it is installed and there is enough data for it;
    otherwise the plain rule it generalises: the model gives the given label under 5 %.
    """
    strong_disagreement = probabilities[np.arange(len(labels)), labels] < 0.05
    if len(labels) >= 20 and len(np.unique(labels)) >= 2:
        try:
            from cleanlab.filter import find_label_issues as cleanlab_issues

            # n_jobs=1: by default cleanlab forks a pool of processes and ends it with SIGTERM, which in a Celery
            # worker the children answer with the worker's own warm-shutdown handler instead of exiting: the
            # retrain then waits for them forever (seen with 3,000 drawings). One process costs milliseconds.
            return np.asarray(cleanlab_issues(labels, probabilities, filter_by="prune_by_noise_rate", n_jobs=1), bool)
        except ImportError:
            pass
        except Exception as exc:  # noqa: BLE001 - cleanlab rejects some degenerate inputs
            logger.warning("cleanlab could not rank the labels (%s); using the plain rule", exc)
    return strong_disagreement


def flag_suspicious_labels(estimator=None) -> dict:
    """Rank every labelled, not-rejected drawing and measure every account's trust (recognizer.trust).

    Stored: on the drawings, suspicious and suspicion_score (the chance the label is wrong, from the
    out-of-sample model, other accounts' labels of similar drawings and the account's trust), and one
    UserTrust per account. The admin sorts suspicious drawings first; suspicious labels of low-trust
    accounts are quarantined (DrawingQuerySet.trusted).

    The searches behind it (the out-of-sample probabilities, each drawing's nearest other-account
    drawings) are kept in LabelEvidence: a ranking searches only drawings new to it (label_evidence),
    then recomputes votes, trust and suspicion of every drawing from the kept evidence and the current
    labels, statuses and accounts: the same decisions as searching everything again, at the cost of
    the new drawings' searches plus arithmetic over all of them. Under a newly promoted model in the same
    space, every drawing's out-of-sample probabilities are voted again from its kept training lists, which
    are searched only among the rows the model added.
    """
    if estimator is None:
        try:
            estimator = serving.model_cache.get().estimator
        except serving.NoActiveModel:
            return {"ranked": 0, "suspicious": 0}
    fields = ("id", "user_id", "label", "status", "suspicious", "suspicion_score")
    rows = list(Drawing.objects.not_rejected().order_by("id").values_list(*fields))
    rejected = dict(Drawing.objects.labelled().filter(status=Drawing.Status.REJECTED)
                    .values("user_id").annotate(n=Count("id")).values_list("user_id", "n"))
    if not rows and not rejected:
        LabelEvidence.objects.all().delete()
        return {"ranked": 0, "suspicious": 0}
    ids = np.array([r[0] for r in rows], np.int64)
    users = np.array([r[1] for r in rows], np.int64)
    # One BLAS thread: on a busy 2-core machine a threaded product of one account's few new drawings with
    # every drawing took 12 ms against 0.3 ms (bench/ranking.py), and large blocks gain nothing either.
    with threadpool_limits(limits=1, user_api="blas"):
        evidence = label_evidence(estimator, ids, users)
    keep = np.isin(ids, evidence.ids)  # drawings deleted while it searched are left out
    rows = [r for r, k in zip(rows, keep) if k]
    ids, users = ids[keep], users[keep]
    labels = np.array([r[2] for r in rows], np.int64)
    ranking = _rank(estimator, evidence, rows, ids, users, labels, rejected)
    model_alone = find_label_issues(labels, evidence.probabilities) if len(ids) else np.zeros(0, bool)
    updates = [(bool(ranking.suspicious[i]), float(ranking.suspicion[i]), int(pk))
               for i, (pk, r) in enumerate(zip(ids, rows))
               if r[4] != bool(ranking.suspicious[i]) or r[5] != float(ranking.suspicion[i])]
    with transaction.atomic():
        _write_suspicion(updates)
        _write_trust(ranking.trust)
        store_evidence(evidence)
    low = sorted(u for u, t in ranking.trust.items() if t.score < settings.RECOGNIZER_TRUST_THRESHOLD)
    return {"ranked": len(ids), "suspicious": int(ranking.suspicious.sum()),
            "model_alone_issues": int(model_alone.sum()), "accounts": len(ranking.trust), "low_trust_users": low,
            "quarantined": Drawing.objects.quarantined().count(), **evidence.counts}


def _rank(estimator, evidence: RankingEvidence, rows: list[tuple], ids: np.ndarray, users: np.ndarray,
          labels: np.ndarray, rejected: dict) -> trust.Ranking:
    """trust.rank_labels over the ranked drawings (`rows`: their fields in id order) from their evidence."""
    approved = np.array([r[3] == Drawing.Status.APPROVED for r in rows], bool)
    neighbours = None
    if evidence.neighbour_ids is not None and len(ids):
        neighbours = (neighbour_rows(ids, evidence.neighbour_ids), evidence.neighbour_dist)
    return trust.rank_labels(labels, users, evidence.probabilities, neighbours=neighbours,
                             radius=getattr(estimator, "novelty_distance_", None), approved=approved,
                             rejected_by_user=rejected, threshold=settings.RECOGNIZER_SUSPICION_THRESHOLD)


def _write_suspicion(updates: list[tuple[bool, float, int]]) -> None:
    """(suspicious, suspicion_score, id) per drawing: most scores move a little at every ranking."""
    update_columns(Drawing, ["suspicious", "suspicion_score"], updates)


def _write_trust(accounts: dict[int, trust.AccountTrust]) -> None:
    """One UserTrust per ranked account, created or updated."""
    UserTrust.objects.bulk_create(
        [UserTrust(user_id=u, score=t.score, n_labels=t.n_labels, n_agree=t.n_agree, n_disagree=t.n_disagree,
                   n_flagged=t.n_flagged, updated_at=timezone.now()) for u, t in accounts.items()],
        update_conflicts=True, unique_fields=["user"],
        update_fields=["score", "n_labels", "n_agree", "n_disagree", "n_flagged", "updated_at"])
