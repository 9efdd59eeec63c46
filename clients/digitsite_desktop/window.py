"""The Tk window: the canvas, the answer, the corrections. Every handler can be called directly."""

from __future__ import annotations

import queue
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .api import MODES, ClientError, DigitClient
from .layout import (
    CLICK_SLOP,
    CORRECT_TITLES,
    CORRECTED_COLOUR,
    PROMPTS,
    SURE_COLOUR,
    TITLES,
    UNSURE_COLOUR,
    WindowLayout,
)
from .reading import NumberReading
from .sketch import CANVAS_SIZE, PEN_WIDTH, Sketch

NUMBER_ASPECT = 2  # number mode: the canvas is twice as wide as tall, as on the web page


@dataclass
class Point:
    """Stands in for a Tk event when the handlers are called directly (tests, scripts)."""

    x: float
    y: float


class App(WindowLayout):
    """The window. Every handler can be called directly; HTTP runs on a worker thread."""

    POLL_MS = 40

    def __init__(self, root, client: DigitClient, size: int = CANVAS_SIZE, pen_width: int = PEN_WIDTH,
                 run_async: bool = True) -> None:
        import tkinter as tk

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
        self._build_canvas(outer)
        self._build_side_panel(outer)
        self._build_corrections(outer)
        self._build_status_lines(outer)
        self._bind_keys()

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
