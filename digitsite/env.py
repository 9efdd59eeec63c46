"""Settings given as URLs (a cache, the model storage), read into Django's shapes; the plain variables are read by
digitsite.settings.groups."""

from __future__ import annotations

import importlib.util
from urllib.parse import parse_qsl, unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured


def cache_from_url(name: str, url: str) -> dict:
    """A CACHES entry from a URL: redis://, rediss:// or unix:// (Django's RedisCache, through
    digitsite.cache.ResilientRedisCache), or locmem:// (this process's memory)."""
    scheme = url.partition("://")[0].lower()
    if scheme in ("redis", "rediss", "unix"):
        return {
            "BACKEND": "digitsite.cache.ResilientRedisCache",
            "LOCATION": url,
            "KEY_PREFIX": "digitsite",
            # A Redis that stops answering costs a request at most this, never a hung worker.
            "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
        }
    if scheme == "locmem":
        location = url.partition("://")[2] or "digitsite"
        return {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": location}
    raise ImproperlyConfigured(f"{name} must be a redis://, rediss://, unix:// or locmem:// URL, got {url!r}")


# Query options of an s3:// model storage URL, passed to django-storages' S3Storage as they are.
# Credentials are deliberately not among them: a URL ends up in logs and process listings, so they come
# from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or the machine's role) as boto3 reads them.
_S3_URL_OPTIONS = {"endpoint_url", "region_name", "addressing_style", "signature_version"}


def model_storage_from_url(name: str, url: str) -> dict | None:
    """A STORAGES entry for the model files (recognizer/modelfiles.py) from a URL, or None when blank
    (the model files then stay in a FileSystemStorage at RECOGNIZER_MODEL_DIR).

    s3://bucket[/prefix][?endpoint_url=https://host&region_name=eu-west-1&addressing_style=path]: django-storages'
    S3Storage (any S3-compatible server through endpoint_url); file:///absolute/directory: a FileSystemStorage
    there (e.g. a volume mounted somewhere else), read through a per-machine cache like a bucket."""
    url = url.strip()
    if not url:
        return None
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/") or parts.query:
            raise ImproperlyConfigured(f"{name} must be file:///absolute/directory, got {url!r}")
        return {"BACKEND": "django.core.files.storage.FileSystemStorage",
                "OPTIONS": {"location": unquote(parts.path)}}
    if scheme != "s3":
        raise ImproperlyConfigured(f"{name} must be an s3:// or file:// URL, got {url!r}")
    if not parts.netloc or parts.username or parts.password:
        raise ImproperlyConfigured(
            f"{name} must be s3://bucket[/prefix] with no credentials in it (they come from AWS_ACCESS_KEY_ID "
            f"and AWS_SECRET_ACCESS_KEY), got {parts.scheme}://{parts.hostname or ''}...")
    for module in ("storages", "boto3"):
        # Found at startup rather than at the first model load in some worker hours later.
        if importlib.util.find_spec(module) is None:
            raise ImproperlyConfigured(f"{name} is an s3:// URL but {module} is not installed "
                                       "(pip install -r requirements.txt installs django-storages[s3] and boto3)")
    options = {
        "bucket_name": parts.netloc,
        "location": unquote(parts.path).strip("/"),
        # Model names are content-addressed: writing one again writes the same bytes, so overwriting is safe,
        # and a storage that renamed instead would leave stray copies.
        "file_overwrite": True,
        "default_acl": None,  # the bucket's own policy (private): model files are pickles, never public
        # S3Storage reads an object into a spooled temporary file; without a limit a whole model sits in memory.
        "max_memory_size": 16 * 1024 * 1024,
    }
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key not in _S3_URL_OPTIONS:
            raise ImproperlyConfigured(
                f"{name}: unknown option {key!r} (known: {', '.join(sorted(_S3_URL_OPTIONS))})")
        options[key] = value
    return {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": options}
