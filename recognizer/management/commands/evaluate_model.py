from django.core.management.base import BaseCommand, CommandError

from recognizer import training, versions
from recognizer.ml import mnist, store
from recognizer.ml.evaluate import format_evaluation
from recognizer.models import ModelVersion


class Command(BaseCommand):
    help = ("Evaluate a model version (default: the active one) on the MNIST test set and on replayed canvas drawings "
            "by the pendigits writers it did not train on.")

    def add_arguments(self, parser):
        parser.add_argument("--model-version", type=int, help="Model version id (default: the active version).")
        parser.add_argument("--save", action="store_true", help="Record the figures on the version.")
        parser.add_argument("--report", metavar="DIR",
                            help="Also write the dashboard's charts (SVG) and a metrics table (metrics.md) into DIR.")

    def handle(self, *args, **options):
        queryset = ModelVersion.objects.all()
        version = (queryset.filter(pk=options["model_version"]) if options["model_version"] else queryset.filter(is_active=True)).first()
        if version is None:
            raise CommandError("No such model version." if options["model_version"] else "No model is active: run train_model.")
        try:
            estimator = versions.load_estimator(version.file, version.sha256)
        except (store.CorruptModelError, OSError) as exc:
            raise CommandError(f"Model v{version.pk} cannot be loaded: {exc}") from exc
        data = mnist.load_training_data(training.mnist_directory())
        if getattr(data, "warning", ""):
            self.stderr.write(self.style.WARNING(data.warning))
        seen = (version.metadata.get("pen_data") or {}).get("pendigits_writers", ())
        metrics = training.evaluation_metrics(estimator, data, seen_writers=seen)
        self.stdout.write(f"Model v{version.pk}\n" + format_evaluation(metrics))
        note = training.no_canvas_figure_note(metrics, seen)
        if note:
            self.stdout.write(note)
        if options["save"]:
            version.metrics = metrics
            version.save(update_fields=["metrics"])
            self.stdout.write(self.style.SUCCESS(f"Saved the figures on v{version.pk}."))
        if options["report"]:
            from recognizer import insights

            written = insights.write_report(options["report"], version, metrics)
            self.stdout.write(f"Wrote {len(written)} files to {options['report']}: "
                              + ", ".join(p.name for p in written))
