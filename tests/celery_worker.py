"""`celery -A digitsite worker --pool=solo` for the integration tests.

With SLOW_TRAINING_SECONDS set, training sleeps first (after reporting that it started), so a test
can kill the worker in the middle of a retrain.
"""

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    delay = float(os.environ.get("SLOW_TRAINING_SECONDS") or 0)
    if delay:
        from recognizer.ml import kinds

        real_train_model = kinds.train_model

        def slow_train_model(*args, **kwargs):
            if kwargs.get("progress"):
                kwargs["progress"]("features", 0.0)
            time.sleep(delay)
            return real_train_model(*args, **kwargs)

        kinds.train_model = slow_train_model
    from celery.bin.celery import main as celery_main

    sys.argv = ["celery", "-A", "digitsite", "worker", "--pool=solo", "--loglevel=INFO", "--without-mingle",
                "--without-gossip", "--concurrency=1"]
    celery_main()


if __name__ == "__main__":
    main()
