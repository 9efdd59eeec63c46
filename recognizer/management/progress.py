"""A tqdm progress bar driven by the ML code's progress(stage, fraction) callbacks."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

from tqdm import tqdm


@contextlib.contextmanager
def progress_bar(description: str, enabled: bool = True) -> Iterator:
    bar = tqdm(total=100, desc=description, unit="%", file=sys.stderr, disable=not enabled,
               bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix} [{elapsed}]")

    def update(stage: str, fraction: float) -> None:
        target = int(round(max(0.0, min(1.0, fraction)) * 100))
        if target > bar.n:
            bar.update(target - bar.n)
        bar.set_postfix_str(stage)

    try:
        yield update
        update("done", 1.0)
    finally:
        bar.close()
