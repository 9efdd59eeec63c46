"""The command line: the arguments, where the server and token come from, and main()."""

from __future__ import annotations

import argparse
import os
import sys

from .api import DEFAULT_SERVER, ClientError, DigitClient
from .window import App


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
