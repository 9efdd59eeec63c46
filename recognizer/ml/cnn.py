"""The CNN model kind: the small convolutional network of the published Keras MNIST tutorial, trained
with JAX and served with plain NumPy.

Network (as the tutorial): 3x3 conv 32 -> ReLU -> 3x3 conv 64 -> ReLU -> 2x2 max pool -> dropout 0.25
-> dense 256 -> ReLU -> dropout 0.5 -> dense 10 -> softmax; Glorot-uniform weights, Adam, cross-entropy
(each sample's loss multiplied by its ``sample_weight``). Input is the 28x28 MNIST frame that
``preprocess_drawing`` makes, without deskewing (the network learns slant).

Training augments toward canvas drawings (``canvas_augment``): every epoch a fresh random half of the
samples gets a random stroke thickness (grey dilation or a softened erosion), a small rotation, scale
and shift, and an elastic distortion, all in one interpolation.

Only training needs JAX, an optional extra (``pip install -r requirements-cnn.txt``); importing this
module does not import it. The fitted weights are NumPy arrays inside the estimator, so the model is
one joblib file that the store hashes like every other kind, and a web worker predicts with NumPy
(the convolutions as matmuls) whether JAX is installed or not.

``DeepKnnClassifier`` is the k-NN of recognizer.ml.model over the CNN's 256-unit layer (L2-normalised,
then PCA): same vote, personalisation (``extra_features``), novelty distance and stroke fusion.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy import ndimage
from sklearn.base import BaseEstimator, ClassifierMixin

from .common import KindUnavailable, Prediction, Progress, TrainingResult, random_subsample, stage_reporter
from .features import as_images
from .knn import N_CLASSES
from .model import DigitClassifier

__all__ = [
    "CNN_AUGMENT",
    "CNN_DEFAULTS",
    "CNN_INSTALL_HINT",
    "CnnDigitClassifier",
    "CnnUnavailable",
    "DeepKnnClassifier",
    "backend_available",
    "canvas_augment",
    "require_backend",
    "train_cnn",
]

CNN_INSTALL_HINT = "pip install -r requirements-cnn.txt"

# The tutorial's network and a training budget measured on 2 cores (bench/models.py): Adam at 1e-3 with a
# cosine decay to a tenth, 3 epochs of 128-sample batches.
CNN_DEFAULTS = {"epochs": 3, "batch_size": 128, "learning_rate": 1e-3, "dense_units": 256}
# canvas_augment's arguments: the share of samples changed each epoch, and how much.
CNN_AUGMENT = {"fraction": 0.5, "max_rotation": 12.0, "max_shift": 2.0, "scale": (0.85, 1.1),
               "elastic_alpha": 20.0, "elastic_sigma": 4.0, "dilate": 0.25, "erode": 0.15}

_CHUNK = 256  # images per NumPy forward pass (conv patches of 256 images: ~170 MB of float32)


class CnnUnavailable(KindUnavailable):
    """The CNN kind was asked for but its deep-learning library (the optional extra) is not installed."""


def require_backend() -> ModuleType:
    """Import and return ``jax``, or raise CnnUnavailable naming the extra to install."""
    try:
        import jax
    except ImportError as exc:
        raise CnnUnavailable(
            f"the cnn model kind needs JAX, an optional extra that is not installed: run `{CNN_INSTALL_HINT}` "
            f"({exc})") from exc
    return jax


def backend_available() -> bool:
    try:
        require_backend()
    except CnnUnavailable:
        return False
    return True


# ---------------------------------------------------------------- the forward pass in NumPy


def _conv3x3(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """'valid' 3x3 convolution, NHWC input, HWIO kernel, as one matmul over the 9 shifted copies."""
    h, wd = x.shape[1] - 2, x.shape[2] - 2
    patches = np.concatenate([x[:, i:i + h, j:j + wd, :] for i in range(3) for j in range(3)], axis=-1)
    out = patches.reshape(-1, patches.shape[-1]) @ w.reshape(-1, w.shape[-1])  # one GEMM, not one per row
    return out.reshape(len(x), h, wd, -1) + b


def _forward(params: dict, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(logits, the dense layer's activations) for float32 images (n, 28, 28)."""
    h = np.maximum(_conv3x3(x[..., None], params["w1"], params["b1"]), 0)
    h = np.maximum(_conv3x3(h, params["w2"], params["b2"]), 0)
    n, hh, ww, c = h.shape
    h = h.reshape(n, hh // 2, 2, ww // 2, 2, c).max(axis=(2, 4))
    hidden = np.maximum(h.reshape(n, -1) @ params["w3"] + params["b3"], 0)
    return hidden @ params["w4"] + params["b4"], hidden


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


# ---------------------------------------------------------------- augmentation toward canvas drawings


def _disk(radius: int) -> np.ndarray:
    yy, xx = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    return (yy**2 + xx**2) <= radius * radius


def canvas_augment(images: ArrayLike, rng: np.random.Generator, *, fraction: float = 0.5, max_rotation: float = 12.0,
                   max_shift: float = 2.0, scale: tuple[float, float] = (0.85, 1.1), elastic_alpha: float = 20.0,
                   elastic_sigma: float = 4.0, dilate: float = 0.25, erode: float = 0.15) -> np.ndarray:
    """A copy of ``images`` (n, 28, 28) in [0, 1] where a random ``fraction`` is redrawn as a canvas might
    have it: bolder (grey dilation, share ``dilate``) or thinner (half-way to a grey erosion, ``erode``),
    rotated by up to ``max_rotation`` degrees, scaled within ``scale``, shifted by up to ``max_shift`` px
    and elastically distorted (Simard et al. 2003: a random field smoothed by ``elastic_sigma`` px, times
    ``elastic_alpha``), the geometry in one bilinear interpolation."""
    X = as_images(images).copy()
    idx = np.flatnonzero(rng.random(len(X)) < fraction)
    if not len(idx):
        return X
    B = X[idx]
    kind = rng.random(len(idx))
    thick, thin = kind < dilate, (kind >= dilate) & (kind < dilate + erode)
    fp = _disk(1)[None]
    if thick.any():
        B[thick] = ndimage.grey_dilation(B[thick], footprint=fp)
    if thin.any():
        B[thin] = 0.5 * (B[thin] + ndimage.grey_erosion(B[thin], footprint=fp))
    n = len(idx)
    angle = np.deg2rad(rng.uniform(-max_rotation, max_rotation, n))
    s = rng.uniform(scale[0], scale[1], n)
    shift = rng.uniform(-max_shift, max_shift, (n, 2))
    cos, sin = np.cos(angle) / s, np.sin(angle) / s
    r, c = np.mgrid[:28, :28].astype(np.float32) - 13.5
    # where each output pixel reads from: the inverse rotation and scale about the centre, minus the shift
    src_r = cos[:, None, None] * r + sin[:, None, None] * c + 13.5 - shift[:, 0, None, None]
    src_c = -sin[:, None, None] * r + cos[:, None, None] * c + 13.5 - shift[:, 1, None, None]
    if elastic_alpha > 0:
        field = rng.uniform(-1, 1, (2, n, 28, 28)).astype(np.float32)
        field = ndimage.gaussian_filter(field, sigma=(0, 0, elastic_sigma, elastic_sigma), mode="constant")
        src_r += elastic_alpha * field[0]
        src_c += elastic_alpha * field[1]
    which = np.broadcast_to(np.arange(n, dtype=np.float32)[:, None, None], src_r.shape)
    out = ndimage.map_coordinates(B, np.stack([which, src_r, src_c]), order=1, mode="constant", cval=0.0)
    X[idx] = np.clip(out, 0.0, 1.0)
    return X


# ---------------------------------------------------------------- the classifier


class CnnDigitClassifier(ClassifierMixin, BaseEstimator):
    """The tutorial CNN; classes are always 0..9. ``fit`` needs JAX, prediction only NumPy.

    ``fit(X, y, sample_weight)``: X is (n,28,28) or (n,784) in [0,1] (uint8 0..255 accepted);
    ``sample_weight`` multiplies each sample's loss. ``augment``: canvas_augment's arguments (None: off).
    """

    kind = "cnn"
    reads_strokes = False  # the serving interface of every kind (recognizer.ml.kinds.ServingEstimator)

    def __init__(self, epochs: int = 3, batch_size: int = 128, learning_rate: float = 1e-3, dense_units: int = 256,
                 augment: dict | None = None, random_state: int = 0) -> None:
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.dense_units = dense_units
        self.augment = augment
        self.random_state = random_state

    # -- fitting
    def fit(self, X: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None,
            progress: Callable[[float], None] | None = None) -> CnnDigitClassifier:
        X = as_images(X)
        y = np.asarray(y).astype(np.int64).ravel()
        if len(X) != len(y):
            raise ValueError(f"{len(X)} images but {len(y)} labels")
        if len(y) == 0:
            raise ValueError("cannot fit on an empty training set")
        if y.min() < 0 or y.max() > 9:
            raise ValueError("labels must be digits 0-9")
        sw = np.ones(len(y), np.float32) if sample_weight is None else np.asarray(sample_weight, np.float32).ravel()
        if len(sw) != len(y):
            raise ValueError("sample_weight must have one value per sample")
        params, history = _train_jax(X, y, sw, epochs=int(self.epochs), batch_size=int(self.batch_size),
                                     learning_rate=float(self.learning_rate), dense_units=int(self.dense_units),
                                     augment=self.augment, seed=int(self.random_state), progress=progress)
        self.params_ = params
        self.history_ = history
        self.classes_ = np.arange(N_CLASSES)
        self.n_features_in_ = 784
        return self

    def _check(self) -> None:
        if not hasattr(self, "params_"):
            from sklearn.exceptions import NotFittedError

            raise NotFittedError("CnnDigitClassifier is not fitted yet: call fit() first")

    # -- prediction (NumPy only)
    def _outputs(self, X: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        self._check()
        imgs = as_images(X)
        logits = np.empty((len(imgs), N_CLASSES), np.float32)
        hidden = np.empty((len(imgs), self.params_["w3"].shape[1]), np.float32)
        for s in range(0, len(imgs), _CHUNK):
            logits[s:s + _CHUNK], hidden[s:s + _CHUNK] = _forward(self.params_, imgs[s:s + _CHUNK])
        return logits, hidden

    def embed(self, X: ArrayLike) -> np.ndarray:
        """The 256-unit layer's activations, L2-normalised (the deep k-NN's features)."""
        h = self._outputs(X)[1]
        return h / np.maximum(np.linalg.norm(h, axis=1, keepdims=True), 1e-6)

    def predict_proba(self, X: ArrayLike, **extras: Any) -> np.ndarray:
        """(n, 10) softmax probabilities. Personalisation keyword arguments (``extra_X``, ``extra_y``,
        ``extra_weight``, ``extra_features``) are accepted and ignored, as the SVM does."""
        return _softmax(self._outputs(X)[0].astype(np.float64))

    def predict(self, X: ArrayLike, **extras: Any) -> np.ndarray:
        return self.predict_proba(X).argmax(axis=1)

    def predict_one(self, img28: ArrayLike, **extras: Any) -> Prediction:
        """One preprocessed 28x28 image -> Prediction (distance None, never unfamiliar)."""
        p = self.predict_proba(as_images(img28)[:1])[0]
        d = int(p.argmax())
        return Prediction(digit=d, confidence=float(p[d]), probabilities=[float(v) for v in p],
                          distance=None, unfamiliar=False)

    @property
    def n_parameters(self) -> int:
        self._check()
        return int(sum(v.size for v in self.params_.values()))


class DeepKnnClassifier(DigitClassifier):
    """The k-NN of recognizer.ml.model over a trained CNN's 256-unit layer, L2-normalised then PCA.

    Everything after the features is DigitClassifier's: the distance-weighted vote, ``extra_features``
    for a user's own drawings, the novelty distance, ``train_groups_`` and stroke fusion. Refitting on
    new drawings with the same CNN (``fit``) needs no JAX and takes seconds.
    """

    kind = "cnn-knn"
    # ranks its neighbours plainly: the learned re-rank (recognizer.ml.metric) is the image k-NN's, on its features
    metric_weight = 0.0

    def __init__(self, cnn: CnnDigitClassifier | None = None, n_components: int = 64, n_neighbors: int = 4,
                 weights: str = "distance") -> None:
        self.cnn = cnn
        self.n_components = n_components
        self.n_neighbors = n_neighbors
        self.weights = weights
        self.deskew = False
        self.blur_sigma = 0.0
        self.features = "cnn"

    def _pre(self, X: ArrayLike) -> np.ndarray:
        if self.cnn is None:
            raise ValueError("DeepKnnClassifier needs a trained CnnDigitClassifier (cnn=...)")
        return self.cnn.embed(X)


# ---------------------------------------------------------------- training with JAX


def _glorot(rng: np.random.Generator, shape, fan_in: int, fan_out: int) -> np.ndarray:
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, shape).astype(np.float32)


def _init_params(rng: np.random.Generator, dense_units: int) -> dict:
    return {
        "w1": _glorot(rng, (3, 3, 1, 32), 9, 9 * 32), "b1": np.zeros(32, np.float32),
        "w2": _glorot(rng, (3, 3, 32, 64), 9 * 32, 9 * 64), "b2": np.zeros(64, np.float32),
        "w3": _glorot(rng, (12 * 12 * 64, dense_units), 12 * 12 * 64, dense_units),
        "b3": np.zeros(dense_units, np.float32),
        "w4": _glorot(rng, (dense_units, 10), dense_units, 10), "b4": np.zeros(10, np.float32),
    }


_STEPS: dict = {}  # one jitted step per process: jax.jit caches compilations per function object


def _make_step(jax):
    if "step" not in _STEPS:
        _STEPS["step"] = _build_step(jax)
    return _STEPS["step"]


def _build_step(jax):
    """A jitted Adam step on a batch (x, y, w): each sample's cross-entropy times its weight, averaged over
    the batch (zero-weight padding rows count for nothing)."""
    jnp = jax.numpy

    def conv(x, w, b):
        h, wd = x.shape[1] - 2, x.shape[2] - 2
        patches = jnp.concatenate([x[:, i:i + h, j:j + wd, :] for i in range(3) for j in range(3)], axis=-1)
        return patches @ w.reshape(-1, w.shape[-1]) + b

    def logits(p, x, key):
        k1, k2 = jax.random.split(key)
        h = jax.nn.relu(conv(x[..., None], p["w1"], p["b1"]))
        h = jax.nn.relu(conv(h, p["w2"], p["b2"]))
        n, hh, ww, c = h.shape
        h = h.reshape(n, hh // 2, 2, ww // 2, 2, c).max(axis=(2, 4))
        h = h * jax.random.bernoulli(k1, 0.75, h.shape) / 0.75  # dropout 0.25
        h = jax.nn.relu(h.reshape(n, -1) @ p["w3"] + p["b3"])
        h = h * jax.random.bernoulli(k2, 0.5, h.shape) / 0.5  # dropout 0.5
        return h @ p["w4"] + p["b4"]

    def loss(p, x, y, w, key):
        z = logits(p, x, key)
        nll = -jax.nn.log_softmax(z)[jnp.arange(y.shape[0]), y]
        return (w * nll).mean(), (z.argmax(axis=1) == y)

    @jax.jit
    def step(p, m, v, t, lr, x, y, w, key):
        (value, correct), g = jax.value_and_grad(loss, has_aux=True)(p, x, y, w, key)
        m = jax.tree.map(lambda a, b: 0.9 * a + 0.1 * b, m, g)
        v = jax.tree.map(lambda a, b: 0.999 * a + 0.001 * b * b, v, g)
        rate = lr * jnp.sqrt(1 - 0.999**t) / (1 - 0.9**t)
        p = jax.tree.map(lambda a, b, c: a - rate * b / (jnp.sqrt(c) + 1e-7), p, m, v)
        return p, m, v, value, (correct * (w > 0)).sum()

    return step


def _train_jax(X, y, sw, *, epochs: int, batch_size: int, learning_rate: float, dense_units: int, augment,
               seed: int, progress) -> tuple[dict, list]:
    jax = require_backend()
    jnp = jax.numpy
    rng = np.random.default_rng(seed)
    params = {k: jnp.asarray(v) for k, v in _init_params(rng, dense_units).items()}
    m = jax.tree.map(jnp.zeros_like, params)
    v = jax.tree.map(jnp.zeros_like, params)
    step = _make_step(jax)
    key = jax.random.PRNGKey(seed)
    n = len(y)
    batches = math.ceil(n / batch_size)
    total, t = epochs * batches, 0
    history = []
    for epoch in range(epochs):
        t0 = time.perf_counter()
        Xe = canvas_augment(X, rng, **augment) if augment else X
        order = rng.permutation(n)
        loss_sum, correct, seen = 0.0, 0, 0
        for b in range(batches):
            rows = order[b * batch_size:(b + 1) * batch_size]
            xb, yb, wb = Xe[rows], y[rows], sw[rows]
            if len(rows) < batch_size:  # pad to one shape (one compilation) with weightless rows
                pad = batch_size - len(rows)
                xb = np.concatenate([xb, np.zeros((pad, 28, 28), np.float32)])
                yb = np.concatenate([yb, np.zeros(pad, np.int64)])
                wb = np.concatenate([wb, np.zeros(pad, np.float32)])
            t += 1
            lr = learning_rate * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (t - 1) / max(total, 1))))
            key, sub = jax.random.split(key)
            params, m, v, value, ok = step(params, m, v, t, lr, xb, yb.astype(np.int32), wb, sub)
            loss_sum += float(value) * batch_size  # the batch mean, padding rows counted as zero
            correct += int(ok)
            seen += len(rows)
            if progress is not None and (b % 20 == 0 or b == batches - 1):
                progress(t / total)
        history.append({"epoch": epoch + 1, "loss": loss_sum / max(seen, 1),
                        "train_accuracy": correct / max(seen, 1), "seconds": round(time.perf_counter() - t0, 1)})
    return {k: np.asarray(v, dtype=np.float32) for k, v in params.items()}, history


def train_cnn(
    images: ArrayLike,
    labels: ArrayLike,
    *,
    progress: Progress | None = None,
    cv: bool = True,
    param_grid: dict | None = None,
    augment: dict | bool | None = None,
    sample_weight: ArrayLike | None = None,
    random_state: int = 0,
    defaults: dict | None = None,
    max_train_samples: int | None = None,
    deep_knn: bool = False,
    **_ignored: Any,
) -> TrainingResult:
    """Fit a CnnDigitClassifier (the tutorial's network and training budget, CNN_DEFAULTS).

    There is nothing cross-validated: ``cv`` and ``param_grid`` are accepted for the common interface
    (``defaults`` may set epochs, batch_size, learning_rate, dense_units; other keys, such as the k-NN's
    that the retrain passes, are ignored). ``augment``: None for CNN_AUGMENT, False for none, or a dict
    of canvas_augment's arguments over CNN_AUGMENT. ``max_train_samples`` caps the training set.
    ``deep_knn``: return the DeepKnnClassifier over the trained CNN instead (fitted on the same samples).
    Progress stages are those of recognizer.ml.model.train_knn. Raises CnnUnavailable without JAX.
    """
    require_backend()  # before any work: the refusal is immediate
    t0 = time.perf_counter()
    report = stage_reporter(progress, {"features": (0.0, 0.02), "cv": (0.02, 0.02), "augment": (0.02, 0.02),
                                        "fit": (0.02, 0.97 if deep_knn else 1.0), "done": (1.0, 1.0)})
    X = as_images(images)
    y = np.asarray(labels).astype(np.int64).ravel()
    if len(X) != len(y):
        raise ValueError(f"{len(X)} images but {len(y)} labels")
    chosen = dict(CNN_DEFAULTS)
    if defaults:
        chosen.update({k: v for k, v in defaults.items() if k in CNN_DEFAULTS})
    if augment is None or augment is True:
        aug = dict(CNN_AUGMENT)
    elif augment is False or augment == {}:
        aug = None
    else:
        aug = {**CNN_AUGMENT, **augment}
    sw = None if sample_weight is None else np.asarray(sample_weight, np.float32).ravel()
    if max_train_samples and max_train_samples < len(y):
        keep = random_subsample(y, int(max_train_samples), np.random.default_rng(random_state))
        X, y = X[keep], y[keep]
        sw = None if sw is None else sw[keep]
    report("features", 1.0)
    est = CnnDigitClassifier(epochs=int(chosen["epochs"]), batch_size=int(chosen["batch_size"]),
                             learning_rate=float(chosen["learning_rate"]), dense_units=int(chosen["dense_units"]),
                             augment=aug, random_state=random_state)
    est.fit(X, y, sample_weight=sw, progress=lambda f: report("fit", f))
    cnn_seconds = time.perf_counter() - t0
    hyper = {
        "kind": "cnn",
        "network": "conv3x3(32)-conv3x3(64)-maxpool2-dropout0.25-dense(256)-dropout0.5-softmax",
        **chosen,
        "optimizer": "adam, cosine decay to 0.1x",
        "parameters": est.n_parameters,
        "augment": aug,
        "deskew": False,
        "train_samples": len(y),
        "max_train_samples": max_train_samples or None,
        "train_accuracy_last_epoch": est.history_[-1]["train_accuracy"] if est.history_ else None,
        "backend": _backend_version(),
    }
    curve = {"kind": "cnn", "k": [], "accuracy": [], "epochs": est.history_, "n_cv": 0, "folds": 0}
    if deep_knn:
        knn = DeepKnnClassifier(est).fit(X, y, sw)
        hyper.update({"kind": "cnn-knn", "n_components": knn.n_components, "n_neighbors": knn.n_neighbors,
                      "weights": knn.weights, "cnn_train_seconds": round(cnn_seconds, 1)})
        est = knn
    report("done", 1.0)
    return TrainingResult(est, hyper, curve, time.perf_counter() - t0, len(y), [])


def _backend_version() -> str:
    import jax

    flags = os.environ.get("XLA_FLAGS", "")
    return f"jax {jax.__version__}" + (f" (XLA_FLAGS={flags})" if flags else "")
