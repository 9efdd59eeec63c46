"""The threshold that starts a retrain early: RECOGNIZER_RETRAIN_AFTER new trusted drawings since the last run
that got as far as the gate."""

from __future__ import annotations

from django.conf import settings
from django.db.models import Q

from recognizer.models import Drawing, TrainingRun
from recognizer.retraining.lock import live_run, start_retrain


def new_trusted_since_last_run() -> int:
    last = (TrainingRun.objects.filter(status__in=[TrainingRun.Status.PROMOTED, TrainingRun.Status.NOT_PROMOTED])
            .order_by("-started_at").values_list("started_at", flat=True).first())
    qs = Drawing.objects.trusted()
    if last is not None:
        qs = qs.filter(Q(labelled_at__gt=last) | Q(reviewed_at__gt=last))
    return qs.count()


def maybe_retrain_after_new_labels() -> TrainingRun | None:
    """Start a retrain early once RECOGNIZER_RETRAIN_AFTER new trusted drawings have arrived."""
    if live_run() is not None or new_trusted_since_last_run() < settings.RECOGNIZER_RETRAIN_AFTER:
        return None
    run, created = start_retrain(TrainingRun.Trigger.THRESHOLD)
    return run if created else None
