"""The feedback loop's service layer: trusted labels, the held-out users, the lock, the gate and runs."""

from __future__ import annotations

import pytest

from recognizer import dispatch, feedback, promotion, retraining, serving, tasks, training, versions
from recognizer.models import Drawing, ModelVersion, TrainingRun
from tests.training_helpers import make_drawing

pytestmark = [pytest.mark.django_db, pytest.mark.filterwarnings("ignore:WARNING. MNIST was NOT found:RuntimeWarning")]


def label_some(user, data, n, *, start=0, wrong=False, **kw):
    drawings = []
    for i in range(start, start + n):
        label = int(data.test_labels[i])
        drawings.append(make_drawing(user, data.test_images[i], (label + 1) % 10 if wrong else label, **kw))
    return drawings


# --- trust and holdout ---


def test_an_owner_label_is_trusted_without_review(settings, alice, fallback_data):
    settings.RECOGNIZER_REQUIRE_REVIEW = False
    kept = make_drawing(alice, fallback_data.test_images[0], 3)
    make_drawing(alice, fallback_data.test_images[1], 4, status=Drawing.Status.REJECTED)
    make_drawing(alice, fallback_data.test_images[2], None)
    flagged = make_drawing(alice, fallback_data.test_images[3], 5)
    Drawing.objects.filter(pk=flagged.pk).update(suspicious=True)  # flagged for review first, still the owner's label
    assert set(Drawing.objects.trusted()) == {kept, flagged}


def test_only_approved_labels_are_trusted_when_review_is_required(settings, alice, fallback_data):
    settings.RECOGNIZER_REQUIRE_REVIEW = True
    make_drawing(alice, fallback_data.test_images[0], 3)
    approved = make_drawing(alice, fallback_data.test_images[1], 4, status=Drawing.Status.APPROVED)
    approved.suspicious = True  # staff have the last word over the ranking
    approved.save()
    assert list(Drawing.objects.trusted()) == [approved]


def test_the_holdout_is_deterministic_and_splits_by_user(settings):
    settings.RECOGNIZER_HOLDOUT_SHARE = 0.3
    first = [feedback.is_holdout_user(u) for u in range(1, 201)]
    assert first == [feedback.is_holdout_user(u) for u in range(1, 201)]
    assert 0.2 < sum(first) / len(first) < 0.4
    settings.RECOGNIZER_HOLDOUT_SHARE = 0.0
    assert not any(feedback.is_holdout_user(u) for u in range(1, 50))


def test_a_held_out_users_drawings_are_never_trained_on(settings, alice, bob, fallback_data):
    settings.RECOGNIZER_HOLDOUT_SHARE = 0.5
    label_some(alice, fallback_data, 5)
    label_some(bob, fallback_data, 5, start=5)
    train, holdout = feedback.split_trusted()
    assert len(train) + len(holdout) == 10
    held_users = {u for u in (alice.pk, bob.pk) if feedback.is_holdout_user(u)}
    assert not set(train.users) & held_users
    assert held_users <= set(holdout.users)  # training users' drawings join it only for digits it lacks


# --- the lock ---


def test_a_second_retrain_request_gets_the_running_ones_id(staff):
    first, created = retraining.start_retrain(TrainingRun.Trigger.STAFF, staff, enqueue=False)
    second, created_again = retraining.start_retrain(TrainingRun.Trigger.SCHEDULE, enqueue=False)
    assert created and not created_again
    assert second.pk == first.pk and second.task_id == first.task_id


def test_a_run_with_a_stale_heartbeat_is_failed_and_frees_the_lock(settings):
    from datetime import timedelta

    from django.utils import timezone

    run, _ = retraining.start_retrain(TrainingRun.Trigger.STAFF, enqueue=False)
    TrainingRun.objects.filter(pk=run.pk).update(
        status="running", heartbeat_at=timezone.now() - timedelta(seconds=settings.RECOGNIZER_RETRAIN_LOCK_TIMEOUT + 5))
    fresh, created = retraining.start_retrain(TrainingRun.Trigger.STAFF, enqueue=False)
    run.refresh_from_db()
    assert created and fresh.pk != run.pk
    assert run.status == "failed" and not run.holds_lock and "heartbeat" in run.error


def test_a_run_whose_local_worker_process_died_is_failed_at_once():
    import socket
    import subprocess

    child = subprocess.Popen(["true"])
    child.wait()
    run, _ = retraining.start_retrain(TrainingRun.Trigger.STAFF, enqueue=False)
    TrainingRun.objects.filter(pk=run.pk).update(status="running", worker=f"{socket.gethostname()}:{child.pid}")
    assert retraining.reap_stale_runs() == [run.pk]
    run.refresh_from_db()
    assert run.status == "failed" and "died" in run.error


def test_a_retrain_that_could_not_be_queued_is_sent_again_once_the_broker_is_back(staff):
    unsent = TrainingRun.objects.create(trigger="staff", started_by=staff, status="failed",
                                        error=f"{retraining.UNQUEUED}: Error 111 connecting to 127.0.0.1:6379.")
    retried = retraining.retry_unqueued_retrain()
    assert retried is not None and retried.pk != unsent.pk
    assert retried.status == "queued" and retried.holds_lock
    assert retried.trigger == "staff" and retried.started_by == staff
    assert retraining.retry_unqueued_retrain() is None  # the new run supersedes it: sent once, not every minute


def test_only_a_recent_unqueued_retrain_is_sent_again(staff):
    from datetime import timedelta

    from django.utils import timezone

    TrainingRun.objects.create(trigger="staff", status="failed", error="ValueError: the training data is empty")
    assert retraining.retry_unqueued_retrain() is None  # failed for another reason: not retried
    old = TrainingRun.objects.create(trigger="staff", status="failed", error=f"{retraining.UNQUEUED}: refused")
    TrainingRun.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=2))
    assert retraining.retry_unqueued_retrain() is None
    assert not TrainingRun.objects.filter(holds_lock=True).exists()


def test_the_database_allows_only_one_run_to_hold_the_lock():
    from django.db import IntegrityError, transaction

    TrainingRun.objects.create(trigger="staff", holds_lock=True)
    with pytest.raises(IntegrityError), transaction.atomic():
        TrainingRun.objects.create(trigger="schedule", holds_lock=True)


# --- the gate ---


def test_the_gate_promotes_within_the_tolerance(settings):
    settings.RECOGNIZER_PROMOTION_TOLERANCE = 0.003
    settings.RECOGNIZER_HOLDOUT_TOLERANCE = 0.01
    assert promotion.gate({"mnist_test": 0.9675, "holdout": 0.80}, {"mnist_test": 0.97, "holdout": 0.805})["promote"]


def test_the_gate_refuses_a_drop_on_either_set(settings):
    settings.RECOGNIZER_PROMOTION_TOLERANCE = 0.003
    settings.RECOGNIZER_HOLDOUT_TOLERANCE = 0.01
    assert not promotion.gate({"mnist_test": 0.96, "holdout": 0.9}, {"mnist_test": 0.97, "holdout": 0.8})["promote"]
    worse_holdout = promotion.gate({"mnist_test": 0.98, "holdout": 0.7}, {"mnist_test": 0.97, "holdout": 0.8})
    assert not worse_holdout["promote"] and "held-out" in worse_holdout["reasons"][0]


def test_the_gate_promotes_the_first_model():
    assert promotion.gate({"mnist_test": 0.5, "holdout": None}, None)["promote"]


# --- retraining end to end (eager) ---


def test_a_retrain_trains_on_user_drawings_and_promotes_the_candidate(tiny_training, active_model, alice, bob,
                                                                       fallback_data, monkeypatch):
    # bob validates, alice trains: whichever ids the database gave them (on PostgreSQL they depend on the
    # tests that ran before, and both could be held out)
    monkeypatch.setattr(feedback.training_data, "is_holdout_user", lambda user_id: user_id == bob.pk)
    label_some(alice, fallback_data, 30)
    label_some(bob, fallback_data, 30, start=30)
    result = tasks.retrain.delay(trigger="schedule").get()
    run = TrainingRun.objects.get(pk=result["run"])
    assert run.status == "promoted", run.decision
    assert run.trigger == "schedule" and run.progress == 1.0 and not run.holds_lock
    assert run.data_counts["user_train"] + run.data_counts["holdout"] == 60
    assert run.data_counts["mnist_train"] > 1000 and run.data_counts["user_train_by_label"]
    assert run.decision["active"]["version"] == active_model.pk
    assert {"mnist_test", "holdout"} <= set(run.decision["candidate"])
    new = ModelVersion.objects.get(is_active=True)
    assert new.pk == run.model_version_id != active_model.pk
    assert serving.model_cache.get().version_id == new.pk
    assert run.duration_seconds > 0


def test_a_worse_candidate_is_not_promoted(tiny_training, active_model, alice, fallback_data):
    tiny_training.RECOGNIZER_TRAIN_LIMIT = 40  # a candidate that saw 40 digits is far worse
    label_some(alice, fallback_data, 10)
    run, created = retraining.retrain_in_foreground()
    assert created and run.status == "not_promoted"
    assert not run.decision["promote"] and "MNIST test accuracy drops" in run.decision["reasons"][0]
    assert run.decision["candidate"]["mnist_test"] < run.decision["active"]["mnist_test"]
    assert ModelVersion.objects.get(is_active=True).pk == active_model.pk
    assert ModelVersion.objects.get(pk=run.model_version_id).metadata["gate"]["promote"] is False


def test_a_failing_retrain_is_recorded_and_the_old_model_keeps_serving(tiny_training, active_model, monkeypatch):
    def boom(**kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(training, "train_new_model", boom)
    run, _ = retraining.retrain_in_foreground()
    assert run.status == "failed" and "disk full" in run.error and not run.holds_lock
    assert ModelVersion.objects.get(is_active=True).pk == active_model.pk
    assert retraining.live_run() is None


def test_an_activation_during_training_stops_the_promotion(tiny_training, active_model, small_training_result,
                                                          settings, monkeypatch):
    from recognizer.ml import store

    data, result = small_training_result
    saved = store.save_model(result.estimator, {}, settings.RECOGNIZER_MODEL_DIR)
    other = versions.register_model(saved, kind="knn", data_source="x", metrics={})
    real_train = training.train_new_model

    def train_then_someone_activates(**kwargs):
        outcome = real_train(**kwargs)
        versions.activate(other)
        return outcome

    monkeypatch.setattr(training, "train_new_model", train_then_someone_activates)
    run, _ = retraining.retrain_in_foreground()
    assert ModelVersion.objects.get(is_active=True).pk == other.pk
    assert run.status == "not_promoted"


def test_enough_new_labels_start_a_retrain_early(tiny_training, active_model, alice, fallback_data,
                                                 django_capture_on_commit_callbacks):
    tiny_training.RECOGNIZER_RETRAIN_AFTER = 3
    drawings = label_some(alice, fallback_data, 3)
    with django_capture_on_commit_callbacks(execute=True):
        feedback.label_drawing(drawings[0], drawings[0].label)
    run = TrainingRun.objects.get()
    assert run.trigger == "threshold" and run.status in ("promoted", "not_promoted")


def test_fewer_new_labels_do_not_start_a_retrain(tiny_training, alice, fallback_data,
                                                 django_capture_on_commit_callbacks):
    tiny_training.RECOGNIZER_RETRAIN_AFTER = 5
    drawings = label_some(alice, fallback_data, 3)
    with django_capture_on_commit_callbacks(execute=True):
        feedback.label_drawing(drawings[0], 1)
    assert not TrainingRun.objects.exists()


def test_a_label_makes_no_count_and_queues_one_delayed_check_for_a_worker(alice, fallback_data, settings, monkeypatch,
                                                                           django_capture_on_commit_callbacks):
    from django.core.cache import cache
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    settings.RECOGNIZER_RETRAIN_AFTER = 1
    settings.RECOGNIZER_RETRAIN_CHECK_DELAY = 30
    cache.delete(dispatch.THRESHOLD_CHECK_QUEUED)
    sent = []
    monkeypatch.setattr(tasks.check_retrain_threshold, "apply_async", lambda **kw: sent.append(kw))
    drawings = label_some(alice, fallback_data, 3)
    with CaptureQueriesContext(connection) as queries, django_capture_on_commit_callbacks(execute=True):
        for drawing in drawings:
            feedback.label_drawing(drawing, drawing.label)
    # The labels count nothing and touch no run: that is the worker's, 30 s later, once for all three.
    sql = [q["sql"] for q in queries.captured_queries]
    assert sql and not [q for q in sql if "COUNT(" in q.upper() or "recognizer_trainingrun" in q]
    assert len(sent) == 1 and sent[0]["countdown"] == 30
    assert not TrainingRun.objects.exists()
    assert tasks.check_retrain_threshold() is not None  # what the worker then runs: past the threshold
    assert TrainingRun.objects.get().trigger == "threshold"


def test_a_label_whose_check_could_not_be_queued_lets_the_next_label_try_again(alice, fallback_data, settings,
                                                                               monkeypatch,
                                                                               django_capture_on_commit_callbacks):
    from django.core.cache import cache
    from kombu.exceptions import OperationalError

    settings.RECOGNIZER_RETRAIN_CHECK_DELAY = 30
    cache.delete(dispatch.THRESHOLD_CHECK_QUEUED)
    attempts = []

    def broker_down(**kw):
        attempts.append(kw)
        raise OperationalError("Connection refused")

    monkeypatch.setattr(tasks.check_retrain_threshold, "apply_async", broker_down)
    first, second = label_some(alice, fallback_data, 2)
    with django_capture_on_commit_callbacks(execute=True):
        assert feedback.label_drawing(first, 1).label == 1  # the label is kept
        feedback.label_drawing(second, 2)
    assert len(attempts) == 2


# --- suspicious labels ---


def test_labels_the_model_strongly_disagrees_with_are_flagged(tiny_training, active_model, alice, bob,
                                                              fallback_data):
    good = label_some(alice, fallback_data, 60)
    bad = label_some(bob, fallback_data, 15, start=60, wrong=True)
    summary = feedback.flag_suspicious_labels()
    assert summary["ranked"] == 75
    flagged = set(Drawing.objects.filter(suspicious=True).values_list("id", flat=True))
    assert len(flagged & {d.pk for d in bad}) >= 12
    assert len(flagged & {d.pk for d in good}) <= 3
    first = Drawing.objects.order_by("-suspicious", "-suspicion_score").first()
    assert first.pk in {d.pk for d in bad}


def test_a_user_cannot_vouch_for_their_own_wrong_labels(tiny_training, active_model, alice, bob, fallback_data):
    tiny_training.RECOGNIZER_HOLDOUT_SHARE = 0.0
    label_some(alice, fallback_data, 40)
    bad = label_some(bob, fallback_data, 40, start=40, wrong=True)  # many, consistent, all wrong
    run, _ = retraining.retrain_in_foreground()  # bob's labels were not yet flagged: this model learned them
    est = serving.model_cache.get().estimator if run.status == "promoted" else None
    if est is None:

        version = ModelVersion.objects.get(pk=run.model_version_id)
        est = versions.load_estimator(version.file, version.sha256)
    feedback.flag_suspicious_labels(est)
    flagged = set(Drawing.objects.filter(suspicious=True).values_list("id", flat=True))
    assert len(flagged & {d.pk for d in bad}) >= 30


def test_a_run_reaped_while_training_does_not_touch_the_active_model(tiny_training, active_model, monkeypatch):
    real_train = training.train_new_model

    def train_then_get_reaped(**kwargs):
        outcome = real_train(**kwargs)
        TrainingRun.objects.update(status="failed", holds_lock=False, error="reaped")
        return outcome

    monkeypatch.setattr(training, "train_new_model", train_then_get_reaped)
    run, _ = retraining.retrain_in_foreground()
    assert run.status == "failed" and "lost the retrain lock" in run.error
    assert ModelVersion.objects.get(is_active=True).pk == active_model.pk


# --- a retrain spread over the workers ---


@pytest.fixture
def spread(tiny_training, monkeypatch):
    monkeypatch.setattr(feedback.training_data, "is_holdout_user", lambda user_id: False)  # whatever ids the users got
    tiny_training.RECOGNIZER_RETRAIN_SPREAD_MIN = 20
    tiny_training.RECOGNIZER_RETRAIN_PART_SIZE = 25
    return tiny_training


def test_a_spread_retrain_sends_its_drawings_in_parts_and_finishes_after_them(spread, active_model, alice, bob,
                                                                              fallback_data, monkeypatch):
    label_some(alice, fallback_data, 30)
    label_some(bob, fallback_data, 30, start=30)
    sent = []
    monkeypatch.setattr(dispatch, "send_evidence_parts", lambda *args: sent.append(args))
    run, _ = retraining.start_retrain("staff", enqueue=False)
    run = retraining.execute_run(run, spread=True)
    # waiting for its parts: still holding the lock, with no worker the reaper could find dead
    assert run.status == "running" and run.holds_lock and run.worker == ""
    assert run.stage.startswith(retraining.SPREAD_STAGE) and "60 drawings in 3 parts" in run.stage
    (run_id, version_id, parts, share), = sent
    assert run_id == run.pk and version_id == active_model.pk
    assert [len(p) for p in parts] == [25, 25, 10] and sorted(sum(parts, [])) == sorted(
        Drawing.objects.values_list("pk", flat=True))
    assert retraining.reap_stale_runs() == []
    results = [retraining.compute_evidence_part(run.pk, version_id, ids, share) for ids in parts[::-1]]
    run.refresh_from_db()
    assert run.progress == pytest.approx(retraining.SPREAD_SHARE)
    assert [r["computed"] for r in results] == [10, 25, 25]
    run = retraining.finish_spread_run(run.pk, results)
    assert run.status == "promoted" and not run.holds_lock and run.progress == 1.0, run.error
    ranking = run.data_counts["ranking"]
    assert ranking["spread"] == {"parts": 3, "drawings": 60, "computed": 60, "failed": [], "skipped": 0}
    assert ranking["ranked"] == 60
    assert retraining.finish_spread_run(run.pk, results).status == "promoted"  # delivered twice: nothing done


def test_through_celery_a_failed_part_is_left_to_the_ranking_and_the_run_goes_on(spread, active_model, alice, bob,
                                                                                  fallback_data, monkeypatch):
    label_some(alice, fallback_data, 30)
    label_some(bob, fallback_data, 30, start=30)
    real, calls = feedback.precompute_evidence, []

    def second_part_fails(estimator, ids, names=None):
        calls.append(len(ids))
        if len(calls) == 2:
            raise MemoryError("out of memory")
        return real(estimator, ids, names)

    monkeypatch.setattr(feedback, "precompute_evidence", second_part_fails)
    result = tasks.retrain.delay(trigger="schedule").get()  # eager: the chord's parts and body run here
    run = TrainingRun.objects.get(pk=result["run"])
    assert run.status == "promoted" and result["status"] == "promoted", run.error
    spread = run.data_counts["ranking"]["spread"]
    assert calls == [25, 25, 10] and spread["parts"] == 3 and spread["computed"] == 35
    assert spread["failed"] == ["MemoryError: out of memory"]
    assert run.data_counts["ranking"]["ranked"] == 60


def test_the_retrain_command_and_small_sites_do_not_spread(spread, active_model, alice, fallback_data, monkeypatch):
    monkeypatch.setattr(dispatch, "send_evidence_parts", lambda *args: pytest.fail("sent parts"))
    label_some(alice, fallback_data, 30)
    run, _ = retraining.retrain_in_foreground()  # manage.py retrain: one process, whatever the size
    assert run.status in ("promoted", "not_promoted") and "spread" not in run.data_counts["ranking"]
    spread.RECOGNIZER_RETRAIN_SPREAD_MIN = 32
    label_some(alice, fallback_data, 1, start=30)  # 31 labelled drawings: fewer than the threshold
    result = tasks.retrain.delay(trigger="schedule").get()
    run = TrainingRun.objects.get(pk=result["run"])
    assert run.status in ("promoted", "not_promoted") and "spread" not in run.data_counts["ranking"]


def test_a_part_of_a_run_that_lost_its_lock_does_nothing(spread, active_model, alice, fallback_data):
    drawings = label_some(alice, fallback_data, 5)
    run, _ = retraining.start_retrain("staff", enqueue=False)
    TrainingRun.objects.filter(pk=run.pk).update(holds_lock=False, status="failed")
    result = retraining.compute_evidence_part(run.pk, active_model.pk, [d.pk for d in drawings], 0.1)
    assert result["skipped"] and not feedback.LabelEvidence.objects.exists()
    assert retraining.finish_spread_run(run.pk, [result]).status == "failed"


def test_the_gate_takes_the_active_models_mnist_figures_from_its_training(tiny_training, active_model, alice,
                                                                         fallback_data):
    """Measured when it was trained, on the same test set: not measured again at every retrain."""
    label_some(alice, fallback_data, 10)
    run, _ = retraining.retrain_in_foreground()
    trained = ModelVersion.objects.get(pk=run.model_version_id)
    versions.activate(trained)
    stored = dict(trained.metrics["mnist_test"])
    assert "per_digit" in stored
    marked = {**stored, "accuracy": stored["accuracy"] - 0.01}  # a value only the stored figures have
    ModelVersion.objects.filter(pk=trained.pk).update(metrics={**trained.metrics, "mnist_test": marked})
    run, _ = retraining.retrain_in_foreground()
    assert run.decision["active"]["version"] == trained.pk
    assert run.decision["active"]["mnist_test"] == pytest.approx(marked["accuracy"])
    versions.activate(trained)
    ModelVersion.objects.filter(pk=trained.pk).update(
        metrics={**trained.metrics, "mnist_test": {"accuracy": 0.1}})  # no per-digit figures: measured again
    run, _ = retraining.retrain_in_foreground()
    assert run.decision["active"]["mnist_test"] == pytest.approx(stored["accuracy"])
