#!/usr/bin/env python3
"""digitsite desktop client: draw a digit (or a whole number) with the mouse, ask the REST API what it is, correct it.

    python clients/desktop.py [--server http://127.0.0.1:8000] [--token KEY]

The server and token also come from DIGITSITE_URL and DIGITSITE_TOKEN. Without a token the
predictions are anonymous: nothing is stored, so there is nothing to correct. Get a token with

    python clients/desktop.py --get-token USERNAME     (asks for the password)

Keys: Enter predicts, Escape clears, 0-9 correct the answer, n switches between Digit and Number mode.
In Number mode the canvas is twice as wide as tall and the answer is one box per digit: click a box (or
move with Left/Right) to select a digit, then 0-9 corrects that digit alone.

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
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from PIL import Image, ImageDraw

DEFAULT_SERVER = "http://127.0.0.1:8000"
CANVAS_SIZE = 280
PEN_WIDTH = 18  # on a 280 px canvas: a stroke like a thick felt pen, as the web page draws
USER_AGENT = "digitsite-desktop/1.0"
MAX_STROKES = 64  # what the API accepts with an image (recognizer.ml.strokes); beyond it the image goes alone
MAX_POINTS = 5000
MAX_T = 1e6  # ms: a drawing finished more than about 16 minutes after it began goes as an image alone
NUMBER_ASPECT = 2  # number mode: the canvas is twice as wide as tall, as on the web page
MODES = ("digit", "number")


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


# --- Drawing -----------------------------------------------------------------------------------


class Sketch:
    """The drawing as a Pillow image: white background, black round-capped strokes.

    It follows the same points as the Tk canvas, so what is sent is what is seen. Each point's time
    (ms since the drawing's first point) is kept next to it in `times`, for stroke_data().
    Square for a digit; `height` less than `width` for a number (the pen stays the same, so a number's
    digits come out as thick as a single digit's).
    """

    def __init__(self, width: int = CANVAS_SIZE, height: int | None = None, pen_width: int = PEN_WIDTH,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.width = width
        self.height = width if height is None else height
        self.pen_width = pen_width
        self.strokes: list[list[tuple[float, float]]] = []
        self.times: list[list[float]] = []
        self.image = Image.new("L", (self.width, self.height), 255)
        self._draw = ImageDraw.Draw(self.image)
        self._clock = clock
        self._started = 0.0

    @property
    def is_empty(self) -> bool:
        return not self.strokes

    def clear(self) -> None:
        self.strokes = []
        self.times = []
        self.image.paste(255, (0, 0, self.width, self.height))

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


# --- Number answers ----------------------------------------------------------------------------


def _digit_positions(positions: list[int]) -> str:
    """[1] -> "digit 2", [0, 2] -> "digits 1 and 3": people count digits from 1."""
    names = [str(i + 1) for i in positions]
    if len(names) == 1:
        return f"digit {names[0]}"
    return f"digits {', '.join(names[:-1])} and {names[-1]}"


@dataclass
class NumberReading:
    """A number-mode answer and what the user has done with it since: the selected digit, the corrections.

    No Tk in here, so the wording can be tested alone. `segmentation` and `alternative` are newer than number
    mode itself: older servers leave them out, and each is read only when present.
    """

    answer: dict
    corrections: dict[int, int] = field(default_factory=dict)
    selected: int = 0

    def __post_init__(self) -> None:
        unsure = self.unsure()
        self.selected = unsure[0] if unsure else 0  # start where there is most likely something to fix

    @property
    def digits(self) -> list[dict]:
        return self.answer.get("digits") or []

    def value(self, index: int) -> int:
        return self.corrections.get(index, self.digits[index].get("digit"))

    @property
    def number(self) -> str:
        """The number as it stands now: the server's reading with the user's corrections."""
        return "".join(str(self.value(i)) for i in range(len(self.digits)))

    def unsure(self) -> list[int]:
        """The digits the server was unsure of and the user has not corrected (positions from 0)."""
        return [i for i, d in enumerate(self.digits) if d.get("uncertain") and i not in self.corrections]

    def doubts(self) -> list[str]:
        doubts = []
        if self.unsure():
            doubts.append(f"not sure of {_digit_positions(self.unsure())}")
        if (self.answer.get("segmentation") or {}).get("uncertain"):
            # A correction cannot fix a wrong split (two digits read as one), so this doubt stays.
            doubts.append("not sure where one digit ends and the next begins")
        if not doubts and self.answer.get("uncertain") and not self.corrections:
            doubts.append("not sure of it")  # unsure overall, and the server did not say of what
        return doubts

    def message(self) -> str:
        if not self.digits:
            return "I found no digits: write them bigger, side by side."
        unsure, doubts = self.unsure(), self.doubts()
        if doubts:
            shown = "".join("?" if i in unsure else str(self.value(i)) for i in range(len(self.digits)))
            return f"I read {shown} — {'; '.join(doubts)}."
        if self.corrections:
            return f"It's {self.number} (corrected; I read {self.answer.get('number')})."
        return f"It's {self.number}."

    def alternative(self) -> str | None:
        """The server's second-best reading of the whole number, until the user corrects a digit: from
        then on the user has said what the digits are."""
        alternative = self.answer.get("alternative")
        if alternative in (None, "") or self.corrections or str(alternative) == self.number:
            return None
        return str(alternative)

    def box(self, index: int) -> tuple | None:
        box = self.digits[index].get("box")
        return tuple(box) if isinstance(box, (list, tuple)) and len(box) == 4 else None

    def box_at(self, x: float, y: float) -> int | None:
        """The digit whose box holds image point (x, y); x1 and y1 are exclusive, as the server gives them."""
        for i in range(len(self.digits)):
            box = self.box(i)
            if box is not None and box[0] <= x < box[2] and box[1] <= y < box[3]:
                return i
        return None

    def move(self, step: int) -> None:
        if self.digits:
            self.selected = min(max(self.selected + step, 0), len(self.digits) - 1)

    def describe_selected(self) -> str:
        if not self.digits:
            return ""
        i, digit = self.selected, self.digits[self.selected]
        text = f"Digit {i + 1} of {len(self.digits)}: {self.value(i)}"
        if i in self.corrections:
            return text + " (corrected)"
        if digit.get("uncertain"):
            others = [g.get("digit") for g in digit.get("top_two") or [] if g.get("digit") != digit.get("digit")]
            return text + (f", unsure (or {others[0]}?)" if others else ", unsure")
        return text


# --- The window --------------------------------------------------------------------------------


@dataclass
class Point:
    """Stands in for a Tk event when the handlers are called directly (tests, scripts)."""

    x: float
    y: float


SURE_COLOUR = "#1565c0"
UNSURE_COLOUR = "#b36b00"
CORRECTED_COLOUR = "#1b5e20"
CLICK_SLOP = 4  # px: a press inside a digit's box that moves less than this is a click selecting the digit
PROMPTS = {"digit": "Draw a digit, then Predict.", "number": "Write a number, digits side by side, then Predict."}
TITLES = {"digit": "digitsite — draw a digit", "number": "digitsite — write a number"}
CORRECT_TITLES = {"digit": "Wrong? It is a…", "number": "Wrong digit? It is a…"}


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
        self.size = size  # the canvas's height; a digit's canvas is square, a number's NUMBER_ASPECT times wider
        self.pen_width = pen_width
        self.run_async = run_async
        self.mode = "digit"
        self.sketch = Sketch(size, pen_width=pen_width)
        self.drawing_id: int | None = None
        self.last_prediction: dict | None = None
        self.reading: NumberReading | None = None  # number mode: the answer shown, with its boxes on the canvas
        self.busy = False
        self._generation = 0  # bumped by clear(): answers to an older drawing are dropped
        self._results: queue.Queue = queue.Queue()
        self._stroke_item = None
        self._press_select: tuple[int, float, float] | None = None  # a press on a digit's box: click or stroke?
        self._pending = 0  # requests whose results have not been picked up yet
        self._attempt_key: str | None = None  # Idempotency-Key of the drawing as it is; None once it changes

        root.title(TITLES["digit"])
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
        self.mode_var = tk.StringVar(value="digit")
        modes = tk.Frame(side)
        modes.pack()
        self.mode_buttons = {}
        for mode, text in (("digit", "Digit"), ("number", "Number")):
            button = tk.Radiobutton(modes, text=text, value=mode, variable=self.mode_var, takefocus=False,
                                    command=lambda: self.set_mode(self.mode_var.get()))
            button.pack(side="left")
            self.mode_buttons[mode] = button
        big = tkfont.Font(root=root, size=64, weight="bold")
        self.digit_var = tk.StringVar(value="?")
        self.confidence_var = tk.StringVar(value=PROMPTS["digit"])
        self.alternative_var = tk.StringVar(value="")  # number mode: the second-best reading, "or 176?"
        self.selection_var = tk.StringVar(value="")  # number mode: the selected digit
        self.status_var = tk.StringVar(value="")
        self.digit_label = tk.Label(side, textvariable=self.digit_var, font=big, width=2)
        self.digit_label.pack()
        self.confidence_label = tk.Label(side, textvariable=self.confidence_var, wraplength=220, justify="center")
        self.confidence_label.pack(pady=(0, 8))
        tk.Label(side, textvariable=self.alternative_var, fg=UNSURE_COLOUR).pack()
        tk.Label(side, textvariable=self.selection_var, wraplength=220).pack(pady=(0, 8))
        buttons = tk.Frame(side)
        buttons.pack()
        self.predict_button = tk.Button(buttons, text="Predict", width=9, command=self.predict)
        self.predict_button.pack(side="left", padx=2)
        self.clear_button = tk.Button(buttons, text="Clear", width=9, command=self.clear)
        self.clear_button.pack(side="left", padx=2)

        self.correct_frame = tk.LabelFrame(outer, text=CORRECT_TITLES["digit"], padx=6, pady=6)
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
        root.bind("n", lambda e: self.set_mode("digit" if self.mode == "number" else "number"))
        root.bind("<Left>", lambda e: self.move_selection(-1))
        root.bind("<Right>", lambda e: self.move_selection(1))
        for d in range(10):
            root.bind(str(d), lambda e, d=d: self.correct(d))

    # Modes -------------------------------------------------------------------------------------

    def set_mode(self, mode: str) -> None:
        """Digit or number. The canvas changes shape, so the drawing is cleared: it would not fit."""
        if mode not in MODES:
            raise ValueError(f"mode is one of {', '.join(MODES)}, not {mode!r}.")
        self.mode_var.set(mode)
        if mode == self.mode:
            return
        self.mode = mode
        self.clear()
        width = self.size * (NUMBER_ASPECT if mode == "number" else 1)
        self.sketch = Sketch(width, self.size, pen_width=self.pen_width)
        self.canvas.configure(width=width, height=self.size)
        self.status_label.configure(wraplength=width + 240)
        self.digit_label.configure(width=0 if mode == "number" else 2)  # 0: as wide as the number
        self.correct_frame.configure(text=CORRECT_TITLES[mode])
        self.root.title(TITLES[mode])

    # Drawing -----------------------------------------------------------------------------------

    def _clamp(self, event) -> tuple[float, float]:
        x = min(max(float(event.x), 0.0), self.sketch.width - 1.0)
        y = min(max(float(event.y), 0.0), self.sketch.height - 1.0)
        return x, y

    def on_press(self, event) -> None:
        x, y = self._clamp(event)
        if self.reading is not None:
            index = self.reading.box_at(x, y)
            if index is not None:
                # A click selects this digit, a drag draws on: on_drag and on_release tell which.
                self._press_select = (index, x, y)
                return
            self._drawing_changed()
        self._start_stroke(x, y)

    def _start_stroke(self, x: float, y: float) -> None:
        self.sketch.start(x, y)
        self._attempt_key = None  # another drawing: a new key
        r = self.pen_width / 2
        # A dot for a click; the line item grows from it as the mouse moves.
        self.canvas.create_oval(x - r, y - r, x + r, y + r, fill="black", outline="black", tags="ink")
        self._stroke_item = None

    def on_drag(self, event) -> None:
        x, y = self._clamp(event)
        if self._press_select is not None:
            _index, px, py = self._press_select
            if (x - px) ** 2 + (y - py) ** 2 < CLICK_SLOP ** 2:
                return
            self._press_select = None  # it moved: a stroke that began on a digit's box
            self._drawing_changed()
            self._start_stroke(px, py)
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
        if self._press_select is not None:
            self.select_digit(self._press_select[0])
            self._press_select = None
        self._stroke_item = None

    def _drawing_changed(self) -> None:
        """More ink after a number was read: its boxes no longer fit the drawing, so they go."""
        self._drop_reading()
        self.confidence_var.set("The drawing changed: Predict again.")

    def clear(self) -> None:
        self.canvas.delete("ink")
        self.sketch.clear()
        self._drop_reading()
        self._stroke_item = None
        self._press_select = None
        self._attempt_key = None
        self._generation += 1
        self.busy = False
        self.drawing_id = None
        self.last_prediction = None
        self.digit_var.set("?")
        self.digit_label.configure(fg="black")
        self.confidence_var.set(PROMPTS[self.mode])
        self.status_var.set("")
        self._set_correction_enabled(False)
        self.predict_button.configure(state="normal")

    # Talking to the server ---------------------------------------------------------------------

    def predict(self) -> None:
        if self.busy:
            return
        if self.sketch.is_empty:
            self.show_error("Write a number first." if self.mode == "number" else "Draw a digit first.")
            return
        png = self.sketch.png_bytes()
        strokes = self.sketch.stroke_data()
        mode = self.mode
        self.busy = True
        self.drawing_id = None
        self.last_prediction = None
        self._drop_reading()
        self.predict_button.configure(state="disabled")
        self._set_correction_enabled(False)
        self.digit_var.set("…")
        self.status_var.set("")
        self.confidence_var.set("Asking the server…")
        # The same drawing predicted again (after a timeout, say) sends the same key: the server stores it once.
        key = self._attempt_key = self._attempt_key or uuid.uuid4().hex
        show = self._show_number if mode == "number" else self._show_prediction
        self._run(lambda: self.client.predict(png, strokes, idempotency_key=key, mode=mode), show)

    def correct(self, digit: int) -> None:
        if not self.client.signed_in:
            self.show_error("Corrections need a token: start the client with --token (or DIGITSITE_TOKEN).")
            return
        if self.mode == "number":
            self._correct_selected_digit(digit)
            return
        if self.drawing_id is None:
            self.show_error("Predict first: there is no stored drawing to correct yet.")
            return
        drawing_id = self.drawing_id
        self._set_correction_enabled(False)
        self.status_var.set("")
        self._run(lambda: self.client.label(drawing_id, digit), lambda answer: self._show_label(digit, answer),
                  on_error=lambda: self._set_correction_enabled(True))

    def _correct_selected_digit(self, digit: int) -> None:
        reading = self.reading
        if reading is None or not reading.digits:
            self.show_error("Predict first: there is no number to correct yet.")
            return
        index = reading.selected
        label_url = reading.digits[index].get("label_url")
        if not label_url:
            self.show_error(f"Digit {index + 1} was not stored, so there is nothing to correct.")
            return
        self._set_correction_enabled(False)
        self.status_var.set("")
        self._run(lambda: self.client.label_at(label_url, digit),
                  lambda answer: self._show_digit_label(reading, index, digit),
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
        self.digit_label.configure(fg=UNSURE_COLOUR if answer.get("uncertain") else "black")
        if self.drawing_id is not None and self.client.signed_in:
            self._set_correction_enabled(True)
            self.show_info("Wrong? Press the right digit below.")
        else:
            self.show_info("")

    def _show_label(self, digit: int, answer: dict) -> None:
        self._set_correction_enabled(True)
        self.show_info(f"Thanks: saved as a {digit}.")

    def _show_number(self, answer: dict) -> None:
        self.busy = False
        self.predict_button.configure(state="normal")
        self.last_prediction = answer
        self.reading = NumberReading(answer)
        self._show_reading()
        if self.client.signed_in and any(d.get("label_url") for d in self.reading.digits):
            self.show_info("Wrong digit? Click its box (or use Left/Right), then press the right digit.")
        else:
            self.show_info("")

    def _show_digit_label(self, reading: NumberReading, index: int, digit: int) -> None:
        reading.corrections[index] = digit
        if reading is self.reading:  # not redrawn once more ink has made the boxes go
            self._show_reading()
        self.show_info(f"Thanks: digit {index + 1} saved as a {digit}.")

    # Number mode: the reading and its boxes ----------------------------------------------------

    def select_digit(self, index: int) -> None:
        if self.reading is not None:
            self.reading.move(index - self.reading.selected)
            self._show_reading()

    def move_selection(self, step: int) -> None:
        if self.reading is not None:
            self.select_digit(self.reading.selected + step)

    def _show_reading(self) -> None:
        reading = self.reading
        self.digit_var.set(reading.number or "?")
        self.digit_label.configure(fg=UNSURE_COLOUR if reading.doubts() else "black")
        self.confidence_var.set(reading.message())
        alternative = reading.alternative()
        self.alternative_var.set(f"or {alternative}?" if alternative else "")
        self.selection_var.set(reading.describe_selected())
        self._draw_boxes()
        self._set_correction_enabled(True)

    def _draw_boxes(self) -> None:
        """One rectangle per digit, in image pixels (the canvas's pixels): solid and thick when selected."""
        self.canvas.delete("box")
        reading = self.reading
        for i, digit in enumerate(reading.digits):
            box = reading.box(i)
            if box is None:
                continue
            colour = (CORRECTED_COLOUR if i in reading.corrections
                      else UNSURE_COLOUR if digit.get("uncertain") else SURE_COLOUR)
            selected = i == reading.selected
            self.canvas.create_rectangle(*box, outline=colour, width=3 if selected else 1,
                                         dash=() if selected else (4, 3), tags=("box", f"box{i}"))

    def _drop_reading(self) -> None:
        self.reading = None
        self.canvas.delete("box")
        self.alternative_var.set("")
        self.selection_var.set("")
        self._set_correction_enabled(False)

    # Display helpers ---------------------------------------------------------------------------

    def _correctable(self) -> bool:
        if self.mode == "number":
            reading = self.reading
            return bool(reading and reading.digits and reading.digits[reading.selected].get("label_url"))
        return self.drawing_id is not None

    def _set_correction_enabled(self, enabled: bool) -> None:
        state = "normal" if enabled and self._correctable() else "disabled"
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
        epilog="Keys: Enter predicts, Escape clears, 0-9 correct the answer (when signed in with a token), "
               "n switches between Digit and Number mode; in Number mode Left/Right (or a click on a digit's box) "
               "choose the digit that 0-9 correct.",
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
