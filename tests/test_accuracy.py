"""The product's headline figures on the real data, as a regression guard (not a timing test).

Trains on all 60,000 MNIST digits with cross-validation, as `train_model` does, then checks the
issue's accuracy floors on the MNIST test set and on replayed pendigits canvas drawings (none of
which are in training). Skipped without the data sets, except in CI where they must be there.
"""

from __future__ import annotations

import os

import pytest

from recognizer.ml import canvas_dataset, evaluate, load_mnist, train_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data_dirs():
    mnist_dir, pendigits_dir = os.environ.get("MNIST_DIR"), os.environ.get("PENDIGITS_DIR")
    if not (mnist_dir and pendigits_dir):
        if os.environ.get("CI") == "true":
            pytest.fail("CI must set MNIST_DIR and PENDIGITS_DIR (see .ci/run)")
        pytest.skip("MNIST_DIR and PENDIGITS_DIR are not set")
    return mnist_dir, pendigits_dir


@pytest.fixture(scope="module")
def full_model(data_dirs):
    mnist = load_mnist(data_dirs[0])
    result = train_model(mnist.train_images / 255.0, mnist.train_labels, cv=True)
    return mnist, result


def test_knn_on_full_mnist_reaches_98_3_percent_on_the_test_set(full_model):
    mnist, result = full_model
    metrics = evaluate(result.estimator, mnist.test_images / 255.0, mnist.test_labels)
    assert metrics["n"] == 10_000
    assert metrics["accuracy"] >= 0.983, metrics["accuracy"]


def test_replayed_canvas_drawings_reach_90_percent(full_model, data_dirs):
    _mnist, result = full_model
    X, y, writers = canvas_dataset(data_dirs[1], seed=0)
    assert len(set(writers.tolist())) == 30
    assert evaluate(result.estimator, X, y)["accuracy"] >= 0.90


def test_cross_validation_keeps_the_accuracy_curve_for_each_k(full_model):
    result = full_model[1]
    curve = result.cv_curve
    assert curve["k"] == sorted(curve["k"]) and len(curve["k"]) == len(curve["accuracy"]) >= 5
    chosen = curve["accuracy"][curve["k"].index(result.hyperparameters["n_neighbors"])]
    assert chosen == max(curve["accuracy"])
    assert curve["pca_components"] == result.hyperparameters["n_components"]
