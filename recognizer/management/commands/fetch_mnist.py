from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from recognizer.management.progress import progress_bar
from recognizer.ml import mnist


class Command(BaseCommand):
    help = "Download the four MNIST files from public mirrors and verify their SHA-256."

    def add_arguments(self, parser):
        parser.add_argument("--dest", default=str(Path(settings.RECOGNIZER_DATA_DIR) / "mnist"),
                            help="Directory to download into (default: RECOGNIZER_DATA_DIR/mnist).")

    def handle(self, *args, **options):
        dest = Path(options["dest"])
        try:
            with progress_bar("Downloading MNIST", enabled=options["verbosity"] > 0) as progress:
                mnist.fetch_mnist(dest, progress=progress)
        except mnist.FetchError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(self.style.SUCCESS(f"MNIST is in {dest}, checksums verified."))
