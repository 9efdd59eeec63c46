"""The feedback loop through real processes: redis-server on loopback, a Celery worker, manage.py."""

from __future__ import annotations

import json
import os
import signal

import pytest

from tests.redis_helpers import wait_for

pytestmark = pytest.mark.integration

START = "from recognizer import retraining; run, created = retraining.start_retrain('staff'); print(run.pk)"
SERVE = ("from recognizer import serving; from tests.conftest import draw_digit_png; "
         "print(serving.predict_image(draw_digit_png(1)).model_version)")


def test_a_retrain_sent_through_redis_activates_a_new_version(site):
    old = site.active_version()
    site.start_worker()
    run_id = int(site.python(START))  # queued, then sent to the broker when the transaction commits
    row = wait_for(lambda: (r := site.run_row(run_id))["status"] in ("promoted", "not_promoted", "failed") and r,
                   90, "the retrain to finish")
    assert row["status"] == "promoted", row
    assert site.active_version() == row["model_version_id"] != old
    assert int(site.python(SERVE)) == row["model_version_id"]


def test_killing_the_worker_mid_training_leaves_the_old_model_serving(site):
    old = site.active_version()
    worker = site.start_worker(slow_training_seconds=60)
    run_id = int(site.python(START))
    wait_for(lambda: site.run_row(run_id)["stage"] == "features", 60, "training to start")
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    assert site.run_row(run_id)["status"] == "running"  # nobody has noticed yet
    assert site.active_version() == old
    assert int(site.python(SERVE)) == old

    # The next look at the lock (here the reaper the beat runs every minute) marks it failed and frees it.
    site.python("from recognizer import tasks; print(tasks.reap_stale_training_runs())")
    row = site.run_row(run_id)
    assert row["status"] == "failed" and "died" in row["error"] and not row["holds_lock"]

    site.start_worker()
    retry = int(site.python(START))
    assert retry != run_id
    row = wait_for(lambda: (r := site.run_row(retry))["status"] in ("promoted", "not_promoted", "failed") and r,
                   90, "the second retrain to finish")
    assert row["status"] == "promoted", row


LABEL = ("from django.contrib.auth import get_user_model; from recognizer import feedback, serving; "
         "from recognizer.models import TrainingRun; from tests.conftest import draw_digit_png; "
         "carol = get_user_model().objects.create_user('carol', password='carol-password-1'); "
         "feedback.label_drawing(serving.predict_image(draw_digit_png(1), carol).drawing, 1); "
         "print(TrainingRun.objects.count())")


def test_a_label_past_the_threshold_starts_a_retrain_from_the_worker_not_the_labelling_process(site):
    site.env.update(RECOGNIZER_RETRAIN_AFTER="1", RECOGNIZER_RETRAIN_CHECK_DELAY="1")
    site.start_worker()
    assert site.python(LABEL) == "0"  # the labelling process counted nothing and started nothing
    runs = wait_for(lambda: site.query("SELECT id, trigger FROM recognizer_trainingrun"), 30,
                    "the worker's threshold check to start a retrain")
    assert [trigger for _, trigger in runs] == ["threshold"]
    row = wait_for(lambda: (r := site.run_row(runs[0][0]))["status"] in ("promoted", "not_promoted", "failed") and r,
                   90, "the retrain to finish")
    assert row["status"] in ("promoted", "not_promoted"), row


LABEL_MANY = ("from django.contrib.auth import get_user_model; from recognizer import feedback, serving; "
              "from tests.conftest import draw_digit_png\n"
              "for name in ('ann', 'ben', 'cat', 'dan'):\n"
              "    user = get_user_model().objects.create_user(name, password=name + '-password-1')\n"
              "    for digit in range(10):\n"
              "        feedback.label_drawing(serving.predict_image(draw_digit_png(digit), user).drawing, digit)\n"
              "print(40)")


def test_a_retrain_spreads_its_ranking_over_two_workers_and_promotes(site):
    site.env.update(RECOGNIZER_RETRAIN_SPREAD_MIN="20", RECOGNIZER_RETRAIN_PART_SIZE="4")
    assert site.python(LABEL_MANY) == "40"
    old = site.active_version()
    site.start_worker()
    site.start_worker()
    run_id = int(site.python(START))
    row = wait_for(lambda: (r := site.run_row(run_id))["status"] in ("promoted", "not_promoted", "failed") and r,
                   120, "the spread retrain to finish")
    assert row["status"] == "promoted" and not row["holds_lock"], row
    assert site.active_version() == row["model_version_id"] != old
    counts = json.loads(site.query("SELECT data_counts FROM recognizer_trainingrun WHERE id = ?", run_id)[0][0])
    assert counts["ranking"]["spread"] == {"parts": 10, "drawings": 40, "computed": 40, "failed": [], "skipped": 0}
    logs = [(site.directory / f"worker-{i}.log").read_text() for i in range(2)]
    ran = [log.count("recognizer.tasks.compute_evidence_part[") for log in logs]
    assert all(ran), ran  # both workers took parts (each line: received, then succeeded)
    assert sum("finish_spread_retrain[" in log for log in logs) == 1
