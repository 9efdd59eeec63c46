"""What every benchmark needs: the data directories from the environment, and a timestamped log."""

from __future__ import annotations

import os
import sys
import time


def data_dirs() -> tuple[str, str]:
    """(MNIST_DIR, PENDIGITS_DIR); the benchmark stops with status 2 when either is not set."""
    mnist_dir, pen_dir = os.environ.get("MNIST_DIR"), os.environ.get("PENDIGITS_DIR")
    if not mnist_dir or not pen_dir:
        print("Set MNIST_DIR and PENDIGITS_DIR.", file=sys.stderr)
        raise SystemExit(2)
    return mnist_dir, pen_dir


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)
