"""A running retrain's progress: written to its run row (throttled), with a heartbeat that keeps the retrain
lock alive through steps that report nothing."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Self

from django.conf import settings
from django.db import connection
from django.utils import timezone

from recognizer.models import TrainingRun

logger = logging.getLogger(__name__)

Progress = Callable[[str, float], None]


class RunReporter:
    """progress(stage, fraction) that writes to the run row (throttled) and keeps its heartbeat alive."""

    def __init__(self, run: TrainingRun, echo: Progress | None = None, span: tuple[float, float] = (0.0, 1.0)) -> None:
        self.run = run
        self.echo = echo
        self.span = span  # where this process's share of the run lies (after a spread run's parts: the rest)
        self._last_write = 0.0
        self._last_stage = ""
        self._stop = threading.Event()
        interval = max(1.0, settings.RECOGNIZER_RETRAIN_LOCK_TIMEOUT / 4)
        self._thread = threading.Thread(target=self._beat, args=(interval,), daemon=True, name="retrain-heartbeat")

    def _write(self, **fields) -> None:
        TrainingRun.objects.filter(pk=self.run.pk, holds_lock=True).update(heartbeat_at=timezone.now(), **fields)

    def _beat(self, interval: float) -> None:
        # Long steps (feature extraction, evaluation) report no progress; the heartbeat must not stop.
        try:
            while not self._stop.wait(interval):
                try:
                    self._write()
                except Exception:
                    logger.warning("Could not write the retrain heartbeat", exc_info=True)
        finally:
            connection.close()

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()

    def __call__(self, stage: str, fraction: float) -> None:
        fraction = float(max(0.0, min(1.0, fraction)))
        fraction = self.span[0] + (self.span[1] - self.span[0]) * fraction
        if self.echo:
            self.echo(stage, fraction)
        now = time.monotonic()
        if now - self._last_write >= 1.0 or fraction >= 1.0 or stage != self._last_stage:
            self._last_write, self._last_stage = now, stage
            self._write(stage=stage[:120], progress=fraction)

    def scaled(self, start: float, end: float) -> Progress:
        return lambda stage, fraction: self(stage, start + (end - start) * fraction)
