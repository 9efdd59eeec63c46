"""/healthz: whether this web worker can serve predictions, with the database, the model and the
broker reported separately so an operator sees which part is down."""

from __future__ import annotations

from django.conf import settings
from django.db import DatabaseError, connection
from django.http import JsonResponse
from django.views.decorators.cache import never_cache

from recognizer import services


def database_state() -> dict:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return {"ok": True}
    except DatabaseError as exc:
        return {"ok": False, "error": str(exc)}


def model_state() -> dict:
    try:
        loaded = services.model_cache.get()
    except services.NoActiveModel as exc:
        return {"ok": False, "error": str(exc)}
    state = {"ok": True, "version": loaded.version_id}
    if services.model_cache.last_error:
        # Serving the last good model while a newer one could not be loaded.
        state["warning"] = services.model_cache.last_error
    return state


def broker_state() -> dict:
    from celery import current_app

    try:
        with current_app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=0, timeout=1)
        return {"ok": True}
    except Exception as exc:  # noqa: BLE001 - any broker failure is reported, never raised
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}


@never_cache
def healthz(request):
    checks = {"database": database_state(), "model": model_state(), "broker": broker_state()}
    status = 200 if checks["model"]["ok"] else 503
    return JsonResponse({"can_predict": status == 200, **checks}, status=status)
