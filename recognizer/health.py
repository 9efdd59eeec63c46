"""/healthz: whether this web worker can serve predictions, with the database, the model and the
broker reported separately so an operator sees which part is down.

Anyone (a load balancer) reads whether each part is up; what went wrong (exception text, file paths,
host names) is shown to staff only, and logged once each time it changes.
"""

from __future__ import annotations

import logging

from django.db import DatabaseError, connection
from django.http import JsonResponse
from django.views.decorators.cache import never_cache

from recognizer import serving

logger = logging.getLogger(__name__)

DETAILS = ("error", "warning")  # the keys only staff see
_last_logged: dict[str, str] = {}


def database_state() -> dict:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return {"ok": True}
    except DatabaseError as exc:
        return {"ok": False, "status": "unavailable", "error": str(exc)}


def model_state() -> dict:
    try:
        loaded = serving.model_cache.get()
    except serving.NoActiveModel:
        return {"ok": False, "status": "unavailable", "error": serving.model_cache.last_error or serving.NO_MODEL_YET}
    state = {"ok": True, "version": loaded.version_id}
    if serving.model_cache.last_error:
        # Serving the last good model while a newer one could not be loaded.
        state.update(status="degraded", warning=serving.model_cache.last_error)
    return state


def broker_state() -> dict:
    from celery import current_app

    try:
        with current_app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=0, timeout=1)
        return {"ok": True}
    except Exception as exc:  # noqa: BLE001 - any broker failure is reported, never raised
        return {"ok": False, "status": "unavailable", "error": f"{type(exc).__name__}: {exc}"}


def log_changes(checks: dict) -> None:
    """Log each part's problem when it appears or changes, not at every poll of a load balancer."""
    for name, state in checks.items():
        detail = state.get("error") or state.get("warning") or ""
        if detail != _last_logged.get(name, ""):
            if detail:
                logger.warning("healthz: %s %s: %s", name, state.get("status", ""), detail)
            elif name in _last_logged:
                logger.info("healthz: %s is ok again", name)
            _last_logged[name] = detail


def public(state: dict) -> dict:
    return {key: value for key, value in state.items() if key not in DETAILS}


@never_cache
def healthz(request):
    checks = {"database": database_state(), "model": model_state(), "broker": broker_state()}
    log_changes(checks)
    if not (request.user.is_authenticated and request.user.is_staff):
        checks = {name: public(state) for name, state in checks.items()}
    status = 200 if checks["model"]["ok"] else 503
    return JsonResponse({"can_predict": status == 200, **checks}, status=status)
