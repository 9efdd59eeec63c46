"""Model persistence: unique file names, atomic writes, sha256-verified loading."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib

__all__ = ["CorruptModelError", "SavedModel", "file_sha256", "load_model", "read_metadata", "save_model", "verify_model"]


class CorruptModelError(Exception):
    """The model file is missing, unreadable or does not match its checksum."""


@dataclass
class SavedModel:
    path: Path
    sha256: str
    metadata: dict


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _versions() -> dict:
    import numpy
    import sklearn

    return {
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "sklearn": sklearn.__version__,
        "joblib": joblib.__version__,
    }


def _atomic_write_bytes(target: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def fsync_dir(directory: Path) -> None:
    """Make a rename in `directory` durable (best effort: some filesystems cannot fsync a directory)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_model(estimator: object, metadata: dict, directory: str | os.PathLike, compress: int = 3) -> SavedModel:
    """Write ``model-YYYYmmddTHHMMSS-<hex>.joblib`` (never overwriting) plus a ``.json`` sidecar."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    now = _dt.datetime.now(_dt.UTC)
    fd, tmp = tempfile.mkstemp(prefix=".model-", suffix=".tmp", dir=directory)
    os.close(fd)
    try:
        joblib.dump(estimator, tmp, compress=compress)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        sha = file_sha256(tmp)
        for _ in range(100):
            path = directory / f"model-{now:%Y%m%dT%H%M%S}-{secrets.token_hex(4)}.joblib"
            try:  # claim the name exclusively so nothing is ever overwritten
                os.link(tmp, path)
                break
            except FileExistsError:
                continue
            except OSError:  # filesystems without hard links
                if not path.exists():
                    os.replace(tmp, path)
                    break
        else:
            raise OSError(f"could not find a free model file name in {directory}")
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    meta = dict(metadata or {})
    meta.update(
        {
            "file": path.name,
            "sha256": sha,
            "size_bytes": path.stat().st_size,
            "created": now.isoformat(),
            "versions": _versions(),
        }
    )
    try:
        _atomic_write_bytes(Path(str(path) + ".json"), json.dumps(meta, indent=2, sort_keys=True, default=str).encode())
        fsync_dir(directory)
    except BaseException:
        # A model without its sidecar is half-written: nothing may find it later (e.g. a full disk).
        path.unlink(missing_ok=True)
        raise
    return SavedModel(path=path, sha256=sha, metadata=meta)


def read_metadata(path: str | os.PathLike) -> dict:
    """Sidecar metadata of a model file (``<file>.json``)."""
    side = Path(str(path) + ".json")
    try:
        return json.loads(side.read_text())
    except FileNotFoundError as exc:
        raise CorruptModelError(f"metadata sidecar missing: {side}") from exc
    except (OSError, ValueError) as exc:
        raise CorruptModelError(f"metadata sidecar unreadable: {side} ({exc})") from exc


def load_model(path: str | os.PathLike, expected_sha256: str | None = None) -> Any:
    """Verify the checksum (argument, else sidecar) and only then unpickle."""
    path = verify_model(path, expected_sha256)
    try:
        return joblib.load(path)
    except Exception as exc:
        raise CorruptModelError(f"model file {path.name} could not be unpickled ({exc})") from exc


def verify_model(path: str | os.PathLike, expected_sha256: str | None = None) -> Path:
    """The file is there, whole and unchanged: its SHA-256 matches (argument, else sidecar)."""
    path = Path(path)
    if not path.is_file():
        raise CorruptModelError(f"model file missing: {path}")
    if expected_sha256 is None:
        expected_sha256 = read_metadata(path).get("sha256")
        if not expected_sha256:
            raise CorruptModelError(f"no sha256 recorded for {path}: refusing to load it")
    try:
        actual = file_sha256(path)
    except OSError as exc:
        raise CorruptModelError(f"model file unreadable: {path} ({exc})") from exc
    if actual != expected_sha256.lower():
        raise CorruptModelError(
            f"model file {path.name} is corrupt or was modified: sha256 {actual[:16]}... "
            f"does not match the expected {expected_sha256[:16]}..."
        )
    return path
