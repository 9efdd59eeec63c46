"""Predictions under load while the model changes: no error, and every answer from exactly one version.

Starts gunicorn (digitsite.wsgi, 2 sync workers) on 127.0.0.1 and a free port against a temporary SQLite
database holding one active model (v1, trained here on --train-limit images), then sends a fixed set of
280x280 PNG drawings to POST /api/v1/predict from a few client threads (half anonymous, half a token user
whose drawings are stored) while, in turn:

1. `manage.py retrain` runs in the foreground in another process (the same code as the Celery task, on
   --retrain-limit images, so the candidate differs from v1) and goes live if the promotion gate passes;
2. staff switch the active version through the API (POST /api/v1/models/{id}/activate), twice.

The load is bounded (a time cap and a request cap). Afterwards every stored version re-predicts the same
images offline, and each answer's probabilities are compared with those of the version it names: an
answer that matches its own version is consistent; one that does not (a mix of two models, or the wrong
label) is counted as a mismatch. Prints a table per phase and one per version; exits 1 on any error or
mismatch.

    .venv/bin/python -m bench.load                          # bundled digits: quick
    MNIST_DIR=/work/shared/data/mnist .venv/bin/python -m bench.load --train-limit 5000 --retrain-limit 10000
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench._server import ROOT, free_port, start_gunicorn, stop_gunicorn, wait_until_up
from bench.http_predict import drawings, prepare, run_load

TOLERANCE = 1e-6  # probabilities: the same computation in another process (BLAS may sum in another order)


@dataclass
class Answer:
    started: float
    elapsed: float
    status: int | str
    image: int
    caller: str
    version: int | None = None
    probabilities: list[float] | None = None


def post(port: int, path: str, body: bytes, headers: dict, timeout: float = 60) -> tuple[int | str, bytes]:
    try:
        # gunicorn's sync workers close the connection after each answer: one connection a request.
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        payload = response.read()
        conn.close()
        return response.status, payload
    except OSError as exc:
        return type(exc).__name__, b""


class Load:
    """Client threads sending predictions until stopped, the request cap or the deadline."""

    def __init__(self, port: int, bodies: list[bytes], callers: dict[str, dict], threads: int, max_requests: int,
                 deadline: float) -> None:
        self.port, self.bodies, self.callers = port, bodies, callers
        self.answers: list[Answer] = []
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.left = max_requests
        self.deadline = deadline
        names = sorted(callers)
        self.threads = [threading.Thread(target=self.client, args=(k, names[k % len(names)]), daemon=True)
                        for k in range(threads)]

    def client(self, seed: int, caller: str) -> None:
        i = seed
        while not self.stop.is_set() and time.perf_counter() < self.deadline:
            with self.lock:
                if self.left <= 0:
                    return
                self.left -= 1
            image = i % len(self.bodies)
            i += len(self.threads)
            started = time.perf_counter()
            status, payload = post(self.port, "/api/v1/predict", self.bodies[image], self.callers[caller])
            answer = Answer(started, time.perf_counter() - started, status, image, caller)
            if status == 200:
                try:
                    body = json.loads(payload)
                    answer.version, answer.probabilities = int(body["model_version"]), body["probabilities"]
                except (ValueError, KeyError, TypeError):
                    answer.status = "bad body"
            with self.lock:
                self.answers.append(answer)

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join()


def offline_probabilities(pngs: list[bytes]) -> dict[int, np.ndarray]:
    """Every stored version's probabilities for each image, computed here as a web worker does."""
    from recognizer import serving, versions
    from recognizer.models import ModelVersion

    images = [serving.preprocess_upload(p) for p in pngs]
    out = {}
    for version in ModelVersion.objects.order_by("pk"):
        estimator = versions.load_estimator(version.file, version.sha256)
        out[version.pk] = np.array([estimator.predict_one(image).probabilities for image in images], float)
    return out


def percentiles(answers: list[Answer]) -> tuple[float, float, float]:
    ms = np.array([a.elapsed for a in answers]) * 1000 if answers else np.array([np.nan])
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99)), float(ms.max())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=4, help="client threads (default 4: half anonymous)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2)")
    parser.add_argument("--train-limit", type=int, default=1000, help="training images of v1 (default 1000)")
    parser.add_argument("--retrain-limit", type=int, default=0,
                        help="training images of the retrain (default 0 = all of MNIST, or of the bundled digits)")
    parser.add_argument("--settle", type=float, default=4.0,
                        help="seconds of load between events (default 4; web workers look for a new version every 2 s)")
    parser.add_argument("--time-cap", type=float, default=240.0, help="seconds of load at most (default 240)")
    parser.add_argument("--max-requests", type=int, default=50000, help="requests at most (default 50000)")
    parser.add_argument("--images", type=int, default=32, help="distinct drawings sent (default 32)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(ROOT))
    workdir = Path(tempfile.mkdtemp(prefix="digitsite-load-bench-"))
    proc = None
    try:
        env, token = prepare(workdir, args.train_limit)  # v1, active; Django set up on the same database
        from rest_framework.authtoken.models import Token

        from recognizer.models import ModelVersion, User

        staff = User.objects.create_user("bench-staff", password="bench-staff-password-1", is_staff=True)
        staff_headers = {"Authorization": f"Token {Token.objects.create(user=staff).key}"}
        v1 = ModelVersion.objects.get(is_active=True).pk
        pngs = drawings(args.images)
        bodies = [json.dumps({"image": "data:image/png;base64," + base64.b64encode(p).decode()}).encode()
                  for p in pngs]
        json_headers = {"Content-Type": "application/json"}
        callers = {"anonymous": json_headers, "token user": {**json_headers, "Authorization": f"Token {token}"}}

        port = free_port()
        proc = start_gunicorn(env, port, args.workers)
        wait_until_up(port, proc)
        run_load(port, "warm-up", bodies, json_headers, 10 * args.workers, args.workers, 30)

        events: list[tuple[float, str]] = []
        started = time.perf_counter()
        with Load(port, bodies, callers, args.threads, args.max_requests, started + args.time_cap) as load:
            def event(name: str) -> None:
                events.append((time.perf_counter(), name))
                print(f"{time.perf_counter() - started:7.1f} s  {name}", file=sys.stderr)

            def settle() -> None:
                load.stop.wait(args.settle)

            event("load started on v1")
            settle()
            event("retrain started (manage.py retrain)")
            retrain = subprocess.run(
                [sys.executable, str(ROOT / "manage.py"), "retrain", "-v", "0"], cwd=ROOT,
                env={**env, "RECOGNIZER_TRAIN_LIMIT": str(args.retrain_limit), "RECOGNIZER_RETRAIN_CV": "false"},
                capture_output=True, text=True, timeout=max(args.time_cap, 60),
            )
            if retrain.returncode != 0:
                raise RuntimeError(f"manage.py retrain failed:\n{retrain.stderr[-3000:]}")
            v2 = ModelVersion.objects.order_by("-pk").values_list("pk", flat=True).first()
            active = ModelVersion.objects.get(is_active=True).pk
            event(f"retrain finished: v{v2} {'promoted' if active == v2 else 'not promoted'}, v{active} active")
            settle()
            for target in ((v1, v2) if active == v2 else (v2, v1)):
                status, payload = post(port, f"/api/v1/models/{target}/activate", b"", staff_headers)
                if status != 200:
                    raise RuntimeError(f"activating v{target} answered {status}: {payload[:300]!r}")
                event(f"staff activated v{target}")
                settle()
            event("load stopped")
        answers = sorted(load.answers, key=lambda a: a.started)
        print(retrain.stdout.rstrip(), file=sys.stderr)

        offline = offline_probabilities(pngs)
        mismatched, matched_another = [], 0
        for a in answers:
            if a.status != 200:
                continue
            got = np.asarray(a.probabilities, float)
            if a.version not in offline or not np.allclose(got, offline[a.version][a.image], atol=TOLERANCE, rtol=0):
                mismatched.append(a)
            matched_another += any(v != a.version and np.allclose(got, p[a.image], atol=TOLERANCE, rtol=0)
                                   for v, p in offline.items())

        print(f"\ngunicorn {args.workers} sync workers on 127.0.0.1:{port}, {args.threads} client threads "
              f"({', '.join(sorted(callers))}), {os.cpu_count()} CPUs, {len(pngs)} distinct 280x280 PNGs; "
              f"v1 on {args.train_limit} images, retrain on {args.retrain_limit or 'all'}; "
              f"data: {ModelVersion.objects.get(pk=v1).data_source}")
        print(f"{'phase':<44}{'requests':>9}{'errors':>8}{'req/s':>8}{'p50 ms':>8}{'p99 ms':>8}{'max ms':>8}  versions")
        bounds = [t for t, _ in events] + [float("inf")]
        for (t0, name), t1 in zip(events[:-1], bounds[1:-1]):
            phase = [a for a in answers if t0 <= a.started < t1]
            errors = sum(a.status != 200 for a in phase)
            seconds = max(t1 - t0, 1e-9)
            p50, p99, top = percentiles([a for a in phase if a.status == 200])
            seen = {}
            for a in phase:
                if a.version is not None:
                    seen[a.version] = seen.get(a.version, 0) + 1
            versions = ", ".join(f"v{v}: {n}" for v, n in sorted(seen.items()))
            print(f"{name[:43]:<44}{len(phase):>9}{errors:>8}{len(phase) / seconds:>8.1f}{p50:>8.1f}{p99:>8.1f}"
                  f"{top:>8.1f}  {versions}")
        ok = [a for a in answers if a.status == 200]
        errors = [a for a in answers if a.status != 200]
        p50, p99, top = percentiles(ok)
        total_seconds = events[-1][0] - events[0][0]
        print(f"{'all':<44}{len(answers):>9}{len(errors):>8}{len(answers) / total_seconds:>8.1f}{p50:>8.1f}"
              f"{p99:>8.1f}{top:>8.1f}")
        if errors:
            by_status = {}
            for a in errors:
                by_status[a.status] = by_status.get(a.status, 0) + 1
            print(f"errors by status: {by_status}")

        print(f"\n{'version':<9}{'answers':>9}{'match it':>10}{'mismatch':>10}  (offline re-prediction of the same "
              f"{len(pngs)} images, |diff| <= {TOLERANCE:g})")
        for v in sorted(offline):
            mine = [a for a in ok if a.version == v]
            bad = sum(a in mismatched for a in mine)
            print(f"{'v' + str(v):<9}{len(mine):>9}{len(mine) - bad:>10}{bad:>10}")
        differs = sum(not np.allclose(offline[a][i], offline[b][i], atol=TOLERANCE, rtol=0)
                      for i in range(len(pngs)) for a in offline for b in offline if a < b)
        pairs = len(offline) * (len(offline) - 1) // 2
        print(f"versions give different probabilities on {differs} of {len(pngs) * pairs} (image, pair of versions); "
              f"{len(ok) - matched_another - len(mismatched)} answers equal their own version's only, "
              f"{matched_another} another's too (same neighbours)")
        print(f"every answer from exactly one version: {'yes' if not mismatched else 'NO'}; "
              f"load average {os.getloadavg()[0]:.2f}")
        return 0 if not errors and not mismatched else 1
    finally:
        stop_gunicorn(proc)
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"kept {workdir}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
