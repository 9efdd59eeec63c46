"""k-NN model, persistence and evaluation on small synthetic data (no shared data)."""

from __future__ import annotations

import numpy as np
import pytest

from recognizer.ml import common, mnist, model, store
from recognizer.ml.evaluate import evaluate, format_metrics_table


@pytest.fixture(scope="module")
def digits():
    return mnist.load_fallback_digits()


@pytest.fixture(scope="module")
def trained(digits):
    return model.train_knn(digits.train_images, digits.train_labels, cv=True, cv_samples=800,
                             param_grid={"pca_components": [20, 30], "k": [1, 2, 3, 4, 5]})


def test_training_picks_hyperparameters_by_cross_validation(trained):
    curve = trained.cv_curve
    assert curve["k"] == [1, 2, 3, 4, 5] and len(curve["accuracy"]) == 5
    assert curve["pca_components"] in (20, 30) and curve["weights"] in ("uniform", "distance")
    assert len(curve["grid"]) == 2 * 2 * 5
    best = max(r["accuracy"] for r in curve["grid"])
    assert trained.hyperparameters["cv_accuracy"] == best
    assert trained.estimator.n_neighbors == trained.hyperparameters["n_neighbors"]


def test_the_model_is_accurate_on_held_out_fallback_digits(trained, digits):
    m = evaluate(trained.estimator, digits.test_images / 255.0, digits.test_labels)
    assert m["accuracy"] > 0.9 and m["n"] == len(digits.test_labels)
    assert np.array(m["confusion"]).sum() == m["n"]


def test_probabilities_have_ten_columns_and_sum_to_one(trained, digits):
    p = trained.estimator.predict_proba(digits.test_images[:20] / 255.0)
    assert p.shape == (20, 10)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-6)


def test_predict_one_returns_digit_confidence_and_probabilities(trained, digits):
    pred = trained.estimator.predict_one(digits.test_images[0] / 255.0)
    assert 0 <= pred.digit <= 9 and len(pred.probabilities) == 10
    assert pred.confidence == max(pred.probabilities)


def test_held_out_digits_are_familiar_and_random_blobs_are_not(trained, digits):
    est = trained.estimator
    familiar = [not est.predict_one(img / 255.0).unfamiliar for img in digits.test_images[:200]]
    assert np.mean(familiar) > 0.85
    rng = np.random.default_rng(0)
    blobs = (rng.random((50, 28, 28)) > 0.7).astype(np.float32)
    assert np.mean([est.predict_one(b).unfamiliar for b in blobs]) > 0.9
    pred = est.predict_one(blobs[0])
    assert pred.distance > est.novelty_distance_


def test_flat_and_uint8_inputs_are_the_same_frame(trained, digits):
    a = trained.estimator.predict_proba(digits.test_images[:5])
    b = trained.estimator.predict_proba((digits.test_images[:5] / 255.0).reshape(5, 784))
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_progress_reports_stages_up_to_done(digits):
    seen = []
    model.train_knn(digits.train_images[:300], digits.train_labels[:300], cv=False,
                      progress=lambda s, f: seen.append((s, f)))
    assert seen[-1] == ("done", 1.0) and {"features", "fit"} <= {s for s, _ in seen}
    fractions = [f for _, f in seen]
    assert fractions == sorted(fractions) and 0 <= fractions[0] < 1


def test_personal_extra_samples_change_a_prediction(trained, digits):
    est = trained.estimator
    x = digits.test_images[:1] / 255.0
    before = int(est.predict(x)[0])
    other = (before + 1) % 10
    extras = np.repeat(x, 3, axis=0)
    after = est.predict_proba(x, extra_X=extras, extra_y=[other] * 3, extra_weight=5.0)
    assert int(after.argmax()) == other
    np.testing.assert_allclose(est.predict_proba(x), est.predict_proba(x, extra_X=None))


def test_training_without_cv_still_returns_a_curve_with_the_expected_keys(digits):
    result = model.train_knn(digits.train_images[:200], digits.train_labels[:200], cv=False)
    assert set(result.cv_curve) >= {"pca_components", "weights", "k", "accuracy", "grid"}
    assert result.cv_curve["k"] == [] and result.n_train == 200 and result.train_seconds > 0


def test_precomputed_extra_features_give_the_same_probabilities(trained, digits):
    est = trained.estimator
    x, extras = digits.test_images[:4] / 255.0, digits.test_images[10:30] / 255.0
    ey = digits.test_labels[10:30]
    a = est.predict_proba(x, extra_X=extras, extra_y=ey, extra_weight=2.0)
    b = est.predict_proba(x, extra_features=est.transform(extras), extra_y=ey, extra_weight=2.0)
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_sample_weight_is_accepted_by_fit(digits):
    X, y = digits.train_images[:200] / 255.0, digits.train_labels[:200]
    est = model.DigitClassifier(n_components=10, n_neighbors=3).fit(X, y, sample_weight=np.ones(200))
    assert est.predict(X[:3]).shape == (3,)


def test_augmentation_adds_copies_with_their_labels(digits):
    X, y, flags = common.augment_images(digits.train_images[:10], digits.train_labels[:10],
                                       shifts=1, thickness=(1.0,))
    assert len(X) == 10 * 6 and flags.sum() == 50
    np.testing.assert_array_equal(y[10:20], digits.train_labels[:10])


def test_a_saved_model_loads_back_and_predicts_the_same(tmp_path, trained, digits):
    saved = store.save_model(trained.estimator, {"n_train": 5}, tmp_path)
    assert saved.path.name.startswith("model-") and saved.path.suffix == ".joblib"
    meta = store.read_metadata(saved.path)
    assert meta["sha256"] == saved.sha256 and meta["n_train"] == 5 and "sklearn" in meta["versions"]
    est = store.load_model(saved.path)
    x = digits.test_images[:10] / 255.0
    np.testing.assert_array_equal(est.predict(x), trained.estimator.predict(x))
    second = store.save_model(trained.estimator, {}, tmp_path)
    assert second.path != saved.path
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_it_refuses_a_model_file_with_a_flipped_byte(tmp_path, trained):
    saved = store.save_model(trained.estimator, {}, tmp_path)
    data = bytearray(saved.path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    saved.path.write_bytes(bytes(data))
    with pytest.raises(store.CorruptModelError, match="corrupt"):
        store.load_model(saved.path)


def test_it_refuses_a_missing_model_file_or_a_wrong_expected_checksum(tmp_path, trained):
    with pytest.raises(store.CorruptModelError, match="missing"):
        store.load_model(tmp_path / "nope.joblib")
    saved = store.save_model(trained.estimator, {}, tmp_path)
    with pytest.raises(store.CorruptModelError):
        store.load_model(saved.path, expected_sha256="0" * 64)


def test_the_metrics_table_lists_every_row_and_column():
    text = format_metrics_table({"ours": {"accuracy": 0.98, "n": 10}, "base": {"accuracy": 0.5}})
    lines = text.splitlines()
    assert lines[0].split() == ["name", "accuracy", "n"] and "0.9800" in lines[2] and lines[3].endswith("-")
