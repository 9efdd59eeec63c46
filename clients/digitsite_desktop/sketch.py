"""The drawing as a Pillow image and as the pen strokes the API takes."""

from __future__ import annotations

import io
import time
from collections.abc import Callable

from PIL import Image, ImageDraw

CANVAS_SIZE = 280
PEN_WIDTH = 18  # on a 280 px canvas: a stroke like a thick felt pen, as the web page draws
MAX_STROKES = 64  # what the API accepts with an image (recognizer.ml.strokes); beyond it the image goes alone
MAX_POINTS = 5000
MAX_T = 1e6  # ms: a drawing finished more than about 16 minutes after it began goes as an image alone


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
