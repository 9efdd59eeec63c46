"""recognizer.charts: plain inputs in, a well-formed SVG with the expected text out (no Django)."""

from __future__ import annotations

import datetime as dt
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from recognizer import charts

SVG = "{http://www.w3.org/2000/svg}"


def texts(svg: str) -> list[str]:
    root = ET.fromstring(svg)  # raises on malformed XML
    assert root.tag == f"{SVG}svg"
    return ["".join(t.itertext()) for t in root.iter(f"{SVG}text")]


DAYS = [dt.date(2026, 5, 1) + dt.timedelta(days=i) for i in range(5)]


def test_accuracy_over_time_has_title_series_and_version_names():
    svg = charts.accuracy_over_time(["v1\n05-01", "v2\n05-03"], [0.97, 0.98], [None, 0.91], active="v2\n05-03")
    words = " ".join(texts(svg))
    assert "Accuracy of each model version" in words
    assert "MNIST test" in words and "Held-out users' drawings" in words
    assert "v1" in words and "v2" in words and "active" in words
    assert svg.startswith("<svg") and "<?xml" not in svg and "<!DOCTYPE" not in svg


def test_accuracy_over_time_without_holdout_figures_has_no_holdout_series():
    words = " ".join(texts(charts.accuracy_over_time(["v1"], [0.97], [None])))
    assert "MNIST test" in words and "Held-out" not in words


def test_confusion_heatmap_writes_counts_and_the_total_right():
    m = np.diag([5] * 10)
    m[7, 1] = 3
    words = texts(charts.confusion_heatmap(m, title="v4 on users' drawings"))
    assert any("v4 on users' drawings" in w for w in words)
    assert any("50 of 53 right" in w for w in words)
    assert "Predicted digit" in words
    # Each digit is a tick label on both axes; the cells add one "3" and ten "5"s.
    assert words.count("3") == 2 + 1
    assert words.count("5") == 2 + 10


def test_confusion_heatmap_refuses_a_wrong_shape():
    with pytest.raises(ValueError):
        charts.confusion_heatmap([[1, 2], [3, 4]])


def test_cv_curve_marks_the_chosen_k():
    words = " ".join(texts(charts.cv_curve([1, 3, 5], [0.9, 0.95, 0.93], chosen_k=3)))
    assert "accuracy for each k" in words
    assert "chosen k = 3 (95.00 %)" in words


def test_per_day_and_per_digit_and_corrections():
    words = " ".join(texts(charts.drawings_per_day(DAYS, [1, 0, 2, 0, 3], [0, 1, 0, 0, 1])))
    assert "Drawings collected per day" in words and "05-01" in words and "labelled by the user" in words
    words = " ".join(texts(charts.drawings_per_digit(list(range(10)), [1] * 10)))
    assert "Drawings collected per digit" in words and "unlabelled, by prediction" in words
    words = " ".join(texts(charts.corrections_per_day(DAYS, [0.5, None, 0.25, None, 0.0], [2, 0, 4, 0, 1])))
    assert "Share of predictions users corrected" in words and "answers that day" in words


def test_charts_never_touch_pyplot():
    import sys

    charts.cv_curve([1, 2], [0.5, 0.6])
    assert "matplotlib.pyplot" not in sys.modules or sys.modules["matplotlib"].get_backend().lower() == "agg"
