"""The few REST calls the desktop client makes, standard library HTTP only, and their errors."""

from __future__ import annotations

import base64
import json
import socket
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

DEFAULT_SERVER = "http://127.0.0.1:8000"
USER_AGENT = "digitsite-desktop/1.0"
MODES = ("digit", "number")


class ClientError(Exception):
    """Anything that kept a request from getting an answer; str() is a message for a person."""


class ServerUnreachable(ClientError):
    """No HTTP answer at all: the server is down, the address is wrong, or it timed out."""


class ApiError(ClientError):
    """The server answered with a 4xx/5xx status."""

    def __init__(self, status: int, message: str, body: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.body = body

    def __str__(self) -> str:
        return f"{self.message} (HTTP {self.status})"


def error_message(body: Any, fallback: str = "") -> str:
    """A readable message out of a JSON error body, whatever shape the API gave it.

    Handles {"detail": "..."}, {"error": {"message": "..."}}, {"message": "..."},
    {"errors": [...]} and DRF field errors such as {"image": ["This field is required."]}.
    """
    if body is None or body == "" or body == {} or body == []:
        return fallback
    if isinstance(body, str):
        return body.strip() or fallback
    if isinstance(body, (list, tuple)):
        parts = [error_message(item) for item in body]
        return " ".join(p for p in parts if p) or fallback
    if isinstance(body, dict):
        for key in ("detail", "message", "error", "errors", "non_field_errors"):
            if key in body and body[key] not in (None, "", [], {}):
                message = error_message(body[key])
                if message:
                    return message
        parts = []
        for key, value in body.items():
            if key in ("code", "status", "status_code", "type"):
                continue
            message = error_message(value)
            if message:
                parts.append(f"{key}: {message}")
        return "; ".join(parts) or fallback
    return str(body)


class DigitClient:
    """The few REST calls the desktop client needs (urllib only)."""

    def __init__(self, server: str = DEFAULT_SERVER, token: str | None = None, timeout: float = 15.0) -> None:
        server = (server or DEFAULT_SERVER).strip()
        if "://" not in server:
            server = "http://" + server
        self.server = server.rstrip("/")
        self.token = (token or "").strip() or None
        self.timeout = timeout

    @property
    def signed_in(self) -> bool:
        return self.token is not None

    def url(self, path: str) -> str:
        return f"{self.server}/api/v1/{path.lstrip('/')}"

    def link(self, href: str) -> str:
        """A URL the server handed out (a `label_url`, usually a path) made absolute against the server.

        Only links on the server itself are followed: the token goes with the request, and a link
        elsewhere (a misconfigured proxy, a tampered answer) must not receive it.
        """
        url = urllib.parse.urljoin(self.server + "/", href)
        ours, theirs = urllib.parse.urlsplit(self.server), urllib.parse.urlsplit(url)
        if (theirs.scheme, theirs.netloc) != (ours.scheme, ours.netloc):
            raise ClientError(f"The server sent a link to another site ({url}); not following it.")
        return url

    def request(self, method: str, path: str, payload: Any = None, *, auth: bool = True,
                headers: dict[str, str] | None = None) -> Any:
        """Send JSON, return the decoded JSON answer; raise ApiError or ServerUnreachable.

        `path` is under /api/v1/ ("predict"), or an absolute URL from link()."""
        url = path if "://" in path else self.url(path)
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT, **(headers or {})}
        data = None
        if payload is not None:
            data = json.dumps(payload).encode("utf-8")
            headers["Content-Type"] = "application/json"
        if auth and self.token:
            headers["Authorization"] = f"Token {self.token}"
        req = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raise self._api_error(exc) from None
        except urllib.error.URLError as exc:
            raise ServerUnreachable(self._unreachable_message(exc.reason)) from None
        except TimeoutError as exc:
            raise ServerUnreachable(self._unreachable_message(exc)) from None
        except (ConnectionError, OSError) as exc:  # reset mid-answer, refused on a keep-alive socket...
            raise ServerUnreachable(self._unreachable_message(exc)) from None
        if not raw:
            return None
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ClientError(f"The server at {self.server} did not answer with JSON: is it a digitsite server?") from None

    def _unreachable_message(self, reason: Any) -> str:
        if isinstance(reason, (socket.timeout, TimeoutError)) or "timed out" in str(reason):
            return f"The server at {self.server} did not answer within {self.timeout:g} s."
        if isinstance(reason, socket.gaierror):
            return f"Cannot find the server {self.server}: {reason.strerror or reason}."
        if isinstance(reason, ConnectionRefusedError):
            return f"Cannot reach the server at {self.server}: connection refused. Is it running?"
        text = getattr(reason, "strerror", None) or str(reason)
        return f"Cannot reach the server at {self.server}: {text}. Is it running?"

    @staticmethod
    def _api_error(exc: urllib.error.HTTPError) -> ApiError:
        try:
            raw = exc.read()
        except Exception:  # noqa: BLE001 - the body is a bonus; the status is what matters
            raw = b""
        body: Any = None
        content_type = exc.headers.get("Content-Type", "") if exc.headers else ""
        if raw and "json" in content_type.lower():
            try:
                body = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                body = None
        fallback = {
            401: "The server did not accept the token.",
            403: "You are not allowed to do that.",
            404: "Not found: is this the right server address?",
            413: "The drawing is too large for the server.",
            429: "Too many requests: wait a little and try again.",
        }.get(exc.code) or f"The server answered {exc.code} {exc.reason or ''}".strip() + "."
        return ApiError(exc.code, error_message(body, fallback) if body is not None else fallback, body)

    # The calls -------------------------------------------------------------------------------

    def predict(self, png_bytes: bytes, strokes: list | None = None, idempotency_key: str | None = None,
                mode: str = "digit") -> dict:
        """Ask which digit (mode "number": which number) the PNG shows; with a token the server stores it
        (each digit of a number as its own drawing) and returns the ids and label URLs.

        `strokes`: the pen strokes drawn, [[[x, y, t], ...], ...] in the PNG's pixels (Sketch.stroke_data()).
        `idempotency_key`: one per drawing; asking again with it (a retry after a lost answer) returns the
        first answer and stored drawing instead of storing the drawing twice.
        """
        if mode not in MODES:
            raise ValueError(f"mode is one of {', '.join(MODES)}, not {mode!r}.")
        image = "data:image/png;base64," + base64.b64encode(png_bytes).decode("ascii")
        payload: dict[str, Any] = {"image": image}
        if mode == "number":  # digit requests stay exactly as older servers know them: no mode, store by default
            payload.update(mode="number", store=True)
        if strokes:
            payload["strokes"] = strokes
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        answer = self.request("POST", "predict", payload, headers=headers)
        if mode == "number":
            if not isinstance(answer, dict) or not isinstance(answer.get("digits"), list) or "number" not in answer:
                raise ClientError("The server's answer has no number in it: does it know number mode?")
        elif not isinstance(answer, dict) or "digit" not in answer:
            raise ClientError("The server's answer has no digit in it.")
        return answer

    def label(self, drawing_id: int, digit: int) -> dict:
        """Say which digit the stored drawing really is."""
        digit = int(digit)
        if not 0 <= digit <= 9:
            raise ValueError("A label is a digit from 0 to 9.")
        answer = self.request("POST", f"drawings/{int(drawing_id)}/label", {"label": digit})
        return answer if isinstance(answer, dict) else {}

    def label_at(self, label_url: str, digit: int) -> dict:
        """Say which digit a stored drawing really is, at the `label_url` the server gave for it
        (a number's digits come with one each)."""
        digit = int(digit)
        if not 0 <= digit <= 9:
            raise ValueError("A label is a digit from 0 to 9.")
        answer = self.request("POST", self.link(label_url), {"label": digit})
        return answer if isinstance(answer, dict) else {}

    def obtain_token(self, username: str, password: str) -> str:
        """Exchange a username and password for an API token (and keep it for later calls)."""
        answer = self.request("POST", "auth/token", {"username": username, "password": password}, auth=False)
        token = answer.get("token") if isinstance(answer, dict) else None
        if not token:
            raise ClientError("The server's answer has no token in it.")
        self.token = token
        return token
