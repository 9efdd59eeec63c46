import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from recognizer import serving
from recognizer.ml.preprocess import DrawingError


class Command(BaseCommand):
    help = "Predict the digit in each image file with the active model."

    def add_arguments(self, parser):
        parser.add_argument("files", nargs="+", help="Image files (PNG, JPEG, WebP, GIF, BMP).")
        parser.add_argument("--json", action="store_true", help="Print one JSON object per line.")

    def handle(self, *args, **options):
        failures = 0
        for name in options["files"]:
            try:
                result = serving.predict_image(Path(name).read_bytes())
            except (OSError, DrawingError) as exc:
                failures += 1
                self.report_error(name, exc, options["json"])
                continue
            except serving.NoActiveModel as exc:
                raise CommandError(str(exc)) from exc
            if options["json"]:
                line = {"file": name, "digit": result.digit, "confidence": round(result.confidence, 4),
                        "probabilities": [round(p, 4) for p in result.probabilities]}
                self.stdout.write(json.dumps(line))
            else:
                unsure = " (unsure)" if result.uncertain else ""
                self.stdout.write(f"{name}: {result.digit} ({result.confidence:.0%}){unsure}")
        if failures:
            raise CommandError(f"{failures} of {len(options['files'])} files could not be predicted.", returncode=1)

    def report_error(self, name: str, exc: Exception, as_json: bool) -> None:
        message = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        if as_json:
            self.stdout.write(json.dumps({"file": name, "error": message}))
        else:
            self.stderr.write(f"{name}: {message}")
