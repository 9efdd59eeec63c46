"""Settings come from the environment in typed groups, fail loudly on bad values naming the variable, and
production passes check --deploy, refuses to start without its database, and keeps throttles in a Redis every
process shares."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from digitsite.env import cache_from_url
from digitsite.settings import groups
from digitsite.settings.groups import Env, SettingsError

ROOT = Path(__file__).resolve().parent.parent

# --- The reader ---------------------------------------------------------------------------------------


def test_env_reads_booleans_in_the_usual_spellings():
    assert Env({"X_FLAG": "Yes"}).boolean("X_FLAG", False) is True
    assert Env({"X_FLAG": "off"}).boolean("X_FLAG", True) is False
    assert Env({"X_FLAG": ""}).boolean("X_FLAG", True) is False
    assert Env({}).boolean("X_FLAG", True) is True
    with pytest.raises(SettingsError, match='X_FLAG must be a boolean .*, got "maybe"'):
        Env({"X_FLAG": "maybe"}).boolean("X_FLAG", False)


def test_env_refuses_words_and_numbers_out_of_range():
    assert Env({"X_NUMBER": " 7 "}).integer("X_NUMBER", 1) == 7
    assert Env({"X_NUMBER": ""}).integer("X_NUMBER", 1) == 1
    with pytest.raises(SettingsError, match='X_NUMBER must be a whole number, got "ten"'):
        Env({"X_NUMBER": "ten"}).integer("X_NUMBER", 1)
    with pytest.raises(SettingsError, match='X_NUMBER must be a whole number of at least 0, got "-3"'):
        Env({"X_NUMBER": "-3"}).integer("X_NUMBER", 1, minimum=0)
    for raw in ("abc", "1.5", "nan"):
        with pytest.raises(SettingsError, match=f'X_SHARE must be a number between 0 and 1, got "{raw}"'):
            Env({"X_SHARE": raw}).number("X_SHARE", 0.5, 0, 1)


def test_env_splits_lists_on_commas():
    assert Env({"X_HOSTS": "a.example, b.example,,"}).items("X_HOSTS", []) == ["a.example", "b.example"]


# --- The groups ---------------------------------------------------------------------------------------

GROUPS = (groups.StorageSettings, groups.ServingSettings, groups.ThrottleSettings, groups.FeedbackSettings,
          groups.RetrainSettings, groups.GateSettings)


def build_groups(environ: dict) -> list:
    return [group.from_env(environ, ROOT) if group is groups.StorageSettings else group.from_env(environ)
            for group in GROUPS]


def variables_read() -> set[str]:
    """Every variable the groups read, seen by building them from a recording environment."""

    class Recording(dict):
        def get(self, key, default=None):
            names.add(key)
            return super().get(key, default)

    names: set[str] = set()
    build_groups(Recording())
    return names


# The flat settings base.py gave with nothing set, captured from it before the groups existed.
TODAYS_DEFAULTS = {
    "RECOGNIZER_DATA_DIR": ROOT / "data", "MNIST_DIR": "", "PENDIGITS_DIR": "", "RECOGNIZER_MODEL_CACHE_DIR": "",
    "RECOGNIZER_MODEL_DIR": ROOT / "media" / "models", "RECOGNIZER_MODEL_STORAGE": "models",
    "RECOGNIZER_UNSURE_CONFIDENCE": 0.6, "RECOGNIZER_UNSURE_MARGIN": 0.15,
    "RECOGNIZER_MAX_UPLOAD_BYTES": 2097152, "RECOGNIZER_MAX_PIXELS": 16777216,
    "RECOGNIZER_PERSONAL_WEIGHT": 3.0, "RECOGNIZER_PERSONAL_MAX_DRAWINGS": 200,
    "RECOGNIZER_MODEL_CHECK_SECONDS": 2.0, "RECOGNIZER_MODEL_RETRY_SECONDS": 600.0,
    "RECOGNIZER_IDEMPOTENCY_SECONDS": 86400,
    "DATA_UPLOAD_MAX_MEMORY_SIZE": 4194304, "FILE_UPLOAD_MAX_MEMORY_SIZE": 4194304,
    "RECOGNIZER_REQUIRE_REVIEW": False, "RECOGNIZER_SUSPICION_THRESHOLD": 0.5, "RECOGNIZER_TRUST_THRESHOLD": 0.8,
    "RECOGNIZER_USER_CLASS_SHARE": 0.25, "RECOGNIZER_USER_CLASS_FLOOR": 30, "RECOGNIZER_HOLDOUT_SHARE": 0.2,
    "RECOGNIZER_HOLDOUT_MIN_PER_DIGIT": 10,
    "RECOGNIZER_RETRAIN_AFTER": 200, "RECOGNIZER_RETRAIN_SCHEDULE": "0 3 * * *", "RECOGNIZER_RETRAIN_CHECK_DELAY": 30,
    "RECOGNIZER_RETRAIN_KIND": "knn", "RECOGNIZER_TRAIN_LIMIT": 0, "RECOGNIZER_PEN_WARM_START": True,
    "RECOGNIZER_USER_SAMPLE_WEIGHT": 1.0, "RECOGNIZER_RETRAIN_CV": True, "RECOGNIZER_RETRAIN_INCREMENTAL": True,
    "RECOGNIZER_RETRAIN_LOCK_TIMEOUT": 600, "RECOGNIZER_RETRAIN_SPREAD_MIN": 20000,
    "RECOGNIZER_RETRAIN_PART_SIZE": 2000,
    "RECOGNIZER_PROMOTION_TOLERANCE": 0.003, "RECOGNIZER_HOLDOUT_TOLERANCE": 0.01,
    "RECOGNIZER_DIGIT_TOLERANCE": 0.02, "RECOGNIZER_HOLDOUT_DIGIT_TOLERANCE": 0.05,
    "RECOGNIZER_HOLDOUT_DIGIT_MIN_LOST": 2, "RECOGNIZER_GATE_HOLDOUT_MAX": 10000, "RECOGNIZER_GATE_RETRIES": 2,
    "RECOGNIZER_MAX_LEFT_OUT": 3,
}
TODAYS_THROTTLE_RATES = {"anon_predict": "60/minute", "user_predict": "600/minute", "login": "10/minute",
                         "export": "20/hour"}


def base_settings(monkeypatch, **env: str) -> dict:
    """base.py's settings run afresh in an environment with none of the site's variables but `env`."""
    for name in variables_read() | {"DJANGO_MEDIA_ROOT"}:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    spec = importlib.util.spec_from_file_location("digitsite.settings.fresh_base",
                                                  ROOT / "digitsite" / "settings" / "base.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return vars(module)


def test_an_empty_environment_gives_todays_settings(monkeypatch):
    values = base_settings(monkeypatch)
    flat = {name: values[name] for name in TODAYS_DEFAULTS}
    assert flat == TODAYS_DEFAULTS
    assert {name: type(value) for name, value in flat.items()} == {n: type(v) for n, v in TODAYS_DEFAULTS.items()}
    assert values["REST_FRAMEWORK"]["DEFAULT_THROTTLE_RATES"] == TODAYS_THROTTLE_RATES
    assert "models" not in values["STORAGES"]
    assert str(values["CELERY_BEAT_SCHEDULE"]["retrain"]["schedule"]) == "<crontab: 0 3 * * * (m/h/dM/MY/d)>"
    # Every flat RECOGNIZER_* setting is one of today's: none was lost or added on the way.
    assert {n for n in values if n.startswith("RECOGNIZER_") and not dataclasses.is_dataclass(values[n])} == {
        n for n in TODAYS_DEFAULTS if n.startswith("RECOGNIZER_")}


def test_the_environment_reaches_the_flat_settings(monkeypatch):
    values = base_settings(monkeypatch, RECOGNIZER_UNSURE_CONFIDENCE="0.7", RECOGNIZER_REQUIRE_REVIEW="yes",
                           RECOGNIZER_RETRAIN_SCHEDULE="5 4 * * 1", RECOGNIZER_LOGIN_RATE="3/minute",
                           RECOGNIZER_MAX_UPLOAD_BYTES="5000", RECOGNIZER_GATE_HOLDOUT_MAX="0", MNIST_DIR="/m",
                           RECOGNIZER_MODEL_STORAGE_URL="file:///srv/models", RECOGNIZER_TRAIN_LIMIT="")
    assert values["RECOGNIZER_SERVING"].unsure_confidence == values["RECOGNIZER_UNSURE_CONFIDENCE"] == 0.7
    assert values["RECOGNIZER_REQUIRE_REVIEW"] is True and values["RECOGNIZER_GATE_HOLDOUT_MAX"] == 0
    assert values["RECOGNIZER_TRAIN_LIMIT"] == 0 and values["MNIST_DIR"] == "/m"
    assert values["DATA_UPLOAD_MAX_MEMORY_SIZE"] == 10000
    assert values["REST_FRAMEWORK"]["DEFAULT_THROTTLE_RATES"]["login"] == "3/minute"
    assert str(values["CELERY_BEAT_SCHEDULE"]["retrain"]["schedule"]) == "<crontab: 5 4 * * 1 (m/h/dM/MY/d)>"
    assert values["STORAGES"]["models"]["OPTIONS"] == {"location": "/srv/models"}


def test_a_group_is_frozen():
    serving = groups.ServingSettings.from_env({})
    assert serving == groups.ServingSettings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        serving.unsure_confidence = 0.9


@pytest.mark.parametrize(("name", "value", "message"), [
    ("RECOGNIZER_UNSURE_CONFIDENCE", "abc", 'RECOGNIZER_UNSURE_CONFIDENCE must be a number between 0 and 1, got "abc"'),
    ("RECOGNIZER_UNSURE_MARGIN", "1.5", 'RECOGNIZER_UNSURE_MARGIN must be a number between 0 and 1, got "1.5"'),
    ("RECOGNIZER_MAX_UPLOAD_BYTES", "10", 'RECOGNIZER_MAX_UPLOAD_BYTES must be a whole number of at least 1024, got "10"'),
    ("RECOGNIZER_MODEL_CHECK_SECONDS", "-1", "RECOGNIZER_MODEL_CHECK_SECONDS must be a number of at least 0"),
    ("RECOGNIZER_ANON_PREDICT_RATE", "60 per minute",
     'RECOGNIZER_ANON_PREDICT_RATE must be a number of requests per second, minute, hour or day '
     '(e.g. 60/minute or 20/hour), got "60 per minute"'),
    ("RECOGNIZER_EXPORT_RATE", "20/week", 'RECOGNIZER_EXPORT_RATE must be a number of requests per'),
    ("RECOGNIZER_REQUIRE_REVIEW", "sometimes", 'RECOGNIZER_REQUIRE_REVIEW must be a boolean'),
    ("RECOGNIZER_TRUST_THRESHOLD", "80", 'RECOGNIZER_TRUST_THRESHOLD must be a number between 0 and 1, got "80"'),
    ("RECOGNIZER_USER_CLASS_FLOOR", "0", 'RECOGNIZER_USER_CLASS_FLOOR must be a whole number of at least 1, got "0"'),
    ("RECOGNIZER_RETRAIN_KIND", "forest", 'RECOGNIZER_RETRAIN_KIND must be one of knn, svm, cnn, got "forest"'),
    ("RECOGNIZER_RETRAIN_SCHEDULE", "nightly",
     'RECOGNIZER_RETRAIN_SCHEDULE must be a cron line of five fields (e.g. "0 3 * * *"), got "nightly"'),
    ("RECOGNIZER_RETRAIN_SCHEDULE", "0 25 * * *", 'RECOGNIZER_RETRAIN_SCHEDULE must be a valid cron line'),
    ("RECOGNIZER_RETRAIN_CV", "maybe", "RECOGNIZER_RETRAIN_CV must be a boolean"),
    ("RECOGNIZER_RETRAIN_LOCK_TIMEOUT", "1", "RECOGNIZER_RETRAIN_LOCK_TIMEOUT must be a whole number of at least 5"),
    ("RECOGNIZER_PROMOTION_TOLERANCE", "0.3%", 'RECOGNIZER_PROMOTION_TOLERANCE must be a number between 0 and 1, got "0.3%"'),
    ("RECOGNIZER_GATE_HOLDOUT_MAX", "-1", 'RECOGNIZER_GATE_HOLDOUT_MAX must be a whole number of at least 0, got "-1"'),
])
def test_a_bad_value_is_refused_naming_the_variable_and_what_it_may_be(name, value, message):
    with pytest.raises(SettingsError, match=re.escape(message)):
        build_groups({name: value})


def test_a_bad_value_stops_the_site_at_startup():
    result = manage("check", env={"DJANGO_SETTINGS_MODULE": "digitsite.settings.base",
                                  "RECOGNIZER_UNSURE_CONFIDENCE": "abc"})
    assert result.returncode != 0
    assert 'RECOGNIZER_UNSURE_CONFIDENCE must be a number between 0 and 1, got "abc"' in result.stderr


def test_the_retrain_kinds_are_the_model_kinds():
    from recognizer.ml.kinds import MODEL_KINDS

    assert groups.RETRAIN_KINDS == MODEL_KINDS


def test_the_settings_modules_read_the_recognizers_variables_only_through_the_groups():
    for module in ("base.py", "production.py", "test.py"):
        source = (ROOT / "digitsite" / "settings" / module).read_text()
        assert not re.findall(r"environ\b.*\"(?:RECOGNIZER_|MNIST_DIR|PENDIGITS_DIR)", source), module
        assert not re.findall(r"env\.\w+\(\s*\"(?:RECOGNIZER_|MNIST_DIR|PENDIGITS_DIR)", source), module


def test_every_variable_of_the_groups_is_in_the_operations_guide_and_no_other():
    guide = (ROOT / "docs" / "operations.md").read_text()
    section = guide[guide.index("\n## Settings\n"):]
    section = section[:section.index("\n## ", 1)]
    first_cells = [line.split("|")[1] for line in section.splitlines() if line.startswith("| `")]
    documented = {name for cell in first_cells for name in re.findall(r"`([A-Z_]+)`", cell)
                  if name.startswith("RECOGNIZER_") or name in ("MNIST_DIR", "PENDIGITS_DIR")}
    read = variables_read()
    assert read - documented == set(), "read by the settings but not in docs/operations.md#settings"
    assert documented - read == set(), "in docs/operations.md#settings but read by no settings group"


# --- Production ---------------------------------------------------------------------------------------


def test_a_cache_url_names_redis_or_this_process_memory():
    redis = cache_from_url("CACHE_URL", "redis://cache.internal:6379/1")
    assert redis["BACKEND"] == "digitsite.cache.ResilientRedisCache" and redis["LOCATION"].endswith("/1")
    assert cache_from_url("CACHE_URL", "locmem://")["BACKEND"].endswith("LocMemCache")
    with pytest.raises(ImproperlyConfigured, match="CACHE_URL must be a redis://"):
        cache_from_url("CACHE_URL", "memcached://cache:11211")


def manage(*args: str, env: dict) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("DJANGO_", "DATABASE_URL", "CACHE_URL", "REDIS_CACHE_URL", "CELERY_"))}
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env={**clean, **env},
                          capture_output=True, text=True, timeout=120)


PRODUCTION = {
    "DJANGO_SETTINGS_MODULE": "digitsite.settings.production",
    "DJANGO_SECRET_KEY": "a-long-random-production-secret-" + "x" * 40,
    "DJANGO_ALLOWED_HOSTS": "digits.example.com",
    "DATABASE_URL": "postgres://digitsite:secret@db.internal:5432/digitsite",
    "CELERY_BROKER_URL": "redis://redis.internal:6379/0",
}


def production_value(expression: str, **env: str) -> str:
    """`expression` evaluated in a process running the production settings (`settings` and `cache` at hand)."""
    code = f"from django.conf import settings; from django.core.cache import cache; print({expression})"
    result = manage("shell", "-v", "0", "-c", code, env={**PRODUCTION, **env})
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.strip().splitlines()[-1]


def test_production_settings_pass_check_deploy():
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=PRODUCTION)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_refuses_to_start_without_a_secret_key():
    env = {k: v for k, v in PRODUCTION.items() if k != "DJANGO_SECRET_KEY"}
    result = manage("check", env=env)
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY must be set" in result.stderr


def test_production_turns_debug_off():
    result = manage("shell", "-c", "from django.conf import settings; print(settings.DEBUG)", env=PRODUCTION)
    assert result.stdout.strip().splitlines()[-1] == "False", result.stderr


def test_production_refuses_to_start_without_a_database_url():
    for missing in ({k: v for k, v in PRODUCTION.items() if k != "DATABASE_URL"}, {**PRODUCTION, "DATABASE_URL": " "}):
        result = manage("check", env=missing)
        assert result.returncode != 0
        assert "DATABASE_URL must be set in production" in result.stderr


def test_production_reads_the_database_from_database_url():
    assert production_value("settings.DATABASES['default']['HOST']") == "db.internal"


def test_production_caches_in_the_brokers_redis_by_default_and_in_cache_url_when_set():
    default = "settings.CACHES['default']['BACKEND'], settings.CACHES['default']['LOCATION']"
    assert production_value(default) == "digitsite.cache.ResilientRedisCache redis://redis.internal:6379/0"
    assert production_value("settings.CACHES['default']['LOCATION']",
                            CACHE_URL="redis://cache.internal:6379/1") == "redis://cache.internal:6379/1"


def test_production_refuses_a_cache_that_is_not_shared():
    result = manage("check", env={**PRODUCTION, "CACHE_URL": "locmem://"})
    assert result.returncode != 0 and "CACHE_URL=redis://" in result.stderr
    result = manage("check", env={**PRODUCTION, "CELERY_BROKER_URL": "amqp://guest:secret@rabbit//"})
    assert result.returncode != 0 and "CACHE_URL=redis://" in result.stderr and "secret" not in result.stderr


def test_development_keeps_the_cache_in_memory_unless_told():
    env = {"DJANGO_SETTINGS_MODULE": "digitsite.settings.base"}
    code = "from django.conf import settings; print(settings.CACHES['default']['BACKEND'])"
    result = manage("shell", "-v", "0", "-c", code, env=env)
    assert result.stdout.strip().endswith("LocMemCache"), result.stderr[-2000:]


@pytest.mark.integration
@pytest.mark.django_db
def test_the_login_budget_is_shared_by_every_process_through_redis(redis_url, settings, alice):  # noqa: F811
    """Spend the login budget in this process; another process running the production settings (as a second
    gunicorn worker would) finds it spent in the same Redis."""
    from django.core.cache import cache
    from rest_framework.test import APIClient

    from recognizer.api import throttles

    settings.CACHES = {"default": cache_from_url("CACHE_URL", redis_url)}
    rates = {**throttles.LoginThrottle.THROTTLE_RATES, "login": "3/minute"}
    try:
        throttles.LoginThrottle.THROTTLE_RATES = rates
        api = APIClient()
        codes = [api.post("/api/v1/auth/token", {"username": "alice", "password": "wrong"}).status_code
                 for _ in range(4)]
        assert codes == [400, 400, 400, 429]
    finally:
        del throttles.LoginThrottle.THROTTLE_RATES
    seen = production_value("len(cache.get('throttle_login_127.0.0.1', []))", CACHE_URL=redis_url)
    assert seen == "3"
    cache.clear()


@pytest.mark.integration
@pytest.mark.django_db
def test_with_the_cache_down_predictions_go_on(settings, active_model, digit_png, caplog):
    """A Redis that does not answer fails open: the throttles are not enforced, and the site keeps working."""
    import base64

    from rest_framework.test import APIClient

    from tests.redis_helpers import free_port

    settings.CACHES = {"default": cache_from_url("CACHE_URL", f"redis://127.0.0.1:{free_port()}/0")}
    image = "data:image/png;base64," + base64.b64encode(digit_png(1)).decode()
    response = APIClient().post("/api/v1/predict", {"image": image}, format="json")
    assert response.status_code == 200 and response.json()["model_version"] == active_model.pk
    assert any("cannot be reached" in r.getMessage() for r in caplog.records)
