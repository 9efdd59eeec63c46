"""recognizer/modelfiles.py: model versions through Django's storage API.

Every behaviour runs against three storages: the default filesystem storage at RECOGNIZER_MODEL_DIR (read
in place), a filesystem storage elsewhere (file://, read through the per-machine cache like a bucket), and
django-storages' S3Storage talking HTTP to a real moto_server on 127.0.0.1 (skipped, with the reason, when
moto[server] or django-storages[s3] is not installed).
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import numpy as np
import pytest
from django.core.exceptions import ImproperlyConfigured, SuspiciousFileOperation
from sklearn.neighbors import KNeighborsClassifier

from digitsite.env import model_storage_from_url
from recognizer import modelfiles
from recognizer.ml import store as ml_store
from recognizer.ml.store import CorruptModelError
from tests.redis_helpers import free_port, stop, wait_for

BACKENDS = ["in_place", "directory", "s3"]
S3_PREFIX = "digitsite/models"


# --- A real S3-compatible server --------------------------------------------------------------


class S3Server:
    def __init__(self, url: str):
        self.url = url
        import boto3

        # Only to create buckets and to damage objects the way another writer would: the code under test
        # reaches the server through django-storages.
        self.client = boto3.client("s3", endpoint_url=url, region_name="us-east-1",
                                   aws_access_key_id="testing", aws_secret_access_key="testing")

    def new_bucket(self) -> str:
        bucket = f"models-{uuid.uuid4().hex[:12]}"
        self.client.create_bucket(Bucket=bucket)
        return bucket


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    pytest.importorskip("moto.server", reason="moto[server] is not installed: pip install -r requirements-dev.txt")
    pytest.importorskip("storages.backends.s3",
                        reason="django-storages[s3] is not installed: pip install -r requirements.txt")
    port = free_port()
    log_path = tmp_path_factory.mktemp("moto") / "moto_server.log"
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                   stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        def answering():
            if process.poll() is not None:
                raise AssertionError(f"moto_server exited with {process.returncode}:\n{log_path.read_text()}")
            try:
                S3Server(url).client.list_buckets()
                return True
            except Exception:  # noqa: BLE001 (not listening yet)
                return False

        wait_for(answering, 30, f"moto_server on {url} did not answer", interval=0.2)
        yield S3Server(url)
    finally:
        stop(process)


# --- Storages ---------------------------------------------------------------------------------


@pytest.fixture
def dirs(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.RECOGNIZER_MODEL_DIR = tmp_path / "media" / "models"
    settings.RECOGNIZER_DATA_DIR = tmp_path / "data"
    settings.RECOGNIZER_MODEL_CACHE_DIR = ""
    return tmp_path


class Backend:
    def __init__(self, kind: str, settings, root: Path, s3: S3Server | None = None, bucket: str = ""):
        self.kind, self.settings, self.root, self.s3, self.bucket = kind, settings, root, s3, bucket

    def replace_stored(self, name: str, data: bytes) -> None:
        """Another writer puts other bytes under the name: a whole-object replacement, as an S3 PUT is."""
        if self.s3 is not None:
            self.s3.client.put_object(Bucket=self.bucket, Key=f"{S3_PREFIX}/{name}", Body=data)
            return
        path = Path(modelfiles.get_storage().path(name))
        tmp = path.with_name(".replacement.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    def stored_names(self) -> set[str]:
        if self.s3 is not None:
            listing = self.s3.client.list_objects_v2(Bucket=self.bucket, Prefix=f"{S3_PREFIX}/")
            return {item["Key"].rpartition("/")[2] for item in listing.get("Contents", [])}
        directory = Path(modelfiles.get_storage().location)
        return {p.name for p in directory.iterdir()} if directory.is_dir() else set()

    def other_machine(self) -> Path:
        """A machine that has never loaded a model: its own empty cache."""
        cache = self.root / f"cache-{uuid.uuid4().hex[:8]}"
        self.settings.RECOGNIZER_MODEL_CACHE_DIR = str(cache)
        return cache


@pytest.fixture(params=BACKENDS)
def backend(request, settings, dirs, monkeypatch):
    kind = request.param
    if kind == "in_place":
        return Backend(kind, settings, dirs)
    if kind == "directory":
        url = f"file://{dirs / 'shared-volume'}"
        settings.STORAGES = {**settings.STORAGES, "models": model_storage_from_url("TEST", url)}
        return Backend(kind, settings, dirs)
    server = request.getfixturevalue("s3_server")
    bucket = server.new_bucket()
    # Credentials from the environment, as the documented deployment gives them.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    url = f"s3://{bucket}/{S3_PREFIX}?endpoint_url={server.url}&region_name=us-east-1&addressing_style=path"
    settings.STORAGES = {**settings.STORAGES, "models": model_storage_from_url("TEST", url)}
    return Backend(kind, settings, dirs, server, bucket)


def tiny_estimator(seed: int = 0):
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(30, 4))
    return KNeighborsClassifier(n_neighbors=1).fit(features, np.arange(30) % 3), features


def save_and_publish(seed: int = 0):
    estimator, features = tiny_estimator(seed)
    saved = ml_store.save_model(estimator, {"data_source": "test", "seed": seed}, modelfiles.staging_dir())
    return saved, modelfiles.publish(saved), estimator, features


def files_under(directory: Path) -> list[str]:
    return sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file()) \
        if directory.is_dir() else []


# --- The round trip -----------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_a_published_model_loads_back_verified(backend):
    saved, name, estimator, features = save_and_publish()

    assert name == f"{saved.path.stem}-{saved.sha256}.joblib"
    assert modelfiles.exists(name)
    assert {name, f"{name}.json"} <= backend.stored_names()
    assert not saved.path.exists() and not Path(f"{saved.path}.json").exists()  # the staging file is consumed
    path = modelfiles.local_copy(name, saved.sha256)
    loaded = ml_store.load_model(path, expected_sha256=saved.sha256)
    assert (loaded.predict(features) == estimator.predict(features)).all()

    if backend.kind == "in_place":
        # Today's layout: the file is read where it is stored, and nothing is copied.
        assert path == Path(backend.settings.RECOGNIZER_MODEL_DIR) / name
        assert files_under(modelfiles.cache_dir()) == []
    else:
        assert path == modelfiles.cache_dir() / name
        # The machine that trained keeps its staging file as the cached copy: no download back.
        assert files_under(modelfiles.cache_dir()) == [name]
        machine = backend.other_machine()
        fetched = modelfiles.local_copy(name, saved.sha256)
        assert fetched == machine / name
        assert ml_store.file_sha256(fetched) == saved.sha256
        assert files_under(machine) == [name]  # no temporary file left behind


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_the_sidecar_is_stored_next_to_the_model(backend):
    saved, name, *_ = save_and_publish(seed=3)
    storage = modelfiles.get_storage()
    with storage.open(f"{name}.json", "rb") as f:
        meta = json.loads(f.read())
    assert meta["sha256"] == saved.sha256 and meta["seed"] == 3


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_replaced_bytes_in_the_storage_are_refused(backend):
    saved, name, *_ = save_and_publish()
    backend.replace_stored(name, b"\x80\x04 not the model that was published" * 50)
    if backend.kind != "in_place":
        machine = backend.other_machine()

    with pytest.raises(CorruptModelError, match="corrupt or was modified"):
        modelfiles.local_copy(name, saved.sha256)
    if backend.kind != "in_place":
        # Nothing under the cached name, and no temporary file: the next attempt downloads again.
        assert files_under(machine) == []


@pytest.mark.parametrize("backend", ["directory", "s3"], indirect=True)
def test_a_damaged_or_missing_cached_copy_is_downloaded_again(backend):
    saved, name, *_ = save_and_publish()
    cached = modelfiles.local_copy(name, saved.sha256)

    cached.write_bytes(b"bit rot")
    assert ml_store.file_sha256(modelfiles.local_copy(name, saved.sha256)) == saved.sha256
    cached.unlink()
    assert ml_store.file_sha256(modelfiles.local_copy(name, saved.sha256)) == saved.sha256
    assert files_under(modelfiles.cache_dir()) == [name]


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_delete_removes_the_model_its_sidecar_and_the_cached_copy(backend):
    saved, name, *_ = save_and_publish()
    kept_saved, kept, *_ = save_and_publish(seed=1)
    modelfiles.local_copy(name, saved.sha256)

    modelfiles.delete(name)

    assert not modelfiles.exists(name)
    assert name not in backend.stored_names() and f"{name}.json" not in backend.stored_names()
    assert not (modelfiles.cache_dir() / name).exists()
    with pytest.raises(CorruptModelError, match="missing"):
        modelfiles.local_copy(name, saved.sha256)
    assert modelfiles.exists(kept)
    modelfiles.local_copy(kept, kept_saved.sha256)
    modelfiles.delete(name)  # again: not an error


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_publishing_the_same_file_twice_keeps_one_object(backend):
    saved, name, *_ = save_and_publish()
    again = ml_store.SavedModel(path=modelfiles.local_copy(name, saved.sha256), sha256=saved.sha256, metadata={})
    assert modelfiles.publish(again) == name
    assert sorted(n for n in backend.stored_names() if not n.startswith(".")) == [name, f"{name}.json"]
    assert ml_store.file_sha256(modelfiles.local_copy(name, saved.sha256)) == saved.sha256


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_a_damaged_staging_file_is_not_published(backend):
    estimator, _ = tiny_estimator()
    saved = ml_store.save_model(estimator, {}, modelfiles.staging_dir())
    with open(saved.path, "r+b") as f:
        f.seek(10)
        f.write(b"XX")
    before = backend.stored_names()
    with pytest.raises(CorruptModelError):
        modelfiles.publish(saved)
    assert backend.stored_names() == before


@pytest.mark.parametrize("backend", ["directory", "s3"], indirect=True)
def test_many_processes_fetching_at_once_all_get_a_whole_verified_file(backend):
    saved, name, *_ = save_and_publish()
    machine = backend.other_machine()
    results, errors = [], []

    def fetch():
        try:
            results.append(modelfiles.local_copy(name, saved.sha256))
        except Exception as exc:  # noqa: BLE001 (collected: the assertion below names every failure)
            errors.append(exc)

    threads = [threading.Thread(target=fetch) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert results == [machine / name] * 8
    assert ml_store.file_sha256(machine / name) == saved.sha256
    assert files_under(machine) == [name]


@pytest.mark.parametrize("backend", ["directory", "s3"], indirect=True)
def test_prune_cache_keeps_only_the_named_versions(backend):
    _, a, *_ = save_and_publish(seed=1)
    saved_b, b, *_ = save_and_publish(seed=2)
    stale = modelfiles.cache_dir() / ".dead-download.tmp"
    stale.write_bytes(b"x")
    os.utime(stale, (0, 0))

    assert modelfiles.prune_cache([a]) == [b]

    assert files_under(modelfiles.cache_dir()) == [a]
    assert modelfiles.exists(b)  # only this machine's copy went
    assert ml_store.file_sha256(modelfiles.local_copy(b, saved_b.sha256)) == saved_b.sha256


# --- Filesystem specifics -----------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["in_place", "directory"], indirect=True)
def test_a_publish_that_fails_half_way_leaves_nothing_under_the_name(backend, monkeypatch):
    estimator, _ = tiny_estimator()
    saved = ml_store.save_model(estimator, {}, modelfiles.staging_dir())
    before = backend.stored_names()

    def no_hard_links(*args, **kwargs):
        raise OSError(errno.EXDEV, "cross-device link")

    def half_then_full_disk(src, dst, length=0):
        if not src.name.endswith(".joblib"):  # the sidecar goes first and fits
            return copyfileobj(src, dst, length)
        dst.write(src.read(100))
        raise OSError(errno.ENOSPC, "No space left on device")

    # As on a volume mounted from elsewhere: the bytes are copied, and the disk fills up during the copy.
    copyfileobj = modelfiles.shutil.copyfileobj
    monkeypatch.setattr(modelfiles.os, "link", no_hard_links)
    monkeypatch.setattr(modelfiles.shutil, "copyfileobj", half_then_full_disk)
    with pytest.raises(OSError) as raised:
        modelfiles.publish(saved)
    assert raised.value.errno == errno.ENOSPC
    monkeypatch.undo()

    assert backend.stored_names() == before  # no partial model, no temporary file, no orphan sidecar
    assert saved.path.exists()  # still there to publish again
    name = modelfiles.publish(saved)
    assert ml_store.file_sha256(modelfiles.local_copy(name, saved.sha256)) == saved.sha256


def test_versions_recorded_before_the_storage_api_keep_loading(settings, dirs):
    """ModelVersion.file used to hold a path relative to MEDIA_ROOT ("models/model-....joblib")."""
    estimator, _ = tiny_estimator()
    saved = ml_store.save_model(estimator, {}, settings.RECOGNIZER_MODEL_DIR)  # as train_new_model wrote them
    legacy = saved.path.relative_to(settings.MEDIA_ROOT).as_posix()
    assert legacy.startswith("models/")

    assert modelfiles.exists(legacy)
    assert modelfiles.local_copy(legacy, saved.sha256) == saved.path


def test_the_default_storage_is_the_model_directory(settings, dirs):
    assert "models" not in settings.STORAGES
    assert modelfiles.reads_in_place()
    assert modelfiles.staging_dir() == settings.RECOGNIZER_MODEL_DIR
    settings.RECOGNIZER_MODEL_DIR = dirs / "elsewhere"  # followed at once, no restart
    assert Path(modelfiles.get_storage().location) == dirs / "elsewhere"


@pytest.mark.parametrize("name", ["../escape.joblib", "/etc/passwd", ".hidden.joblib", "a/b.joblib", ""])
def test_names_that_could_leave_the_storage_are_refused(dirs, name):
    with pytest.raises(SuspiciousFileOperation):
        modelfiles.local_copy(name, "0" * 64)


# --- Settings -----------------------------------------------------------------------------------


def test_model_storage_urls():
    assert model_storage_from_url("X", "  ") is None
    assert model_storage_from_url("X", "file:///srv/models") == {
        "BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": "/srv/models"}}
    pytest.importorskip("storages.backends.s3", reason="django-storages[s3] is not installed")
    entry = model_storage_from_url(
        "X", "s3://my-bucket/site/models/?endpoint_url=https://s3.example.net&region_name=eu-west-1")
    assert entry["BACKEND"] == "storages.backends.s3.S3Storage"
    assert entry["OPTIONS"]["bucket_name"] == "my-bucket"
    assert entry["OPTIONS"]["location"] == "site/models"
    assert entry["OPTIONS"]["endpoint_url"] == "https://s3.example.net"
    assert entry["OPTIONS"]["region_name"] == "eu-west-1"
    assert entry["OPTIONS"]["file_overwrite"] is True


@pytest.mark.parametrize("url", [
    "redis://host/0", "file://host/srv/models", "file://relative", "s3:///no-bucket",
    "s3://key:secret@bucket/models", "s3://bucket/models?access_key=AKIA",
])
def test_bad_model_storage_urls_fail_at_startup(url):
    with pytest.raises(ImproperlyConfigured):
        model_storage_from_url("RECOGNIZER_MODEL_STORAGE_URL", url)


def test_production_keeps_the_model_storage_of_the_environment():
    """production.py replaces STORAGES for whitenoise; the models alias set by the environment must survive."""
    pytest.importorskip("storages.backends.s3", reason="django-storages[s3] is not installed")
    root = Path(__file__).resolve().parent.parent
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_URL", "CACHE_URL",
                                                                     "CELERY_", "RECOGNIZER_"))}
    env.update({
        "DJANGO_SETTINGS_MODULE": "digitsite.settings.production",
        "DJANGO_SECRET_KEY": "a-long-random-production-secret-" + "x" * 40,
        "DJANGO_ALLOWED_HOSTS": "digits.example.com",
        "DATABASE_URL": "postgres://digitsite:secret@db.internal:5432/digitsite",
        "CELERY_BROKER_URL": "redis://redis.internal:6379/0",
        "RECOGNIZER_MODEL_STORAGE_URL": "s3://site-models/prod?endpoint_url=http://127.0.0.1:9",
    })
    code = ("from django.conf import settings; from recognizer import modelfiles; s = modelfiles.get_storage(); "
            "print(type(s).__name__, s.bucket_name, s.location, modelfiles.reads_in_place())")
    result = subprocess.run([sys.executable, "manage.py", "shell", "-v", "0", "-c", code], cwd=root, env=env,
                            check=False, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["S3Storage", "site-models", "prod", "False"]
