"""The one place that shapes every JSON error of the API: `{"detail": message, "code": code}`, plus
`"errors"` (field -> messages) for invalid input. Drawing problems from the service layer become
statuses a client can act on, and nothing a caller sends becomes a 500."""

from __future__ import annotations

import logging

from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from recognizer.idempotency import InvalidKey, KeyReused
from recognizer.ml.preprocess import DrawingError, EmptyDrawing, ImageTooLarge, UnreadableImage
from recognizer.ml.strokes import InvalidStrokes
from recognizer.serving import NoActiveModel

logger = logging.getLogger(__name__)


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The upload is too large."
    default_code = "too_large"


class UnprocessableDrawing(exceptions.APIException):
    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    default_detail = "The canvas is empty: draw a digit first."
    default_code = "empty_drawing"


class ServiceUnavailable(exceptions.APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "Predictions are not available right now."
    default_code = "no_active_model"


def _sentence(message: str) -> str:
    message = str(message).strip()
    if not message:
        return message
    message = message[0].upper() + message[1:]
    return message if message.endswith((".", "!", "?")) else message + "."


def as_api_exception(exc: Exception) -> Exception:
    """Translate service-layer and Django errors into DRF exceptions with a status and a clear message."""
    if isinstance(exc, EmptyDrawing):
        return UnprocessableDrawing(_sentence(str(exc)))
    if isinstance(exc, ImageTooLarge):
        return PayloadTooLarge(_sentence(f"The image is too large: {exc}"), code="image_too_large")
    if isinstance(exc, InvalidStrokes):
        return exceptions.ParseError(_sentence(f"The strokes cannot be read: {exc}"), code="invalid_strokes")
    if isinstance(exc, UnreadableImage):
        return exceptions.ParseError(_sentence(f"The image cannot be read: {exc}"), code="unreadable_image")
    if isinstance(exc, DrawingError):
        return exceptions.ParseError(_sentence(str(exc)), code="bad_drawing")
    if isinstance(exc, InvalidKey):
        return exceptions.ParseError(_sentence(str(exc)), code="invalid_idempotency_key")
    if isinstance(exc, KeyReused):
        return UnprocessableDrawing(_sentence(str(exc)), code="idempotency_key_reused")
    if isinstance(exc, NoActiveModel):
        return ServiceUnavailable(_sentence(f"Predictions are not available right now: {exc}"))
    if isinstance(exc, RequestDataTooBig):
        return PayloadTooLarge("The request body is too large.", code="too_large")
    if isinstance(exc, exceptions.Throttled):
        wait = f" Try again in {int(exc.wait + 0.999)} seconds." if exc.wait is not None else ""
        return exceptions.Throttled(exc.wait, detail=f"Too many requests.{wait}")
    if isinstance(exc, Http404):
        # Same answer whether the object is missing or someone else's: never reveal that it exists.
        return exceptions.NotFound("Not found.")
    if isinstance(exc, PermissionDenied):
        return exceptions.PermissionDenied()
    return exc


def exception_handler(exc: Exception, context: dict) -> Response | None:
    exc = as_api_exception(exc)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None  # a real bug: Django's 500 handling and logging take over
    response.data = shape(exc, response.data)
    return response


def shape(exc: Exception, data) -> dict:
    code = getattr(exc, "default_code", "error")
    if isinstance(exc, exceptions.APIException):
        codes = exc.get_codes()
        if isinstance(codes, str):
            code = codes
    if isinstance(data, dict) and set(data) == {"detail"}:
        return {"detail": _sentence(str(data["detail"])), "code": code}
    # Field errors from a serializer: one readable sentence plus the per-field lists.
    errors = data if isinstance(data, dict) else {"non_field_errors": data}
    first_field, messages = next(iter(errors.items()), ("", [""]))
    first = messages[0] if isinstance(messages, list) and messages else messages
    prefix = "" if first_field in ("non_field_errors", "detail") else f"{first_field}: "
    return {"detail": _sentence(f"{prefix}{first}"), "code": "invalid", "errors": errors}
