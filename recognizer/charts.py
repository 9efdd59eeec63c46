"""Charts as SVG strings, drawn server-side with matplotlib (no pyplot, no display, no network).

Plain inputs in (lists, arrays, dates), an `<svg ...>...</svg>` string out, so the dashboard can
inline it and `evaluate_model --report` can write it to a file. No Django here: the queries that
feed these live in recognizer.insights.

Text stays text in the SVG (svg.fonttype "none"): small files, selectable labels, and titles a test
can find.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # never a GUI backend, even if one is installed; Figure() below needs no pyplot

import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator, PercentFormatter  # noqa: E402

__all__ = [
    "accuracy_over_time", "confusion_heatmap", "cv_curve", "drawings_per_day", "drawings_per_digit",
    "corrections_per_day",
]

ACCENT = "#3461d1"
SECOND = "#e3a008"
GOOD = "#2f9e5b"
BAD = "#d1453b"
MUTED = "#9aa4b2"

_STYLE = {
    "svg.fonttype": "none",
    "svg.hashsalt": None,
    "font.family": ["DejaVu Sans", "sans-serif"],
    "font.size": 10,
    "axes.titlesize": 12,
    "axes.titleweight": "bold",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#e6e9ee",
    "grid.linewidth": 0.8,
    "axes.axisbelow": True,
}


def _figure(width: float = 6.4, height: float = 3.4) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def _svg(fig: Figure) -> str:
    """The figure as an `<svg>` element (no XML prolog or DOCTYPE: fine inline and as a file)."""
    buffer = io.StringIO()
    with matplotlib.rc_context(_STYLE):
        fig.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    text = buffer.getvalue()
    return text[text.index("<svg"):].strip() + "\n"


def _draw(build, width: float = 6.4, height: float = 3.4) -> str:
    # rcParams are read when artists are created as well as when they are saved: both under the style.
    with matplotlib.rc_context(_STYLE):
        fig = _figure(width, height)
        build(fig)
        return _svg(fig)


def _is_number(v) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def accuracy_over_time(names: Sequence[str], mnist: Sequence[float | None], holdout: Sequence[float | None],
                       *, title: str = "Accuracy of each model version", active: str | None = None) -> str:
    """One point per model version, oldest first: MNIST test and held-out users' drawings.

    `names` label the x axis (e.g. "v3\\n05-14"); missing figures (None) leave a gap in their line.
    """
    x = np.arange(len(names))

    def build(fig):
        ax = fig.add_subplot()
        for values, label, color, marker in ((mnist, "MNIST test", ACCENT, "o"),
                                             (holdout, "Held-out users' drawings", SECOND, "s")):
            y = np.array([v if _is_number(v) else np.nan for v in values], float)
            if np.isfinite(y).any():
                ax.plot(x, y * 100, marker=marker, color=color, label=label, linewidth=2, markersize=6)
        if active is not None and active in names:
            ax.axvline(list(names).index(active), color=MUTED, linestyle=":", linewidth=1.2)
            ax.annotate("active", (list(names).index(active), 1.0), xycoords=("data", "axes fraction"),
                        ha="center", va="bottom", color="#5b6573", fontsize=9)
        ax.set_xticks(x, list(names))
        ax.set_xlim(-0.5, len(names) - 0.5)
        ax.set_ylabel("accuracy")
        ax.yaxis.set_major_formatter(PercentFormatter(decimals=0))
        ax.set_title(title, loc="left", pad=14)
        if ax.get_legend_handles_labels()[0]:
            fig.legend(loc="outside lower center", ncols=2, frameon=False)

    return _draw(build)


def confusion_heatmap(matrix, *, title: str = "Confusion matrix", xlabel: str = "Predicted digit",
                      ylabel: str = "Label (what it was)") -> str:
    """A 10x10 heat map of counts (rows: true label, columns: prediction), each cell written in.

    The diagonal is greyed green and the mistakes red, so the eye goes to the errors.
    """
    m = np.asarray(matrix, dtype=np.int64)
    if m.shape != (10, 10):
        raise ValueError(f"confusion matrix must be 10x10, not {m.shape}")
    off = m.copy()
    np.fill_diagonal(off, 0)

    def build(fig):
        ax = fig.add_subplot()
        ax.grid(False)
        scale = max(int(off.max()), 1)
        ax.imshow(np.ma.masked_where(np.eye(10, dtype=bool), off), cmap="Reds", vmin=0, vmax=scale * 1.15,
                  interpolation="nearest")
        diag = np.ma.masked_where(~np.eye(10, dtype=bool), m)
        ax.imshow(diag, cmap="Greens", vmin=0, vmax=max(int(m.diagonal().max()), 1) * 2.2, interpolation="nearest")
        for i in range(10):
            for j in range(10):
                if m[i, j]:
                    strong = i != j and off[i, j] > 0.6 * scale
                    ax.text(j, i, str(int(m[i, j])), ha="center", va="center", fontsize=8,
                            color="white" if strong else "#1f2328", fontweight="bold" if i != j else "normal")
        ax.set_xticks(range(10))
        ax.set_yticks(range(10))
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.tick_params(length=0)
        for spine in ax.spines.values():
            spine.set_visible(False)
        total = int(m.sum())
        right = int(m.trace())
        ax.set_title(f"{title}\n{right} of {total} right ({100 * right / total:.1f} %)" if total else title,
                     loc="left", fontsize=11)

    return _draw(build, 4.8, 4.6)


def cv_curve(k: Sequence[int], accuracy: Sequence[float], *, chosen_k: int | None = None,
             title: str = "Cross-validation: accuracy for each k") -> str:
    """Accuracy for each number of neighbours k, the chosen k marked."""

    def build(fig):
        ax = fig.add_subplot()
        y = np.asarray(accuracy, float) * 100
        ax.plot(list(k), y, marker="o", color=ACCENT, linewidth=2)
        if chosen_k is not None and chosen_k in list(k):
            i = list(k).index(chosen_k)
            ax.plot([chosen_k], [y[i]], marker="o", markersize=12, markerfacecolor="none", markeredgecolor=SECOND,
                    markeredgewidth=2, linestyle="none", label=f"chosen k = {chosen_k} ({y[i]:.2f} %)")
            ax.legend(loc="best", frameon=False)
        ax.set_xlabel("k (neighbours that vote)")
        ax.set_ylabel("cross-validated accuracy")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.set_major_formatter(PercentFormatter(decimals=1))
        ax.set_title(title, loc="left")

    return _draw(build)


def _day_ticks(ax, days: Sequence) -> None:
    n = len(days)
    step = max(1, math.ceil(n / 10))
    positions = list(range(0, n, step))
    ax.set_xticks(positions, [days[i].strftime("%m-%d") if hasattr(days[i], "strftime") else str(days[i])
                              for i in positions], rotation=0)
    ax.set_xlim(-0.6, n - 0.4)


def drawings_per_day(days: Sequence, labelled: Sequence[int], unlabelled: Sequence[int], *,
                     title: str = "Drawings collected per day") -> str:
    """Stacked bars: drawings users labelled (confirmed or corrected) and the rest, for each day."""
    x = np.arange(len(days))

    def build(fig):
        ax = fig.add_subplot()
        ax.bar(x, labelled, color=ACCENT, label="labelled by the user", width=0.8)
        ax.bar(x, unlabelled, bottom=labelled, color="#b9c7ea", label="not labelled", width=0.8)
        _day_ticks(ax, days)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("drawings")
        ax.grid(axis="x", visible=False)
        ax.set_title(title, loc="left")
        fig.legend(loc="outside lower center", ncols=2, frameon=False)

    return _draw(build)


def drawings_per_digit(labelled: Sequence[int], predicted_only: Sequence[int], *,
                       title: str = "Drawings collected per digit") -> str:
    """Bars per digit 0-9: by the user's label where there is one, else by the model's prediction."""
    x = np.arange(10)

    def build(fig):
        ax = fig.add_subplot()
        ax.bar(x, labelled, color=ACCENT, label="by label", width=0.7)
        ax.bar(x, predicted_only, bottom=labelled, color="#b9c7ea", label="unlabelled, by prediction", width=0.7)
        ax.set_xticks(x)
        ax.set_xlabel("digit")
        ax.set_ylabel("drawings")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(axis="x", visible=False)
        ax.set_title(title, loc="left")
        fig.legend(loc="outside lower center", ncols=2, frameon=False)

    return _draw(build)


def corrections_per_day(days: Sequence, share: Sequence[float | None], answered: Sequence[int], *,
                        title: str = "Share of predictions users corrected, per day") -> str:
    """For each day, corrected / answered (drawings the user labelled); days without answers are gaps.

    The bars behind (right axis, grey) show how many answers each day's share rests on.
    """
    x = np.arange(len(days))

    def build(fig):
        ax = fig.add_subplot()
        counts = ax.twinx()
        counts.bar(x, answered, color="#e8ebf0", width=0.8, zorder=0)
        counts.set_ylabel("answers that day", color="#7b8594")
        counts.tick_params(axis="y", colors="#7b8594")
        counts.yaxis.set_major_locator(MaxNLocator(integer=True))
        counts.grid(False)
        counts.spines["right"].set_visible(True)
        ax.set_zorder(counts.get_zorder() + 1)
        ax.patch.set_visible(False)
        y = np.array([v if _is_number(v) else np.nan for v in share], float) * 100
        ax.plot(x, y, marker="o", color=BAD, linewidth=2, label="corrected")
        _day_ticks(ax, days)
        top = np.nanmax(y) if np.isfinite(y).any() else 0
        ax.set_ylim(0, max(10.0, min(100.0, top * 1.2 + 5)))
        ax.yaxis.set_major_formatter(PercentFormatter(decimals=0))
        ax.set_ylabel("corrected")
        ax.grid(axis="x", visible=False)
        ax.set_title(title, loc="left")

    return _draw(build)
