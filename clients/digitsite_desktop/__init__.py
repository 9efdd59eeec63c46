"""The digitsite desktop client, one room per concept; clients/desktop.py is its entry point.

    api       DigitClient: the REST calls (urllib), their errors and error_message()
    sketch    Sketch: the strokes and the Pillow image that is sent
    reading   NumberReading: a number-mode answer, its corrections and its wording (no Tk)
    layout    WindowLayout: the widgets and key bindings of the window, and its colours and wording
    window    App: what the window does (drawing, asking, correcting), and Point (a stand-in for a Tk event)
    cli       the command line: build_parser(), resolve_settings(), main()
"""

from .api import DEFAULT_SERVER, MODES, USER_AGENT, ApiError, ClientError, DigitClient, ServerUnreachable, error_message
from .cli import build_parser, main, resolve_settings
from .layout import CLICK_SLOP, CORRECT_TITLES, CORRECTED_COLOUR, PROMPTS, SURE_COLOUR, TITLES, UNSURE_COLOUR
from .reading import NumberReading
from .sketch import CANVAS_SIZE, MAX_POINTS, MAX_STROKES, MAX_T, PEN_WIDTH, Sketch
from .window import NUMBER_ASPECT, App, Point

__all__ = [
    "CANVAS_SIZE", "CLICK_SLOP", "CORRECTED_COLOUR", "CORRECT_TITLES", "DEFAULT_SERVER", "MAX_POINTS", "MAX_STROKES",
    "MAX_T", "MODES", "NUMBER_ASPECT", "PEN_WIDTH", "PROMPTS", "SURE_COLOUR", "TITLES", "UNSURE_COLOUR", "USER_AGENT",
    "ApiError", "App", "ClientError", "DigitClient", "NumberReading", "Point", "ServerUnreachable", "Sketch",
    "build_parser", "error_message", "main", "resolve_settings",
]
