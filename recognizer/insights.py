"""Figures about the models and the drawings, from the database, for the staff dashboard, a user's
My drawings page and `evaluate_model --report`.

The queries here are cheap aggregates; the drawing (matplotlib, in recognizer.charts) is what costs,
so each chart's SVG is cached under a hash of exactly the figures it shows, plus the day (the day
axis moves at midnight). A new drawing, label or model changes the figures, hence the key: the cache
is never stale, and an unchanged chart is never redrawn.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

from django.core.cache import cache
from django.db.models import Count, F, Q
from django.db.models.functions import TruncDate
from django.utils import timezone

from recognizer.models import Drawing, ModelVersion, TrainingRun

DAYS = 60  # the per-day charts show at most this many days, ending today
CACHE_SECONDS = 24 * 3600


@dataclass
class Chart:
    """One chart on the dashboard or in a report: its SVG, or why there is none."""

    key: str
    title: str
    svg: str | None = None
    empty: str = ""
    caption: str = ""
    data: dict = field(default_factory=dict, repr=False)


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.2f} %"


# --- Queries ---------------------------------------------------------------------------------------


def _measured(metrics: dict, name: str):
    """metrics[name], or None for a figure measured on data the model trained on: versions trained before
    that figure was dropped stored a canvas figure over pen writers in their training set, marked so."""
    value = (metrics or {}).get(name)
    return None if isinstance(value, dict) and value.get("writers_seen_in_training") else value


def _accuracy(metrics: dict, name: str) -> float | None:
    value = _measured(metrics, name)
    if isinstance(value, dict):
        value = value.get("accuracy")
    return float(value) if isinstance(value, (int, float)) and value == value else None


def model_summary(version: ModelVersion | None) -> dict | None:
    """The figures shown for one version: MNIST test, canvas, held-out users, k and PCA size."""
    if version is None:
        return None
    hp = (version.metadata or {}).get("hyperparameters") or {}
    figures = {
        "mnist_test": _accuracy(version.metrics, "mnist_test"),
        "canvas": _accuracy(version.metrics, "canvas"),
        "holdout": holdout_accuracy(version),
    }
    users = user_accuracy_for_version(version)
    return {
        "version": version, **figures, "user_drawings": users,
        "pct": {**{k: _pct(v) for k, v in figures.items()}, "user_drawings": _pct(users["accuracy"])},
        "k": hp.get("n_neighbors"), "pca_components": hp.get("n_components"), "weights": hp.get("weights"),
        "data_source": version.data_source,
        "data_warning": (version.metadata or {}).get("data_warning", ""),
    }


def holdout_accuracy(version: ModelVersion) -> float | None:
    """Accuracy on the held-out users' drawings as the retrain measured it.

    A retrained version carries it in its metrics; a version that was the active one during a
    later retrain was measured there too (the newest such figure wins when the own one is missing).
    """
    own = _accuracy(version.metrics, "holdout")
    if own is not None:
        return own
    for decision in (TrainingRun.objects.filter(Q(decision__active__version=version.pk)
                                                | Q(decision__candidate__version=version.pk))
                     .order_by("-id").values_list("decision", flat=True)[:5]):
        for side in ("candidate", "active"):
            figures = (decision or {}).get(side) or {}
            if figures.get("version") == version.pk and _accuracy(figures, "holdout") is not None:
                return _accuracy(figures, "holdout")
    return None


def accuracy_history(limit: int = 30) -> dict:
    """Each model version (oldest first, the last `limit`): name, MNIST test and held-out accuracy."""
    versions = list(ModelVersion.objects.order_by("-id")[:limit])[::-1]
    return {
        "ids": [v.pk for v in versions],
        "names": [f"v{v.pk}\n{v.created_at:%m-%d}" for v in versions],
        "mnist": [_accuracy(v.metrics, "mnist_test") for v in versions],
        "holdout": [holdout_accuracy(v) for v in versions],
        "canvas": [_accuracy(v.metrics, "canvas") for v in versions],
        "active": next((f"v{v.pk}\n{v.created_at:%m-%d}" for v in versions if v.is_active), None),
    }


def _labelled(queryset=None):
    # Rejected labels are ones staff judged wrong: they say nothing about the model.
    return (queryset if queryset is not None else Drawing.objects.all()).not_rejected()


def user_confusion(version: ModelVersion) -> list[list[int]]:
    """10x10 counts of (label, predicted digit) over users' labelled drawings this version predicted."""
    matrix = [[0] * 10 for _ in range(10)]
    rows = (_labelled().filter(model_version=version).values_list("label", "predicted_digit")
            .annotate(n=Count("id")).order_by())
    for label, predicted, n in rows:
        if 0 <= label <= 9 and 0 <= predicted <= 9:
            matrix[label][predicted] += n
    return matrix


def user_accuracy_for_version(version: ModelVersion) -> dict:
    matrix = user_confusion(version)
    total = sum(map(sum, matrix))
    right = sum(matrix[i][i] for i in range(10))
    return {"n": total, "right": right, "accuracy": right / total if total else None}


def last_cv_curve() -> dict | None:
    """The cross-validation curve of the newest version trained with cross-validation."""
    for version in ModelVersion.objects.order_by("-id").only("id", "metadata", "created_at")[:50]:
        curve = (version.metadata or {}).get("cv_curve") or {}
        if curve.get("k") and curve.get("accuracy") and len(curve["k"]) == len(curve["accuracy"]):
            hp = version.metadata.get("hyperparameters") or {}
            return {"version": version.pk, "k": [int(k) for k in curve["k"]],
                    "accuracy": [float(a) for a in curve["accuracy"]],
                    "chosen_k": hp.get("n_neighbors"), "pca_components": curve.get("pca_components"),
                    "weights": curve.get("weights"), "n_cv": curve.get("n_cv"), "folds": curve.get("folds")}
    return None


def _day_range(today: date, first: date | None, days: int) -> list[date]:
    if first is None:
        return []
    start = max(first, today - timedelta(days=days - 1))
    return [start + timedelta(days=i) for i in range((today - start).days + 1)]


def drawings_by_day(days: int = DAYS, today: date | None = None) -> dict:
    """For each day (oldest first, no gaps): drawings made, how many the user labelled, how many
    of those were corrections (label differs from the prediction)."""
    today = today or timezone.localdate()
    since = today - timedelta(days=days - 1)
    rows = (Drawing.objects.filter(created_at__date__gte=since).annotate(day=TruncDate("created_at"))
            .values("day").order_by("day")
            .annotate(total=Count("id"),
                      labelled=Count("id", filter=Q(label__isnull=False) & ~Q(status=Drawing.Status.REJECTED)),
                      corrected=Count("id", filter=Q(label__isnull=False) & ~Q(status=Drawing.Status.REJECTED)
                                      & ~Q(label=F("predicted_digit")))))
    by_day = {r["day"]: r for r in rows}
    span = _day_range(today, min(by_day) if by_day else None, days)
    total = [by_day.get(d, {}).get("total", 0) for d in span]
    labelled = [by_day.get(d, {}).get("labelled", 0) for d in span]
    corrected = [by_day.get(d, {}).get("corrected", 0) for d in span]
    return {
        "days": span, "total": total, "labelled": labelled, "unlabelled": [t - n for t, n in zip(total, labelled)],
        "corrected": corrected, "share": [c / n if n else None for c, n in zip(corrected, labelled)],
    }


def drawings_by_digit() -> dict:
    """Drawings per digit: by label where the user gave one, else by the model's prediction."""
    labelled, predicted_only = [0] * 10, [0] * 10
    for label, n in _labelled().values_list("label").annotate(n=Count("id")).order_by():
        if 0 <= label <= 9:
            labelled[label] += n
    unlabelled = Drawing.objects.filter(label__isnull=True)
    for digit, n in unlabelled.values_list("predicted_digit").annotate(n=Count("id")).order_by():
        if 0 <= digit <= 9:
            predicted_only[digit] += n
    return {"labelled": labelled, "predicted_only": predicted_only}


def user_accuracy(user, top: int = 3) -> dict:
    """How often the model was right for this user over their labelled drawings, and the digits it
    gets wrong most for them, each with what it read them as.

    Every labelled drawing counts, as on the My drawings gallery (right/wrong badges).
    """
    rows = (Drawing.objects.filter(user=user, label__isnull=False).values_list("label", "predicted_digit")
            .annotate(n=Count("id")).order_by())
    total = right = 0
    per_digit: dict[int, dict] = {}
    for label, predicted, n in rows:
        total += n
        entry = per_digit.setdefault(label, {"digit": label, "total": 0, "wrong": 0, "read_as": {}})
        entry["total"] += n
        if label == predicted:
            right += n
        else:
            entry["wrong"] += n
            entry["read_as"][predicted] = entry["read_as"].get(predicted, 0) + n
    worst = sorted((e for e in per_digit.values() if e["wrong"]),
                   key=lambda e: (-e["wrong"], -e["wrong"] / e["total"], e["digit"]))[:top]
    for e in worst:
        e["read_as"] = sorted(e["read_as"].items(), key=lambda item: (-item[1], item[0]))
        e["accuracy"] = (e["total"] - e["wrong"]) / e["total"]
    accuracy = right / total if total else None
    return {"labelled": total, "right": right, "wrong": total - right, "accuracy": accuracy,
            "percent": None if accuracy is None else f"{100 * accuracy:.0f} %", "worst": worst}


# --- Charts ----------------------------------------------------------------------------------------


def _cached_svg(key: str, data: dict, draw) -> str:
    digest = hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:24]
    cache_key = f"insights:chart:{key}:{digest}"
    svg = cache.get(cache_key)
    if svg is None:
        svg = draw()
        cache.set(cache_key, svg, CACHE_SECONDS)
    return svg


def build_charts(version: ModelVersion | None = None, *, today: date | None = None, use_cache: bool = True) -> list[Chart]:
    """Every dashboard chart for `version` (default: the active one), each an SVG or an empty message."""
    from recognizer import charts  # matplotlib is imported only where charts are drawn

    version = version if version is not None else ModelVersion.objects.filter(is_active=True).first()
    today = today or timezone.localdate()
    out: list[Chart] = []

    def add(key, title, data, draw, empty_when, empty, caption=""):
        chart = Chart(key=key, title=title, caption=caption, data=data)
        if empty_when:
            chart.empty = empty
        else:
            chart.svg = _cached_svg(key, {**data, "day": today}, draw) if use_cache else draw()
        out.append(chart)

    history = accuracy_history()
    add("accuracy", "Accuracy of each model version", history,
        lambda: charts.accuracy_over_time(history["names"], history["mnist"], history["holdout"],
                                          active=history["active"]),
        not any(v is not None for v in history["mnist"] + history["holdout"]),
        "No model version has figures yet: train one (manage.py train_model).",
        "MNIST test set, and the drawings of the held-out fifth of users as the retrain measured them.")

    matrix = user_confusion(version) if version is not None else []
    add("confusion", "Active model on users' drawings", {"version": version.pk if version else None, "m": matrix},
        lambda: charts.confusion_heatmap(matrix, title=f"v{version.pk} on users' labelled drawings"),
        version is None or not any(map(any, matrix)),
        "No model is active." if version is None else f"No labelled drawing was predicted by v{version.pk} yet.",
        "Rows: the label users gave; columns: what the model said. Off the diagonal are its mistakes.")

    curve = last_cv_curve()
    add("cv", "Cross-validation curve of the last training", curve or {},
        lambda: charts.cv_curve(curve["k"], curve["accuracy"], chosen_k=curve["chosen_k"],
                                title=f"v{curve['version']}: cross-validated accuracy for each k"),
        curve is None, "No model was trained with cross-validation yet.",
        (f"{curve['pca_components']} principal components, {curve['weights']} weights, "
         f"{curve['folds']}-fold on {curve['n_cv']} samples.") if curve else "")

    per_day = drawings_by_day(today=today)
    add("per_day", "Drawings collected per day", {k: per_day[k] for k in ("days", "labelled", "unlabelled")},
        lambda: charts.drawings_per_day(per_day["days"], per_day["labelled"], per_day["unlabelled"]),
        not per_day["days"], f"No drawings in the last {DAYS} days.")

    per_digit = drawings_by_digit()
    add("per_digit", "Drawings collected per digit", per_digit,
        lambda: charts.drawings_per_digit(per_digit["labelled"], per_digit["predicted_only"]),
        not any(per_digit["labelled"]) and not any(per_digit["predicted_only"]), "No drawings yet.")

    add("corrections", "Share of predictions users corrected", {k: per_day[k] for k in ("days", "share", "labelled")},
        lambda: charts.corrections_per_day(per_day["days"], per_day["share"], per_day["labelled"]),
        not any(per_day["labelled"]), f"No drawing was labelled in the last {DAYS} days.",
        "Of the drawings users answered (confirmed or corrected) each day, the share they corrected.")
    return out


# --- Report files ----------------------------------------------------------------------------------


def metrics_markdown(version: ModelVersion, metrics: dict | None = None) -> str:
    """A markdown report: the version's figures, per digit, and every version's history."""
    metrics = metrics if metrics is not None else (version.metrics or {})
    summary = model_summary(version)
    users = summary["user_drawings"]
    lines = [f"# Model v{version.pk} ({version.kind}, {version.data_source})", ""]
    if summary["data_warning"]:
        lines += [f"> {summary['data_warning']}", ""]
    lines += ["| figure | value |", "| --- | --- |",
              f"| MNIST test accuracy | {_pct(_accuracy(metrics, 'mnist_test'))} |",
              f"| canvas (replayed pen digits) accuracy | {_pct(_accuracy(metrics, 'canvas'))} |",
              f"| held-out users' drawings accuracy | {_pct(summary['holdout'])} |",
              f"| users' labelled drawings it predicted | {users['right']} of {users['n']} right ({_pct(users['accuracy'])}) |",
              f"| k, PCA components, weights | {summary['k']}, {summary['pca_components']}, {summary['weights']} |",
              ""]
    per_sets = [(name, metrics[name]["per_digit"]) for name in ("mnist_test", "canvas")
                if isinstance(_measured(metrics, name), dict) and metrics[name].get("per_digit")]
    if per_sets:
        lines += ["## Accuracy per digit", "", "| digit | " + " | ".join(n for n, _ in per_sets) + " |",
                  "| --- |" + " --- |" * len(per_sets)]
        for d in range(10):
            lines.append(f"| {d} | " + " | ".join(_pct(values[d]) if d < len(values) else "-"
                                                   for _, values in per_sets) + " |")
        lines.append("")
    history = accuracy_history()
    lines += ["## Every version", "", "| version | created | MNIST test | held-out users | canvas | active |",
              "| --- | --- | --- | --- | --- | --- |"]
    for v in ModelVersion.objects.filter(pk__in=history["ids"]).order_by("id"):
        lines.append(f"| v{v.pk} | {v.created_at:%Y-%m-%d %H:%M} | {_pct(_accuracy(v.metrics, 'mnist_test'))} | "
                     f"{_pct(holdout_accuracy(v))} | {_pct(_accuracy(v.metrics, 'canvas'))} | "
                     f"{'yes' if v.is_active else ''} |")
    return "\n".join(lines) + "\n"


def write_report(directory: Path, version: ModelVersion, metrics: dict | None = None) -> list[Path]:
    """Write each chart as DIR/<key>.svg (an empty chart as a note in the report) and DIR/metrics.md."""
    from recognizer import charts

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    notes = []
    chart_list = build_charts(version, use_cache=False)
    metrics = metrics if metrics is not None else (version.metrics or {})
    confusion = (metrics.get("mnist_test") or {}).get("confusion") if isinstance(metrics.get("mnist_test"), dict) else None
    if confusion:
        chart_list.insert(2, Chart(key="confusion_mnist", title="Confusion on the MNIST test set",
                                   svg=charts.confusion_heatmap(confusion, title=f"v{version.pk} on the MNIST test set")))
    for chart in chart_list:
        if chart.svg is None:
            notes.append(f"- {chart.title}: {chart.empty}")
            continue
        path = directory / f"{chart.key}.svg"
        path.write_text(chart.svg, encoding="utf-8")
        written.append(path)
    text = metrics_markdown(version, metrics)
    text += "\n## Charts\n\n" + "\n".join(f"- [{p.stem}]({p.name})" for p in written) + "\n"
    if notes:
        text += "\nNot drawn (no data):\n\n" + "\n".join(notes) + "\n"
    report = directory / "metrics.md"
    report.write_text(text, encoding="utf-8")
    written.append(report)
    return written
