"""The SVM model kind on the bundled digits: fit, probabilities, the k-NN interface, persistence."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError

from recognizer.ml import SvmDigitClassifier, common, kinds, mnist, store
from recognizer.ml.evaluate import evaluate


@pytest.fixture(scope="module")
def digits():
    return mnist.load_fallback_digits()


@pytest.fixture(scope="module")
def trained(digits):
    return kinds.train_model(digits.train_images / 255.0, digits.train_labels, kind="svm", cv=True,
                             param_grid={"C": [0.01, 10.0], "gamma_scale": [1.0]})


def test_training_picks_c_by_cross_validation_and_records_it(trained, digits):
    est, hp = trained.estimator, trained.hyperparameters
    assert isinstance(est, SvmDigitClassifier)
    assert len(trained.cv_grid) == 2 and {r["C"] for r in trained.cv_grid} == {0.01, 10.0}
    best = max(trained.cv_grid, key=lambda r: r["accuracy"])
    assert best["C"] == 10.0  # C=0.01 underfits badly: the CV has to see that
    assert hp["cv_accuracy"] == best["accuracy"] and hp["C"] == est.C == 10.0
    assert hp["kind"] == "svm" and hp["kernel"] == "rbf" and hp["gamma"] == pytest.approx(est.gamma_)
    assert hp["train_samples"] == len(digits.train_labels) == trained.n_train
    assert 0 < hp["support_vectors"] <= len(digits.train_labels)


def test_the_svm_is_accurate_on_held_out_fallback_digits(trained, digits):
    m = evaluate(trained.estimator, digits.test_images / 255.0, digits.test_labels)
    assert m["accuracy"] > 0.95 and m["n"] == len(digits.test_labels)


def test_probabilities_have_ten_columns_sum_to_one_and_agree_with_predict(trained, digits):
    X = digits.test_images[:50] / 255.0
    p = trained.estimator.predict_proba(X)
    assert p.shape == (50, 10) and (p >= 0).all()
    assert np.allclose(p.sum(axis=1), 1.0)
    assert (trained.estimator.predict(X) == p.argmax(axis=1)).all()
    assert p.max(axis=1).mean() > 0.8  # calibrated, not flat


def test_predict_one_has_the_knn_interface_and_ignores_personalisation_kwargs(trained, digits):
    est = trained.estimator
    img = digits.test_images[3] / 255.0
    plain = est.predict_one(img)
    assert isinstance(plain, common.Prediction)
    assert plain.digit == int(np.argmax(plain.probabilities)) == digits.test_labels[3]
    assert plain.confidence == pytest.approx(max(plain.probabilities))
    assert plain.distance is None and plain.unfamiliar is False
    extras = est.predict_one(img, extra_features=est.transform(digits.test_images[:5] / 255.0),
                             extra_y=np.full(5, (plain.digit + 1) % 10), extra_weight=100.0)
    assert extras.probabilities == plain.probabilities
    assert est.predict_one(img, extra_X=digits.test_images[:5] / 255.0, extra_y=np.zeros(5)).digit == plain.digit


def test_transform_gives_the_pca_features(trained, digits):
    F = trained.estimator.transform(digits.test_images[:7])
    assert F.shape == (7, trained.estimator.n_components) and F.dtype == np.float32


def test_missing_digits_still_give_ten_probabilities(digits):
    keep = digits.train_labels < 3
    est = SvmDigitClassifier(n_components=20).fit(digits.train_images[keep] / 255.0, digits.train_labels[keep])
    p = est.predict_proba(digits.test_images[:20] / 255.0)
    assert p.shape == (20, 10) and np.allclose(p.sum(axis=1), 1.0)
    assert (p[:, 3:] == 0).all() and set(est.predict(digits.test_images[:20] / 255.0)) <= {0, 1, 2}


def test_too_few_samples_to_calibrate_fall_back_to_a_softmax(digits):
    idx = np.concatenate([np.flatnonzero(digits.train_labels == d)[:1] for d in range(10)])
    est = SvmDigitClassifier(n_components=5).fit(digits.train_images[idx] / 255.0, digits.train_labels[idx])
    assert est.calibrated_ is False
    p = est.predict_proba(digits.test_images[:5] / 255.0)
    assert p.shape == (5, 10) and np.allclose(p.sum(axis=1), 1.0)


def test_max_train_samples_caps_the_final_fit(digits):
    r = kinds.train_model(digits.train_images / 255.0, digits.train_labels, kind="svm", cv=False,
                          max_train_samples=300)
    assert r.hyperparameters["train_samples"] == r.n_train == 300 and r.hyperparameters["max_train_samples"] == 300
    assert r.hyperparameters["cv_accuracy"] is None and r.cv_grid == []
    assert r.estimator.C == 10.0  # the defaults without CV


def test_bad_arguments_are_refused(digits):
    X, y = digits.train_images[:100] / 255.0, digits.train_labels[:100]
    with pytest.raises(ValueError, match="unknown model kind"):
        kinds.train_model(X, y, kind="forest")
    with pytest.raises(ValueError, match="max_train_samples"):
        kinds.train_model(X, y, kind="knn", max_train_samples=50)
    with pytest.raises(ValueError, match="unknown SVM hyperparameters"):
        kinds.train_model(X, y, kind="svm", param_grid={"k": [1]})
    with pytest.raises(ValueError, match="two digits"):
        SvmDigitClassifier().fit(X[y == 1], y[y == 1])
    with pytest.raises(NotFittedError):
        SvmDigitClassifier().predict(X)


def test_store_round_trip_keeps_the_predictions(trained, digits, tmp_path):
    saved = store.save_model(trained.estimator, {"hyperparameters": trained.hyperparameters}, tmp_path)
    assert saved.metadata["size_bytes"] < 5_000_000
    loaded = store.load_model(saved.path)
    X = digits.test_images[:30] / 255.0
    assert isinstance(loaded, SvmDigitClassifier)
    assert np.array_equal(loaded.predict_proba(X), trained.estimator.predict_proba(X))
    assert store.read_metadata(saved.path)["hyperparameters"]["kind"] == "svm"
