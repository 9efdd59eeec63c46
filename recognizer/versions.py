"""Model versions: loading one, registering a new one, and activating one.

The one path for each job: serving, the retrain's gate, the admin, the API and the commands all call
these, so a file is always verified against its hash before it is served or activated. Where the files
live (a shared directory or object storage) is recognizer.modelfiles' business.
"""

from __future__ import annotations

import logging

from django.core.exceptions import SuspiciousFileOperation
from django.db import transaction
from django.utils import timezone

from recognizer import modelfiles
from recognizer.ml import store as ml_store
from recognizer.models import ModelVersion

logger = logging.getLogger(__name__)

ANY = object()  # activate(): whatever version is active now


def load_estimator(file: str, sha256: str):
    """The estimator stored in a version's file, verified against its hash.

    Raises ml_store.CorruptModelError (changed or truncated) or OSError (missing, unreadable, the storage
    unreachable)."""
    return ml_store.load_model(_local_file(file, sha256), expected_sha256=sha256)


def _local_file(file: str, sha256: str):
    try:
        return modelfiles.local_copy(file, sha256)
    except SuspiciousFileOperation as exc:  # a name no publish() wrote: as unusable as a damaged file
        raise ml_store.CorruptModelError(str(exc)) from exc


def register_model(saved: ml_store.SavedModel, *, kind: str, data_source: str, metrics: dict) -> ModelVersion:
    """Publish a file ml_store.save_model wrote (it is moved into the model storage) and record the version."""
    return ModelVersion.objects.create(
        kind=kind,
        file=modelfiles.publish(saved),
        sha256=saved.sha256,
        data_source=data_source,
        metadata=saved.metadata,
        metrics=metrics,
    )


def activate(version: ModelVersion, *, by=None, if_active_is=ANY) -> bool:
    """Point the site at `version` in one transaction; the file is verified (whole, unchanged) first.

    `if_active_is`: switch only if that version id (None: no version) is still the active one, so a
    retrain never overrides what staff activated while it was training. `by`: the staff user, logged.
    False when the condition no longer held; raises CorruptModelError/OSError for a bad file.
    """
    active = ModelVersion.objects.filter(is_active=True)
    if if_active_is is not ANY and active.values_list("id", flat=True).first() != if_active_is:
        return False  # before the file is read: nothing would be activated anyway
    _local_file(version.file, version.sha256)  # whole and unchanged, and on this machine
    with transaction.atomic():
        current = active.select_for_update().values_list("id", flat=True).first()
        if if_active_is is not ANY and current != if_active_is:
            return False
        ModelVersion.objects.filter(is_active=True).exclude(pk=version.pk).update(is_active=False)
        ModelVersion.objects.filter(pk=version.pk).update(is_active=True, activated_at=timezone.now())
    version.refresh_from_db()
    if by is not None:
        logger.info("Model v%s activated by %s", version.pk, by)
    return True
