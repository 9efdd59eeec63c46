"""The registry of model kinds: names, refusals, what each kind says it offers (checked against what its
estimator does), the serving Protocol; and the layout of recognizer.ml (no cycle, no private import)."""

from __future__ import annotations

import ast
import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest

from recognizer import trust
from recognizer.ml import cnn, kinds, mnist
from recognizer.ml.common import KindUnavailable, Prediction, TrainingResult

ML = Path(kinds.__file__).parent


@pytest.fixture(scope="module")
def digits():
    return mnist.load_fallback_digits()


@pytest.fixture(scope="module")
def fitted(digits):
    """A small estimator of every kind that trains without the optional extra."""
    X, y = digits.train_images[:300] / 255.0, digits.train_labels[:300]
    return {k.name: k.train(X, y, cv=False).estimator for k in kinds.KINDS.values() if k.check is None}


def test_the_kinds_in_the_order_the_command_offers_them():
    assert kinds.MODEL_KINDS == ("knn", "svm", "cnn")
    assert all(kinds.get_kind(name).name == name and kinds.get_kind(name).description for name in kinds.MODEL_KINDS)


def test_an_unknown_kind_is_refused_naming_the_known_ones(digits):
    with pytest.raises(ValueError, match="unknown model kind 'forest': one of knn, svm, cnn"):
        kinds.get_kind("forest")
    with pytest.raises(ValueError, match="unknown model kind"):
        kinds.train_model(digits.train_images[:20], digits.train_labels[:20], kind="forest")


def test_each_kind_trains_its_own_estimator(fitted):
    for name, est in fitted.items():
        assert type(est) is kinds.get_kind(name).estimator_class


def test_every_estimator_offers_the_serving_protocol(fitted, digits):
    x = digits.test_images[:3] / 255.0
    for est in fitted.values():
        assert isinstance(est, kinds.ServingEstimator)
        assert isinstance(est.predict_one(x[0]), Prediction)
        assert est.predict_proba(x).shape == (3, 10) and est.predict(x).shape == (3,)
        assert list(est.classes_) == list(range(10))
    assert not isinstance(object(), kinds.ServingEstimator)
    assert not isinstance(kinds.get_kind("knn").estimator_class(), kinds.ServingEstimator)  # unfitted: no classes_


def test_leave_out_says_whether_trust_can_leave_accounts_out(fitted):
    for name, est in fitted.items():
        assert (trust.image_part(est) is not None) == kinds.get_kind(name).leave_out, name


def test_personalises_says_whether_a_users_drawings_change_the_answer(fitted, digits):
    x = digits.test_images[:1] / 255.0
    for name, est in fitted.items():
        before = int(est.predict(x)[0])
        other = (before + 1) % 10
        mine = est.predict(x, extra_X=np.repeat(x, 5, axis=0), extra_y=[other] * 5, extra_weight=10.0)
        assert (int(mine[0]) == other) == kinds.get_kind(name).personalises, name


@pytest.mark.parametrize("name", ["knn", "svm", "cnn"])
def test_strokes_reach_only_a_kind_that_fuses_them(name):
    seen = {}

    def trainer(images, labels, **kwargs) -> TrainingResult:
        seen.update(kwargs)
        return TrainingResult(None, {}, {}, 0.0, len(labels))

    kind = dataclasses.replace(kinds.get_kind(name), trainer=trainer, check=None)
    kind.train(np.zeros((2, 28, 28)), [1, 2], strokes=[None, None], cv=False)
    assert seen.pop("cv") is False
    assert ("strokes" in seen) == kind.stroke_fusion and seen.keys() <= {"strokes"}


def test_without_jax_the_cnn_kind_is_unavailable_with_the_install_hint(monkeypatch, digits):
    monkeypatch.setitem(sys.modules, "jax", None)
    cnn_kind = kinds.get_kind("cnn")
    assert not cnn_kind.available and cnn.CNN_INSTALL_HINT in cnn_kind.unavailable_reason()
    with pytest.raises(KindUnavailable, match="requirements-cnn.txt") as info:
        cnn_kind.train(digits.train_images[:20] / 255.0, digits.train_labels[:20])
    assert isinstance(info.value, cnn.CnnUnavailable) and isinstance(info.value, ValueError)
    assert kinds.get_kind("knn").available and kinds.get_kind("knn").unavailable_reason() is None


# ---------------------------------------------------------------- the layout of recognizer.ml


def _ml_imports(path: Path) -> list[tuple[str, list[str]]]:
    """(imported recognizer.ml module, names) for every import in the file, in functions too."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:
                base = node.module
            elif node.module and node.module.startswith("recognizer.ml."):
                base = node.module.removeprefix("recognizer.ml.")
            elif node.module == "recognizer.ml":
                base = None
            else:
                continue
            if base is None:  # `from . import x` / `from recognizer.ml import x`: x is a module or a re-export
                out += [(a.name, []) for a in node.names if (ML / f"{a.name}.py").exists()]
            else:
                out.append((base.split(".")[0], [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            out += [(a.name.removeprefix("recognizer.ml.").split(".")[0], [])
                    for a in node.names if a.name.startswith("recognizer.ml.")]
    return out


def test_no_private_name_is_imported_from_another_ml_module():
    files = [*ML.glob("*.py"), *(ML.parent / "trust").glob("*.py")]
    private = [f"{f.name}: {module}.{name}" for f in files for module, names in _ml_imports(f)
               for name in names if name.startswith("_")]
    assert private == []


def test_the_ml_modules_import_each_other_without_a_cycle():
    graph = {f.stem: {m for m, _ in _ml_imports(f)} - {f.stem}
             for f in ML.glob("*.py") if f.stem != "__init__"}
    done: set[str] = set()

    def visit(node: str, path: tuple[str, ...]) -> None:
        assert node not in path, " -> ".join((*path, node))
        if node in done:
            return
        for nxt in graph.get(node, ()):
            visit(nxt, (*path, node))
        done.add(node)

    for node in graph:
        visit(node, ())
    assert {"model", "svm", "cnn"} <= graph["kinds"] and "kinds" not in graph["model"] | graph["svm"] | graph["cnn"]
