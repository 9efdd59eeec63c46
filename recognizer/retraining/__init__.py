"""Retraining runs: the retrain lock (one live run, reaped when its worker dies), queueing a run, the
threshold that starts one early, and running one: rank labels, assemble the data, train a candidate,
gate it against the active model (recognizer.promotion), retry without the accounts that drive a
refusal, and activate it atomically.

The Celery tasks (recognizer.tasks), the `retrain` command, the admin and the API call these.

The modules, each importing only those listed after it (lint-imports checks it):
- run: a run to its end under its lock (execute_run, finish_spread_run, retrain_in_foreground): the
  ranking, the data, the attempts, the decision recorded and the candidate activated.
- spread: the ranking's per-drawing searches sent to the workers in parts (compute_evidence_part).
- threshold: the count of new trusted drawings that starts a run early (maybe_retrain_after_new_labels).
- attempts: train a candidate, gate it, and train again without the accounts that drive a refusal.
- lock: the retrain lock, the reaper and queueing a run (start_retrain, reap_stale_runs, retry_unqueued_retrain).
- progress: a run's progress on its row, and the heartbeat that keeps its lock (RunReporter).

Everything other modules use is importable from here, as from recognizer.retraining when it was one module.
"""

from recognizer.retraining.lock import (
    UNQUEUED,
    TrainingUnavailable,
    live_run,
    reap_stale_runs,
    retry_unqueued_retrain,
    start_retrain,
)
from recognizer.retraining.progress import Progress
from recognizer.retraining.run import execute_run, finish_spread_run, retrain_in_foreground
from recognizer.retraining.spread import SPREAD_SHARE, SPREAD_STAGE, compute_evidence_part
from recognizer.retraining.threshold import maybe_retrain_after_new_labels, new_trusted_since_last_run

__all__ = [
    "UNQUEUED", "TrainingUnavailable", "live_run", "reap_stale_runs", "retry_unqueued_retrain", "start_retrain",
    "Progress",
    "execute_run", "finish_spread_run", "retrain_in_foreground",
    "SPREAD_SHARE", "SPREAD_STAGE", "compute_evidence_part",
    "maybe_retrain_after_new_labels", "new_trusted_since_last_run",
]
