"""A user's own data: deleting one drawing or the whole account, and downloading their drawings.

Deleting removes the rows and, once the transaction commits, the image files (recognizer.signals), so a
rolled-back deletion never loses a file that a row still names. What a deleted drawing taught the model
goes with it: the personalisation cache is keyed by an aggregate over the user's drawings, and the next
retrain reads the trusted drawings from the database. A model file trained before the deletion still
holds it until a retrain replaces it (README, "Your data").
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import zipfile
from typing import IO

from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone

from recognizer.models import Drawing, PredictRequest

MANIFEST_FIELDS = ["id", "created_at", "predicted_digit", "confidence", "label", "labelled_at", "status",
                   "model_version", "image"]


def delete_drawing(drawing: Drawing) -> None:
    """Delete a drawing, its image file, and the stored answer of the request that made it."""
    with transaction.atomic():
        PredictRequest.objects.filter(drawings=drawing).delete()
        drawing.delete()


def delete_account(user) -> None:
    """Delete the account and everything that is theirs: drawings and their image files, API tokens,
    stored answers, trust figures. Drawings they reviewed as staff and runs they started stay, without them."""
    directory = f"drawings/{user.pk}"
    with transaction.atomic():
        user.delete()
        transaction.on_commit(lambda: _remove_empty_directory(directory))


def _remove_empty_directory(name: str) -> None:
    try:
        os.rmdir(default_storage.path(name))
    except (NotImplementedError, OSError):
        pass  # object storage has no directories; or it is gone already, or not empty


def _when(value) -> str | None:
    return value.isoformat() if value is not None else None


def export_drawings(user, out: IO[bytes]) -> int:
    """Write a zip of the user's drawings to `out`: images/<id>.png, and manifest.csv and manifest.json
    (id, created_at, predicted digit, confidence, label, status...; the JSON adds the probabilities and
    the pen strokes). Returns how many drawings it holds."""
    rows = []
    drawings = Drawing.objects.filter(user=user).order_by("id").defer("preprocessed").iterator(chunk_size=500)
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for drawing in drawings:
            image = f"images/{drawing.pk}.png"
            try:
                with drawing.image.open("rb") as source, archive.open(
                        zipfile.ZipInfo(image, date_time=drawing.created_at.timetuple()[:6]), "w") as target:
                    shutil.copyfileobj(source, target)  # PNGs are compressed already: ZipInfo stores them as is
            except (FileNotFoundError, ValueError):
                image = None  # the file is missing: the row still says what it was
            rows.append({
                "id": drawing.pk, "created_at": _when(drawing.created_at), "predicted_digit": drawing.predicted_digit,
                "confidence": round(drawing.confidence, 6), "label": drawing.label,
                "labelled_at": _when(drawing.labelled_at), "status": drawing.status,
                "model_version": drawing.model_version_id, "image": image,
                "probabilities": drawing.probabilities, "strokes": drawing.strokes,
            })
        table = io.StringIO()
        writer = csv.DictWriter(table, fieldnames=MANIFEST_FIELDS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        archive.writestr("manifest.csv", table.getvalue())
        archive.writestr("manifest.json", json.dumps(
            {"user": user.get_username(), "exported_at": _when(timezone.now()), "drawings": rows}, indent=1))
    return len(rows)
