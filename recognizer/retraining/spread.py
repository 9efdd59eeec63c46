"""Spreading a retrain's per-drawing work over the Celery workers: the ranking's searches sent as a chord of
parts when enough drawings need them, each part storing its evidence, and what the parts came to."""

from __future__ import annotations

import functools
import logging

from django.conf import settings
from django.db.models import F
from django.db.models.functions import Least
from django.utils import timezone

from recognizer import dispatch, feedback, trust, versions
from recognizer.models import Drawing, ModelVersion, TrainingRun
from recognizer.retraining.attempts import active_estimator
from recognizer.retraining.progress import RunReporter

logger = logging.getLogger(__name__)

SPREAD_STAGE = "computing drawing evidence"
SPREAD_SHARE = 0.4  # of a spread run's progress bar: its parts, then the rest


def spread_evidence(run: TrainingRun, report: RunReporter
                    ) -> tuple[bool, tuple[ModelVersion | None, object | None] | None]:
    """Send the ranking's per-drawing searches (decoding, features, out-of-sample probabilities) to the
    workers as a chord of parts when at least RECOGNIZER_RETRAIN_SPREAD_MIN drawings need them.
    (sent, the active version and estimator when it loaded them: the run goes on with them when not sent).

    They are most of a retrain's cost after a promotion (every drawing's probabilities change with the
    model) and all of it after the feature space changes; everything else stays in one process."""
    threshold = settings.RECOGNIZER_RETRAIN_SPREAD_MIN
    if not threshold or Drawing.objects.not_rejected().count() < threshold:  # a small site: not even a look
        return False, None
    report("finding the drawings to rank", 0.005)
    active, estimator = loaded = active_estimator()
    if estimator is None:
        return False, loaded
    todo = feedback.evidence_to_compute(estimator)
    if len(todo) < threshold:
        return False, loaded
    size = settings.RECOGNIZER_RETRAIN_PART_SIZE
    parts = [todo[s: s + size].tolist() for s in range(0, len(todo), size)]
    # No worker id while the parts run: the one that sent them may be recycled meanwhile, and the parts
    # keep the heartbeat alive; a part lost with its worker lets the heartbeat lapse and the reaper frees the lock.
    TrainingRun.objects.filter(pk=run.pk, holds_lock=True).update(
        worker="", stage=f"{SPREAD_STAGE}: {len(todo)} drawings in {len(parts)} parts", progress=0.01,
        heartbeat_at=timezone.now())
    # a broker that is down raises here: the run fails and frees the lock
    dispatch.send_evidence_parts(run.pk, active.pk, parts, SPREAD_SHARE / len(parts))
    return True, loaded


def compute_evidence_part(run_id: int, version_id: int, ids: list[int], share: float = 0.0) -> dict:
    """One part of a spread run: store the ranking's evidence of `ids` under the version the run started
    from, and move the run's progress on by `share`. Never raises: what a part could not do, the ranking
    does itself."""
    if not TrainingRun.objects.filter(pk=run_id, holds_lock=True).exists():
        return {"drawings": len(ids), "skipped": "the run no longer holds the retrain lock"}
    try:
        version = ModelVersion.objects.get(pk=version_id)
        estimator, lists = _part_estimator(version.file, version.sha256)
        counts = feedback.precompute_evidence(estimator, ids, lists)
    except Exception as exc:  # noqa: BLE001 - the ranking recomputes the part; the run must go on
        logger.exception("Run %s: an evidence part of %d drawings failed", run_id, len(ids))
        return {"drawings": len(ids), "error": f"{type(exc).__name__}: {exc}"[:500]}
    TrainingRun.objects.filter(pk=run_id, holds_lock=True, stage__startswith=SPREAD_STAGE).update(
        heartbeat_at=timezone.now(), progress=Least(F("progress") + share, SPREAD_SHARE))
    return counts


@functools.lru_cache(maxsize=1)
def _part_estimator(file: str, sha256: str) -> tuple[object, feedback.TrainingLists]:
    """(a version's estimator, its feedback.TrainingLists), loaded and named once per worker process for all
    the parts of a run it takes (the last version only)."""
    estimator = versions.load_estimator(file, sha256)
    return estimator, feedback.TrainingLists(estimator, trust.model_id(estimator), trust.feature_space_id(estimator))


def parts_summary(results: list) -> dict:
    results = [r for r in results if isinstance(r, dict)]
    return {"parts": len(results), "drawings": sum(r.get("drawings", 0) for r in results),
            "computed": sum(r.get("computed", 0) for r in results),
            "failed": [r["error"] for r in results if r.get("error")][:5],
            "skipped": sum(1 for r in results if r.get("skipped"))}
