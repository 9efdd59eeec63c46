"""UNIPEN parsing, canvas-like replay and writer splits on a tiny inline file."""

from __future__ import annotations

import numpy as np
import pytest

from recognizer.ml import pendigits as pdg
from recognizer.ml.evaluate import canvas_dataset
from recognizer.ml.preprocess import preprocess_drawing

UNIPEN = """.INCLUDE dene.doc
.HIERARCHY DIGIT

.SEGMENT DIGIT    0 ? "1"
.COMMENT 1 7  3
.PEN_DOWN
 100  400
 100  250
 100  100
.PEN_UP

.SEGMENT DIGIT    1 ? "7"
.COMMENT 7 9  4
.PEN_DOWN
  50  400
 250  400
 120  100
.PEN_UP
.PEN_DOWN
 100  250
 200  250
.PEN_UP

.SEGMENT DIGIT    2 ? "0"
.COMMENT 0 7  5
.PEN_DOWN
 100  100
 300  100
 300  500
 100  500
 100  100
.PEN_UP
"""


@pytest.fixture
def digits():
    return pdg.parse_unipen(UNIPEN)


def test_it_parses_labels_writers_and_strokes(digits):
    assert [(d.label, d.writer, len(d.strokes)) for d in digits] == [(1, 7, 1), (7, 9, 2), (0, 7, 1)]
    assert digits[1].strokes[0].shape == (3, 2)


def test_parsed_y_points_down(digits):
    one = digits[0].strokes[0]
    assert one[0, 1] < one[-1, 1]  # the pen went from the top (y=400 up) downwards


def test_it_loads_from_the_file_or_its_directory(tmp_path):
    (tmp_path / "pendigits-orig.tra").write_text(UNIPEN)
    assert len(pdg.load_pendigits(tmp_path)) == 3
    assert len(pdg.load_pendigits(tmp_path / "pendigits-orig.tra")) == 3
    with pytest.raises(FileNotFoundError):
        pdg.load_pendigits(tmp_path / "missing")


def test_rendering_is_transparent_with_black_ink_inside_the_canvas(digits):
    for seed in range(20):
        img = pdg.render_drawing(digits[2], np.random.default_rng(seed), size=200)
        a = np.asarray(img)
        assert img.mode == "RGBA" and img.size == (200, 200)
        alpha = a[..., 3]
        assert alpha[0].max() == 0 and alpha[-1].max() == 0 and alpha[:, 0].max() == 0 and alpha[:, -1].max() == 0
        assert (a[..., :3][alpha > 0] == 0).all()
        rows = np.flatnonzero(alpha.max(axis=1) > 128)
        assert 0.35 * 200 - 2 <= rows[-1] - rows[0] + 1 <= 0.80 * 200 + 0.09 * 200 + 2


def test_rendering_is_anti_aliased(digits):
    alpha = np.asarray(pdg.render_drawing(digits[1], np.random.default_rng(0)))[..., 3]
    assert ((alpha > 0) & (alpha < 255)).any()


def test_a_rendered_png_survives_the_real_preprocessing(digits):
    out = preprocess_drawing(pdg.render_png(digits[0], np.random.default_rng(1)))
    assert out.shape == (28, 28) and out.max() > 0.9


def test_writers_are_never_split_across_train_and_test(digits):
    more = digits * 4
    for i, d in enumerate(more):
        more[i] = pdg.PenDigit(writer=i % 5, label=d.label, strokes=d.strokes)
    train, test = pdg.split_writers(more, test_fraction=0.4, seed=1)
    assert {d.writer for d in train}.isdisjoint({d.writer for d in test})
    assert len(train) + len(test) == len(more) and len({d.writer for d in test}) == 2


def test_canvas_dataset_filters_writers_and_is_deterministic(tmp_path):
    (tmp_path / "pendigits-orig.tra").write_text(UNIPEN)
    X, y, w = canvas_dataset(tmp_path, writers=[7])
    assert X.shape == (2, 28, 28) and list(y) == [1, 0] and list(w) == [7, 7]
    X2, _, _ = canvas_dataset(tmp_path, writers=[7])
    np.testing.assert_array_equal(X, X2)


def test_canvas_dataset_keeps_its_renderings_for_the_same_digits(digits, tmp_path, monkeypatch):
    import importlib

    evaluate = importlib.import_module("recognizer.ml.evaluate")  # the package exports a function of that name
    cache = tmp_path / "cache"
    X, y, w = canvas_dataset(digits, cache_dir=cache)
    assert len(list(cache.glob("canvas-*.npz"))) == 1
    fresh = evaluate.render_canvas_images
    monkeypatch.setattr(evaluate, "render_canvas_images", lambda *a, **k: pytest.fail("rendered again"))
    X2, y2, w2 = canvas_dataset(digits, cache_dir=cache)
    np.testing.assert_array_equal(X, X2)
    assert list(y2) == list(y) and list(w2) == list(w)
    rendered = []
    monkeypatch.setattr(evaluate, "render_canvas_images", lambda *a, **k: rendered.append(1) or fresh(*a, **k))
    moved = [pdg.PenDigit(writer=d.writer, label=d.label, strokes=[s + 1.0 for s in d.strokes]) for d in digits]
    canvas_dataset(moved, cache_dir=cache)  # other trajectories: another file
    assert rendered == [1] and len(list(cache.glob("canvas-*.npz"))) == 2
    for f in cache.glob("canvas-*.npz"):
        f.write_bytes(b"not an npz")
    X3, _, _ = canvas_dataset(digits, cache_dir=cache)  # a damaged file is rendered again
    np.testing.assert_array_equal(X, X3)
    assert rendered == [1, 1]
