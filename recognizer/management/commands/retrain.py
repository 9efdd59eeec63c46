from django.core.management.base import BaseCommand, CommandError

from recognizer import retraining
from recognizer.management.progress import progress_bar
from recognizer.models import TrainingRun


class Command(BaseCommand):
    help = ("Retrain on MNIST plus the trusted user drawings, in the foreground, exactly as the Celery task does; "
            "the new version goes live only if it passes the promotion gate.")

    def handle(self, *args, **options):
        with progress_bar("Retraining", enabled=options["verbosity"] > 0) as progress:
            run, created = retraining.retrain_in_foreground(TrainingRun.Trigger.COMMAND, echo=progress)
        if not created:
            raise CommandError(f"A retrain is already {run.status}: run {run.pk} (task {run.task_id}).")
        if run.status == TrainingRun.Status.FAILED:
            raise CommandError(f"Training run {run.pk} failed: {run.error.splitlines()[0] if run.error else ''}")
        decision = run.decision
        self.stdout.write(f"Training run {run.pk}: {run.status}, {run.duration_seconds:.1f} s")
        self.stdout.write(f"Data: {run.data_counts.get('mnist_train')} MNIST, {run.data_counts.get('user_train')} "
                          f"user drawings trained on, {run.data_counts.get('holdout')} held out")
        self.stdout.write(f"{'model':<14}{'MNIST test':>12}{'held out':>12}")
        for name in ("active", "candidate"):
            figures = decision.get(name) or {}
            if figures.get("version") is None:
                continue
            self.stdout.write(f"{name + ' v' + str(figures['version']):<14}{_pct(figures.get('mnist_test')):>12}"
                              f"{_pct(figures.get('holdout')):>12}")
        for reason in decision.get("reasons", []):
            self.stdout.write(f"  - {reason}")
        style = self.style.SUCCESS if run.status == TrainingRun.Status.PROMOTED else self.style.WARNING
        self.stdout.write(style(f"Model v{run.model_version_id} {'is now active' if run.status == 'promoted' else 'was not promoted'}."))


def _pct(value) -> str:
    return "-" if value is None else f"{value * 100:.2f}%"
