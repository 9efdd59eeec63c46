"""Real processes for the integration tests: a redis-server and Celery workers on loopback, and a
site (SQLite file database, media, settings from the environment) that they and manage.py share."""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def redis_server_binary() -> str | None:
    for candidate in (shutil.which("redis-server"), "/usr/bin/redis-server", str(VENV_BIN / "redis-server")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, message: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"Timed out after {timeout} s: {message}")


def stop(process: subprocess.Popen, timeout: float = 10) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def redis_url(tmp_path):
    binary = redis_server_binary()
    if binary is None:
        pytest.skip("no redis-server (scripts/install-redis installs one)")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--daemonize", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )

    def pong():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    try:
        wait_for(pong, 10, f"redis-server on port {port}")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop(process)


class Site:
    """One deployment of the project in a temporary directory, driven through subprocesses."""

    def __init__(self, directory: Path, broker: str) -> None:
        self.directory = directory
        self.db = directory / "db.sqlite3"
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "digitsite.settings.base",
            "DATABASE_URL": f"sqlite:///{self.db}",
            "DJANGO_MEDIA_ROOT": str(directory / "media"),
            "RECOGNIZER_DATA_DIR": str(directory / "data"),
            "MNIST_DIR": "", "PENDIGITS_DIR": "",
            "RECOGNIZER_RETRAIN_CV": "false",
            "CELERY_BROKER_URL": broker, "CELERY_RESULT_BACKEND": broker,
            "CELERY_TASK_ALWAYS_EAGER": "false",
            "PYTHONPATH": str(ROOT),
        }
        self.workers: list[subprocess.Popen] = []

    def manage(self, *args: str, timeout: float = 120) -> str:
        result = subprocess.run([sys.executable, str(ROOT / "manage.py"), *args], cwd=ROOT, env=self.env,
                                capture_output=True, text=True, timeout=timeout)
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stdout

    def python(self, code: str) -> str:
        return self.manage("shell", "-v", "0", "-c", code).strip().splitlines()[-1]

    def start_worker(self, *, slow_training_seconds: float = 0) -> subprocess.Popen:
        env = {**self.env, "SLOW_TRAINING_SECONDS": str(slow_training_seconds)}
        log = open(self.directory / f"worker-{len(self.workers)}.log", "w")
        process = subprocess.Popen([sys.executable, str(ROOT / "tests" / "celery_worker.py")], cwd=ROOT, env=env,
                                   stdout=log, stderr=subprocess.STDOUT)
        self.workers.append(process)
        wait_for(lambda: "ready." in (self.directory / log.name).read_text() or process.poll() is not None, 60,
                 "the Celery worker to be ready")
        assert process.poll() is None, (self.directory / log.name).read_text()[-3000:]
        return process

    def query(self, sql: str, *params) -> list[tuple]:
        with sqlite3.connect(self.db, timeout=10) as conn:
            return conn.execute(sql, params).fetchall()

    def run_row(self, run_id: int) -> dict:
        cols = ["id", "status", "stage", "progress", "error", "model_version_id", "worker", "holds_lock"]
        row = self.query(f"SELECT {', '.join(cols)} FROM recognizer_trainingrun WHERE id = ?", run_id)
        return dict(zip(cols, row[0])) if row else {}

    def active_version(self) -> int | None:
        rows = self.query("SELECT id FROM recognizer_modelversion WHERE is_active = 1")
        return rows[0][0] if rows else None

    def close(self) -> None:
        for process in self.workers:
            stop(process)


@pytest.fixture
def site(tmp_path, redis_url):
    site = Site(tmp_path, redis_url)
    site.manage("migrate", "--no-input", "-v", "0")
    site.manage("train_model", "--no-cv", "-v", "0")  # the first model (bundled digits), active
    try:
        yield site
    finally:
        site.close()
