"""Settings for development and the base of every other settings module.

Everything that differs between machines comes from the environment; the defaults give a
working development site on SQLite with no configuration at all.
"""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url

from digitsite.env import cache_from_url, model_storage_from_url

from .groups import (
    Env,
    FeedbackSettings,
    GateSettings,
    RetrainSettings,
    ServingSettings,
    StorageSettings,
    ThrottleSettings,
    cron_schedule,
)

BASE_DIR = Path(__file__).resolve().parent.parent.parent
env = Env(os.environ)  # every variable below is read through it; a bad value raises a SettingsError naming it

# The recognizer's settings in groups (digitsite/settings/groups.py, docs/operations.md#settings), each read
# and checked once; the flat RECOGNIZER_* names under "Recognizer" below are what the code reads.
RECOGNIZER_STORAGE = StorageSettings.from_env(os.environ, BASE_DIR)
RECOGNIZER_SERVING = ServingSettings.from_env(os.environ)
RECOGNIZER_THROTTLES = ThrottleSettings.from_env(os.environ)
RECOGNIZER_FEEDBACK = FeedbackSettings.from_env(os.environ)
RECOGNIZER_RETRAIN = RetrainSettings.from_env(os.environ)
RECOGNIZER_GATE = GateSettings.from_env(os.environ)

# Development only: production.py refuses to start without DJANGO_SECRET_KEY.
SECRET_KEY = env.text("DJANGO_SECRET_KEY", "django-insecure-development-key-not-for-production")
DEBUG = env.boolean("DJANGO_DEBUG", True)
ALLOWED_HOSTS = env.items("DJANGO_ALLOWED_HOSTS", ["127.0.0.1", "localhost", "testserver"])
CSRF_TRUSTED_ORIGINS = env.items("DJANGO_CSRF_TRUSTED_ORIGINS", [])

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
        env.text("DATABASE_URL", "").strip() or f"sqlite:///{BASE_DIR / 'db.sqlite3'}",
        conn_max_age=env.integer("DATABASE_CONN_MAX_AGE", 0, minimum=0),
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
STATIC_ROOT = Path(env.text("DJANGO_STATIC_ROOT", str(BASE_DIR / "staticfiles")))
STATICFILES_DIRS = [BASE_DIR / "static"]
MEDIA_URL = "media/"
MEDIA_ROOT = Path(env.text("DJANGO_MEDIA_ROOT", str(BASE_DIR / "media")))

EMAIL_BACKEND = env.text("DJANGO_EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
DEFAULT_FROM_EMAIL = env.text("DJANGO_DEFAULT_FROM_EMAIL", "digitsite <noreply@localhost>")

# Throttles, the login budget and chart SVGs live here. Development and tests: this process's memory;
# CACHE_URL=redis://host:6379/1 shares them between processes (production.py requires a Redis).
CACHES = {"default": cache_from_url("CACHE_URL", env.text("CACHE_URL", "locmem://"))}

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
    "DEFAULT_THROTTLE_RATES": RECOGNIZER_THROTTLES.rates(),
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
# The groups' fields under the names the code reads (and tests override with pytest-django's `settings`);
# what each one means is in groups.py.
RECOGNIZER_DATA_DIR = RECOGNIZER_STORAGE.data_dir
MNIST_DIR = RECOGNIZER_STORAGE.mnist_dir
PENDIGITS_DIR = RECOGNIZER_STORAGE.pendigits_dir
RECOGNIZER_MODEL_CACHE_DIR = RECOGNIZER_STORAGE.model_cache_dir
RECOGNIZER_MODEL_DIR = MEDIA_ROOT / "models"
# The STORAGES alias model files are read and written under (recognizer/modelfiles.py): a FileSystemStorage at
# RECOGNIZER_MODEL_DIR unless RECOGNIZER_MODEL_STORAGE_URL names a bucket or another directory.
RECOGNIZER_MODEL_STORAGE = "models"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
_model_storage = model_storage_from_url("RECOGNIZER_MODEL_STORAGE_URL", RECOGNIZER_STORAGE.model_storage_url)
if _model_storage is not None:
    STORAGES[RECOGNIZER_MODEL_STORAGE] = _model_storage

RECOGNIZER_UNSURE_CONFIDENCE = RECOGNIZER_SERVING.unsure_confidence
RECOGNIZER_UNSURE_MARGIN = RECOGNIZER_SERVING.unsure_margin
RECOGNIZER_MAX_UPLOAD_BYTES = RECOGNIZER_SERVING.max_upload_bytes
RECOGNIZER_MAX_PIXELS = RECOGNIZER_SERVING.max_pixels
RECOGNIZER_PERSONAL_WEIGHT = RECOGNIZER_SERVING.personal_weight
RECOGNIZER_PERSONAL_MAX_DRAWINGS = RECOGNIZER_SERVING.personal_max_drawings
RECOGNIZER_MODEL_CHECK_SECONDS = RECOGNIZER_SERVING.model_check_seconds
RECOGNIZER_MODEL_RETRY_SECONDS = RECOGNIZER_SERVING.model_retry_seconds
RECOGNIZER_IDEMPOTENCY_SECONDS = RECOGNIZER_SERVING.idempotency_seconds
# Django reads uploads into memory up to this size; larger bodies are refused by the API.
DATA_UPLOAD_MAX_MEMORY_SIZE = RECOGNIZER_MAX_UPLOAD_BYTES * 2
FILE_UPLOAD_MAX_MEMORY_SIZE = RECOGNIZER_MAX_UPLOAD_BYTES * 2

RECOGNIZER_REQUIRE_REVIEW = RECOGNIZER_FEEDBACK.require_review
RECOGNIZER_SUSPICION_THRESHOLD = RECOGNIZER_FEEDBACK.suspicion_threshold
RECOGNIZER_TRUST_THRESHOLD = RECOGNIZER_FEEDBACK.trust_threshold
RECOGNIZER_USER_CLASS_SHARE = RECOGNIZER_FEEDBACK.user_class_share
RECOGNIZER_USER_CLASS_FLOOR = RECOGNIZER_FEEDBACK.user_class_floor
RECOGNIZER_HOLDOUT_SHARE = RECOGNIZER_FEEDBACK.holdout_share
RECOGNIZER_HOLDOUT_MIN_PER_DIGIT = RECOGNIZER_FEEDBACK.holdout_min_per_digit

RECOGNIZER_RETRAIN_AFTER = RECOGNIZER_RETRAIN.after
RECOGNIZER_RETRAIN_SCHEDULE = RECOGNIZER_RETRAIN.schedule
RECOGNIZER_RETRAIN_CHECK_DELAY = RECOGNIZER_RETRAIN.check_delay
RECOGNIZER_RETRAIN_KIND = RECOGNIZER_RETRAIN.kind
RECOGNIZER_TRAIN_LIMIT = RECOGNIZER_RETRAIN.train_limit
RECOGNIZER_PEN_WARM_START = RECOGNIZER_RETRAIN.pen_warm_start
RECOGNIZER_USER_SAMPLE_WEIGHT = RECOGNIZER_RETRAIN.user_sample_weight
RECOGNIZER_RETRAIN_CV = RECOGNIZER_RETRAIN.cross_validate
RECOGNIZER_RETRAIN_INCREMENTAL = RECOGNIZER_RETRAIN.incremental
RECOGNIZER_RETRAIN_LOCK_TIMEOUT = RECOGNIZER_RETRAIN.lock_timeout
RECOGNIZER_RETRAIN_SPREAD_MIN = RECOGNIZER_RETRAIN.spread_min
RECOGNIZER_RETRAIN_PART_SIZE = RECOGNIZER_RETRAIN.part_size

RECOGNIZER_PROMOTION_TOLERANCE = RECOGNIZER_GATE.promotion_tolerance
RECOGNIZER_HOLDOUT_TOLERANCE = RECOGNIZER_GATE.holdout_tolerance
RECOGNIZER_DIGIT_TOLERANCE = RECOGNIZER_GATE.digit_tolerance
RECOGNIZER_HOLDOUT_DIGIT_TOLERANCE = RECOGNIZER_GATE.holdout_digit_tolerance
RECOGNIZER_HOLDOUT_DIGIT_MIN_LOST = RECOGNIZER_GATE.holdout_digit_min_lost
RECOGNIZER_GATE_HOLDOUT_MAX = RECOGNIZER_GATE.holdout_max
RECOGNIZER_GATE_RETRIES = RECOGNIZER_GATE.retries
RECOGNIZER_MAX_LEFT_OUT = RECOGNIZER_GATE.max_left_out

CELERY_BEAT_SCHEDULE = {
    "retrain": {"task": "recognizer.tasks.retrain", "schedule": cron_schedule(RECOGNIZER_RETRAIN_SCHEDULE),
                "kwargs": {"trigger": "schedule"}},
    "reap-stale-training-runs": {"task": "recognizer.tasks.reap_stale_training_runs", "schedule": 60.0},
    "retry-unqueued-retrain": {"task": "recognizer.tasks.retry_unqueued_retrain", "schedule": 60.0},
    "purge-predict-requests": {"task": "recognizer.tasks.purge_predict_requests", "schedule": 3600.0},
}

# --- Celery -----------------------------------------------------------------------------------
CELERY_BROKER_URL = env.text("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
CELERY_RESULT_BACKEND = env.text("CELERY_RESULT_BACKEND", CELERY_BROKER_URL)
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_TASK_TIME_LIMIT = env.integer("CELERY_TASK_TIME_LIMIT", 30 * 60, minimum=60)
CELERY_TASK_SOFT_TIME_LIMIT = env.integer("CELERY_TASK_SOFT_TIME_LIMIT", 25 * 60, minimum=30)
CELERY_TASK_ALWAYS_EAGER = env.boolean("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.text("DJANGO_LOG_LEVEL", "INFO")},
    "loggers": {"django.server": {"level": "WARNING"}},
}
