"""Faults with real parts: Redis down (and started later), a corrupt or missing active model file, and a
full disk while a model is written. The site keeps predicting and labelling, says clearly what is down,
and never points at a model that is not whole.

Redis is a real redis-server on 127.0.0.1 (tests/redis_helpers.py); "down" is a loopback port nobody
listens on. The Celery app is pointed at it for the test and back afterwards.
"""

from __future__ import annotations

import base64
import errno
import json
import os
import socket
import time
from pathlib import Path

import pytest
from django.core.cache import cache
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from recognizer import modelfiles, serving, training, versions
from recognizer.ml import store as ml_store
from recognizer.models import ModelVersion, TrainingRun
from tests.redis_helpers import free_port

pytestmark = pytest.mark.integration


def token_client(user) -> APIClient:
    client = APIClient(raise_request_exception=False)
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=user)[0].key}")
    return client


def image_payload(digit_png) -> dict:
    return {"image": "data:image/png;base64," + base64.b64encode(digit_png(1)).decode()}


@pytest.fixture
def point_celery_at():
    """Send tasks to a real broker (no eager mode) for one test; the app's connection pools are reset."""
    from digitsite.celery import app

    saved = {key: app.conf[key] for key in ("broker_url", "task_always_eager")}

    def point(url: str) -> None:
        app.pool.force_close_all()
        app._after_fork()  # forget pooled connections to the previous broker
        app.conf.update(broker_url=url, task_always_eager=False)

    yield point
    point(saved["broker_url"])
    app.conf.update(saved)


@pytest.fixture
def fresh_throttles():
    cache.clear()
    yield
    cache.clear()


def dead_broker() -> str:
    return f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there


def queued_task_ids(url: str) -> list[str]:
    """Task ids waiting in Redis' default `celery` queue, read with the plain protocol."""
    host, port = url.split("//")[1].split("/")[0].split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(b"*4\r\n$6\r\nLRANGE\r\n$6\r\ncelery\r\n$1\r\n0\r\n$2\r\n-1\r\n")
        data = b""
        while not data.endswith(b"\r\n") or data.count(b"\r\n") < 1 + 2 * int(data[1:data.index(b"\r\n")] or 0):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    lines = data.split(b"\r\n")[1:]
    messages = [json.loads(line) for line in lines if line.startswith(b"{")]
    return [m["headers"]["id"] for m in messages]


# --- (a) Redis down ----------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)  # the retrain is sent on commit, as in production
def test_with_redis_down_predictions_and_labels_still_work(alice, active_model, digit_png, point_celery_at,
                                                           settings, fresh_throttles):
    point_celery_at(dead_broker())
    settings.RECOGNIZER_RETRAIN_AFTER = 1  # the label below tries to start a retrain through the dead broker
    client = token_client(alice)
    predicted = client.post("/api/v1/predict", image_payload(digit_png), format="json")
    assert predicted.status_code == 200 and predicted.json()["model_version"] == active_model.pk
    started = time.monotonic()
    labelled = client.post(f"/api/v1/drawings/{predicted.json()['drawing']}/label", {"label": 1}, format="json")
    assert labelled.status_code == 200 and labelled.json()["label"] == 1
    assert time.monotonic() - started < 5


@pytest.mark.django_db(transaction=True)
def test_with_redis_down_a_label_that_reaches_the_retrain_threshold_leaves_the_lock_free(
        alice, active_model, digit_png, point_celery_at, settings, fresh_throttles):
    point_celery_at(dead_broker())
    settings.RECOGNIZER_RETRAIN_AFTER = 1
    client = token_client(alice)
    drawing = client.post("/api/v1/predict", image_payload(digit_png), format="json").json()["drawing"]
    assert client.post(f"/api/v1/drawings/{drawing}/label", {"label": 1}, format="json").status_code == 200
    # The retrain it could not send must not sit on the lock, or every later retrain is refused.
    assert not TrainingRun.objects.filter(holds_lock=True).exists()


@pytest.mark.django_db(transaction=True)
def test_with_redis_down_healthz_reports_the_broker_and_can_still_predict(client, admin_client, active_model,
                                                                          point_celery_at):
    point_celery_at(dead_broker())
    started = time.monotonic()
    response = client.get("/healthz")
    assert time.monotonic() - started < 5
    assert response.status_code == 200
    body = response.json()
    assert body["can_predict"] is True and body["model"]["ok"] is True
    assert body["broker"] == {"ok": False, "status": "unavailable"}  # the error text is for staff
    assert admin_client.get("/healthz").json()["broker"]["error"]


@pytest.mark.django_db(transaction=True)
def test_with_redis_down_a_staff_retrain_is_a_clear_503_not_a_500(staff, active_model, point_celery_at):
    point_celery_at(dead_broker())
    response = token_client(staff).post("/api/v1/models/retrain")
    assert response.status_code == 503, response.content[:2000]
    assert "train" in response.json()["detail"].lower()
    # Nothing is left holding the retrain lock for a task that was never sent.
    assert not TrainingRun.objects.filter(holds_lock=True).exists()


@pytest.mark.django_db(transaction=True)
def test_with_redis_down_the_admin_retrain_button_says_training_is_unavailable(client, admin_user, active_model,
                                                                                point_celery_at):
    point_celery_at(dead_broker())
    client.force_login(admin_user)
    response = client.post("/admin/recognizer/trainingrun/retrain/", follow=True)
    assert response.status_code == 200
    assert "Training is unavailable" in response.content.decode()
    assert not TrainingRun.objects.filter(holds_lock=True).exists()


# --- (b) Redis started later ----------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_once_redis_is_up_the_retrain_request_is_queued(staff, active_model, point_celery_at, redis_url):  # noqa: F811
    point_celery_at(dead_broker())
    token_client(staff).post("/api/v1/models/retrain")  # while Redis is down: whatever it answered

    point_celery_at(redis_url)  # Redis is up now
    response = token_client(staff).post("/api/v1/models/retrain")
    assert response.status_code == 202, response.content[:2000]
    body = response.json()
    assert body["created"] is True, body  # a new run, not the id of one that never reached a worker
    assert body["task_id"] in queued_task_ids(redis_url)


@pytest.mark.django_db(transaction=True)
def test_a_retrain_asked_for_while_redis_was_down_is_sent_once_it_is_back(staff, active_model, point_celery_at,
                                                                          redis_url):  # noqa: F811
    point_celery_at(dead_broker())
    assert token_client(staff).post("/api/v1/models/retrain").status_code == 503

    point_celery_at(redis_url)  # Redis is back: beat's periodic task reaches a worker again
    from recognizer import tasks

    run_id = tasks.retry_unqueued_retrain.run()
    run = TrainingRun.objects.get(pk=run_id)
    assert run.started_by == staff and run.holds_lock
    assert run.task_id in queued_task_ids(redis_url)


# --- (c) A corrupt or missing active model file --------------------------------------------------------


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def garbage_with_its_checksum(path: Path) -> str:
    path.write_bytes(b"not a pickle at all" * 100)
    return ml_store.file_sha256(path)  # recorded as if the file were whole: unpickling is what fails


@pytest.mark.django_db
@pytest.mark.parametrize("damage", ["missing", "truncated", "flipped byte", "garbage with a matching checksum"])
def test_a_broken_newly_active_file_leaves_the_last_good_model_serving_and_healthz_says_so(
        damage, alice, active_model, small_training_result, settings, digit_png, client, admin_client,
        fresh_throttles):
    api = token_client(alice)
    before = api.post("/api/v1/predict", image_payload(digit_png), format="json").json()
    data, result = small_training_result
    saved = ml_store.save_model(result.estimator, {"data_source": data.source}, settings.RECOGNIZER_MODEL_DIR)
    newer = versions.register_model(saved, kind="knn", data_source=data.source, metrics={})
    path = Path(settings.RECOGNIZER_MODEL_DIR) / newer.file  # where it was published
    if damage == "missing":
        path.unlink()
    elif damage == "truncated":
        truncate(path)
    elif damage == "flipped byte":
        flip_a_byte(path)
    else:
        ModelVersion.objects.filter(pk=newer.pk).update(sha256=garbage_with_its_checksum(path))
    # Another process (or a hand in the database) activated it: this process notices at its next check.
    ModelVersion.objects.filter(pk=active_model.pk).update(is_active=False)
    ModelVersion.objects.filter(pk=newer.pk).update(is_active=True)

    after = api.post("/api/v1/predict", image_payload(digit_png), format="json")
    assert after.status_code == 200
    assert after.json()["model_version"] == active_model.pk
    assert after.json()["probabilities"] == before["probabilities"]
    health = client.get("/healthz")
    assert health.status_code == 200
    body = health.json()
    assert body["can_predict"] is True and body["model"]["version"] == active_model.pk
    assert body["model"]["status"] == "degraded" and "warning" not in body["model"]  # details are for staff
    assert f"v{newer.pk}" in admin_client.get("/healthz").json()["model"]["warning"]


@pytest.mark.django_db
def test_a_process_starting_with_a_broken_active_file_says_so_with_a_503(alice, active_model, client, admin_client,
                                                                         fresh_throttles, digit_png):
    # No last good model in memory: nothing to serve, and every caller is told which version failed (not
    # the file's path: that is for staff and the log).
    serving.model_cache.clear()
    truncate(modelfiles.local_copy(active_model.file, active_model.sha256))
    predicted = token_client(alice).post("/api/v1/predict", image_payload(digit_png), format="json")
    assert predicted.status_code == 503 and f"v{active_model.pk}" in predicted.json()["detail"]
    assert active_model.file not in predicted.json()["detail"]
    health = client.get("/healthz")
    assert health.status_code == 503
    assert health.json()["can_predict"] is False and health.json()["model"] == {"ok": False, "status": "unavailable"}
    assert "corrupt" in admin_client.get("/healthz").json()["model"]["error"]


# --- (d) A full disk while a model is written ---------------------------------------------------------

ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def fail_on_call(real, n: int):
    """`real`, except that its n-th call (1-based) raises ENOSPC."""
    calls = {"n": 0}

    def wrapper(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            raise ENOSPC
        return real(*args, **kwargs)

    return wrapper


def half_dump_then_enospc(estimator, filename, **kwargs):
    with open(filename, "wb") as f:
        f.write(b"\x80\x04partial joblib dump" * 1000)  # the disk filled up half way
    raise ENOSPC


@pytest.mark.django_db
@pytest.mark.filterwarnings("ignore:WARNING. MNIST was NOT found:RuntimeWarning")
@pytest.mark.parametrize("where", ["joblib dump", "model fsync", "sidecar write", "sidecar fsync"])
def test_a_full_disk_while_saving_a_model_leaves_no_partial_file_and_the_old_model_serving(
        where, alice, active_model, tiny_training, monkeypatch, digit_png, fresh_throttles):  # noqa: F811
    api = token_client(alice)
    before = api.post("/api/v1/predict", image_payload(digit_png), format="json").json()
    model_dir = Path(tiny_training.RECOGNIZER_MODEL_DIR)
    files_before = sorted(p.name for p in model_dir.iterdir())
    versions_before = list(ModelVersion.objects.values_list("pk", "is_active").order_by("pk"))
    if where == "joblib dump":
        monkeypatch.setattr(ml_store.joblib, "dump", half_dump_then_enospc)
    elif where == "model fsync":
        monkeypatch.setattr(ml_store.os, "fsync", fail_on_call(os.fsync, 1))
    elif where == "sidecar write":
        monkeypatch.setattr(ml_store.json, "dumps", lambda *a, **k: (_ for _ in ()).throw(ENOSPC))
    else:
        monkeypatch.setattr(ml_store.os, "fsync", fail_on_call(os.fsync, 2))

    with pytest.raises(OSError) as raised:
        training.train_new_model(limit=400, activate=True, cv=False)
    assert raised.value.errno == errno.ENOSPC

    assert sorted(p.name for p in model_dir.iterdir()) == files_before  # no .tmp, no orphan model or sidecar
    assert list(ModelVersion.objects.values_list("pk", "is_active").order_by("pk")) == versions_before
    monkeypatch.undo()
    after = api.post("/api/v1/predict", image_payload(digit_png), format="json").json()
    assert after["model_version"] == active_model.pk and after["probabilities"] == before["probabilities"]


# --- (e) The database restarting ---------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_predictions_go_on_through_a_database_restart_and_healthz_says_so(alice, active_model, digit_png,
                                                                         fresh_throttles):
    import shlex
    import subprocess

    from django.db import close_old_connections
    from django.test import Client

    stop, start = os.environ.get("DIGITSITE_TEST_PG_STOP"), os.environ.get("DIGITSITE_TEST_PG_START")
    if not (stop and start):
        pytest.skip("needs the PostgreSQL of scripts/with-postgres (it restarts the server under the test)")
    anonymous = Client()
    assert anonymous.post("/api/v1/predict", image_payload(digit_png), content_type="application/json").json()[
        "model_version"] == active_model.pk

    subprocess.run(shlex.split(stop), check=True, timeout=60, capture_output=True)
    try:
        during = anonymous.post("/api/v1/predict", image_payload(digit_png), content_type="application/json")
        health = anonymous.get("/healthz")
    finally:
        subprocess.run(shlex.split(start), check=True, timeout=60, capture_output=True)
    assert during.status_code == 200 and during.json()["model_version"] == active_model.pk
    assert health.status_code == 200
    assert health.json()["database"]["ok"] is False and health.json()["model"]["ok"] is True

    # At the end of a request Django drops a connection that broke, as it does here after each request.
    close_old_connections()
    stored = token_client(alice).post("/api/v1/predict", image_payload(digit_png), format="json")
    assert stored.status_code == 200 and stored.json()["drawing"] is not None
    assert anonymous.get("/healthz").json()["database"] == {"ok": True}
