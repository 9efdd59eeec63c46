"""Model kinds through the site: `train_model --kind svm` stores, registers, activates and serves an SVM,
and the retrain (always k-NN) gates against whatever kind is active."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from recognizer import retraining, serving, training, versions
from recognizer.ml import SvmDigitClassifier
from recognizer.models import ModelVersion
from tests.training_helpers import make_drawing


@pytest.fixture
def offline(settings, tmp_path):
    """No MNIST and no pendigits: training falls back to the bundled digits."""
    settings.MNIST_DIR = str(tmp_path / "no-mnist-here")
    settings.PENDIGITS_DIR = ""
    settings.RECOGNIZER_TRAIN_LIMIT = 0


def train(*args) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("train_model", "--no-cv", "--verbosity", "0", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.mark.django_db
def test_train_model_kind_svm_registers_activates_and_serves_an_svm(offline, digit_png):
    out, err = train("--kind", "svm")
    version = ModelVersion.objects.get()
    assert version.kind == "svm" and version.is_active and version.data_source == "sklearn-digits"
    assert "not mnist" in err.lower() and f"v{version.pk}" in out and "'kind': 'svm'" in out
    hp = version.metadata["hyperparameters"]
    assert hp["kind"] == "svm" and hp["train_samples"] == version.metadata["counts"]["mnist_train"]
    assert version.metrics["mnist_test"]["accuracy"] > 0.9
    serving.model_cache.clear()
    assert isinstance(serving.model_cache.get().estimator, SvmDigitClassifier)
    result = serving.predict_image(digit_png(1), store=False)
    assert result.model_version == version.pk
    assert 0 <= result.digit <= 9 and len(result.probabilities) == 10
    assert sum(result.probabilities) == pytest.approx(1.0)
    assert result.confidence == pytest.approx(max(result.probabilities))
    serving.model_cache.clear()


@pytest.mark.django_db
def test_an_svm_serves_a_user_with_labelled_drawings(offline, alice, fallback_data, digit_png):
    """The personalisation kwargs reach the SVM's predict_one, which ignores them: no special case."""
    train("--kind", "svm")
    for i in range(5):
        make_drawing(alice, fallback_data.train_images[i], int(fallback_data.train_labels[i]))
    serving.model_cache.clear()
    loaded = serving.model_cache.get()
    assert serving.personal_predict_kwargs(alice, loaded)  # the extras are really passed
    mine = serving.predict_image(digit_png(7), user=alice)
    anonymous = serving.predict_image(digit_png(7), store=False)
    assert mine.drawing is not None and mine.drawing.model_version_id == loaded.version_id
    assert mine.probabilities == anonymous.probabilities
    serving.model_cache.clear()


@pytest.mark.django_db
def test_an_svm_version_is_stored_beside_the_active_knn_and_activated_on_request(offline, active_model, digit_png):
    train("--kind", "svm")
    svm = ModelVersion.objects.get(kind="svm")
    assert not svm.is_active and ModelVersion.objects.get(is_active=True) == active_model
    versions.activate(svm)
    assert ModelVersion.objects.get(is_active=True) == svm
    assert serving.predict_image(digit_png(0), store=False).model_version == svm.pk
    versions.activate(active_model)  # and back (a rollback is an activation too)
    assert serving.predict_image(digit_png(0), store=False).model_version == active_model.pk
    serving.model_cache.clear()


@pytest.mark.django_db
def test_an_unknown_kind_is_refused(offline):
    with pytest.raises(CommandError, match="invalid choice"):
        train("--kind", "forest")
    with pytest.raises(ValueError, match="unknown model kind"):
        training.train_new_model(kind="forest")
    assert not ModelVersion.objects.exists()


@pytest.mark.django_db
def test_the_retrain_trains_a_knn_and_gates_it_against_an_active_svm(tiny_training, alice, bob, fallback_data):
    svm = training.train_new_model(kind="svm", cv=False, activate=True).version
    assert svm.kind == "svm" and svm.is_active
    for user, start in ((alice, 0), (bob, 20)):
        for i in range(start, start + 20):
            make_drawing(user, fallback_data.test_images[i], int(fallback_data.test_labels[i]))
    run, created = retraining.retrain_in_foreground()
    assert created and run.status in ("promoted", "not_promoted"), run.error
    candidate = ModelVersion.objects.get(pk=run.model_version_id)
    assert candidate.kind == "knn"
    assert run.decision["active"]["version"] == svm.pk
    assert 0.9 < run.decision["active"]["mnist_test"] <= 1.0  # the SVM was really evaluated by the gate
    assert (ModelVersion.objects.get(is_active=True).pk == candidate.pk) == (run.status == "promoted")
    serving.model_cache.clear()
