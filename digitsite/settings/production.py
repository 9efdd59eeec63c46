"""Production settings: no insecure defaults, checked by ``manage.py check --deploy``.

Required environment: DJANGO_SECRET_KEY, DJANGO_ALLOWED_HOSTS, DATABASE_URL, CELERY_BROKER_URL.
Optional: DJANGO_SECURE_SSL_REDIRECT (default on), DJANGO_HSTS_SECONDS (default one year),
DJANGO_MEDIA_ROOT (shared storage every web worker and Celery worker can read), CACHE_URL (a Redis;
default: the broker's Redis), RECOGNIZER_MODEL_STORAGE_URL (model files in a bucket instead of
MEDIA_ROOT/models; see base.py).
"""

import os

from django.core.exceptions import ImproperlyConfigured

from digitsite.env import cache_from_url

from .base import *  # noqa: F401,F403
from .groups import Env

env = Env(os.environ)

DEBUG = env.boolean("DJANGO_DEBUG", False)
try:
    SECRET_KEY = os.environ["DJANGO_SECRET_KEY"]
except KeyError:
    raise ImproperlyConfigured("DJANGO_SECRET_KEY must be set in production") from None
if "DJANGO_ALLOWED_HOSTS" not in os.environ:
    raise ImproperlyConfigured("DJANGO_ALLOWED_HOSTS must be set in production (comma-separated)")
# base.py falls back to a SQLite file next to the code, which in production would be a database per machine.
if not os.environ.get("DATABASE_URL", "").strip():
    raise ImproperlyConfigured(
        "DATABASE_URL must be set in production, e.g. postgres://user:password@host:5432/digitsite "
        "(without it every machine would write its own SQLite file)")

SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.boolean("DJANGO_SECURE_SSL_REDIRECT", True)
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SECURE_HSTS_SECONDS = env.integer("DJANGO_HSTS_SECONDS", 31536000, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.boolean("DJANGO_HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = env.boolean("DJANGO_HSTS_PRELOAD", True)
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
EMAIL_BACKEND = env.text("DJANGO_EMAIL_BACKEND", "django.core.mail.backends.smtp.EmailBackend")
STORAGES = {
    **STORAGES,  # noqa: F405 (keeps the model storage of RECOGNIZER_MODEL_STORAGE_URL)
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "digitsite.storage.StaticFilesStorage"},
}
# Throttles and the login budget must be shared by every web process: a per-process memory cache would
# multiply each limit by the number of processes. REDIS_CACHE_URL is the older name of CACHE_URL.
_cache_url = env.text("CACHE_URL", "") or env.text("REDIS_CACHE_URL", "") or CELERY_BROKER_URL  # noqa: F405
if not _cache_url.lower().startswith(("redis://", "rediss://", "unix://")):
    raise ImproperlyConfigured(
        "Production needs a Redis cache that every web process shares (throttles, the login budget): set "
        f"CACHE_URL=redis://host:6379/1 (default: CELERY_BROKER_URL when it is a Redis), not {_cache_url.partition(':')[0]}:")
CACHES = {"default": cache_from_url("CACHE_URL", _cache_url)}
