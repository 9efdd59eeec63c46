"""`manage.py retrain` runs the same retrain in the foreground."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command

from recognizer import retraining
from recognizer.models import TrainingRun

pytestmark = [pytest.mark.django_db, pytest.mark.filterwarnings("ignore:WARNING. MNIST was NOT found:RuntimeWarning")]


def test_the_retrain_command_reports_the_decision(tiny_training, active_model):
    out = io.StringIO()
    call_command("retrain", stdout=out, verbosity=0)
    run = TrainingRun.objects.get()
    assert run.trigger == "command" and run.status in ("promoted", "not_promoted")
    assert f"Training run {run.pk}" in out.getvalue() and "MNIST test" in out.getvalue()


def test_the_retrain_command_refuses_while_another_runs(tiny_training):
    running, _ = retraining.start_retrain("staff", enqueue=False)
    with pytest.raises(CommandError, match=f"run {running.pk}"):
        call_command("retrain", verbosity=0)
