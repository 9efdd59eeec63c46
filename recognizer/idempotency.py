"""Idempotent stored predictions: a client sends an `Idempotency-Key` header, one new key per drawing
attempt (the page and the desktop client do). The same user sending the same key again within
RECOGNIZER_IDEMPOTENCY_SECONDS gets the first answer back, naming the drawing stored the first time,
and nothing is stored again: a double click on Predict, or a retry after an answer was lost, keeps one
drawing. The same key with a different drawing is refused (422), so a client bug cannot silently get
another drawing's answer. Without a key every request stores, as before: two drawings that happen to be
identical are two drawings.

Keys are claimed in the same transaction that stores the drawing, under a unique (user, key)
constraint, so two requests racing with one key store one drawing: the second waits for the first
to commit and then replays its answer.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from recognizer.ml import strokes as ml_strokes
from recognizer.models import Drawing, PredictRequest

HEADER = "Idempotency-Key"
KEY = re.compile(r"^[\x21-\x7e]{1,255}$")  # visible ASCII: a UUID, a ULID, any opaque token


class InvalidKey(ValueError):
    """The Idempotency-Key header is empty, too long or not printable ASCII."""


class KeyReused(Exception):
    """The key was already used, within the window, for a different drawing."""


def key_from(headers) -> str | None:
    """The request's Idempotency-Key, or None when it sent none (raises InvalidKey for a bad one)."""
    raw = headers.get(HEADER)
    if raw is None:
        return None
    key = raw.strip()
    if not KEY.match(key):
        raise InvalidKey(f"The {HEADER} header must be 1 to 255 visible ASCII characters (a UUID, for example).")
    return key


def fingerprint(image: bytes, mode: str, strokes) -> str:
    """What identifies the drawing sent: its bytes, the mode and the validated strokes."""
    digest = hashlib.sha256()
    digest.update(image)
    digest.update(b"\0" + mode.encode())
    if strokes:
        digest.update(b"\0" + json.dumps(ml_strokes.strokes_to_json(strokes), separators=(",", ":")).encode())
    return digest.hexdigest()


def window_start():
    return timezone.now() - timedelta(seconds=settings.RECOGNIZER_IDEMPOTENCY_SECONDS)


def _replay(existing: PredictRequest, print_: str) -> dict:
    if existing.fingerprint != print_:
        raise KeyReused(f"This {HEADER} was already used for a different drawing: send a new key for each drawing.")
    return existing.response


def run_once(user, key: str, print_: str, produce: Callable[[], tuple[dict, list[Drawing]]]) -> tuple[dict, bool]:
    """(answer, replayed): `produce()` predicts, stores and returns (the answer, the drawings it stored)
    the first time; later calls with the same user and key return that answer without calling it.

    An error inside `produce` (an empty canvas, no model) stores nothing and keeps the key free, so the
    client can retry with it."""
    existing = PredictRequest.objects.filter(user=user, key=key, created_at__gte=window_start()).first()
    if existing is not None:
        return _replay(existing, print_), True
    try:
        with transaction.atomic():
            # An expired claim of the same key frees it; the claim comes first so a racing request blocks here.
            PredictRequest.objects.filter(user=user, key=key, created_at__lt=window_start()).delete()
            claim = PredictRequest.objects.create(user=user, key=key, fingerprint=print_)
            answer, drawings = produce()
            claim.response = answer
            claim.save(update_fields=["response"])
            claim.drawings.set(drawings)
    except IntegrityError:
        winner = PredictRequest.objects.filter(user=user, key=key).first()
        if winner is None:
            raise
        return _replay(winner, print_), True
    return answer, False


def purge_expired() -> int:
    """Forget the answers whose window has passed (beat runs this hourly)."""
    _, deleted = PredictRequest.objects.filter(created_at__lt=window_start()).delete()
    return deleted.get(PredictRequest._meta.label, 0)
