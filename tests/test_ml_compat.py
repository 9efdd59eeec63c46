"""Model files written before recognizer.ml was split into common/features/kinds still load and predict the
same: a stored version names its estimator's class by module path, and keeps its PCA as mean_/components_."""

from __future__ import annotations

import importlib
from pathlib import Path

import joblib
import numpy as np
import pytest

from recognizer.ml import cnn, features, mnist, model, store, strokes, svm

# Written by tests/data/make_models_before_ml_split.py with the code of commit 8be2505.
FIXTURE = Path(__file__).parent / "data" / "models-before-ml-split.joblib.gz"


@pytest.fixture(scope="module")
def before():
    return joblib.load(FIXTURE)


@pytest.fixture(scope="module")
def probe():
    return (mnist.load_fallback_digits().test_images[:24] / 255.0).astype(np.float32)


def test_a_knn_with_strokes_stored_before_the_split_predicts_as_it_did(before, probe):
    est = before["knn"]
    assert type(est) is model.DigitClassifier and type(est.stroke_model_) is strokes.StrokeClassifier
    assert est.components_.shape == (4, 1568)  # the PCA as arrays, projected by today's DigitFeatures
    p = est.predict_proba(probe, strokes=before["probe_strokes"])
    # atol 1e-4, not 1e-6: the distance-weighted vote carries the BLAS's last-bit differences in the distances
    # (below) into the probabilities, 2.3e-5 on one machine where the file was written before any change
    np.testing.assert_allclose(p, before["knn_proba"], atol=1e-4)
    assert not np.allclose(p, est.predict_proba(probe), atol=1e-3)  # the stroke fusion was really read
    distances = [est.predict_one(x).distance for x in probe]
    # float32 distances, |q|^2 + |r|^2 - 2 q.r: OpenBLAS's kernels differ between machines in the last bits, up to
    # 5e-6 relative here (it failed at rtol 1e-6 on this machine before any change); a wrong model is far off
    np.testing.assert_allclose(distances, before["knn_distance"], rtol=1e-4)


def test_an_svm_stored_before_the_split_predicts_as_it_did(before, probe):
    est = before["svm"]
    assert type(est) is svm.SvmDigitClassifier
    # 2.8e-9 off on one machine before any change (the BLAS's last bits, as above): 1e-7 still tells a wrong model
    np.testing.assert_allclose(est.predict_proba(probe), before["svm_proba"], atol=1e-7)


def test_a_file_stored_before_the_split_goes_through_the_store(before, probe, tmp_path):
    saved = store.save_model(before["knn"], {}, tmp_path)
    np.testing.assert_allclose(store.load_model(saved.path).predict_proba(probe), before["knn"].predict_proba(probe))


@pytest.mark.parametrize("cls, path", [
    (model.DigitClassifier, "recognizer.ml.model"),
    (svm.SvmDigitClassifier, "recognizer.ml.svm"),
    (strokes.StrokeClassifier, "recognizer.ml.strokes"),
    (cnn.CnnDigitClassifier, "recognizer.ml.cnn"),
    (cnn.DeepKnnClassifier, "recognizer.ml.cnn"),
])
def test_every_stored_class_is_found_where_model_files_name_it(cls, path):
    """Moving one of these breaks every stored version of it: leave its name importable at this path."""
    assert cls.__module__ == path
    assert getattr(importlib.import_module(path), cls.__qualname__) is cls


def test_the_feature_base_class_keeps_its_old_name_too():
    assert model.DigitFeatures is features.DigitFeatures
