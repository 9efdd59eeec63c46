"""Fast, isolated settings for the test suite."""

import tempfile
from pathlib import Path

from .base import *  # noqa: F401,F403
from .base import RECOGNIZER_MODEL_STORAGE, REST_FRAMEWORK, STORAGES

SECRET_KEY = "test-secret-key"
DEBUG = False
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
MEDIA_ROOT = Path(tempfile.mkdtemp(prefix="digitsite-test-media-"))
RECOGNIZER_MODEL_DIR = MEDIA_ROOT / "models"
# Model files in RECOGNIZER_MODEL_DIR whatever the environment says: a developer's
# RECOGNIZER_MODEL_STORAGE_URL must never send test models to a real bucket.
STORAGES = {alias: entry for alias, entry in STORAGES.items() if alias != RECOGNIZER_MODEL_STORAGE}
RECOGNIZER_MODEL_CACHE_DIR = ""
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
CELERY_TASK_ALWAYS_EAGER = True
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_BROKER_URL = "memory://"
CELERY_RESULT_BACKEND = "cache+memory://"
RECOGNIZER_MODEL_CHECK_SECONDS = 0.0
RECOGNIZER_RETRAIN_CHECK_DELAY = 0  # a label's threshold check runs at once (eagerly), as the tests expect
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "digitsite-test"}}
REST_FRAMEWORK = {
    **REST_FRAMEWORK,
    "DEFAULT_THROTTLE_RATES": {"anon_predict": "1000/minute", "user_predict": "1000/minute", "login": "1000/minute",
                               "export": "1000/minute"},
}
# whitenoise warns at every request when STATIC_ROOT does not exist (collectstatic is not run in tests).
STATIC_ROOT = Path(tempfile.mkdtemp(prefix="digitsite-test-static-"))
# Downloads and caches go to a throwaway directory, never the project's data/; the pen warm start
# (15,000 renderings) is off unless a test turns it on with a few writers.
RECOGNIZER_DATA_DIR = Path(tempfile.mkdtemp(prefix="digitsite-test-data-"))
RECOGNIZER_PEN_WARM_START = False
