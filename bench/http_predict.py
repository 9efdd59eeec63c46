"""Prediction throughput and latency through the real HTTP stack.

Starts gunicorn (digitsite.wsgi, 2 sync workers) on 127.0.0.1 and a free port, against a temporary
SQLite database and media directory holding one active model trained here (on MNIST_DIR, or the
bundled fallback digits when it is unset), then sends 280x280 PNG drawings to POST /api/v1/predict
from a few client threads, in a bounded loop (a fixed number of requests and a time cap), as an
anonymous visitor and as a logged-in user with a token (whose drawings are stored). Prints one table:
scenario, requests, errors, req/s, p50, p99, max.

    MNIST_DIR=/work/shared/data/mnist PENDIGITS_DIR=/work/shared/data/pendigits \\
        .venv/bin/python -m bench.http_predict                        # full MNIST model
    .venv/bin/python -m bench.http_predict --train-limit 10000 --requests 500     # quick

Target: p50 <= 15 ms and >= 150 requests/s on 2 cores. The clients run on the same machine and
take some of its CPU, so the figures are a lower bound of what the server alone does.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import io
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench._server import ROOT, free_port, start_gunicorn, stop_gunicorn, wait_until_up


def drawings(n: int, seed: int = 0) -> list[bytes]:
    """280x280 RGBA PNGs like the page sends: replayed pendigits when available, else drawn strokes."""
    rng = np.random.default_rng(seed)
    pendigits = os.environ.get("PENDIGITS_DIR", "")
    if pendigits and Path(pendigits).exists():
        from recognizer.ml.pendigits import load_pendigits, render_png

        digits = load_pendigits(pendigits)
        return [render_png(digits[i], rng, size=280) for i in rng.choice(len(digits), n, replace=False)]
    from PIL import Image, ImageDraw

    out = []
    for _ in range(n):
        image = Image.new("RGBA", (280, 280), (0, 0, 0, 0))
        points = [tuple(p) for p in rng.uniform(60, 220, size=(int(rng.integers(3, 7)), 2)).tolist()]
        ImageDraw.Draw(image).line(points, fill=(0, 0, 0, 255), width=20, joint="curve")
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        out.append(buffer.getvalue())
    return out


def prepare(workdir: Path, train_limit: int) -> tuple[dict, str]:
    """Environment for the site, a migrated database with an active model, and a user's API token."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "digitsite.settings.base",
        "DJANGO_DEBUG": "false",
        "DATABASE_URL": f"sqlite:///{workdir / 'bench.sqlite3'}",
        "DJANGO_MEDIA_ROOT": str(workdir / "media"),
        "DJANGO_LOG_LEVEL": "WARNING",
        # The throttles would otherwise be what is measured.
        "RECOGNIZER_ANON_PREDICT_RATE": "1000000/minute",
        "RECOGNIZER_USER_PREDICT_RATE": "1000000/minute",
        "RECOGNIZER_RETRAIN_AFTER": "1000000",
    }
    os.environ.update(env)
    import django

    django.setup()
    from django.core.management import call_command
    from rest_framework.authtoken.models import Token

    from recognizer import training
    from recognizer.models import User

    call_command("migrate", verbosity=0)  # SQLite runs in WAL mode with synchronous=NORMAL (settings)
    started = time.perf_counter()
    outcome = training.train_new_model(limit=train_limit, activate=True, cv=False)
    counts = outcome.version.metadata.get("counts", {})
    print(f"model v{outcome.version.pk}: {outcome.version.data_source}, {counts.get('mnist_train')} training images, "
          f"trained in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    user = User.objects.create_user("bench", password="bench-password-1")
    return env, Token.objects.create(user=user).key


@dataclass
class Result:
    scenario: str
    latencies: list[float] = field(default_factory=list)
    errors: dict = field(default_factory=dict)
    seconds: float = 0.0

    def row(self) -> str:
        ms = np.array(self.latencies) * 1000 if self.latencies else np.array([np.nan])
        n = len(self.latencies) + sum(self.errors.values())
        rate = len(self.latencies) / self.seconds if self.seconds else 0.0
        errors = sum(self.errors.values())
        return (f"{self.scenario:<26}{n:>9}{errors:>8}{rate:>10.1f}{np.percentile(ms, 50):>10.1f}"
                f"{np.percentile(ms, 99):>10.1f}{ms.max():>10.1f}")


def run_load(port: int, scenario: str, bodies: list[bytes], headers: dict, requests: int, threads: int,
             time_cap: float) -> Result:
    result = Result(scenario)
    lock = threading.Lock()
    counter = iter(range(requests))
    deadline = time.perf_counter() + time_cap

    def client(seed: int) -> None:
        i = seed
        while time.perf_counter() < deadline:
            with lock:
                if next(counter, None) is None:
                    return
            body = bodies[i % len(bodies)]
            i += threads
            started = time.perf_counter()
            try:
                # gunicorn's sync workers close the connection after each answer: one connection a request.
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                conn.request("POST", "/api/v1/predict", body=body, headers=headers)
                response = conn.getresponse()
                payload = response.read()
                conn.close()
                status = response.status
            except OSError as exc:
                status, payload = type(exc).__name__, b""
            elapsed = time.perf_counter() - started
            with lock:
                if status == 200 and b'"digit"' in payload:
                    result.latencies.append(elapsed)
                else:
                    result.errors[status] = result.errors.get(status, 0) + 1

    workers = [threading.Thread(target=client, args=(k,)) for k in range(threads)]
    started = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    result.seconds = time.perf_counter() - started
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests per scenario (default 2000)")
    parser.add_argument("--time-cap", type=float, default=60.0, help="seconds per scenario at most (default 60)")
    parser.add_argument("--threads", type=int, default=2,
                        help="concurrent client threads (default 2, one per worker: more only queue in the backlog)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2)")
    parser.add_argument("--train-limit", type=int, default=0, help="MNIST training images (0 = all)")
    parser.add_argument("--blas-threads", type=int, default=0,
                        help="OpenBLAS/OpenMP threads per gunicorn worker (default: left to digitsite/wsgi.py, "
                             "which sets 1; 2 workers x 2 threads on 2 cores made predictions several times slower)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(ROOT))
    workdir = Path(tempfile.mkdtemp(prefix="digitsite-http-bench-"))
    proc = None
    try:
        env, token = prepare(workdir, args.train_limit)
        pngs = drawings(64)
        port = free_port()
        proc = start_gunicorn(env, port, args.workers, args.blas_threads)
        wait_until_up(port, proc)
        json_headers = {"Content-Type": "application/json"}
        bodies = [json.dumps({"image": "data:image/png;base64," + base64.b64encode(p).decode()}).encode()
                  for p in pngs]
        auth_headers = {**json_headers, "Authorization": f"Token {token}"}
        # Warm up: every worker loads the model on its first prediction.
        run_load(port, "warm-up", bodies, json_headers, 10 * args.workers, args.workers, 30)
        results = [
            run_load(port, "anonymous", bodies, json_headers, args.requests, args.threads, args.time_cap),
            run_load(port, "authenticated (stores)", bodies, auth_headers, args.requests, args.threads, args.time_cap),
        ]
        png_kb = np.mean([len(p) for p in pngs]) / 1024
        print(f"\ngunicorn {args.workers} sync workers on 127.0.0.1:{port}, {args.threads} client threads, "
              f"{os.cpu_count()} CPUs, 280x280 PNGs ({png_kb:.1f} KB avg, JSON data URLs), "
              f"SQLite (WAL), BLAS threads {args.blas_threads or 'from wsgi.py'}, model on {args.train_limit or 'all'} training images")
        print(f"{'scenario':<26}{'requests':>9}{'errors':>8}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}")
        for result in results:
            print(result.row())
            if result.errors:
                print(f"{'':<26}errors by status: {result.errors}")
        from recognizer.models import Drawing

        print(f"drawings stored: {Drawing.objects.count()}; load average {os.getloadavg()[0]:.2f} "
              "(other work on the machine moves these figures a lot)")
        return 0 if all(not r.errors for r in results) else 1
    finally:
        stop_gunicorn(proc)
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"kept {workdir}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
