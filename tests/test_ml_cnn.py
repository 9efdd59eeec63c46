"""The CNN model kind (recognizer.ml.cnn): trains with JAX (the optional extra, requirements-cnn.txt) on a
small subset in seconds, predicts with NumPy, stores like every kind, goes through train_model --kind cnn,
services and the retrain, and is refused with the install hint when JAX is missing."""

from __future__ import annotations

import os
import subprocess
import sys
from io import StringIO
from pathlib import Path

import numpy as np
import pytest
from django.core.management import CommandError, call_command

# One XLA thread: the test machine's two cores are shared (read when JAX starts, which only training does).
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
# The training step compiles once per process (about 10 s): kept on disk for the next run (CI runs the suite twice).
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(Path(__file__).resolve().parent.parent / ".cache" / "jax"))

from recognizer.ml import cnn, common, kinds, mnist, store
from recognizer.ml.evaluate import evaluate

ROOT = Path(__file__).resolve().parent.parent
needs_jax = pytest.mark.skipif(not cnn.backend_available(), reason="JAX not installed: pip install -r requirements-cnn.txt")
QUICK = {"epochs": 3, "batch_size": 64}


@pytest.fixture(scope="module")
def digits():
    return mnist.load_fallback_digits()


@pytest.fixture(scope="module")
def subset(digits):
    """Training images: a few thousand MNIST digits when MNIST_DIR is set, else the bundled digits."""
    mnist_dir = os.environ.get("MNIST_DIR")
    if mnist_dir and Path(mnist_dir).is_dir():
        data = mnist.load_mnist(mnist_dir)
        return (data.train_images[:1200] / 255.0, data.train_labels[:1200],
                data.test_images[:500] / 255.0, data.test_labels[:500])
    return digits.train_images[:900] / 255.0, digits.train_labels[:900], digits.test_images / 255.0, digits.test_labels


@pytest.fixture(scope="module")
def trained(subset):
    if not cnn.backend_available():
        pytest.skip("JAX not installed: pip install -r requirements-cnn.txt")
    X, y, _Xt, _yt = subset
    return kinds.train_model(X, y, kind="cnn", defaults=QUICK)


def test_importing_the_ml_package_does_not_import_jax():
    code = ("import sys, recognizer.ml, recognizer.ml.cnn, recognizer.ml.kinds, recognizer.ml.model; "
            "sys.exit(1 if any(m == 'jax' or m.startswith('jax.') for m in sys.modules) else 0)")
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=False).returncode == 0


def test_cnn_is_a_model_kind():
    assert "cnn" in kinds.MODEL_KINDS


# ---------------------------------------------------------------- without the extra


@pytest.fixture
def no_jax(monkeypatch):
    """As if requirements-cnn.txt were not installed: `import jax` fails."""
    monkeypatch.setitem(sys.modules, "jax", None)


def test_without_jax_training_is_refused_with_the_install_hint(no_jax, digits):
    assert not cnn.backend_available()
    with pytest.raises(cnn.CnnUnavailable, match="pip install -r requirements-cnn.txt") as info:
        kinds.train_model(digits.train_images[:50] / 255.0, digits.train_labels[:50], kind="cnn")
    assert isinstance(info.value, ValueError)


@pytest.mark.django_db
def test_without_jax_the_command_and_services_refuse_and_store_nothing(no_jax, settings, tmp_path):
    from recognizer import training
    from recognizer.models import ModelVersion

    settings.MNIST_DIR, settings.PENDIGITS_DIR = str(tmp_path / "none"), ""
    with pytest.raises(CommandError, match="pip install -r requirements-cnn.txt"):
        call_command("train_model", "--kind", "cnn", "--limit", "100", "--no-cv", stdout=StringIO(), stderr=StringIO())
    with pytest.raises(ValueError, match="pip install -r requirements-cnn.txt"):
        training.train_new_model(kind="cnn", limit=100, cv=False)
    assert not ModelVersion.objects.exists()


@needs_jax
def test_a_stored_cnn_loads_and_predicts_without_jax(trained, subset, tmp_path, monkeypatch):
    """Web workers serve a CNN with NumPy: only training needs the extra."""
    saved = store.save_model(trained.estimator, {"kind": "cnn"}, tmp_path)
    monkeypatch.setitem(sys.modules, "jax", None)
    loaded = store.load_model(saved.path)
    X = subset[2][:20]
    assert np.allclose(loaded.predict_proba(X), trained.estimator.predict_proba(X))


# ---------------------------------------------------------------- with the extra


@needs_jax
def test_training_records_the_network_and_learns(trained, subset):
    est, hp = trained.estimator, trained.hyperparameters
    assert isinstance(est, cnn.CnnDigitClassifier)
    assert hp["kind"] == "cnn" and hp["dense_units"] == 256 and hp["epochs"] == 3 and hp["deskew"] is False
    assert hp["parameters"] == est.n_parameters == 320 + 18_496 + 9216 * 256 + 256 + 2570
    assert hp["augment"] == cnn.CNN_AUGMENT and hp["train_samples"] == trained.n_train == len(subset[1])
    assert [e["epoch"] for e in est.history_] == [1, 2, 3]
    assert est.history_[-1]["loss"] < est.history_[0]["loss"]
    m = evaluate(est, subset[2], subset[3])
    assert m["accuracy"] > 0.85, m["accuracy"]


@needs_jax
def test_probabilities_and_the_knn_interface(trained, subset):
    est = trained.estimator
    X = subset[2][:40]
    p = est.predict_proba(X)
    assert p.shape == (40, 10) and (p >= 0).all() and np.allclose(p.sum(axis=1), 1.0)
    assert (est.predict(X) == p.argmax(axis=1)).all()
    one = est.predict_one(X[3])
    assert isinstance(one, common.Prediction) and one.digit == int(p[3].argmax())
    assert one.confidence == pytest.approx(max(one.probabilities)) and one.distance is None and not one.unfamiliar
    extras = est.predict_one(X[3], extra_X=X[:5], extra_y=np.full(5, (one.digit + 1) % 10), extra_weight=100.0,
                             extra_features=np.zeros((5, 50), np.float32))
    assert extras.probabilities == one.probabilities  # personalisation kwargs accepted and ignored


@needs_jax
def test_the_numpy_forward_pass_matches_jax_convolutions(trained, subset):
    """Serving computes the convolutions as matmuls in NumPy; XLA's own convolution agrees."""
    import jax
    import jax.numpy as jnp

    p = {k: jnp.asarray(v) for k, v in trained.estimator.params_.items()}
    x = jnp.asarray(subset[2][:16].astype(np.float32))[..., None]
    dn = ("NHWC", "HWIO", "NHWC")
    h = jax.nn.relu(jax.lax.conv_general_dilated(x, p["w1"], (1, 1), "VALID", dimension_numbers=dn) + p["b1"])
    h = jax.nn.relu(jax.lax.conv_general_dilated(h, p["w2"], (1, 1), "VALID", dimension_numbers=dn) + p["b2"])
    h = jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
    h = jax.nn.relu(h.reshape(16, -1) @ p["w3"] + p["b3"])
    expected = np.asarray(jax.nn.softmax(h @ p["w4"] + p["b4"]))
    assert np.allclose(trained.estimator.predict_proba(subset[2][:16]), expected, atol=1e-5)


@needs_jax
def test_stored_in_one_hash_checked_file(trained, subset, tmp_path):
    saved = store.save_model(trained.estimator, {"kind": "cnn"}, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([saved.path.name, saved.path.name + ".json"])
    loaded = store.load_model(saved.path)
    X = subset[2][:10]
    assert np.array_equal(loaded.predict_proba(X), trained.estimator.predict_proba(X))
    data = bytearray(saved.path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    saved.path.write_bytes(bytes(data))
    with pytest.raises(store.CorruptModelError):
        store.load_model(saved.path)


@needs_jax
def test_sample_weight_multiplies_the_loss(digits):
    X, y = digits.train_images[:64] / 255.0, digits.train_labels[:64]
    seed = np.random.default_rng(0)
    start = cnn._init_params(seed, 256)
    zero, _ = cnn._train_jax(as32(X), y, np.zeros(64, np.float32), epochs=1, batch_size=64, learning_rate=1e-3,
                             dense_units=256, augment=None, seed=0, progress=None)
    assert all(np.array_equal(zero[k], start[k]) for k in start)  # weightless samples teach nothing
    ones, _ = cnn._train_jax(as32(X), y, np.ones(64, np.float32), epochs=1, batch_size=64, learning_rate=1e-3,
                             dense_units=256, augment=None, seed=0, progress=None)
    assert not np.array_equal(ones["w3"], start["w3"])
    with pytest.raises(ValueError, match="one value per sample"):
        cnn.CnnDigitClassifier(epochs=1).fit(X, y, sample_weight=np.ones(3))


def as32(X):
    return np.asarray(X, np.float32)


@needs_jax
def test_progress_is_reported_in_order(digits):
    stages = []
    kinds.train_model(digits.train_images[:64] / 255.0, digits.train_labels[:64], kind="cnn",
                      defaults={"epochs": 1, "batch_size": 64}, progress=lambda s, f: stages.append((s, f)))
    fractions = [f for _s, f in stages]
    assert fractions == sorted(fractions) and stages[-1] == ("done", 1.0) and any(s == "fit" for s, _f in stages)


def test_canvas_augment_changes_a_share_and_stays_in_range(digits):
    X = digits.train_images[:200] / 255.0
    none = cnn.canvas_augment(X, np.random.default_rng(0), fraction=0.0)
    assert np.array_equal(none, X.astype(np.float32))
    half = cnn.canvas_augment(X, np.random.default_rng(0), fraction=0.5)
    again = cnn.canvas_augment(X, np.random.default_rng(0), fraction=0.5)
    assert np.array_equal(half, again) and half.shape == (200, 28, 28) and half.dtype == np.float32
    assert 0.0 <= half.min() and half.max() <= 1.0
    changed = np.abs(half - X).reshape(200, -1).max(axis=1) > 1e-6
    assert 0.3 < changed.mean() < 0.7
    ink = half.reshape(200, -1).sum(axis=1) / np.maximum(X.reshape(200, -1).sum(axis=1), 1e-6)
    assert (ink[changed] > 0.4).all() and (ink[changed] < 2.5).all()  # still a digit, not erased or a blob


@needs_jax
def test_the_deep_knn_reads_the_cnn_features_and_personalises(trained, subset, tmp_path):
    X, y, Xt, yt = subset
    knn = cnn.DeepKnnClassifier(trained.estimator, n_components=32).fit(X, y)
    assert knn.transform(Xt[:5]).shape == (5, 32)
    assert evaluate(knn, Xt, yt)["accuracy"] > 0.8
    one = knn.predict_one(Xt[0])
    assert one.distance is not None and one.digit == int(np.argmax(one.probabilities))
    wrong = (one.digit + 1) % 10  # a user who draws this shape as another digit: their drawings count at once
    mine = knn.predict_one(Xt[0], extra_features=knn.transform(Xt[:1].repeat(4, axis=0)), extra_y=np.full(4, wrong),
                           extra_weight=3.0)
    assert mine.digit == wrong
    loaded = store.load_model(store.save_model(knn, {}, tmp_path).path)
    assert loaded.predict_one(Xt[0]).probabilities == one.probabilities


@needs_jax
def test_train_cnn_can_return_the_deep_knn(digits):
    r = cnn.train_cnn(digits.train_images[:128] / 255.0, digits.train_labels[:128], deep_knn=True,
                      defaults={"epochs": 1, "batch_size": 64})
    assert isinstance(r.estimator, cnn.DeepKnnClassifier) and r.hyperparameters["kind"] == "cnn-knn"


# ---------------------------------------------------------------- through the site


@pytest.fixture
def quick_cnn(monkeypatch, settings, tmp_path):
    """Bundled digits (no MNIST, no pen data) and a one-epoch CNN: seconds."""
    monkeypatch.setitem(cnn.CNN_DEFAULTS, "epochs", 1)
    monkeypatch.setitem(cnn.CNN_DEFAULTS, "batch_size", 64)
    settings.MNIST_DIR = str(tmp_path / "no-mnist-here")
    settings.RECOGNIZER_DATA_DIR = tmp_path / "no-data"
    settings.PENDIGITS_DIR = ""
    settings.RECOGNIZER_TRAIN_LIMIT = 0


@needs_jax
@pytest.mark.django_db
def test_train_model_kind_cnn_registers_activates_and_serves_a_cnn(quick_cnn, digit_png):
    from recognizer import modelfiles, serving
    from recognizer.models import ModelVersion

    out, err = StringIO(), StringIO()
    call_command("train_model", "--kind", "cnn", "--limit", "300", "--no-cv", stdout=out, stderr=err)
    version = ModelVersion.objects.get()
    assert version.kind == "cnn" and version.is_active and "'kind': 'cnn'" in out.getvalue()
    assert version.metadata["hyperparameters"]["train_samples"] == 300
    assert version.metadata["sha256"] == version.sha256 == store.file_sha256(modelfiles.local_copy(version.file, version.sha256))
    serving.model_cache.clear()
    loaded = serving.model_cache.get()
    assert isinstance(loaded.estimator, cnn.CnnDigitClassifier)
    result = serving.predict_image(digit_png(1), store=False)
    assert result.model_version == version.pk and sum(result.probabilities) == pytest.approx(1.0)
    serving.model_cache.clear()


@needs_jax
@pytest.mark.django_db
def test_the_retrain_trains_the_kind_the_setting_names(quick_cnn, settings, alice, bob, active_model):
    from recognizer import retraining, serving
    from recognizer.models import ModelVersion
    from tests.training_helpers import make_drawing

    settings.RECOGNIZER_RETRAIN_KIND = "cnn"
    settings.RECOGNIZER_RETRAIN_CV = False
    settings.RECOGNIZER_TRAIN_LIMIT = 300
    settings.RECOGNIZER_HOLDOUT_SHARE = 0.5
    data = mnist.load_fallback_digits()
    for user, start in ((alice, 0), (bob, 20)):
        for i in range(start, start + 20):
            make_drawing(user, data.test_images[i], int(data.test_labels[i]))
    run, created = retraining.retrain_in_foreground()
    assert created and run.status in ("promoted", "not_promoted"), run.error
    candidate = ModelVersion.objects.get(pk=run.model_version_id)
    assert candidate.kind == "cnn" and candidate.metadata["hyperparameters"]["kind"] == "cnn"
    assert candidate.metadata["counts"].get("user_train", 0) > 0  # users' drawings were trained on
    serving.model_cache.clear()
