"""Django deletes a FileField's row, never its file: a deleted drawing's image is removed here, once the
deletion commits (a rolled-back deletion keeps the file its row still names). Every path that deletes
drawings goes through this: the API, the pages, account deletion's cascade, and the admin."""

from __future__ import annotations

import logging

from django.db import transaction
from django.db.models.signals import post_delete
from django.dispatch import receiver

from recognizer.models import Drawing

logger = logging.getLogger(__name__)


@receiver(post_delete, sender=Drawing, dispatch_uid="recognizer.delete_drawing_image")
def delete_drawing_image(sender, instance: Drawing, using: str, **kwargs) -> None:
    name, storage, pk = instance.image.name, instance.image.storage, instance.pk
    if not name:
        return

    def delete_file() -> None:
        try:
            storage.delete(name)
        except OSError:
            logger.exception("Could not delete the image file %s of deleted drawing %s", name, pk)

    transaction.on_commit(delete_file, using=using)
