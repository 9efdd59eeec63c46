"""Settings come from the environment, fail loudly on bad values, and production passes check --deploy,
refuses to start without its database, and keeps throttles in a Redis every process shares."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from digitsite.env import cache_from_url, env_bool, env_int, env_list

ROOT = Path(__file__).resolve().parent.parent


def test_env_bool_reads_the_usual_spellings(monkeypatch):
    monkeypatch.setenv("X_FLAG", "Yes")
    assert env_bool("X_FLAG", False) is True
    monkeypatch.setenv("X_FLAG", "off")
    assert env_bool("X_FLAG", True) is False
    monkeypatch.delenv("X_FLAG")
    assert env_bool("X_FLAG", True) is True


def test_env_bool_refuses_a_value_it_cannot_read(monkeypatch):
    monkeypatch.setenv("X_FLAG", "maybe")
    with pytest.raises(ImproperlyConfigured, match="X_FLAG"):
        env_bool("X_FLAG", False)


def test_env_int_refuses_words_and_values_below_the_minimum(monkeypatch):
    monkeypatch.setenv("X_NUMBER", "ten")
    with pytest.raises(ImproperlyConfigured, match="whole number"):
        env_int("X_NUMBER", 1)
    monkeypatch.setenv("X_NUMBER", "-3")
    with pytest.raises(ImproperlyConfigured, match="at least 0"):
        env_int("X_NUMBER", 1, minimum=0)


def test_env_list_splits_on_commas(monkeypatch):
    monkeypatch.setenv("X_HOSTS", "a.example, b.example,,")
    assert env_list("X_HOSTS", []) == ["a.example", "b.example"]


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
