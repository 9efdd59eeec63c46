"""recognizer.insights: the figures behind the dashboard, My drawings and evaluate_model --report."""

from __future__ import annotations

import datetime as dt

import pytest
from django.core.files.base import ContentFile
from django.utils import timezone

from recognizer import insights
from recognizer.models import Drawing, ModelVersion, TrainingRun
from tests.conftest import draw_digit_png


def make_drawing(user, predicted: int, label: int | None = None, *, version=None, days_ago: int = 0,
                 status: str = Drawing.Status.PENDING) -> Drawing:
    drawing = Drawing(user=user, preprocessed=bytes(784), predicted_digit=predicted, confidence=0.9,
                      probabilities=[0.1] * 10, model_version=version, label=label, status=status,
                      labelled_at=timezone.now() if label is not None else None)
    drawing.image.save("d.png", ContentFile(draw_digit_png(1, size=28)), save=False)
    drawing.save()
    if days_ago:
        Drawing.objects.filter(pk=drawing.pk).update(created_at=timezone.now() - dt.timedelta(days=days_ago))
    return drawing


@pytest.mark.django_db
def test_user_accuracy_counts_right_and_ranks_the_digits_it_gets_wrong(alice, bob):
    for predicted, label in [(7, 7), (1, 7), (1, 7), (9, 7), (3, 3), (5, 3), (2, 2), (4, 4)]:
        make_drawing(alice, predicted, label)
    make_drawing(alice, 6)  # not labelled: does not count
    make_drawing(bob, 0, 8)  # someone else's
    figures = insights.user_accuracy(alice)
    assert (figures["labelled"], figures["right"], figures["wrong"]) == (8, 4, 4)
    assert figures["accuracy"] == 0.5 and figures["percent"] == "50 %"
    assert [w["digit"] for w in figures["worst"]] == [7, 3]
    assert figures["worst"][0]["read_as"] == [(1, 2), (9, 1)]
    assert figures["worst"][0]["total"] == 4 and figures["worst"][0]["wrong"] == 3


@pytest.mark.django_db
def test_user_accuracy_without_labels(alice):
    make_drawing(alice, 3)
    assert insights.user_accuracy(alice) == {"labelled": 0, "right": 0, "wrong": 0, "accuracy": None,
                                             "percent": None, "worst": []}


@pytest.mark.django_db
def test_user_confusion_is_for_that_version_and_leaves_out_rejected_labels(alice, active_model):
    other = ModelVersion.objects.create(file="models/other.joblib", sha256="0" * 64)
    make_drawing(alice, 1, 7, version=active_model)
    make_drawing(alice, 7, 7, version=active_model)
    make_drawing(alice, 7, 7, version=active_model)
    make_drawing(alice, 2, 2, version=other)
    make_drawing(alice, 0, 6, version=active_model, status=Drawing.Status.REJECTED)
    make_drawing(alice, 4, None, version=active_model)
    m = insights.user_confusion(active_model)
    assert m[7][1] == 1 and m[7][7] == 2 and sum(map(sum, m)) == 3
    assert insights.user_accuracy_for_version(active_model) == {"n": 3, "right": 2, "accuracy": pytest.approx(2 / 3)}


@pytest.mark.django_db
def test_drawings_by_day_fills_gaps_and_computes_the_corrected_share(alice):
    today = timezone.localdate()
    make_drawing(alice, 1, 1, days_ago=3)
    make_drawing(alice, 1, 7, days_ago=3)
    make_drawing(alice, 2, None, days_ago=3)
    make_drawing(alice, 5, 5)
    figures = insights.drawings_by_day(today=today)
    assert figures["days"] == [today - dt.timedelta(days=i) for i in (3, 2, 1, 0)]
    assert figures["total"] == [3, 0, 0, 1]
    assert figures["labelled"] == [2, 0, 0, 1]
    assert figures["share"] == [0.5, None, None, 0.0]
    assert insights.drawings_by_digit() == {"labelled": [0, 1, 0, 0, 0, 1, 0, 1, 0, 0],
                                            "predicted_only": [0, 0, 1, 0, 0, 0, 0, 0, 0, 0]}


@pytest.mark.django_db
def test_accuracy_history_takes_holdout_from_the_version_or_a_later_runs_decision():
    v1 = ModelVersion.objects.create(file="a", sha256="0" * 64, metrics={"mnist_test": {"accuracy": 0.96}})
    v2 = ModelVersion.objects.create(file="b", sha256="0" * 64, is_active=True,
                                     metrics={"mnist_test": {"accuracy": 0.97}, "holdout": 0.9})
    TrainingRun.objects.create(trigger="command", decision={"candidate": {"version": v2.pk, "holdout": 0.9},
                                                            "active": {"version": v1.pk, "holdout": 0.8}})
    history = insights.accuracy_history()
    assert history["ids"] == [v1.pk, v2.pk]
    assert history["mnist"] == [0.96, 0.97] and history["holdout"] == [0.8, 0.9]
    assert history["active"].startswith(f"v{v2.pk}\n")


@pytest.mark.django_db
def test_a_stored_canvas_figure_on_writers_the_model_trained_on_is_not_shown():
    # versions trained before that figure was dropped stored it, marked; a figure on unseen writers shows
    seen = {"accuracy": 1.0, "n": 2000, "per_digit": [1.0] * 10, "writers_seen_in_training": True}
    unseen = {"accuracy": 0.97, "n": 2000, "per_digit": [0.97] * 10, "writers_seen_in_training": False}
    mnist = {"accuracy": 0.96, "n": 10000, "per_digit": [0.96] * 10}
    old = ModelVersion.objects.create(file="a", sha256="0" * 64, metrics={"mnist_test": mnist, "canvas": seen})
    other = ModelVersion.objects.create(file="b", sha256="0" * 64, is_active=True,
                                        metrics={"mnist_test": {"accuracy": 0.97}, "canvas": unseen})
    assert insights.accuracy_history()["canvas"] == [None, 0.97]
    assert insights.model_summary(old)["canvas"] is None and insights.model_summary(other)["canvas"] == 0.97
    report = insights.metrics_markdown(old)
    assert "| canvas (replayed pen digits) accuracy | - |" in report
    assert "| digit | mnist_test |" in report and "100.00 %" not in report

    from django.contrib.admin.sites import site

    admin = site._registry[ModelVersion]
    assert admin.canvas_accuracy(old) == "-" and admin.canvas_accuracy(other) == "97.00%"


@pytest.mark.django_db
def test_last_cv_curve_skips_versions_trained_without_cross_validation():
    assert insights.last_cv_curve() is None
    with_cv = ModelVersion.objects.create(file="a", sha256="0" * 64, metadata={
        "cv_curve": {"k": [1, 3], "accuracy": [0.9, 0.93], "pca_components": 40, "weights": "distance"},
        "hyperparameters": {"n_neighbors": 3}})
    ModelVersion.objects.create(file="b", sha256="0" * 64, metadata={"cv_curve": {"k": [], "accuracy": []}})
    curve = insights.last_cv_curve()
    assert curve["version"] == with_cv.pk and curve["k"] == [1, 3] and curve["chosen_k"] == 3


@pytest.mark.django_db
def test_build_charts_on_an_empty_database_gives_messages_not_charts():
    charts = insights.build_charts()
    assert [c.key for c in charts] == ["accuracy", "confusion", "cv", "per_day", "per_digit", "corrections"]
    assert all(c.svg is None and c.empty for c in charts)


@pytest.mark.django_db
def test_build_charts_caches_by_content(alice, active_model, monkeypatch):
    from django.core.cache import cache

    from recognizer import charts as chart_module

    cache.clear()
    make_drawing(alice, 1, 7, version=active_model)
    calls = []
    real = chart_module.confusion_heatmap
    monkeypatch.setattr(chart_module, "confusion_heatmap", lambda *a, **k: calls.append(1) or real(*a, **k))
    first = {c.key: c.svg for c in insights.build_charts()}
    again = {c.key: c.svg for c in insights.build_charts()}
    assert first == again and len(calls) == 1 and "<svg" in first["confusion"]
    make_drawing(alice, 7, 7, version=active_model)  # new figures: a new chart
    assert {c.key: c.svg for c in insights.build_charts()}["confusion"] != first["confusion"]
    assert len(calls) == 2
