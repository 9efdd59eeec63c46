"""Model files in Django's storage API: the one way the site reads and writes trained model versions.

`recognizer.ml.store` writes, hashes and verifies files on a local disk and knows nothing of Django. This
module moves them to and from the storage named by ``settings.RECOGNIZER_MODEL_STORAGE`` (a ``STORAGES``
alias, "models"):

- not configured (the default): a FileSystemStorage at ``RECOGNIZER_MODEL_DIR``, today's layout on a volume
  every machine mounts. Files are read where they are, never copied.
- configured (``RECOGNIZER_MODEL_STORAGE_URL=s3://bucket/prefix``: django-storages' S3Storage; or any other
  storage): each machine downloads a model once into ``RECOGNIZER_MODEL_CACHE_DIR`` (blank:
  ``RECOGNIZER_DATA_DIR/model-cache``), verifies its SHA-256, and loads that local file.

Names are content-addressed: ``<save_model's stem>-<sha256>.joblib``. An object is only ever written whole
under its final name (an S3 PUT is atomic per object; on a filesystem a hard link or rename of a complete
file), and bytes found under a name that do not hash to the sha in it are refused, never loaded.

    saved = ml_store.save_model(estimator, metadata, modelfiles.staging_dir())
    name = modelfiles.publish(saved)                      # store `name` and `saved.sha256` in ModelVersion
    estimator = ml_store.load_model(modelfiles.local_copy(name, sha), expected_sha256=sha)
"""

from __future__ import annotations

import errno
import functools
import hashlib
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

from django.conf import settings
from django.core.exceptions import SuspiciousFileOperation
from django.core.files import File
from django.core.files.storage import FileSystemStorage, Storage, storages

from recognizer.ml import store as ml_store
from recognizer.ml.store import CorruptModelError

__all__ = [
    "ModelStorageError",
    "cache_dir",
    "content_name",
    "delete",
    "exists",
    "get_storage",
    "local_copy",
    "prune_cache",
    "publish",
    "reads_in_place",
    "staging_dir",
    "storage_name",
]

logger = logging.getLogger(__name__)

# One path component, no leading dot: a name can neither leave the cache directory nor collide with its
# temporary files and staging directory (both start with a dot).
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,200}")
_SUFFIX = ".joblib"
_CHUNK = 1 << 20
_STAGING = ".staging"
# A temporary download older than this belongs to a process that died; younger ones may be in progress.
_STALE_TMP_SECONDS = 3600.0


class ModelStorageError(OSError):
    """The model storage could not be reached or refused a request (network, permissions, a missing bucket).

    An OSError so that callers that already treat an unreadable file as "keep serving the previous model,
    try again later" (serving.ActiveModelCache, retraining) handle an unreachable bucket the same way."""


# --- Which storage ---------------------------------------------------------------------------------


def get_storage() -> Storage:
    alias = getattr(settings, "RECOGNIZER_MODEL_STORAGE", "models")
    if alias in settings.STORAGES:
        return storages[alias]
    # Read at every call rather than fixed in STORAGES at import: settings modules and tests that move
    # RECOGNIZER_MODEL_DIR move the model files with it.
    return _directory_storage(str(settings.RECOGNIZER_MODEL_DIR))


@functools.lru_cache(maxsize=8)
def _directory_storage(location: str) -> FileSystemStorage:
    return FileSystemStorage(location=location)


def reads_in_place(storage: Storage | None = None) -> bool:
    """True when the storage is the filesystem at RECOGNIZER_MODEL_DIR: its files are loaded where they are."""
    storage = storage or get_storage()
    return (isinstance(storage, FileSystemStorage)
            and Path(storage.location).resolve() == Path(settings.RECOGNIZER_MODEL_DIR).resolve())


def cache_dir() -> Path:
    configured = getattr(settings, "RECOGNIZER_MODEL_CACHE_DIR", "")
    return Path(configured) if configured else Path(settings.RECOGNIZER_DATA_DIR) / "model-cache"


def staging_dir() -> Path:
    """Where to ml_store.save_model a model before publish(): the storage's own directory when it is read in
    place (publishing is then a hard link in one directory), else next to the cache (publishing moves the
    file into the cache once uploaded, so the machine that trained never downloads it back)."""
    return Path(settings.RECOGNIZER_MODEL_DIR) if reads_in_place() else cache_dir() / _STAGING


# --- Names -----------------------------------------------------------------------------------------


def _legacy_prefix() -> str:
    try:
        relative = Path(settings.RECOGNIZER_MODEL_DIR).resolve().relative_to(Path(settings.MEDIA_ROOT).resolve())
    except ValueError:
        return ""
    return f"{relative.as_posix()}/" if relative.parts else ""


def storage_name(name: str) -> str:
    """The storage name of a model file. Also accepts what ModelVersion.file held before this module
    (``models/model-....joblib``, relative to MEDIA_ROOT), so versions trained earlier keep loading."""
    name = str(name)
    prefix = _legacy_prefix()
    if prefix and name.startswith(prefix):
        name = name[len(prefix):]
    if not _NAME.fullmatch(name):
        raise SuspiciousFileOperation(f"not a model file name: {name!r}")
    return name


def content_name(file_name: str, sha256: str) -> str:
    """``model-20260101T000000-1a2b3c4d.joblib`` with sha ``ab..`` -> ``model-20260101T000000-1a2b3c4d-ab...joblib``."""
    sha256 = sha256.lower()
    stem = file_name.removesuffix(_SUFFIX)
    if not stem.endswith(sha256):  # already published once: the same name, not a second sha
        stem = f"{stem}-{sha256}"
    return storage_name(stem + _SUFFIX)


# --- Writing ---------------------------------------------------------------------------------------


def publish(saved: ml_store.SavedModel) -> str:
    """Put a model written locally by ml_store.save_model into the model storage; returns its storage name.

    The local file is verified first (damaged bytes never get a name that vouches for them) and consumed:
    it becomes the stored file (read in place) or this machine's cached copy, and its sidecar is removed
    locally once it is stored next to the model as ``<name>.json``. Publishing the same file again is
    harmless; a damaged object already under the name is replaced."""
    source = Path(saved.path)
    sha = saved.sha256.lower()
    ml_store.verify_model(source, sha)
    name = content_name(source.name, sha)
    sidecar = Path(f"{source}.json")
    storage = get_storage()
    if isinstance(storage, FileSystemStorage):
        target = _publish_to_directory(storage, source, sidecar, name, sha, may_link=reads_in_place(storage))
    else:
        _publish_to_remote(storage, source, sidecar, name)
        target = None
    if reads_in_place(storage):
        if source.resolve() != target.resolve():  # a hard link of the stored file: drop the staging name
            source.unlink(missing_ok=True)
            sidecar.unlink(missing_ok=True)
    else:
        _adopt_into_cache(source, name)
        sidecar.unlink(missing_ok=True)
    logger.info("Published model file %s", name)
    return name


def _publish_to_directory(storage: FileSystemStorage, source: Path, sidecar: Path, name: str, sha: str, *,
                          may_link: bool) -> Path:
    # FileSystemStorage.save writes straight into the final name, where a reader could find half a model;
    # a complete file is linked or renamed into place instead.
    target = Path(storage.path(name))
    target.parent.mkdir(parents=True, exist_ok=True)
    if sidecar.is_file():
        # Before the model, as ml_store does: a model never appears without its sidecar.
        tmp = _copy_to_temporary(sidecar, target.parent)
        os.replace(tmp, f"{target}.json")
    if source.resolve() != target.resolve():
        try:
            _place_whole(source, target, sha, may_link=may_link)
        except BaseException:
            if not target.exists():  # a sidecar with no model would only confuse whoever lists the directory
                Path(f"{target}.json").unlink(missing_ok=True)
            raise
    if storage.file_permissions_mode is not None:
        os.chmod(target, storage.file_permissions_mode)
    ml_store.fsync_dir(target.parent)
    return target


def _place_whole(source: Path, target: Path, sha: str, *, may_link: bool) -> None:
    # Linking the source itself is only for a source that is then dropped: a source kept as this machine's
    # cached copy would share its bytes with the stored file, and damage to one would be damage to both.
    if may_link:
        try:
            os.link(source, target)  # same filesystem: no copy, and the name never shows a partial file
            return
        except FileExistsError:
            if _hashes_to(target, sha):
                return  # published before (content-addressed: the same bytes)
        except OSError:
            pass  # another filesystem, or one without hard links: copy next to the target first
    elif target.exists() and _hashes_to(target, sha):
        return
    tmp = _copy_to_temporary(source, target.parent)
    try:
        try:
            os.link(tmp, target)
        except FileExistsError:
            if not _hashes_to(target, sha):
                os.replace(tmp, target)  # a damaged copy under a name that promises these bytes
        except OSError:
            os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _publish_to_remote(storage: Storage, source: Path, sidecar: Path, name: str) -> None:
    _storage_call(_upload, storage, source, sidecar, name, what=f"storing model file {name}")


def _upload(storage: Storage, source: Path, sidecar: Path, name: str) -> None:
    if sidecar.is_file():
        with open(sidecar, "rb") as f:
            _save(storage, f"{name}.json", f)
    try:
        with open(source, "rb") as f:
            _save(storage, name, f)
    except BaseException:
        _drop_orphan_sidecar(storage, name)
        raise


def _drop_orphan_sidecar(storage: Storage, name: str) -> None:
    try:
        if not storage.exists(name):
            storage.delete(f"{name}.json")
    except Exception as exc:  # noqa: BLE001 (the upload's own error is the one to report)
        logger.warning("Could not remove the sidecar of unpublished model file %s: %s", name, exc)


def _save(storage: Storage, name: str, f) -> None:
    stored = storage.save(name, File(f, name=name))
    if stored != name:
        # A storage configured not to overwrite kept the object already under this name and stored ours
        # beside it: the name is content-addressed, so the existing object is the one wanted.
        storage.delete(stored)


def _adopt_into_cache(source: Path, name: str) -> None:
    target = cache_dir() / name
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(source, target)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        tmp = _copy_to_temporary(source, target.parent)
        os.replace(tmp, target)
        source.unlink(missing_ok=True)


# --- Reading ---------------------------------------------------------------------------------------


def local_copy(name: str, sha256: str) -> Path:
    """A local file of the model, verified against `sha256`, for ml_store.load_model (or joblib's mmap).

    Read in place: the stored file itself. Otherwise this machine's cached copy, downloaded (again) when it
    is missing or does not match. Raises CorruptModelError when the stored bytes are missing or do not
    match (nothing is left in the cache then), ModelStorageError when the storage cannot be read.
    Safe to call from many processes at once: a download goes to a temporary file that is renamed over the
    cached name only once verified, so a reader sees either no file or a whole one."""
    name = storage_name(name)
    sha256 = sha256.lower()
    storage = get_storage()
    if reads_in_place(storage):
        return ml_store.verify_model(storage.path(name), sha256)
    target = cache_dir() / name
    if target.is_file():
        try:
            return ml_store.verify_model(target, sha256)
        except CorruptModelError as exc:
            logger.warning("Cached model file is damaged, downloading it again: %s", exc)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp, actual = _download(storage, name, target.parent)
    if actual != sha256:
        tmp.unlink(missing_ok=True)
        raise CorruptModelError(
            f"stored model file {name} is corrupt or was modified: sha256 {actual[:16]}... "
            f"does not match the expected {sha256[:16]}...")
    os.replace(tmp, target)
    return target


def _download(storage: Storage, name: str, directory: Path) -> tuple[Path, str]:
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                stored = storage.open(name, "rb")
            except FileNotFoundError as exc:
                raise CorruptModelError(f"model file missing from the model storage: {name}") from exc
            with stored:
                for chunk in stored.chunks(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
    except (OSError, CorruptModelError):
        os.unlink(tmp)
        raise
    except Exception as exc:  # boto's errors are not OSErrors
        os.unlink(tmp)
        raise ModelStorageError(f"could not read model file {name} from the model storage: {exc}") from exc
    return Path(tmp), digest.hexdigest()


def exists(name: str) -> bool:
    return _storage_call(get_storage().exists, storage_name(name))


def delete(name: str) -> None:
    """Remove a model file, its sidecar, and this machine's cached copy (other machines' copies go with
    prune_cache). Deleting what is not there is not an error."""
    name = storage_name(name)
    storage = get_storage()
    _storage_call(storage.delete, name)
    _storage_call(storage.delete, f"{name}.json")
    (cache_dir() / name).unlink(missing_ok=True)


def prune_cache(keep: Iterable[str]) -> list[str]:
    """Remove this machine's cached copies of every model not in `keep` (e.g. the active and previous
    versions), and temporary files left by dead downloads; returns the names removed. Without it the cache
    grows by one model per retrain."""
    directory = cache_dir()
    if reads_in_place() or not directory.is_dir():
        return []
    wanted = {storage_name(name) for name in keep}
    removed = []
    now = time.time()
    for entry in directory.iterdir():
        if entry.name.startswith("."):
            if entry.is_file() and entry.name.endswith(".tmp") and now - entry.stat().st_mtime > _STALE_TMP_SECONDS:
                entry.unlink(missing_ok=True)
            continue
        if entry.is_file() and entry.name not in wanted:
            entry.unlink(missing_ok=True)
            removed.append(entry.name)
    return removed


# --- Helpers ---------------------------------------------------------------------------------------


def _storage_call(function, *args, what: str = "model storage request"):
    try:
        return function(*args)
    except OSError:
        raise
    except Exception as exc:  # boto's errors are not OSErrors
        raise ModelStorageError(f"{what} failed: {exc}") from exc


def _hashes_to(path: Path, sha: str) -> bool:
    try:
        return ml_store.file_sha256(path) == sha
    except OSError:
        return False


def _copy_to_temporary(source: Path, directory: Path) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{source.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as out, open(source, "rb") as src:
            shutil.copyfileobj(src, out, _CHUNK)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        os.unlink(tmp)
        raise
    return Path(tmp)
