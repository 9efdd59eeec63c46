"""The management commands: train_model, evaluate_model, predict (text and JSON lines)."""

from __future__ import annotations

import json

import pytest
from django.core.management import CommandError, call_command

from recognizer.models import ModelVersion


@pytest.fixture
def offline(settings, tmp_path):
    """No MNIST and no pendigits: training must fall back to the bundled digits."""
    settings.MNIST_DIR = str(tmp_path / "no-mnist-here")
    settings.PENDIGITS_DIR = ""


def run(*args) -> tuple[str, str]:
    from io import StringIO

    out, err = StringIO(), StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.mark.django_db
def test_train_model_falls_back_loudly_and_activates_the_first_version(offline):
    out, err = run("train_model", "--no-cv", "--verbosity", "0")
    version = ModelVersion.objects.get()
    assert version.is_active
    assert version.data_source == "sklearn-digits"
    assert "not mnist" in err.lower()
    assert "not mnist" in version.metadata["data_warning"].lower()
    assert f"Model v{version.pk}" in out and "mnist_test" in out and "Accuracy per digit" in out
    assert "{'accuracy'" not in out


@pytest.mark.django_db
def test_train_model_leaves_the_active_version_alone_unless_asked(offline, active_model):
    run("train_model", "--no-cv", "--verbosity", "0")
    assert ModelVersion.objects.get(is_active=True) == active_model
    run("train_model", "--no-cv", "--activate", "--verbosity", "0")
    assert ModelVersion.objects.get(is_active=True).pk > active_model.pk
    assert ModelVersion.objects.filter(is_active=True).count() == 1


@pytest.mark.django_db
def test_train_model_if_none_does_nothing_when_a_model_is_active(offline, active_model):
    out, _ = run("train_model", "--if-none")
    assert "nothing to train" in out
    assert ModelVersion.objects.count() == 1


@pytest.mark.django_db
def test_evaluate_model_prints_the_active_versions_metrics(offline, active_model):
    out, _ = run("evaluate_model", "--save")
    assert f"Model v{active_model.pk}" in out
    assert "Accuracy per digit" in out and "Confusion matrix, mnist_test" in out
    assert "{'accuracy'" not in out  # a readable table, not a dict dump
    active_model.refresh_from_db()
    assert 0.5 < active_model.metrics["mnist_test"]["accuracy"] <= 1.0
    assert len(active_model.metrics["mnist_test"]["confusion"]) == 10


@pytest.mark.django_db
def test_evaluate_model_without_an_active_model_is_a_clear_error(offline):
    with pytest.raises(CommandError, match="No model is active"):
        run("evaluate_model")


@pytest.mark.django_db
def test_predict_json_prints_one_object_per_file_and_fails_at_the_end(active_model, tmp_path, digit_png, empty_png):
    good = tmp_path / "one.png"
    good.write_bytes(digit_png(1))
    blank = tmp_path / "blank.png"
    blank.write_bytes(empty_png)
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"this is not an image")
    missing = tmp_path / "missing.png"
    later = tmp_path / "seven.png"
    later.write_bytes(digit_png(7))

    from io import StringIO

    out = StringIO()
    with pytest.raises(CommandError) as excinfo:
        call_command("predict", str(good), str(blank), str(garbage), str(missing), str(later), "--json", stdout=out)
    assert excinfo.value.returncode == 1
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["file"] for line in lines] == [str(good), str(blank), str(garbage), str(missing), str(later)]
    for line in (lines[0], lines[4]):
        assert set(line) == {"file", "digit", "confidence", "probabilities"}
        assert 0 <= line["digit"] <= 9 and len(line["probabilities"]) == 10
        assert line["confidence"] == pytest.approx(max(line["probabilities"]), abs=1e-3)
    for line in lines[1:4]:
        assert set(line) == {"file", "error"} and line["error"]
    assert "empty" in lines[1]["error"].lower()


@pytest.mark.django_db
def test_predict_text_output_names_each_file(active_model, tmp_path, digit_png):
    path = tmp_path / "one.png"
    path.write_bytes(digit_png(1))
    out, _ = run("predict", str(path))
    assert out.startswith(f"{path}: ")


@pytest.mark.django_db
def test_predict_without_an_active_model_says_how_to_get_one(tmp_path, digit_png):
    path = tmp_path / "one.png"
    path.write_bytes(digit_png(1))
    with pytest.raises(CommandError, match="train_model"):
        run("predict", str(path))
