"""The product's headline figures on the real data, as a regression guard (not a timing test).

Trains the default model once, with cross-validation, as `train_model` does: all 60,000 MNIST digits
plus the pendigits writers' trajectories replayed as canvas drawings, leaving six writers out. Then
checks the issue's floors on the MNIST test set and on the left-out writers' drawings in the five
canvas styles, image alone and fused with the strokes. Skipped without the data sets, except in CI
where they must be there. (bench/unseen_writers.py measures every fold; this is one of them.)
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from recognizer.ml import evaluate, load_mnist, load_pendigits, train_model
from recognizer.ml.evaluate import styled_canvas_images
from recognizer.ml.warmstart import pen_training_set

pytestmark = pytest.mark.slow

HELD_OUT_WRITERS = [3, 5, 11, 12, 22, 27]  # the first fold of bench/unseen_writers.py


@pytest.fixture(scope="module")
def data_dirs():
    mnist_dir, pendigits_dir = os.environ.get("MNIST_DIR"), os.environ.get("PENDIGITS_DIR")
    if not (mnist_dir and pendigits_dir):
        if os.environ.get("CI") == "true":
            pytest.fail("CI must set MNIST_DIR and PENDIGITS_DIR (see .ci/run)")
        pytest.skip("MNIST_DIR and PENDIGITS_DIR are not set")
    return mnist_dir, pendigits_dir


@pytest.fixture(scope="module")
def full_model(data_dirs, tmp_path_factory):
    mnist = load_mnist(data_dirs[0])
    pen = pen_training_set(data_dirs[1], exclude_writers=HELD_OUT_WRITERS,
                           cache_dir=tmp_path_factory.mktemp("pen-cache"))
    assert not set(pen.metadata["pendigits_writers"]) & set(HELD_OUT_WRITERS)
    images = np.concatenate([mnist.train_images / 255.0, pen.images])
    labels = np.concatenate([mnist.train_labels, pen.labels])
    strokes = [None] * len(mnist.train_labels) + pen.strokes
    result = train_model(images, labels, cv=True, strokes=strokes)
    return mnist, result


@pytest.fixture(scope="module")
def unseen(data_dirs):
    digits = [d for d in load_pendigits(data_dirs[1]) if d.writer in HELD_OUT_WRITERS]
    X, y, _writers, styles = styled_canvas_images(digits, seed=1)
    assert len(set(styles)) == 5
    return X, y, [d.strokes for d in digits]


def test_knn_on_full_mnist_reaches_99_percent_on_the_test_set(full_model):
    mnist, result = full_model
    metrics = evaluate(result.estimator, mnist.test_images / 255.0, mnist.test_labels)
    assert metrics["n"] == 10_000
    assert metrics["accuracy"] >= 0.990, metrics["accuracy"]


def test_unseen_writers_image_alone_reach_95_percent(full_model, unseen):
    X, y, _strokes = unseen
    assert evaluate(full_model[1].estimator, X, y)["accuracy"] >= 0.95


def test_unseen_writers_image_and_strokes_reach_97_percent(full_model, unseen):
    X, y, strokes = unseen
    estimator = full_model[1].estimator
    assert estimator.reads_strokes
    assert evaluate(estimator, X, y, strokes=strokes)["accuracy"] >= 0.97


def test_cross_validation_keeps_the_accuracy_curve_for_each_k(full_model):
    result = full_model[1]
    curve = result.cv_curve
    assert curve["k"] == sorted(curve["k"]) and len(curve["k"]) == len(curve["accuracy"]) >= 5
    chosen = curve["accuracy"][curve["k"].index(result.hyperparameters["n_neighbors"])]
    assert chosen == max(curve["accuracy"])
    assert curve["pca_components"] == result.hyperparameters["n_components"]
