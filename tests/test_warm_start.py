"""The canvas-domain warm start: a default model trains on MNIST (here the bundled fallback digits) plus
the pen writers' trajectories replayed as drawings, records which writers it saw, reads strokes, and
says so when there is no pen data. Tiny pen files are made by the tests; no download is needed."""

from __future__ import annotations

from io import StringIO

import numpy as np
import pytest
from django.core.management import call_command

from recognizer import training
from recognizer.ml import warmstart
from tests.stroke_helpers import jittered, unipen_text


@pytest.fixture
def pen_dir(tmp_path):
    d = tmp_path / "pendigits"
    d.mkdir()
    (d / "pendigits-orig.tra").write_text(unipen_text(per_digit=3, writers=(11, 12, 13)))
    return d


def test_pen_training_set_renders_every_variant_and_caches(pen_dir, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    pen = warmstart.pen_training_set(pen_dir, cache_dir=cache, exclude_writers=[13])
    n = 2 * 10 * 3  # two writers, ten digits, three each
    assert len(pen.labels) == n * len(warmstart.PEN_VARIANTS)
    assert pen.metadata["pendigits_writers"] == [11, 12]
    assert set(pen.writers.tolist()) == {11, 12}
    assert pen.images.shape[1:] == (28, 28) and 0.9 < pen.images.max() <= 1.0
    # one trajectory per drawing for the stroke model, not one per rendering
    assert sum(s is not None for s in pen.strokes) == n
    assert list(cache.glob("pen-renders-*.npz"))

    def no_rendering(*args, **kwargs):
        raise AssertionError("rendered again instead of reading the cache")

    monkeypatch.setattr(warmstart, "render_pen_variants", no_rendering)
    again = warmstart.pen_training_set(pen_dir, cache_dir=cache, exclude_writers=[13])
    assert np.array_equal(again.images, pen.images) and np.array_equal(again.labels, pen.labels)


def test_a_damaged_cache_is_rendered_again(pen_dir, tmp_path):
    cache = tmp_path / "cache"
    first = warmstart.pen_training_set(pen_dir, cache_dir=cache, writers=[11])
    for f in cache.glob("*.npz"):
        f.write_bytes(b"not an npz")
    again = warmstart.pen_training_set(pen_dir, cache_dir=cache, writers=[11])
    assert np.array_equal(first.images, again.images)


@pytest.mark.django_db
def test_the_default_model_trains_on_the_pen_writers_and_reads_strokes(settings, pen_dir):
    settings.RECOGNIZER_PEN_WARM_START = True
    settings.PENDIGITS_DIR = str(pen_dir)
    outcome = training.train_new_model(limit=600, cv=False)
    meta = outcome.version.metadata
    assert meta["pen_data"]["pendigits_writers"] == [11, 12, 13]
    assert meta["counts"]["pen_train"] == 90 * len(warmstart.PEN_VARIANTS)
    assert "pen data" not in outcome.warning
    est = outcome.extra["estimator"]
    assert est.reads_strokes and est.stroke_model_.train_features_.shape[0] == 90
    assert meta["hyperparameters"]["stroke_model"]["n_train"] == 90
    # it saw every writer in the file: no canvas figure is measured on them, nor stored
    assert "canvas" not in outcome.metrics and "canvas" not in outcome.version.metrics
    assert "canvas" not in meta["metrics"]
    assert training.no_canvas_figure_note(outcome.metrics, [11, 12, 13]) == training.NO_CANVAS_FIGURE
    # a writer it did not train on is measured, and only that writer's 30 drawings
    figures = training.evaluation_metrics(est, outcome.extra["data"], seen_writers=[11, 12])
    assert figures["canvas"]["n"] == 30 and training.no_canvas_figure_note(figures, [11, 12]) == ""
    # pen writers are their own training groups, apart from MNIST (-1) and users (ids > 0)
    assert set(np.unique(est.train_groups_[est.train_groups_ < -1]).tolist()) == {
        warmstart.writer_group(w) for w in (11, 12, 13)}
    image = np.random.default_rng(0).uniform(size=(28, 28)).astype(np.float32)
    assert est.predict_one(image, strokes=jittered(7, np.random.default_rng(1))).used_strokes


@pytest.mark.django_db
def test_without_pen_data_it_trains_on_mnist_alone_and_says_so(settings, tmp_path):
    settings.RECOGNIZER_PEN_WARM_START = True
    settings.PENDIGITS_DIR = str(tmp_path / "nowhere")
    outcome = training.train_new_model(limit=300, cv=False)
    assert "no pen data" in outcome.warning and "MNIST alone" in outcome.warning
    assert outcome.version.metadata["pen_data"] is None
    assert not outcome.extra["estimator"].reads_strokes


@pytest.mark.django_db
def test_train_model_says_what_pen_data_it_trained_on(settings, pen_dir):
    settings.RECOGNIZER_PEN_WARM_START = True
    settings.PENDIGITS_DIR = str(pen_dir)
    out = StringIO()
    call_command("train_model", "--limit", "300", "--no-cv", stdout=out, stderr=StringIO())
    n = 90 * len(warmstart.PEN_VARIANTS)
    assert f"Pen data: {n} canvas renderings of 90 trajectories by 3 pendigits writers" in out.getvalue()
    # no "canvas" row measured on the writers it trained on, and it says why there is none
    evaluated = StringIO()
    call_command("evaluate_model", stdout=evaluated, stderr=StringIO())
    for text in (out.getvalue(), evaluated.getvalue()):
        rows = [line.split()[0] for line in text.splitlines() if line.strip()]
        assert "mnist_test" in rows and "canvas" not in rows
        assert training.NO_CANVAS_FIGURE in text
