"""Feedback-loop benchmark: users draw and correct through the API, a retrain learns from them.

Pendigits writers are split in two (by writer). The drawings of the first group are replayed as
users who draw on the canvas (POST /api/v1/predict) and confirm or correct the answer
(POST /api/v1/drawings/{id}/label); then the retrain runs (the code of `manage.py retrain` and of
the Celery task), once per user-drawing vote weight compared. Reported before and after: canvas
accuracy on the other writers (never seen), MNIST test accuracy, held-out users, retrain time.
Each weight's candidate is compared with the same MNIST-only model (rolled back between runs).

    MNIST_DIR=/work/shared/data/mnist PENDIGITS_DIR=/work/shared/data/pendigits \\
        .venv/bin/python -m bench.feedback_loop [--quick] [--weights 1,3,10] [--train-limit N] [--split-seed S]

It runs in a temporary directory with its own SQLite database and media; nothing else is touched.
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

from bench._common import data_dirs, throwaway_site

warnings.filterwarnings("ignore", message="No directory at")  # whitenoise: no collectstatic in a benchmark


def configure(tmp: Path, train_limit: int) -> None:
    env = {
        "RECOGNIZER_TRAIN_LIMIT": str(train_limit),
        "RECOGNIZER_RETRAIN_AFTER": str(10**9),  # the benchmark starts the retrain itself
        "RECOGNIZER_USER_PREDICT_RATE": "1000000/minute",
        "CELERY_TASK_ALWAYS_EAGER": "true",
        "DJANGO_LOG_LEVEL": "WARNING",
        # The baseline is MNIST alone: a pen warm start would train on the writers measured as unseen
        # (bench/unseen_writers.py measures the warm start leave-writers-out).
        "RECOGNIZER_PEN_WARM_START": "false",
    }
    os.environ.pop("PENDIGITS_DIR", None)  # the recorded metrics need not re-render canvases each retrain
    throwaway_site(tmp, **env)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10k MNIST digits, 8 writers, one weight")
    parser.add_argument("--weights", default=None, help="user-drawing vote weights to compare (default 1,3,10)")
    parser.add_argument("--train-limit", type=int, default=None, help="MNIST training digits (0 = all)")
    parser.add_argument("--writers", type=int, default=0, help="use only this many pendigits writers")
    parser.add_argument("--test-fraction", type=float, default=0.3, help="share of writers never replayed")
    parser.add_argument("--split-seed", type=int, default=0,
                        help="which writers are replayed and which unseen (run several: splits differ a lot)")
    parser.add_argument("--timing-drawings", type=int, default=None,
                        help="then time one retrain with this many user drawings (copies of the replayed ones; "
                             "default 10000, 0 = skip)")
    args = parser.parse_args(argv)
    mnist_dir, pen_dir = data_dirs()
    train_limit = args.train_limit if args.train_limit is not None else (10000 if args.quick else 0)
    weights = [float(w) for w in (args.weights or ("3" if args.quick else "1,3,10")).split(",")]
    n_writers = args.writers or (8 if args.quick else 0)
    tmp = Path(tempfile.mkdtemp(prefix="digitsite-feedback-bench-"))
    configure(tmp, train_limit)

    import numpy as np
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from rest_framework.test import APIClient

    from recognizer import feedback, retraining, serving, training, versions
    from recognizer.ml import load_pendigits, render_png, split_writers
    from recognizer.ml.evaluate import evaluate, render_canvas_images
    from recognizer.models import Drawing, ModelVersion

    t0 = time.perf_counter()
    base = training.train_new_model(limit=train_limit, activate=True, cv=True).version
    print(f"Baseline v{base.pk}: k-NN on {base.metadata['counts']['mnist_train']} MNIST digits "
          f"({time.perf_counter() - t0:.1f} s with cross-validation)")

    digits = load_pendigits(pen_dir)
    if n_writers:
        keep = set(sorted({d.writer for d in digits})[:n_writers])
        digits = [d for d in digits if d.writer in keep]
    replayed, unseen = split_writers(digits, test_fraction=args.test_fraction, seed=args.split_seed)
    X_unseen, y_unseen, _ = render_canvas_images(unseen, seed=1)
    data = training.ml_mnist.load_training_data(training.mnist_directory())
    X_mnist, y_mnist = data.test_images / 255.0, data.test_labels

    def figures(version: ModelVersion) -> dict:
        est = versions.load_estimator(version.file, version.sha256)
        return {"canvas_unseen": evaluate(est, X_unseen, y_unseen)["accuracy"],
                "mnist_test": evaluate(est, X_mnist, y_mnist)["accuracy"]}

    # Users draw and correct through the API.
    t0 = time.perf_counter()
    User = get_user_model()
    rng = np.random.default_rng(0)
    wrong = 0
    by_writer: dict[int, list] = {}
    for d in replayed:
        by_writer.setdefault(d.writer, []).append(d)
    for writer, drawings in by_writer.items():
        client = APIClient()
        client.force_authenticate(User.objects.create_user(f"writer{writer}", password="bench-password-1"))
        for d in drawings:
            png = base64.b64encode(render_png(d, rng)).decode()
            answer = client.post("/api/v1/predict", {"image": png}, format="json")
            assert answer.status_code == 200, answer.content
            body = answer.json()
            wrong += body["digit"] != d.label
            labelled = client.post(f"/api/v1/drawings/{body['drawing']}/label", {"label": d.label}, format="json")
            assert labelled.status_code == 200, labelled.content
    replay_seconds = time.perf_counter() - t0
    n_users = len(by_writer)
    held_users = sum(feedback.is_holdout_user(u.pk) for u in User.objects.all())
    print(f"Replayed {len(replayed)} drawings of {n_users} writers through the API in {replay_seconds:.0f} s "
          f"({wrong} answers corrected, {len(replayed) - wrong} confirmed; "
          f"{held_users} users held out for validation); {len(unseen)} drawings of "
          f"{len({d.writer for d in unseen})} other writers never replayed.")

    before = figures(base)
    rows = [("before (MNIST only)", "-", before, None, None, "")]
    for weight in weights:
        versions.activate(base)  # each candidate faces the same active model
        serving.model_cache.clear()
        settings.RECOGNIZER_USER_SAMPLE_WEIGHT = weight
        t0 = time.perf_counter()
        run, _ = retraining.retrain_in_foreground()
        seconds = time.perf_counter() - t0
        if run.status == "failed":
            print(run.error, file=sys.stderr)
            return 1
        candidate = ModelVersion.objects.get(pk=run.model_version_id)
        if rows[0][3] is None:
            rows[0] = rows[0][:3] + (run.decision["active"].get("holdout"),) + rows[0][4:]
        rows.append((f"retrained, weight {weight:g}", run.status, figures(candidate),
                     run.decision["candidate"].get("holdout"), seconds, run.data_counts))

    print()
    header = (f"{'model':<22}{'gate':>14}{'canvas, unseen writers':>24}{'MNIST test':>12}"
              f"{'held-out users':>16}{'retrain':>9}")
    print(header)
    print("-" * len(header))
    for name, status, fig, holdout, seconds, _counts in rows:
        print(f"{name:<22}{status:>14}{fig['canvas_unseen'] * 100:>23.2f}%{fig['mnist_test'] * 100:>11.2f}%"
              f"{'-' if holdout is None else format(holdout * 100, '.2f') + '%':>16}"
              f"{'-' if seconds is None else format(seconds, '.0f') + ' s':>9}")
    last_counts = rows[-1][5]
    print()
    print(f"Data of the last retrain: {last_counts.get('mnist_train')} MNIST + {last_counts.get('user_train')} "
          f"user drawings trained on ({last_counts.get('user_train_users')} users), {last_counts.get('holdout')} "
          f"held out ({last_counts.get('holdout_users')} users), {last_counts.get('suspicious_unreviewed')} "
          f"flagged suspicious and waiting for review.")
    for name, _status, fig, _holdout, _seconds, _counts in rows[1:]:
        print(f"{name}: canvas on unseen writers {(fig['canvas_unseen'] - before['canvas_unseen']) * 100:+.2f} points, "
              f"MNIST test {(fig['mnist_test'] - before['mnist_test']) * 100:+.2f} points")
    timing = args.timing_drawings if args.timing_drawings is not None else (0 if args.quick else 10000)
    if timing:
        # Copies of the replayed drawings (rows only; training reads the stored 28x28 bytes) up to `timing`.
        originals = list(Drawing.objects.filter(label__isnull=False))
        copies = [Drawing(user_id=d.user_id, image=d.image.name, preprocessed=d.preprocessed, label=d.label,
                          labelled_at=d.labelled_at, predicted_digit=d.predicted_digit, confidence=d.confidence,
                          status=Drawing.Status.APPROVED)
                  for i in range(max(0, timing - len(originals))) for d in [originals[i % len(originals)]]]
        Drawing.objects.bulk_create(copies, batch_size=1000)
        versions.activate(base)
        t0 = time.perf_counter()
        run, _ = retraining.retrain_in_foreground()
        seconds = time.perf_counter() - t0
        counts = run.data_counts
        print(f"Timing: retrain on {counts.get('mnist_train')} MNIST + {counts.get('user_train')} user drawings "
              f"({counts.get('holdout')} more held out) took {seconds:.0f} s end to end "
              f"(ranking, cross-validation, fit, evaluation of both models, gate): {run.status}.")
    print(f"Drawings stored: {Drawing.objects.count()}; work directory {tmp}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.exit(main())
