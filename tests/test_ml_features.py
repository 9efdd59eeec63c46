"""The PCA (scikit-learn's since recognizer.ml.features.fit_pca) gives the axes, neighbours and prune-index
behaviour the hand-written covariance PCA gave, on the bundled digits."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.linalg import subspace_angles

from recognizer.ml import knn, mnist
from recognizer.ml.common import augment_images
from recognizer.ml.features import fit_pca, gradient_features, image_features
from recognizer.ml.model import DigitClassifier


def hand_written_pca(F: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The PCA recognizer.ml had before (commit 8be2505): float64 covariance, eigh, largest loading positive."""
    mean = F.mean(axis=0, dtype=np.float64)
    centred = F.astype(np.float64) - mean
    vals, vecs = np.linalg.eigh(centred.T @ centred)
    comps = vecs[:, np.argsort(vals)[::-1][:n]].T
    signs = np.sign(comps[np.arange(n), np.abs(comps).argmax(axis=1)])
    return mean.astype(np.float32), (comps * signs[:, None]).astype(np.float32)


@pytest.fixture(scope="module")
def digits():
    return mnist.load_fallback_digits()


@pytest.mark.parametrize("features", ["pixels", "gradients"])
def test_the_axes_are_the_hand_written_pcas(digits, features):
    F = image_features(digits.train_images / 255.0, features=features)
    mean, comps = fit_pca(F, 50)
    ref_mean, ref = hand_written_pca(F, 50)
    assert mean.dtype == comps.dtype == np.float32 and comps.shape == (50, F.shape[1])
    np.testing.assert_allclose(mean, ref_mean, atol=1e-5)
    # axis by axis, in order and with the same sign: the prune index reads the leading axes alone
    cosines = (comps * ref).sum(axis=1)
    assert cosines.min() > 0.9999, cosines.min()
    assert np.degrees(subspace_angles(comps.T.astype(np.float64), ref.T.astype(np.float64)).max()) < 0.1


def test_the_knn_finds_the_neighbours_it_found_with_the_hand_written_pca(digits):
    X, y, Xt = digits.train_images / 255.0, digits.train_labels, digits.test_images / 255.0
    # the plain ranking (no learned re-rank, tests/test_ml_metric.py): the neighbours the PCA's axes give
    est = DigitClassifier(n_components=50, n_neighbors=4, metric_weight=0.0).fit(X, y)
    F, Ft = image_features(X, features="gradients"), image_features(Xt, features="gradients")
    ref_mean, ref = hand_written_pca(F, 50)
    R = np.ascontiguousarray((F - ref_mean) @ ref.T, np.float32)
    Q = np.ascontiguousarray((Ft - ref_mean) @ ref.T, np.float32)
    ref_idx, ref_dist = knn.knn_sorted(Q, R, np.einsum("ij,ij->i", R, R), 4)
    idx, dist = est.kneighbors_features(est.transform(Xt), 4)
    np.testing.assert_allclose(dist, ref_dist, atol=1e-4)
    # the same rows, except where two lie within float32 rounding of each other (a BLAS may order those
    # either way: one of these queries has its 2nd and 3rd neighbours 2e-6 apart): each row found lies, in the
    # reference's own space, at the distance the reference found at that rank
    found = np.linalg.norm(R[idx] - Q[:, None, :], axis=2)
    np.testing.assert_allclose(found, ref_dist, atol=1e-4)
    assert (idx == ref_idx).mean() > 0.99
    ref_pred = knn.vote(y[ref_idx], ref_dist, np.ones(ref_idx.shape, np.float32), "distance").argmax(axis=1)
    assert (est.predict(Xt) == ref_pred).all()


def test_single_queries_are_proven_by_the_prune_index_and_exact(digits, monkeypatch):
    """The first axes bound a distance tightly only when they carry the most variance: with the axes
    reversed, 74 of these 200 queries fall back to the full search; in order, none does."""
    X, y, _flags = augment_images(digits.train_images / 255.0, digits.train_labels, shifts=1)  # > 2,048 rows
    est = DigitClassifier(metric_weight=0.0).fit(X, y)  # the search alone: no perceptron to train on 7k rows
    full = knn.knn_sorted
    fallbacks = []

    def counting(*args, **kwargs):
        fallbacks.append(1)
        return full(*args, **kwargs)

    monkeypatch.setattr(knn, "knn_sorted", counting)
    for q in est.transform(digits.test_images[:200] / 255.0):
        idx, dist = est.kneighbors_features(q[None], 4)  # one query: the pruned search
        _ref_idx, ref_dist = full(q[None], est.train_features_, est.train_sq_, 4)
        np.testing.assert_allclose(dist, ref_dist, atol=1e-5)
        # the rows found are the nearest (shifted copies deskew alike: exact ties come in either order)
        found = np.linalg.norm(est.train_features_[idx[0]] - q, axis=1)
        np.testing.assert_allclose(found, ref_dist[0], atol=1e-4)
    assert est.__dict__.get("_prune_index") not in (None, False)
    assert len(fallbacks) <= 10, len(fallbacks)


def test_one_sample_has_no_variance_but_still_gets_axes():
    F = np.arange(10, dtype=np.float32)[None]
    mean, comps = fit_pca(F, 1)
    np.testing.assert_array_equal(mean, F[0])
    assert comps.shape == (1, 10) and np.linalg.norm(comps) == pytest.approx(1.0)


def _gradient_features_direction_by_direction(imgs: np.ndarray) -> np.ndarray:
    """gradient_features as first written (one plane at a time, np.remainder): the reference."""
    from recognizer.ml.features import _pooling_matrix

    p = np.pad(imgs.astype(np.float32), ((0, 0), (1, 1), (1, 1)))
    gx = (p[:, :-2, 2:] - p[:, :-2, :-2]) + 2 * (p[:, 1:-1, 2:] - p[:, 1:-1, :-2]) + (p[:, 2:, 2:] - p[:, 2:, :-2])
    gy = (p[:, 2:, :-2] - p[:, :-2, :-2]) + 2 * (p[:, 2:, 1:-1] - p[:, :-2, 1:-1]) + (p[:, 2:, 2:] - p[:, :-2, 2:])
    mag, ang, width = np.hypot(gx, gy), np.arctan2(gy, gx), 2 * np.pi / 8
    B = _pooling_matrix(14)
    out = np.empty((len(imgs), 8, 14, 14), dtype=np.float32)
    for j in range(8):
        diff = np.abs((ang - j * width + np.pi) % (2 * np.pi) - np.pi)
        out[:, j] = B @ (mag * np.clip(1.0 - diff / width, 0.0, 1.0)) @ B.T
    return np.sqrt(np.maximum(out, 0.0)).reshape(len(imgs), -1)


def test_the_gradient_features_are_the_direction_by_direction_ones_bit_for_bit(digits):
    """The features of the models already stored must not move: the vectorised planes give the same floats,
    for a block of images and across block boundaries, on digits, noise and flat black-and-white images."""
    rng = np.random.default_rng(4)
    X = np.concatenate([digits.train_images[:300] / 255.0, rng.random((40, 28, 28)),
                        (rng.random((20, 28, 28)) > 0.7) * 1.0, np.zeros((1, 28, 28))]).astype(np.float32)
    ref = _gradient_features_direction_by_direction(X)
    np.testing.assert_array_equal(gradient_features(X), ref)
    np.testing.assert_array_equal(gradient_features(X[:1]), ref[:1])
