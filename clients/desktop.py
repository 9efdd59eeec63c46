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

import sys

# Everything lives in the package beside this file; its names stay reachable here as desktop.<name>.
if __package__:  # imported as clients.desktop
    from .digitsite_desktop import *  # noqa: F403
    from .digitsite_desktop import main
else:  # run as a script (python clients/desktop.py): clients/ is sys.path[0]
    from digitsite_desktop import *  # noqa: F403
    from digitsite_desktop import main

if __name__ == "__main__":
    sys.exit(main())
