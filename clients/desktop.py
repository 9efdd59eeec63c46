#!/usr/bin/env python3
"""digitsite desktop client: draw a digit with the mouse, ask the REST API what it is, correct it.

    python clients/desktop.py [--server http://127.0.0.1:8000] [--token KEY]

The server and token also come from DIGITSITE_URL and DIGITSITE_TOKEN. Without a token the
predictions are anonymous: nothing is stored, so there is nothing to correct. Get a token with

    python clients/desktop.py --get-token USERNAME     (asks for the password)

Keys: Enter predicts, Escape clears, 0-9 correct the answer.

Standard library plus Pillow only. The strokes are drawn twice, on the Tk canvas for the eye
and into a Pillow image that is what gets sent, so no Ghostscript/postscript export is needed.
The pen strokes themselves ([x, y, t] points, t in ms since the drawing began) go with the image,
for a server model that reads them.
The HTTP calls run on a worker thread; the Tk thread picks their results up from a queue.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import queue
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageDraw

DEFAULT_SERVER = "http://127.0.0.1:8000"
CANVAS_SIZE = 280
PEN_WIDTH = 18  # on a 280 px canvas: a stroke like a thick felt pen, as the web page draws
USER_AGENT = "digitsite-desktop/1.0"
MAX_STROKES = 64  # what the API accepts with an image (recognizer.ml.strokes); beyond it the image goes alone
MAX_POINTS = 5000
MAX_T = 1e6  # ms: a drawing finished more than about 16 minutes after it began goes as an image alone


# --- HTTP --------------------------------------------------------------------------------------


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

    def request(self, method: str, path: str, payload: Any = None, *, auth: bool = True,
                headers: dict[str, str] | None = None) -> Any:
        """Send JSON, return the decoded JSON answer; raise ApiError or ServerUnreachable."""
        url = self.url(path)
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

    def predict(self, png_bytes: bytes, strokes: list | None = None, idempotency_key: str | None = None) -> dict:
        """Ask which digit the PNG shows; with a token the server stores it and returns its id.

        `strokes`: the pen strokes drawn, [[[x, y, t], ...], ...] in the PNG's pixels (Sketch.stroke_data()).
        `idempotency_key`: one per drawing; asking again with it (a retry after a lost answer) returns the
        first answer and stored drawing instead of storing the drawing twice.
        """
        image = "data:image/png;base64," + base64.b64encode(png_bytes).decode("ascii")
        payload: dict[str, Any] = {"image": image}
        if strokes:
            payload["strokes"] = strokes
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        answer = self.request("POST", "predict", payload, headers=headers)
        if not isinstance(answer, dict) or "digit" not in answer:
            raise ClientError("The server's answer has no digit in it.")
        return answer

    def label(self, drawing_id: int, digit: int) -> dict:
        """Say which digit the stored drawing really is."""
        digit = int(digit)
        if not 0 <= digit <= 9:
            raise ValueError("A label is a digit from 0 to 9.")
        answer = self.request("POST", f"drawings/{int(drawing_id)}/label", {"label": digit})
        return answer if isinstance(answer, dict) else {}

    def obtain_token(self, username: str, password: str) -> str:
        """Exchange a username and password for an API token (and keep it for later calls)."""
        answer = self.request("POST", "auth/token", {"username": username, "password": password}, auth=False)
        token = answer.get("token") if isinstance(answer, dict) else None
        if not token:
            raise ClientError("The server's answer has no token in it.")
        self.token = token
        return token


# --- Drawing -----------------------------------------------------------------------------------


class Sketch:
    """The drawing as a Pillow image: white background, black round-capped strokes.

    It follows the same points as the Tk canvas, so what is sent is what is seen. Each point's time
    (ms since the drawing's first point) is kept next to it in `times`, for stroke_data().
    """

    def __init__(self, size: int = CANVAS_SIZE, pen_width: int = PEN_WIDTH,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.size = size
        self.pen_width = pen_width
        self.strokes: list[list[tuple[float, float]]] = []
        self.times: list[list[float]] = []
        self.image = Image.new("L", (size, size), 255)
        self._draw = ImageDraw.Draw(self.image)
        self._clock = clock
        self._started = 0.0

    @property
    def is_empty(self) -> bool:
        return not self.strokes

    def clear(self) -> None:
        self.strokes = []
        self.times = []
        self.image.paste(255, (0, 0, self.size, self.size))

    def _now(self) -> float:
        """Milliseconds since the drawing's first point (which starts the clock)."""
        now = self._clock()
        if not self.strokes:
            self._started = now
        return round((now - self._started) * 1000.0, 1)

    def _dot(self, x: float, y: float) -> None:
        r = self.pen_width / 2
        self._draw.ellipse([x - r, y - r, x + r, y + r], fill=0)

    def start(self, x: float, y: float) -> None:
        t = self._now()
        self.strokes.append([(x, y)])
        self.times.append([t])
        self._dot(x, y)

    def extend(self, x: float, y: float) -> bool:
        """Add a point to the current stroke; False when it is too close to the last one to matter."""
        if not self.strokes:
            self.start(x, y)
            return True
        stroke = self.strokes[-1]
        lx, ly = stroke[-1]
        if (x - lx) ** 2 + (y - ly) ** 2 < 1.0:
            return False
        stroke.append((x, y))
        self.times[-1].append(self._now())
        self._draw.line([(lx, ly), (x, y)], fill=0, width=self.pen_width)
        self._dot(x, y)  # round joints and caps
        return True

    def png_bytes(self) -> bytes:
        buffer = io.BytesIO()
        self.image.save(buffer, format="PNG", optimize=True)
        return buffer.getvalue()

    def stroke_data(self) -> list[list[list[float]]] | None:
        """The strokes as the API takes them: [[[x, y, t], ...], ...] in the image's pixels, t in ms since
        the first point; None when there are none or more than the API accepts (the image then goes alone)."""
        if not self.strokes or len(self.strokes) > MAX_STROKES or sum(map(len, self.strokes)) > MAX_POINTS:
            return None
        if any(t > MAX_T for times in self.times for t in times):
            return None
        return [[[float(x), float(y), float(t)] for (x, y), t in zip(stroke, times)]
                for stroke, times in zip(self.strokes, self.times)]


# --- The window --------------------------------------------------------------------------------


@dataclass
class Point:
    """Stands in for a Tk event when the handlers are called directly (tests, scripts)."""

    x: float
    y: float


class App:
    """The window. Every handler can be called directly; HTTP runs on a worker thread."""

    POLL_MS = 40

    def __init__(self, root, client: DigitClient, size: int = CANVAS_SIZE, pen_width: int = PEN_WIDTH,
                 run_async: bool = True) -> None:
        import tkinter as tk
        from tkinter import font as tkfont

        self.tk = tk
        self.root = root
        self.client = client
        self.size = size
        self.pen_width = pen_width
        self.run_async = run_async
        self.sketch = Sketch(size, pen_width)
        self.drawing_id: int | None = None
        self.last_prediction: dict | None = None
        self.busy = False
        self._generation = 0  # bumped by clear(): answers to an older drawing are dropped
        self._results: queue.Queue = queue.Queue()
        self._stroke_item = None
        self._pending = 0  # requests whose results have not been picked up yet
        self._attempt_key: str | None = None  # Idempotency-Key of the drawing as it is; None once it changes

        root.title("digitsite — draw a digit")
        root.resizable(False, False)
        outer = tk.Frame(root, padx=12, pady=12)
        outer.pack(fill="both", expand=True)

        # The border lives on a frame around the canvas: canvas pixel (x, y) is then exactly the
        # Pillow image's pixel (x, y), with no highlight ring shifting or hiding the edges.
        border = tk.Frame(outer, bd=1, relief="solid", bg="#888888")
        border.grid(row=0, column=0, rowspan=3, sticky="n")
        self.canvas = tk.Canvas(border, width=size, height=size, bg="white", highlightthickness=0, bd=0,
                                cursor="pencil")
        self.canvas.pack()
        self.canvas.bind("<ButtonPress-1>", self.on_press)
        self.canvas.bind("<B1-Motion>", self.on_drag)
        self.canvas.bind("<ButtonRelease-1>", self.on_release)

        side = tk.Frame(outer, padx=12)
        side.grid(row=0, column=1, sticky="n")
        big = tkfont.Font(root=root, size=64, weight="bold")
        self.digit_var = tk.StringVar(value="?")
        self.confidence_var = tk.StringVar(value="Draw a digit, then Predict.")
        self.status_var = tk.StringVar(value="")
        self.digit_label = tk.Label(side, textvariable=self.digit_var, font=big, width=2)
        self.digit_label.pack()
        self.confidence_label = tk.Label(side, textvariable=self.confidence_var, wraplength=220, justify="center")
        self.confidence_label.pack(pady=(0, 8))
        buttons = tk.Frame(side)
        buttons.pack()
        self.predict_button = tk.Button(buttons, text="Predict", width=9, command=self.predict)
        self.predict_button.pack(side="left", padx=2)
        self.clear_button = tk.Button(buttons, text="Clear", width=9, command=self.clear)
        self.clear_button.pack(side="left", padx=2)

        self.correct_frame = tk.LabelFrame(outer, text="Wrong? It is a…", padx=6, pady=6)
        self.digit_buttons = []
        for d in range(10):
            b = tk.Button(self.correct_frame, text=str(d), width=2, state="disabled",
                          command=lambda d=d: self.correct(d))
            b.grid(row=d // 5, column=d % 5, padx=2, pady=2)
            self.digit_buttons.append(b)
        if client.signed_in:
            self.correct_frame.grid(row=1, column=1, sticky="n", pady=(8, 0))
        else:
            tk.Label(outer, text="Anonymous: start with --token to save\nand correct your drawings.",
                     fg="#666666", justify="center").grid(row=1, column=1, sticky="n", pady=(8, 0))

        self.status_label = tk.Label(outer, textvariable=self.status_var, fg="#b00020", wraplength=size + 240,
                                     justify="left", anchor="w")
        self.status_label.grid(row=3, column=0, columnspan=2, sticky="we", pady=(8, 0))
        server_text = f"Server: {client.server}" + ("" if client.signed_in else " (anonymous)")
        tk.Label(outer, text=server_text, fg="#666666", anchor="w").grid(row=4, column=0, columnspan=2, sticky="we")

        root.bind("<Return>", lambda e: self.predict())
        root.bind("<KP_Enter>", lambda e: self.predict())
        root.bind("<Escape>", lambda e: self.clear())
        for d in range(10):
            root.bind(str(d), lambda e, d=d: self.correct(d))

    # Drawing -----------------------------------------------------------------------------------

    def _clamp(self, event) -> tuple[float, float]:
        x = min(max(float(event.x), 0.0), self.size - 1.0)
        y = min(max(float(event.y), 0.0), self.size - 1.0)
        return x, y

    def on_press(self, event) -> None:
        x, y = self._clamp(event)
        self.sketch.start(x, y)
        self._attempt_key = None  # another drawing: a new key
        r = self.pen_width / 2
        # A dot for a click; the line item grows from it as the mouse moves.
        self.canvas.create_oval(x - r, y - r, x + r, y + r, fill="black", outline="black", tags="ink")
        self._stroke_item = None

    def on_drag(self, event) -> None:
        x, y = self._clamp(event)
        if not self.sketch.extend(x, y):
            return
        self._attempt_key = None
        coords = [c for point in self.sketch.strokes[-1] for c in point]
        if self._stroke_item is None:
            self._stroke_item = self.canvas.create_line(
                *coords, fill="black", width=self.pen_width, capstyle="round", joinstyle="round",
                smooth=True, splinesteps=12, tags="ink")
        else:
            self.canvas.coords(self._stroke_item, *coords)

    def on_release(self, event=None) -> None:
        if event is not None:
            self.on_drag(event)
        self._stroke_item = None

    def clear(self) -> None:
        self.canvas.delete("ink")
        self.sketch.clear()
        self._stroke_item = None
        self._attempt_key = None
        self._generation += 1
        self.busy = False
        self.drawing_id = None
        self.last_prediction = None
        self.digit_var.set("?")
        self.confidence_var.set("Draw a digit, then Predict.")
        self.status_var.set("")
        self._set_correction_enabled(False)
        self.predict_button.configure(state="normal")

    # Talking to the server ---------------------------------------------------------------------

    def predict(self) -> None:
        if self.busy:
            return
        if self.sketch.is_empty:
            self.show_error("Draw a digit first.")
            return
        png = self.sketch.png_bytes()
        strokes = self.sketch.stroke_data()
        self.busy = True
        self.drawing_id = None
        self.last_prediction = None
        self.predict_button.configure(state="disabled")
        self._set_correction_enabled(False)
        self.digit_var.set("…")
        self.status_var.set("")
        self.confidence_var.set("Asking the server…")
        # The same drawing predicted again (after a timeout, say) sends the same key: the server stores it once.
        key = self._attempt_key = self._attempt_key or uuid.uuid4().hex
        self._run(lambda: self.client.predict(png, strokes, idempotency_key=key), self._show_prediction)

    def correct(self, digit: int) -> None:
        if not self.client.signed_in:
            self.show_error("Corrections need a token: start the client with --token (or DIGITSITE_TOKEN).")
            return
        if self.drawing_id is None:
            self.show_error("Predict first: there is no stored drawing to correct yet.")
            return
        drawing_id = self.drawing_id
        self._set_correction_enabled(False)
        self.status_var.set("")
        self._run(lambda: self.client.label(drawing_id, digit), lambda answer: self._show_label(digit, answer),
                  on_error=lambda: self._set_correction_enabled(True))

    def _run(self, call: Callable[[], Any], on_success: Callable[[Any], None],
             on_error: Callable[[], None] | None = None) -> None:
        generation = self._generation

        def work() -> None:
            try:
                outcome = ("ok", call())
            except ClientError as exc:
                outcome = ("error", str(exc))
            except Exception as exc:  # noqa: BLE001 - shown in the window rather than lost on a thread
                outcome = ("error", f"Unexpected error: {exc}")
            self._results.put((generation, outcome, on_success, on_error))

        self._pending += 1
        if self.run_async:
            threading.Thread(target=work, name="digitsite-request", daemon=True).start()
            if self._pending == 1:
                self.root.after(self.POLL_MS, self._poll)
        else:
            work()
            self._deliver()

    def _poll(self) -> None:
        self._deliver()
        if self._pending > 0:
            self.root.after(self.POLL_MS, self._poll)

    def _deliver(self) -> None:
        while True:
            try:
                generation, (kind, value), on_success, on_error = self._results.get_nowait()
            except queue.Empty:
                return
            self._pending -= 1
            if generation != self._generation:
                continue  # the drawing was cleared while the request was out
            if kind == "ok":
                on_success(value)
            else:
                self.busy = False
                self.predict_button.configure(state="normal")
                if self.last_prediction is None:
                    self.digit_var.set("?")
                    self.confidence_var.set("")
                if on_error:
                    on_error()
                self.show_error(value)

    def _show_prediction(self, answer: dict) -> None:
        self.busy = False
        self.predict_button.configure(state="normal")
        self.last_prediction = answer
        self.drawing_id = answer.get("drawing")
        digit = answer.get("digit")
        confidence = answer.get("confidence")
        self.digit_var.set(str(digit))
        text = f"Confidence: {confidence:.0%}" if isinstance(confidence, (int, float)) else "Confidence: ?"
        if answer.get("uncertain"):
            text += " — unsure"
        self.confidence_var.set(text)
        self.digit_label.configure(fg="#b36b00" if answer.get("uncertain") else "black")
        if self.drawing_id is not None and self.client.signed_in:
            self._set_correction_enabled(True)
            self.show_info("Wrong? Press the right digit below.")
        else:
            self.show_info("")

    def _show_label(self, digit: int, answer: dict) -> None:
        self._set_correction_enabled(True)
        self.show_info(f"Thanks: saved as a {digit}.")

    # Display helpers ---------------------------------------------------------------------------

    def _set_correction_enabled(self, enabled: bool) -> None:
        state = "normal" if enabled and self.drawing_id is not None else "disabled"
        for button in self.digit_buttons:
            button.configure(state=state)

    def show_error(self, message: str) -> None:
        self.status_label.configure(fg="#b00020")
        self.status_var.set(message)

    def show_info(self, message: str) -> None:
        self.status_label.configure(fg="#1b5e20")
        self.status_var.set(message)

    @property
    def correction_enabled(self) -> bool:
        return str(self.digit_buttons[0].cget("state")) == "normal"


# --- Command line ------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="desktop.py",
        description="Draw a digit and let a digitsite server recognise it.",
        epilog="Keys: Enter predicts, Escape clears, 0-9 correct the answer (when signed in with a token).",
    )
    parser.add_argument("--server", default=None,
                        help=f"server address (default: $DIGITSITE_URL or {DEFAULT_SERVER})")
    parser.add_argument("--token", default=None,
                        help="API token for 'Authorization: Token <key>' (default: $DIGITSITE_TOKEN); "
                             "without one predictions are anonymous and cannot be corrected")
    parser.add_argument("--timeout", type=float, default=15.0, help="seconds to wait for the server (default 15)")
    parser.add_argument("--get-token", metavar="USERNAME",
                        help="ask for USERNAME's password, print an API token and exit")
    return parser


def resolve_settings(args: argparse.Namespace, environ: dict | None = None) -> tuple[str, str | None]:
    environ = os.environ if environ is None else environ
    server = args.server or environ.get("DIGITSITE_URL") or DEFAULT_SERVER
    token = args.token or environ.get("DIGITSITE_TOKEN") or None
    return server, token


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    server, token = resolve_settings(args)
    client = DigitClient(server, token, timeout=args.timeout)
    if args.get_token:
        import getpass

        try:
            print(client.obtain_token(args.get_token, getpass.getpass(f"Password for {args.get_token}: ")))
        except ClientError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        return 0
    try:
        import tkinter as tk
    except ImportError:
        print("error: this Python has no tkinter (on Debian: apt-get install python3-tk).", file=sys.stderr)
        return 2
    try:
        root = tk.Tk()
    except tk.TclError as exc:
        print(f"error: cannot open a window ({exc}). Is DISPLAY set?", file=sys.stderr)
        return 2
    App(root, client)
    root.mainloop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
