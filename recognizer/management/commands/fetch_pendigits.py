from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from recognizer.management.progress import progress_bar
from recognizer.ml import pendigits


class Command(BaseCommand):
    help = (
        "Download the UCI pendigits training trajectories (pendigits-orig.tra, never the UCI test file) "
        "and verify their SHA-256."
    )

    def add_arguments(self, parser):
        parser.add_argument("--dest", default=str(Path(settings.RECOGNIZER_DATA_DIR) / "pendigits"),
                            help="Directory to download into (default: RECOGNIZER_DATA_DIR/pendigits).")
        parser.add_argument("--url", action="append", metavar="URL",
                            help="Download from this URL instead of the built-in mirrors: the file itself, "
                                 "gzip- or compress-ed (.gz, .Z), or a zip archive holding it. May be repeated.")

    def handle(self, *args, **options):
        configured = settings.PENDIGITS_DIR
        if configured:
            path = Path(configured)
            if path.is_dir():
                path = path / pendigits.PENDIGITS_FILE
            if path.is_file():
                self.stdout.write(f"PENDIGITS_DIR is set and holds {path}: PENDIGITS_DIR wins, nothing to download.")
                return
            self.stderr.write(
                f"PENDIGITS_DIR={configured} holds no {pendigits.PENDIGITS_FILE}; downloading anyway, but the site "
                "reads PENDIGITS_DIR while it is set: point it at the download or unset it."
            )
        dest = Path(options["dest"])
        mirrors = options["url"] or pendigits.PENDIGITS_MIRRORS
        try:
            with progress_bar("Downloading pendigits", enabled=options["verbosity"] > 0) as progress:
                path = pendigits.fetch_pendigits(dest, mirrors=mirrors, progress=progress)
        except pendigits.FetchError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(self.style.SUCCESS(f"pendigits is in {path}, checksum verified."))
