from django.core.management.base import BaseCommand, CommandError

from recognizer import training
from recognizer.management.progress import progress_bar
from recognizer.ml.common import KindUnavailable
from recognizer.ml.evaluate import format_evaluation
from recognizer.ml.kinds import MODEL_KINDS, get_kind
from recognizer.models import ModelVersion


class Command(BaseCommand):
    help = ("Train a model (k-NN by default, --kind svm) on MNIST (or the bundled fallback digits), store it as a "
            "new version, show its metrics.")

    def add_arguments(self, parser):
        parser.add_argument("--limit", type=int, default=None,
                            help="Train on the first N MNIST training digits (default: RECOGNIZER_TRAIN_LIMIT, 0 = all).")
        parser.add_argument("--activate", action="store_true",
                            help="Make the new version active (by default only when no version is active).")
        parser.add_argument("--no-cv", action="store_true", help="Skip cross-validation and use default hyperparameters.")
        parser.add_argument("--kind", choices=MODEL_KINDS, default="knn",
                            help="knn (the default, the one the retrain uses), svm (RBF SVC on the same features) or "
                                 "cnn (the tutorial CNN; needs `pip install -r requirements-cnn.txt`).")
        parser.add_argument("--if-none", action="store_true",
                            help="Do nothing when an active model exists (used by the quickstart).")

    def handle(self, *args, **options):
        from django.conf import settings

        if options["if_none"] and ModelVersion.objects.filter(is_active=True).exists():
            self.stdout.write("An active model exists; nothing to train.")
            return
        try:
            get_kind(options["kind"]).require_available()
        except KindUnavailable as exc:
            raise CommandError(str(exc)) from exc
        limit = options["limit"] if options["limit"] is not None else settings.RECOGNIZER_TRAIN_LIMIT
        with progress_bar("Training", enabled=options["verbosity"] > 0) as progress:
            outcome = training.train_new_model(
                limit=limit, activate=True if options["activate"] else None, cv=not options["no_cv"], progress=progress,
                kind=options["kind"],
            )
        if outcome.warning:
            self.stderr.write(self.style.WARNING(outcome.warning))
        version = outcome.version
        self.stdout.write(f"Model v{version.pk}\n" + format_evaluation(outcome.metrics, confusion=False))
        self.stdout.write(f"Hyperparameters: {version.metadata.get('hyperparameters')}")
        pen = version.metadata.get("pen_data")
        if pen:
            self.stdout.write(f"Pen data: {pen['pen_samples']} canvas renderings of {pen['pen_drawings']} trajectories "
                              f"by {len(pen['pendigits_writers'])} pendigits writers (ids in the model's metadata)")
            note = training.no_canvas_figure_note(outcome.metrics, pen["pendigits_writers"])
            if note:
                self.stdout.write(note)
        state = "active" if outcome.activated else "stored, not active (use --activate)"
        self.stdout.write(self.style.SUCCESS(f"Model v{version.pk} ({version.file}) {state}."))
