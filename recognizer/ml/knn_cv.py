"""Choosing the image k-NN's hyperparameters (PCA size, weighting, k) by cross-validation, for
recognizer.ml.model.train_knn.

The folds are of a random subsample; per fold the PCA is fitted once at the largest size and the
neighbours are searched once up to the largest k, so every (PCA size, weighting, k) is scored from one
search.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from .common import Progress, cv_splits
from .knn import knn_sorted, vote

__all__ = ["cross_validate_knn", "curve_without_cv"]


def curve_without_cv(chosen: dict) -> dict:
    """TrainingResult.cv_curve when no cross-validation ran: the hyperparameters taken, nothing scored."""
    return {"pca_components": chosen["pca_components"], "weights": chosen["weights"],
            "k": [], "accuracy": [], "grid": [], "n_cv": 0, "folds": 0}


def cross_validate_knn(F: np.ndarray, y: np.ndarray, grid: dict, *, sample_weight: ArrayLike | None,
                       cv_samples: int, cv_folds: int, random_state: int, report: Progress) -> tuple[dict, dict]:
    """(the chosen hyperparameters, the cv_curve of TrainingResult) for the image features `F`.

    `grid`: lists of "pca_components", "weights" and "k" to try. The best accuracy wins (to six
    decimals); a tie goes to the smaller k, then the smaller PCA. `report("cv", fraction)` after each
    PCA size of each fold. The curve holds every k's accuracy at the chosen PCA size and weighting, and
    under "grid" every combination's.
    """
    ps = sorted({int(p) for p in grid["pca_components"]})
    ks = sorted({int(k) for k in grid["k"]})
    ws = list(grid["weights"])
    correct, total = _count_correct(F, y, ps, ws, ks, sample_weight, cv_samples, cv_folds, random_state, report)
    cv_grid = [{"pca_components": p, "weights": w, "k": k, "accuracy": c / total} for (p, w, k), c in correct.items()]
    best = max(cv_grid, key=lambda r: (round(r["accuracy"], 6), -r["k"], -r["pca_components"]))
    chosen = {"pca_components": best["pca_components"], "weights": best["weights"], "k": best["k"]}
    cv_curve = {
        "pca_components": chosen["pca_components"],
        "weights": chosen["weights"],
        "k": ks,
        "accuracy": [correct[(chosen["pca_components"], chosen["weights"], k)] / total for k in ks],
        "grid": cv_grid,
        "n_cv": int(total),
        "folds": cv_folds,
    }
    return chosen, cv_curve


def _count_correct(F: np.ndarray, y: np.ndarray, ps: list[int], ws: list[str], ks: list[int],
                   sample_weight: ArrayLike | None, cv_samples: int, cv_folds: int, random_state: int,
                   report: Progress) -> tuple[dict[tuple, int], int]:
    """({(pca size, weighting, k): test samples predicted right over every fold}, test samples)."""
    correct = {(p, w, k): 0 for p in ps for w in ws for k in ks}
    total = 0
    rng = np.random.default_rng(random_state)
    for fi, (tr, te, Ptr, Pte) in enumerate(cv_splits(F, y, max(ps), cv_samples, cv_folds, rng)):
        sw = None if sample_weight is None else np.asarray(sample_weight, np.float32)[tr]
        for pi, p in enumerate(ps):
            _score_pca_size(Ptr[:, :p], Pte[:, :p], y[tr], y[te], sw, p, ws, ks, correct)
            report("cv", (fi * len(ps) + pi + 1) / (cv_folds * len(ps)))
        total += len(te)
    return correct, total


def _score_pca_size(train: np.ndarray, test: np.ndarray, y_train: np.ndarray, y_test: np.ndarray,
                    sw: np.ndarray | None, p: int, ws: list[str], ks: list[int], correct: dict) -> None:
    """Adds to `correct` one fold's right predictions at PCA size `p` (its first p components) for
    every weighting and k, from one search of the largest k."""
    A = np.ascontiguousarray(train)
    B = np.ascontiguousarray(test)
    idx, dist = knn_sorted(B, A, np.einsum("ij,ij->i", A, A), max(ks))
    lab = y_train[idx]
    mult = np.ones(idx.shape, np.float32) if sw is None else sw[idx]
    for w in ws:
        for k in ks:
            kk = min(k, idx.shape[1])
            pred = vote(lab[:, :kk], dist[:, :kk], mult[:, :kk], w).argmax(axis=1)
            correct[(p, w, k)] += int((pred == y_test).sum())
