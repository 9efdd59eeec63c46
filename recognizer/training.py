"""Training a model version: where the data sets are, the pen-data warm start, training on MNIST (or the
loud fallback) plus extra drawings, the figures recorded with every version, and registering it.

The `train_model` command, the first-run setup and every retrain (recognizer.retraining) call
train_new_model."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from django.conf import settings

from recognizer import feedback, modelfiles, trust, versions
from recognizer.ml import common as ml_common
from recognizer.ml import kinds as ml_kinds
from recognizer.ml import knn_rows as ml_knn_rows
from recognizer.ml import mnist as ml_mnist
from recognizer.ml import model as ml_model
from recognizer.ml import pendigits as ml_pendigits
from recognizer.ml import store as ml_store
from recognizer.ml.evaluate import canvas_dataset, evaluate
from recognizer.models import LabelEvidence, ModelVersion

Progress = Callable[[str, float], None]


def mnist_directory() -> Path:
    """MNIST_DIR when set, otherwise where fetch_mnist downloads to."""
    if settings.MNIST_DIR:
        return Path(settings.MNIST_DIR)
    return Path(settings.RECOGNIZER_DATA_DIR) / "mnist"


def pendigits_path() -> Path | None:
    """PENDIGITS_DIR when set, otherwise where fetch_pendigits downloads to if the file is there."""
    from recognizer.ml.pendigits import PENDIGITS_FILE

    if settings.PENDIGITS_DIR:
        return Path(settings.PENDIGITS_DIR)
    fetched = Path(settings.RECOGNIZER_DATA_DIR) / "pendigits"
    return fetched if (fetched / PENDIGITS_FILE).is_file() else None


@dataclass
class TrainingOutcome:
    version: ModelVersion
    metrics: dict
    warning: str = ""
    activated: bool = False
    extra: dict = field(default_factory=dict)


@dataclass
class ExtraTrainingData:
    """Samples trained on next to MNIST: float images in [0, 1], labels, who drew them, their vote weight
    (one for all, or one each), their pen strokes (one stroke list or None per sample) for the stroke
    model, and which stored drawing each is (None: none is)."""

    images: np.ndarray
    labels: np.ndarray
    groups: np.ndarray
    weight: float | np.ndarray = 1.0
    metadata: dict = field(default_factory=dict)
    strokes: list | None = None
    ids: np.ndarray | None = None


def pen_warm_start(progress: Progress | None = None) -> tuple[ExtraTrainingData | None, str]:
    """(the pendigits training writers replayed as canvas drawings, or None; why not, when None)."""
    if not settings.RECOGNIZER_PEN_WARM_START:
        return None, "the pen-data warm start is off (RECOGNIZER_PEN_WARM_START)"
    path = pendigits_path()
    if path is None or not (path if path.is_file() else path / "pendigits-orig.tra").is_file():
        return None, ("no pen data: this model trained on MNIST alone and will read canvas drawings less well "
                      "(run `manage.py fetch_pendigits` or set PENDIGITS_DIR)")
    from recognizer.ml import warmstart as ml_warmstart

    pen = ml_warmstart.pen_training_set(
        path, cache_dir=Path(settings.RECOGNIZER_DATA_DIR) / "cache",
        progress=(lambda f: progress("rendering the pen data", 0.05 * f)) if progress else None)
    groups = np.array([ml_warmstart.writer_group(w) for w in pen.writers], np.int64)
    return ExtraTrainingData(images=pen.images, labels=pen.labels, groups=groups, strokes=pen.strokes,
                             metadata=pen.metadata), ""


NO_CANVAS_FIGURE = ("No canvas figure: the model trained on every pendigits writer in the file, so none is left "
                    "to measure it on (writers it never saw: python -m bench.unseen_writers).")


def no_canvas_figure_note(metrics: dict, seen_writers=()) -> str:
    """NO_CANVAS_FIGURE when evaluation_metrics left the canvas figure out because the model saw every
    pendigits writer there is, else ""."""
    pendigits = pendigits_path()
    missing = "canvas" not in metrics and pendigits is not None and pendigits.exists()
    return NO_CANVAS_FIGURE if missing and len(seen_writers) else ""


def evaluation_metrics(estimator, data: ml_mnist.MnistData, progress: Progress | None = None,
                       seen_writers=()) -> dict:
    """The figures recorded with every model: MNIST test, and canvas drawings when pendigits is there, on
    the writers the model did not train on only. The default warm start trains on every writer in the file
    (only the UCI training file is ever fetched): then there is no canvas figure (NO_CANVAS_FIGURE), not one
    measured on drawings by writers it trained on."""
    metrics = {"mnist_test": evaluate(estimator, data.test_images / 255.0, data.test_labels)}
    pendigits = pendigits_path()
    if pendigits is not None and pendigits.exists():
        seen = set(seen_writers)
        pool = [d for d in ml_pendigits.load_pendigits(pendigits) if d.writer not in seen]
        if not pool:
            return metrics
        if progress:
            progress("evaluating on canvas drawings", 0.95)
        if len(pool) > 2000:  # the same 2,000 every time, so versions compare
            pick = np.sort(np.random.default_rng(0).choice(len(pool), size=2000, replace=False))
            pool = [pool[i] for i in pick]
        X, y, _writers = canvas_dataset(pool, seed=0, cache_dir=Path(settings.RECOGNIZER_DATA_DIR) / "cache")
        kw = {"strokes": [d.strokes for d in pool]} if getattr(estimator, "reads_strokes", False) else {}
        metrics["canvas"] = evaluate(estimator, X, y, **kw)
    return metrics


def _comparable(value):
    return json.loads(json.dumps(value, sort_keys=True, default=str))


# Below this many user drawings a space is refitted until they double from here, not from the first few.
SPACE_MIN_USER_ROWS = 1000


def _same_data_sets(previous, data_source: str, n_mnist: int, pen: ExtraTrainingData | None,
                    extra: ExtraTrainingData | None) -> bool:
    """Whether a retrain may keep `previous`'s feature space: a k-NN that knows its rows' drawings, trained on
    the very MNIST and pen rows this training would use."""
    if previous is None or not settings.RECOGNIZER_RETRAIN_INCREMENTAL:
        return False
    version, estimator = previous
    if (version.kind != "knn" or not isinstance(estimator, ml_model.DigitClassifier)
            or getattr(estimator, "train_ids_", None) is None):
        return False
    n_users = 0 if extra is None else len(extra.labels)
    if n_users > 2 * max(getattr(estimator, "space_user_rows_", 0), SPACE_MIN_USER_ROWS):
        return False  # the basis and k were chosen for far fewer user drawings: choose them again
    if not estimator.reads_strokes and extra is not None and extra.strokes is not None and any(
            s is not None and len(s) for s in extra.strokes):
        return False  # a refit keeps the stroke model it has, and this one has none
    meta = version.metadata or {}
    groups = np.asarray(estimator.train_groups_)
    return (meta.get("data_source") == data_source and (meta.get("counts") or {}).get("mnist_train") == n_mnist
            and _comparable(meta.get("pen_data")) == _comparable(pen.metadata if pen is not None else None)
            and int((groups < 0).sum()) == n_mnist + (len(pen.labels) if pen is not None else 0))


def refit_in_space(previous, extra: ExtraTrainingData | None, progress: Progress | None = None
                   ) -> ml_common.TrainingResult:
    """A k-NN in `previous`'s feature space: its MNIST and pen rows as they are, and each of `extra`'s drawings
    from the first place that has it in that space: `previous`'s own rows, the label ranking's stored features
    (LabelEvidence), and only then decoded and featurised here."""
    t0 = time.perf_counter()
    if progress:
        progress("features", 0.0)
    rows = ml_knn_rows.knn_rows(previous)
    image_rows = rows.pick(rows.groups < 0)
    reused = {"rows": 0, "label_evidence": 0, "computed": 0}
    srows = stroke_rows = None
    if previous.reads_strokes:
        srows = ml_knn_rows.knn_rows(previous.stroke_model_)
        stroke_rows = srows.pick(srows.groups < 0)
    if extra is not None and len(extra.labels):
        drawings, strokes = _drawing_rows(previous, rows, extra, reused)
        image_rows = image_rows + drawings
        if stroke_rows is not None and strokes is not None:
            stroke_drawings = _drawing_stroke_rows(previous, srows, drawings, strokes)
            if stroke_drawings is not None:
                stroke_rows = stroke_rows + stroke_drawings
    if progress:
        progress("fit", 0.9)
    estimator = ml_knn_rows.refit_knn(previous, image_rows, stroke_rows)
    if progress:
        progress("done", 1.0)
    hyper = _refit_hyperparameters(previous, estimator, reused, stroke_rows)
    return ml_common.TrainingResult(estimator, hyper, {}, time.perf_counter() - t0, len(image_rows), [])


def _drawing_rows(previous, rows: ml_knn_rows.KnnRows, extra: ExtraTrainingData, reused: dict
                  ) -> tuple[ml_knn_rows.KnnRows, list | None]:
    """(`extra`'s drawings as rows in `previous`'s feature space, their strokes in the same order); `reused`
    counts where each row's features came from."""
    n = len(extra.labels)
    ids = np.full(n, -1, np.int64) if extra.ids is None else np.asarray(extra.ids, np.int64)
    # `previous`'s drawings first, in its order, then the new ones as they come: while no drawing it trained on
    # is dropped, its rows are the first rows of the new model, whose neighbour graph then extends its graph
    position = {int(d): j for j, d in enumerate(rows.ids) if d >= 0}
    at = np.array([position.get(int(d), -1) for d in ids], np.int64)
    known = np.flatnonzero(at >= 0)
    order = np.concatenate([known[np.argsort(at[known], kind="stable")], np.flatnonzero(at < 0)])
    ids = ids[order]
    weights = np.broadcast_to(np.asarray(extra.weight, np.float32), (n,))[order]
    labels, groups = np.asarray(extra.labels)[order], np.asarray(extra.groups)[order]
    strokes = None if extra.strokes is None else feedback.take_strokes(extra.strokes, order)
    F = np.empty((n, rows.features.shape[1]), np.float32)
    missing = _fill_from(F, ids, rows, reused, "rows")
    if missing.any():
        _fill_from_label_evidence(F, ids, missing, trust.feature_space_id(previous), reused)
    if missing.any():
        F[missing] = previous.transform(extra.images[order[missing]])
        reused["computed"] += int(missing.sum())
    return ml_knn_rows.KnnRows(F, labels, weights, groups, ids), strokes


def _fill_from_label_evidence(F: np.ndarray, ids: np.ndarray, missing: np.ndarray, space: str, reused: dict) -> None:
    """Fill the `missing` rows of `F` whose drawing the label ranking stored features of in `space`
    (LabelEvidence), and mark them no longer missing."""
    wanted = [int(i) for i in ids[missing] if i >= 0]
    stored = {}
    for s in range(0, len(wanted), 900):  # under SQLite's 999 variables a query
        stored.update(LabelEvidence.objects.filter(drawing_id__in=wanted[s:s + 900], space=space)
                      .values_list("drawing_id", "features"))
    for i in np.flatnonzero(missing):
        vector = np.frombuffer(bytes(stored.get(int(ids[i]), b"")), np.float32)
        if len(vector) == F.shape[1]:
            F[i], missing[i] = vector, False
            reused["label_evidence"] += 1


def _drawing_stroke_rows(previous, srows: ml_knn_rows.KnnRows, drawings: ml_knn_rows.KnnRows, strokes: list
                         ) -> ml_knn_rows.KnnRows | None:
    """The stroke rows of the `drawings` that have strokes (None: none has), in `previous`'s stroke feature
    space: taken from its stroke rows `srows` where they are there, else computed."""
    ids = drawings.ids
    # stored strokes are parsed only for drawings that are not stroke rows of `previous` already
    has = feedback.has_strokes(strokes, parsed_before=np.isin(ids, srows.ids[srows.ids >= 0]))
    if not has.any():
        return None
    S = np.empty((int(has.sum()), srows.features.shape[1]), np.float32)
    sub_missing = _fill_from(S, ids[has], srows, {}, "")
    if sub_missing.any():
        picked = np.flatnonzero(has)[sub_missing]
        S[sub_missing] = previous.stroke_model_.features([strokes[i] for i in picked])
    return ml_knn_rows.KnnRows(S, drawings.labels[has], drawings.weights[has], drawings.groups[has], ids[has])


def _refit_hyperparameters(previous, estimator, reused: dict, stroke_rows: ml_knn_rows.KnnRows | None) -> dict:
    """TrainingResult.hyperparameters of a refit: `previous`'s, with where its rows came from and its graphs."""
    hyper = dict(previous.get_params())
    hyper["refit"] = {"feature_space": trust.feature_space_id(previous), **reused,
                      "neighbour_index": getattr(estimator, "neighbour_index_origin_", None),
                      "stroke_neighbour_index": getattr(estimator.stroke_model_, "neighbour_index_origin_", None)}
    hyper["stroke_model"] = None
    if previous.reads_strokes:
        hyper["stroke_model"] = {"n_train": len(stroke_rows), "n_neighbors": estimator.stroke_model_.n_neighbors,
                                 "stroke_weight": estimator.stroke_weight_, **estimator.stroke_model_.feature_params}
    return hyper


def _fill_from(out: np.ndarray, ids: np.ndarray, rows, counter: dict, key: str) -> np.ndarray:
    """Copy into `out` the rows of `rows` whose drawing is in `ids`; returns which were not there."""
    have = {int(d): j for j, d in enumerate(rows.ids) if d >= 0}
    missing = np.ones(len(ids), bool)
    for i, d in enumerate(ids):
        j = have.get(int(d), -1) if d >= 0 else -1
        if j >= 0:
            out[i], missing[i] = rows.features[j], False
    if key:
        counter[key] += int((~missing).sum())
    return missing


@dataclass
class _TrainingSet:
    """What a model trains on: MNIST's rows (scaled to [0, 1]), then the pen data's and `extra`'s when they are
    gathered here (weights, groups and strokes are None when they are not)."""

    images: np.ndarray
    labels: np.ndarray
    n_mnist: int
    parts: list
    weights: np.ndarray | None = None
    groups: np.ndarray | None = None
    strokes: list | None = None

    def gather(self) -> None:
        """Append the parts' rows to MNIST's, with one vote weight, group and stroke list (or None) a row."""
        parts, n_mnist = self.parts, self.n_mnist
        self.images = np.concatenate([self.images] + [p.images for p in parts])
        self.labels = np.concatenate([self.labels] + [p.labels for p in parts]).astype(np.int64)
        self.weights = np.concatenate([np.ones(n_mnist, np.float32)]
                                      + [np.full(len(p.labels), p.weight, np.float32) for p in parts])
        self.groups = np.concatenate([np.full(n_mnist, -1, np.int64)]
                                     + [np.asarray(p.groups, np.int64) for p in parts])
        self.strokes = [None] * n_mnist
        for p in parts:
            self.strokes += list(p.strokes) if p.strokes is not None else [None] * len(p.labels)

    def record_rows(self, estimator, user_rows: int) -> None:
        """Who drew each training row (-1 = MNIST) and which stored drawing it is, on `estimator` and its
        stroke model: lets label ranking leave a user's own drawings out, and the next retrain take the rows
        it already has (refit_in_space); `user_rows`: how many user drawings its feature space was fitted on."""
        ids = np.concatenate([np.full(self.n_mnist, -1, np.int64)]
                             + [np.full(len(p.labels), -1, np.int64) if p.ids is None else np.asarray(p.ids, np.int64)
                                for p in self.parts])
        estimator.train_groups_, estimator.train_ids_ = self.groups, ids
        estimator.space_user_rows_ = user_rows
        if estimator.reads_strokes:
            with_strokes = [i for i, s in enumerate(self.strokes) if s is not None and len(s)]
            estimator.stroke_model_.train_groups_ = self.groups[with_strokes]
            estimator.stroke_model_.train_ids_ = ids[with_strokes]


def train_new_model(
    *, limit: int = 0, activate: bool | None = None, cv: bool = True, progress: Progress | None = None,
    extra: ExtraTrainingData | None = None, defaults: dict | None = None, kind: str = "knn",
    previous: tuple[ModelVersion, object] | None = None,
) -> TrainingOutcome:
    """Train on MNIST (or the loud fallback) plus `extra` samples, evaluate, store the file, and
    register the version. The retrain (recognizer.retraining) passes the trusted user drawings as `extra`.

    `activate=None` activates the new version only when no version is active yet. `kind` is one of
    recognizer.ml.kinds.MODEL_KINDS ("knn", the one the retrain uses, "svm" or "cnn").

    `previous`: (the active version, its estimator). When it is a k-NN trained on the same data sets, the
    new model keeps its feature space and hyperparameters and takes every row it already has from it
    (refit_in_space): only drawings new to that space are featurised. RECOGNIZER_RETRAIN_INCREMENTAL=false,
    another kind or other data sets train from scratch, with cross-validation when `cv`.
    """
    spec = ml_kinds.get_kind(kind)  # ValueError for an unknown kind
    spec.require_available()  # a missing extra (cnn: requirements-cnn.txt) is refused before any work
    data, warning, rows, counts = _mnist_training_set(limit)
    pen, pen_warning = pen_warm_start(progress)
    if pen_warning:
        warning = f"{warning}\n{pen_warning}".strip()
    if pen is not None:
        counts["pen_train"] = int(len(pen.labels))
    rows.parts = [p for p in (pen, extra) if p is not None and len(p.labels)]
    space = previous if kind == "knn" and _same_data_sets(previous, data.source, rows.n_mnist, pen, extra) else None
    if rows.parts and space is None:  # a refit takes its rows from `previous`: nothing to gather, nothing to parse
        rows.gather()
    if extra is not None and len(extra.labels):
        counts["user_train"] = int(len(extra.labels))
    train_progress = _after_pen_rendering(progress) if progress is not None and pen is not None else progress
    if space is not None:
        result = refit_in_space(space[1], extra, train_progress)
    else:
        result = ml_kinds.train_model(rows.images, rows.labels, kind=kind, progress=train_progress, cv=cv,
                                      sample_weight=rows.weights, defaults=defaults, strokes=rows.strokes)
    if rows.groups is not None and spec.leave_out and space is None:
        rows.record_rows(result.estimator, 0 if extra is None else len(extra.labels))
    metrics = evaluation_metrics(result.estimator, data, progress,
                                 seen_writers=pen.metadata["pendigits_writers"] if pen is not None else ())
    metadata = _version_metadata(data, warning, pen, counts, result, metrics, extra)
    if progress:
        progress("saving", 0.98)
    version, activated = _store_and_register(result.estimator, metadata, kind, data.source, metrics, activate)
    return TrainingOutcome(version=version, metrics=metrics, warning=warning, activated=activated,
                           extra={"data": data, "estimator": result.estimator})


def _mnist_training_set(limit: int) -> tuple[ml_mnist.MnistData, str, _TrainingSet, dict]:
    """(MNIST or the loud fallback, its warning, its first `limit` training rows (all: 0), the counts)."""
    data = ml_mnist.load_training_data(mnist_directory())
    warning = getattr(data, "warning", "") or ""
    images, labels = data.train_images, data.train_labels
    if limit:
        images, labels = images[:limit], labels[:limit]
    counts = {"mnist_train": int(len(labels)), "mnist_test": int(len(data.test_labels))}
    return data, warning, _TrainingSet(images / 255.0, labels, len(labels), []), counts


def _after_pen_rendering(progress: Progress) -> Progress:
    """`progress` for the training itself: the first 5% went to rendering the pen data."""
    def train_progress(stage, fraction):
        progress(stage, 0.05 + 0.95 * fraction)
    return train_progress


def _version_metadata(data: ml_mnist.MnistData, warning: str, pen: ExtraTrainingData | None, counts: dict,
                      result: ml_common.TrainingResult, metrics: dict, extra: ExtraTrainingData | None) -> dict:
    return {
        "data_source": data.source,
        "data_warning": warning,
        # Exactly which pendigits writers the model saw (none: trained without pen data).
        "pen_data": pen.metadata if pen is not None else None,
        "counts": counts,
        "hyperparameters": result.hyperparameters,
        "cv_curve": result.cv_curve,
        "train_seconds": result.train_seconds,
        "metrics": metrics,
        **(extra.metadata if extra is not None else {}),
    }


def _store_and_register(estimator, metadata: dict, kind: str, data_source: str, metrics: dict,
                        activate: bool | None) -> tuple[ModelVersion, bool]:
    """Save the model file, register its version, and activate it as asked: (the version, whether activated).
    `activate=None`: the first model only; a version someone activates in between stays."""
    saved = ml_store.save_model(estimator, metadata, modelfiles.staging_dir())
    version = versions.register_model(saved, kind=kind, data_source=data_source, metrics=metrics)
    if activate is None:
        activate = versions.activate(version, if_active_is=None)
    elif activate:
        versions.activate(version)
    return version, activate
