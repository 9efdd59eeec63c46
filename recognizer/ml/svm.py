"""SVM digit classifier: the same features as the k-NN (deskew -> PCA), then an RBF-kernel SVC.

Probabilities come from temperature scaling of the SVC's decision values (scikit-learn's
``CalibratedClassifierCV(method="temperature", ensemble=False)``: the calibration is learnt on
out-of-fold decision values, the served SVC is fitted on all the data). ``SVC(probability=True)``
is deprecated since scikit-learn 1.9 and its Platt scaling cost five extra fits.

Measured on 2 busy cores (one BLAS thread): fitting on all 60k MNIST digits with PCA 50 and the
default C and gamma takes 28-34 s including the calibration folds, scores 98.9 % on the MNIST test
set, and the file is about 3 MB (about 9.6k support vectors x 50 floats); see bench/models.py.
So the default trains on every sample; ``max_train_samples`` caps it for bigger (augmented) sets.

The user's own drawings (personalisation) are a k-NN idea: ``predict_one``/``predict_proba``
accept the same ``extra_*`` keyword arguments and ignore them, so the serving path needs no
special case. ``Prediction.distance`` is None and ``unfamiliar`` False: there is no neighbour
distance to judge a scribble by, only the confidence and margin.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from sklearn.base import BaseEstimator, ClassifierMixin

from .common import (
    Prediction,
    Progress,
    TrainingResult,
    check_digit_labels,
    cv_splits,
    final_training_set,
    images_and_labels,
    random_subsample,
    stage_reporter,
)
from .features import DigitFeatures, as_images, image_features
from .knn import N_CLASSES

__all__ = ["SVM_DEFAULTS", "SVM_PARAM_GRID", "SvmDigitClassifier", "train_svm"]

# gamma_scale multiplies scikit-learn's gamma="scale" (1 / (n_features * feature variance)).
SVM_PARAM_GRID = {
    "pca_components": [50],
    "C": [3.0, 10.0, 30.0],
    "gamma_scale": [1.0, 2.0, 3.0],  # 3-fold CV on 2k MNIST digits: 1-2 best, 3 -0.2 pt, 4 -0.8 pt
}
SVM_DEFAULTS = {"pca_components": 50, "C": 10.0, "gamma_scale": 1.0}


def _gamma(P: np.ndarray, gamma_scale: float) -> float:
    var = float(P.var()) if P.size else 1.0
    return float(gamma_scale) / (P.shape[1] * (var if var > 0 else 1.0))


class SvmDigitClassifier(DigitFeatures, ClassifierMixin, BaseEstimator):
    """deskew -> PCA -> RBF SVC with temperature-scaled probabilities; classes are always 0..9.

    ``fit(X, y, sample_weight)``: X is (n,28,28) or (n,784) in [0,1] (uint8 0..255 accepted).
    ``gamma_scale`` multiplies gamma="scale" computed on the PCA features, so it carries over
    between PCA sizes; the gamma actually used is ``gamma_``.
    """

    kind = "svm"
    reads_strokes = False  # the serving interface of every kind (recognizer.ml.kinds.ServingEstimator)

    def __init__(
        self,
        n_components: int = 50,
        C: float = 10.0,
        gamma_scale: float = 1.0,
        deskew: bool = True,
        blur_sigma: float = 0.0,
        calibration_folds: int = 3,
    ) -> None:
        self.n_components = n_components
        self.C = C
        self.gamma_scale = gamma_scale
        self.deskew = deskew
        self.blur_sigma = blur_sigma
        self.calibration_folds = calibration_folds

    # -- fitting
    def fit(self, X: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None) -> SvmDigitClassifier:
        return self._fit_features(self._pre(X), y, sample_weight)

    def _fit_features(self, F: np.ndarray, y: ArrayLike, sample_weight: ArrayLike | None = None
                      ) -> SvmDigitClassifier:
        from sklearn.calibration import CalibratedClassifierCV
        from sklearn.svm import SVC

        y = check_digit_labels(F, y)
        present, counts = np.unique(y, return_counts=True)
        if len(present) < 2:
            raise ValueError("an SVM needs training samples of at least two digits")
        sw = None
        if sample_weight is not None:
            sw = np.asarray(sample_weight, dtype=np.float64).ravel()
            if len(sw) != len(y):
                raise ValueError("sample_weight must have one value per sample")
        self._fit_pca(F, self.n_components)
        P = self._project(F)
        self.gamma_ = _gamma(P, self.gamma_scale)
        svc = SVC(C=float(self.C), kernel="rbf", gamma=self.gamma_, cache_size=500)
        folds = int(min(self.calibration_folds, counts.min()))
        if folds >= 2:
            model = CalibratedClassifierCV(svc, method="temperature", cv=folds, ensemble=False)
        else:  # too few samples of some digit to calibrate out of fold: softmax of the raw decision values
            model = svc
        model.fit(P, y, sample_weight=sw)
        self.model_ = model
        self.calibrated_ = folds >= 2
        self.model_classes_ = np.asarray(model.classes_, dtype=np.int64)
        self.n_support_vectors_ = len((model.calibrated_classifiers_[0].estimator if folds >= 2 else model).support_)
        self.classes_ = np.arange(N_CLASSES)
        self.n_features_in_ = 784
        return self

    # -- prediction
    def _check(self) -> None:
        if not hasattr(self, "model_"):
            from sklearn.exceptions import NotFittedError

            raise NotFittedError("SvmDigitClassifier is not fitted yet: call fit() first")

    def predict_proba_features(self, P: np.ndarray) -> np.ndarray:
        """(n, 10) probabilities for PCA features."""
        self._check()
        if self.calibrated_:
            q = self.model_.predict_proba(P)
        else:
            z = np.atleast_2d(self.model_.decision_function(P))
            if z.shape[1] == 1:  # binary SVC: one column, positive = second class
                z = np.hstack([-z, z])
            z = z - z.max(axis=1, keepdims=True)
            q = np.exp(z)
            q /= q.sum(axis=1, keepdims=True)
        out = np.zeros((len(P), N_CLASSES), dtype=np.float64)
        out[:, self.model_classes_] = q
        return out

    def predict_proba(self, X: ArrayLike, **extras: Any) -> np.ndarray:
        """(n, 10) probabilities. Personalisation keyword arguments (``extra_X``, ``extra_y``,
        ``extra_weight``, ``extra_features``) are accepted and ignored: see the module docstring."""
        return self.predict_proba_features(self.transform(X))

    def predict(self, X: ArrayLike, **extras: Any) -> np.ndarray:
        return self.predict_proba(X).argmax(axis=1)

    def predict_one(self, img28: ArrayLike, **extras: Any) -> Prediction:
        """One preprocessed 28x28 image -> Prediction (distance None, never unfamiliar)."""
        p = self.predict_proba(as_images(img28)[:1])[0]
        d = int(p.argmax())
        return Prediction(digit=d, confidence=float(p[d]), probabilities=[float(v) for v in p],
                          distance=None, unfamiliar=False)


def train_svm(
    images: ArrayLike,
    labels: ArrayLike,
    *,
    progress: Progress | None = None,
    cv: bool = True,
    param_grid: dict | None = None,
    augment: dict | None = None,
    sample_weight: ArrayLike | None = None,
    random_state: int = 0,
    cv_samples: int = 10000,
    cv_folds: int = 3,
    deskew: bool = True,
    blur_sigma: float = 0.0,
    defaults: dict | None = None,
    max_train_samples: int | None = None,
) -> TrainingResult:
    """Fit an SvmDigitClassifier, choosing PCA size, C and gamma by cross-validation on a subsample.

    The CV fits plain SVCs (accuracy only, no calibration) on ``cv_samples`` random samples in
    ``cv_folds`` folds over ``param_grid`` (keys of SVM_PARAM_GRID). The final model is fitted on
    all samples, or a random ``max_train_samples`` of them; the count is in the hyperparameters.
    Progress stages are those of recognizer.ml.model.train_knn.
    """
    from sklearn.svm import SVC

    t0 = time.perf_counter()
    report = stage_reporter(progress, {"features": (0.0, 0.15), "cv": (0.15, 0.55), "augment": (0.55, 0.6),
                                        "fit": (0.6, 1.0), "done": (1.0, 1.0)})
    X, y = images_and_labels(images, labels)
    grid = dict(SVM_PARAM_GRID)
    if param_grid:
        unknown = set(param_grid) - set(SVM_PARAM_GRID)
        if unknown:
            raise ValueError(f"unknown SVM hyperparameters {sorted(unknown)}; known: {sorted(SVM_PARAM_GRID)}")
        grid.update(param_grid)
    chosen = dict(SVM_DEFAULTS)
    if defaults:
        chosen.update({k: v for k, v in defaults.items() if k in SVM_DEFAULTS})
    report("features", 0.0)
    F = image_features(X, deskew, blur_sigma)
    report("features", 1.0)
    rng = np.random.default_rng(random_state)
    cv_grid: list = []
    cv_curve: dict = {"kind": "svm", "grid": cv_grid, "n_cv": 0, "folds": 0, "k": [], "accuracy": []}
    if cv and len(y) >= 2 * cv_folds:
        ps = sorted({int(p) for p in grid["pca_components"]})
        Cs = sorted({float(c) for c in grid["C"]})
        gs = sorted({float(g) for g in grid["gamma_scale"]})
        correct = {(p, c, g): 0 for p in ps for c in Cs for g in gs}
        total, steps, done = 0, cv_folds * len(ps) * len(Cs) * len(gs), 0
        for tr, te, Ptr, Pte in cv_splits(F, y, max(ps), cv_samples, cv_folds, rng):
            sw = None if sample_weight is None else np.asarray(sample_weight, np.float64)[tr]
            for p in ps:
                A, B = np.ascontiguousarray(Ptr[:, :p]), np.ascontiguousarray(Pte[:, :p])
                for c in Cs:
                    for g in gs:
                        if len(np.unique(y[tr])) >= 2:
                            svc = SVC(C=c, kernel="rbf", gamma=_gamma(A, g), cache_size=500)
                            pred = svc.fit(A, y[tr], sample_weight=sw).predict(B)
                        else:
                            pred = np.full(len(te), y[tr][0])
                        correct[(p, c, g)] += int((pred == y[te]).sum())
                        done += 1
                        report("cv", done / steps)
            total += len(te)
        for (p, c, g), n_ok in correct.items():
            cv_grid.append({"pca_components": p, "C": c, "gamma_scale": g, "accuracy": n_ok / total})
        # ties: the smaller C (smoother boundary), then the smaller PCA
        best = max(cv_grid, key=lambda r: (round(r["accuracy"], 6), -r["C"], -r["pca_components"]))
        chosen = {k: best[k] for k in ("pca_components", "C", "gamma_scale")}
        cv_curve.update({"n_cv": int(total), "folds": cv_folds, **chosen})
    if augment:
        report("augment", 0.0)
    Ff, yf, swf = final_training_set(X, y, F, sample_weight, augment, deskew, blur_sigma, random_state)
    if augment:
        report("augment", 1.0)
    if max_train_samples and max_train_samples < len(yf):
        keep = random_subsample(yf, int(max_train_samples), rng)
        Ff, yf = Ff[keep], yf[keep]
        swf = None if swf is None else np.asarray(swf)[keep]
    report("fit", 0.0)
    est = SvmDigitClassifier(n_components=int(chosen["pca_components"]), C=float(chosen["C"]),
                             gamma_scale=float(chosen["gamma_scale"]), deskew=deskew, blur_sigma=blur_sigma)
    est._fit_features(Ff, yf, swf)
    report("fit", 1.0)
    hyper = {
        "kind": "svm",
        "n_components": est.n_components,
        "C": est.C,
        "gamma_scale": est.gamma_scale,
        "gamma": est.gamma_,
        "kernel": "rbf",
        "probabilities": "temperature scaling, out of fold" if est.calibrated_ else "softmax of decision values",
        "deskew": deskew,
        "blur_sigma": blur_sigma,
        "augment": augment or None,
        "train_samples": len(yf),
        "max_train_samples": max_train_samples or None,
        "support_vectors": est.n_support_vectors_,
        "cv_samples": int(cv_curve["n_cv"]),
        "cv_accuracy": max((r["accuracy"] for r in cv_grid), default=None),
    }
    secs = time.perf_counter() - t0
    report("done", 1.0)
    return TrainingResult(est, hyper, cv_curve, secs, len(yf), cv_grid)
