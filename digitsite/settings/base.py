"""Settings for development and the base of every other settings module.

Everything that differs between machines comes from the environment; the defaults give a
working development site on SQLite with no configuration at all.
"""

from __future__ import annotations

from pathlib import Path

import dj_database_url

from digitsite.env import cache_from_url, env_bool, env_float, env_int, env_list, env_str, model_storage_from_url

BASE_DIR = Path(__file__).resolve().parent.parent.parent

# Development only: production.py refuses to start without DJANGO_SECRET_KEY.
SECRET_KEY = env_str("DJANGO_SECRET_KEY", "django-insecure-development-key-not-for-production")
DEBUG = env_bool("DJANGO_DEBUG", True)
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["127.0.0.1", "localhost", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "recognizer",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "digitsite.urls"
WSGI_APPLICATION = "digitsite.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# Unset or blank: SQLite next to the code (production.py refuses to start that way).
DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", "").strip() or f"sqlite:///{BASE_DIR / 'db.sqlite3'}",
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 0, minimum=0),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets readers run during a write, and IMMEDIATE takes the write lock up front instead of
    # failing with "database is locked" mid-transaction; storing a drawing went from 20 ms to 4 ms.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;", "transaction_mode": "IMMEDIATE"}
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "recognizer.User"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "home"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env_str("DJANGO_STATIC_ROOT", str(BASE_DIR / "staticfiles")))
STATICFILES_DIRS = [BASE_DIR / "static"]
MEDIA_URL = "media/"
MEDIA_ROOT = Path(env_str("DJANGO_MEDIA_ROOT", str(BASE_DIR / "media")))

EMAIL_BACKEND = env_str("DJANGO_EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
DEFAULT_FROM_EMAIL = env_str("DJANGO_DEFAULT_FROM_EMAIL", "digitsite <noreply@localhost>")

# Throttles, the login budget and chart SVGs live here. Development and tests: this process's memory;
# CACHE_URL=redis://host:6379/1 shares them between processes (production.py requires a Redis).
CACHES = {"default": cache_from_url("CACHE_URL", env_str("CACHE_URL", "locmem://"))}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.TokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 20,
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "EXCEPTION_HANDLER": "recognizer.api.errors.exception_handler",
    "DEFAULT_THROTTLE_RATES": {
        "anon_predict": env_str("RECOGNIZER_ANON_PREDICT_RATE", "60/minute"),
        "user_predict": env_str("RECOGNIZER_USER_PREDICT_RATE", "600/minute"),
        "login": env_str("RECOGNIZER_LOGIN_RATE", "10/minute"),
        "export": env_str("RECOGNIZER_EXPORT_RATE", "20/hour"),
    },
}
SPECTACULAR_SETTINGS = {
    "TITLE": "digitsite API",
    "DESCRIPTION": "Recognise handwritten digits, label drawings, and manage model versions.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI's files come from the sidecar package, so /api/docs/ works with no network.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # A name that says what the choices are, not the field's generic "MethodEnum".
    "ENUM_NAME_OVERRIDES": {"SegmentationMethodEnum": ["strokes", "image"]},
}

# --- Recognizer -------------------------------------------------------------------------------
# Where MNIST is read from; fetch_mnist downloads into RECOGNIZER_DATA_DIR/mnist when unset.
RECOGNIZER_DATA_DIR = Path(env_str("RECOGNIZER_DATA_DIR", str(BASE_DIR / "data")))
MNIST_DIR = env_str("MNIST_DIR", "")
PENDIGITS_DIR = env_str("PENDIGITS_DIR", "")
RECOGNIZER_MODEL_DIR = MEDIA_ROOT / "models"
# Model files are read and written through Django's storage API (recognizer/modelfiles.py), under this
# STORAGES alias. Not configured: a FileSystemStorage at RECOGNIZER_MODEL_DIR, read in place (a volume
# every machine mounts). RECOGNIZER_MODEL_STORAGE_URL=s3://bucket/prefix?endpoint_url=... keeps them in a
# bucket through django-storages instead; each machine then loads verified copies from
# RECOGNIZER_MODEL_CACHE_DIR (blank: RECOGNIZER_DATA_DIR/model-cache).
RECOGNIZER_MODEL_STORAGE = "models"
RECOGNIZER_MODEL_CACHE_DIR = env_str("RECOGNIZER_MODEL_CACHE_DIR", "")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
_model_storage = model_storage_from_url("RECOGNIZER_MODEL_STORAGE_URL", env_str("RECOGNIZER_MODEL_STORAGE_URL", ""))
if _model_storage is not None:
    STORAGES[RECOGNIZER_MODEL_STORAGE] = _model_storage
# Train on the pendigits training writers' trajectories replayed as canvas drawings next to MNIST
# (the canvas-domain warm start) when the file is there; their renderings are cached under
# RECOGNIZER_DATA_DIR/cache.
RECOGNIZER_PEN_WARM_START = env_bool("RECOGNIZER_PEN_WARM_START", True)
# Below this confidence, or with the two best digits this close, the answer is "unsure".
RECOGNIZER_UNSURE_CONFIDENCE = env_float("RECOGNIZER_UNSURE_CONFIDENCE", 0.6)
RECOGNIZER_UNSURE_MARGIN = env_float("RECOGNIZER_UNSURE_MARGIN", 0.15)
RECOGNIZER_MAX_UPLOAD_BYTES = env_int("RECOGNIZER_MAX_UPLOAD_BYTES", 2 * 1024 * 1024, minimum=1024)
RECOGNIZER_MAX_PIXELS = env_int("RECOGNIZER_MAX_PIXELS", 4096 * 4096, minimum=28 * 28)
# Off in development: an owner's label is trusted unless staff reject it.
RECOGNIZER_REQUIRE_REVIEW = env_bool("RECOGNIZER_REQUIRE_REVIEW", False)
RECOGNIZER_RETRAIN_AFTER = env_int("RECOGNIZER_RETRAIN_AFTER", 200, minimum=1)
RECOGNIZER_RETRAIN_SCHEDULE = env_str("RECOGNIZER_RETRAIN_SCHEDULE", "0 3 * * *")
# How often a web worker checks the database for a newly activated model version (seconds).
RECOGNIZER_MODEL_CHECK_SECONDS = env_float("RECOGNIZER_MODEL_CHECK_SECONDS", 2.0)
# Training-size cap for the first model the quickstart trains (0 = all of MNIST).
RECOGNIZER_TRAIN_LIMIT = env_int("RECOGNIZER_TRAIN_LIMIT", 0, minimum=0)
# A model file that fails to load is not read again before this many seconds (unless another version
# becomes active): a corrupt file is not re-hashed, and logged, at every check.
RECOGNIZER_MODEL_RETRY_SECONDS = env_float("RECOGNIZER_MODEL_RETRY_SECONDS", 600.0)
# How long an Idempotency-Key on POST /api/v1/predict returns the first answer (recognizer/idempotency.py).
RECOGNIZER_IDEMPOTENCY_SECONDS = env_int("RECOGNIZER_IDEMPOTENCY_SECONDS", 24 * 3600, minimum=1)
# A label asks a Celery worker to count the new trusted drawings (and start a retrain past
# RECOGNIZER_RETRAIN_AFTER) this many seconds later, at most once per such window (0: at once, every label).
RECOGNIZER_RETRAIN_CHECK_DELAY = env_int("RECOGNIZER_RETRAIN_CHECK_DELAY", 30, minimum=0)

# Retraining (issue 4). The candidate replaces the active model only if it is no worse than this
# (accuracy, 0.003 = 0.3 points) on the MNIST test set, and than the second one on held-out users.
RECOGNIZER_PROMOTION_TOLERANCE = env_float("RECOGNIZER_PROMOTION_TOLERANCE", 0.003)
RECOGNIZER_HOLDOUT_TOLERANCE = env_float("RECOGNIZER_HOLDOUT_TOLERANCE", 0.01)
# Share of users whose trusted drawings are never trained on (the validation set of the canvas).
RECOGNIZER_HOLDOUT_SHARE = env_float("RECOGNIZER_HOLDOUT_SHARE", 0.2)
# Vote weight of a user drawing next to an MNIST digit in the retrained k-NN. Measured with
# bench/feedback_loop.py (60k MNIST + 4.1k drawings of 17 writers): weight 1 gave +3.5 canvas points on
# unseen writers and +0.04 MNIST; 3 and 10 gave +2.9 and -0.24 (cross-validation then picks k=1). k-NN
# needs no up-weighting: a canvas query lands next to the user drawings however many MNIST digits there are.
RECOGNIZER_USER_SAMPLE_WEIGHT = env_float("RECOGNIZER_USER_SAMPLE_WEIGHT", 1.0)
# Vote weight of a user's own drawings when searched alongside the training set at prediction time.
RECOGNIZER_PERSONAL_WEIGHT = env_float("RECOGNIZER_PERSONAL_WEIGHT", 3.0)
RECOGNIZER_PERSONAL_MAX_DRAWINGS = env_int("RECOGNIZER_PERSONAL_MAX_DRAWINGS", 200, minimum=0)
# A queued or running retrain whose heartbeat is older than this (seconds) is dead and marked failed.
RECOGNIZER_RETRAIN_LOCK_TIMEOUT = env_int("RECOGNIZER_RETRAIN_LOCK_TIMEOUT", 600, minimum=5)
# Cross-validate k and the PCA size when a retrain trains from scratch (False reuses the active model's choice);
# an incremental retrain (below) keeps the active model's.
RECOGNIZER_RETRAIN_CV = env_bool("RECOGNIZER_RETRAIN_CV", True)
# The model kind the retrain trains: knn (instant personalisation, seconds to retrain), svm, or cnn (needs
# `pip install -r requirements-cnn.txt` on the Celery workers; web workers serve a CNN without it).
RECOGNIZER_RETRAIN_KIND = env_str("RECOGNIZER_RETRAIN_KIND", "knn")
# Keep the active k-NN's feature space and hyperparameters when it trained on the same data sets, and
# featurise only drawings new to it (recognizer.training.refit_in_space); false: every retrain from scratch.
# A retrain starts from scratch anyway (new PCA basis, cross-validation) once the user drawings are more than
# twice as many as when the space was fitted, or when they bring strokes and the active model reads none.
RECOGNIZER_RETRAIN_INCREMENTAL = env_bool("RECOGNIZER_RETRAIN_INCREMENTAL", True)
# A retrain run by a Celery worker sends the label ranking's per-drawing work (decoding, features, out-of-sample
# probabilities) to all the workers, in parts of RECOGNIZER_RETRAIN_PART_SIZE drawings, once at least this many
# drawings need it (after a promotion: every drawing; 0: never). `manage.py retrain` always runs in one process.
RECOGNIZER_RETRAIN_SPREAD_MIN = env_int("RECOGNIZER_RETRAIN_SPREAD_MIN", 20000, minimum=0)
RECOGNIZER_RETRAIN_PART_SIZE = env_int("RECOGNIZER_RETRAIN_PART_SIZE", 2000, minimum=1)
# The gate judges candidates on at most this many held-out drawings (at most a tenth of it per digit;
# 0: all of them), so a retrain's evaluation stops growing with the drawings users made.
RECOGNIZER_GATE_HOLDOUT_MAX = env_int("RECOGNIZER_GATE_HOLDOUT_MAX", 10000)

# The feedback loop against one bad account (issue 10, recognizer/trust/, bench/poisoning.py).
# A label is suspicious when the chance that it is wrong (out-of-sample model, other accounts' labels of
# similar drawings, the account's trust) is at least this; suspicious labels of an account whose trust is
# below the threshold stay out of the global model until staff approve them.
RECOGNIZER_SUSPICION_THRESHOLD = env_float("RECOGNIZER_SUSPICION_THRESHOLD", 0.5)
RECOGNIZER_TRUST_THRESHOLD = env_float("RECOGNIZER_TRUST_THRESHOLD", 0.8)
# One account supplies at most this share of a digit's user drawings in training (and in the held-out
# set), or this many drawings of it when that is more (a small site's first users are not starved).
RECOGNIZER_USER_CLASS_SHARE = env_float("RECOGNIZER_USER_CLASS_SHARE", 0.25)
RECOGNIZER_USER_CLASS_FLOOR = env_int("RECOGNIZER_USER_CLASS_FLOOR", 30, minimum=1)
# Per-digit gate: a digit's MNIST test accuracy may drop by this much; a digit's held-out accuracy by
# the second, and only when that loses at least RECOGNIZER_HOLDOUT_DIGIT_MIN_LOST drawings.
RECOGNIZER_DIGIT_TOLERANCE = env_float("RECOGNIZER_DIGIT_TOLERANCE", 0.02)
RECOGNIZER_HOLDOUT_DIGIT_TOLERANCE = env_float("RECOGNIZER_HOLDOUT_DIGIT_TOLERANCE", 0.05)
RECOGNIZER_HOLDOUT_DIGIT_MIN_LOST = env_int("RECOGNIZER_HOLDOUT_DIGIT_MIN_LOST", 2, minimum=1)
# Each digit users drew has at least this many held-out drawings (taken from training users by a
# per-digit user split when the held-out users drew fewer).
RECOGNIZER_HOLDOUT_MIN_PER_DIGIT = env_int("RECOGNIZER_HOLDOUT_MIN_PER_DIGIT", 10, minimum=1)
# A candidate the gate refuses is trained again without the accounts that drive the failure (measured
# by leaving each out), at most this many times, leaving out at most RECOGNIZER_MAX_LEFT_OUT accounts each.
RECOGNIZER_GATE_RETRIES = env_int("RECOGNIZER_GATE_RETRIES", 2, minimum=0)
RECOGNIZER_MAX_LEFT_OUT = env_int("RECOGNIZER_MAX_LEFT_OUT", 3, minimum=1)


def _crontab(name: str, value: str):
    from celery.schedules import crontab
    from django.core.exceptions import ImproperlyConfigured

    parts = value.split()
    if len(parts) != 5:
        raise ImproperlyConfigured(f"{name} must be a cron line of five fields (e.g. '0 3 * * *'), got {value!r}")
    try:
        return crontab(minute=parts[0], hour=parts[1], day_of_month=parts[2], month_of_year=parts[3],
                       day_of_week=parts[4])
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} is not a valid cron line: {value!r} ({exc})") from None


CELERY_BEAT_SCHEDULE = {
    "retrain": {"task": "recognizer.tasks.retrain", "schedule": _crontab("RECOGNIZER_RETRAIN_SCHEDULE", RECOGNIZER_RETRAIN_SCHEDULE),
                "kwargs": {"trigger": "schedule"}},
    "reap-stale-training-runs": {"task": "recognizer.tasks.reap_stale_training_runs", "schedule": 60.0},
    "retry-unqueued-retrain": {"task": "recognizer.tasks.retry_unqueued_retrain", "schedule": 60.0},
    "purge-predict-requests": {"task": "recognizer.tasks.purge_predict_requests", "schedule": 3600.0},
}

# Django reads uploads into memory up to this size; larger bodies are refused by the API.
DATA_UPLOAD_MAX_MEMORY_SIZE = RECOGNIZER_MAX_UPLOAD_BYTES * 2
FILE_UPLOAD_MAX_MEMORY_SIZE = RECOGNIZER_MAX_UPLOAD_BYTES * 2

# --- Celery -----------------------------------------------------------------------------------
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
CELERY_RESULT_BACKEND = env_str("CELERY_RESULT_BACKEND", CELERY_BROKER_URL)
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 30 * 60, minimum=60)
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 25 * 60, minimum=30)
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("DJANGO_LOG_LEVEL", "INFO")},
    "loggers": {"django.server": {"level": "WARNING"}},
}
