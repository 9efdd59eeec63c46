"""The staff dashboard, the accuracy on My drawings, the admin's link, and evaluate_model --report."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from io import StringIO

import pytest
from django.core.management import call_command
from django.urls import reverse

from recognizer.models import ModelVersion
from tests.test_insights import make_drawing

URL = "/staff/dashboard/"


def inline_svgs(html: str) -> list[str]:
    return re.findall(r"<svg\b.*?</svg>", html, flags=re.S)


@pytest.fixture
def history(alice, bob, active_model):
    """Two model versions with figures, a cross-validation curve, and labelled drawings over days."""
    old = ModelVersion.objects.create(file="models/old.joblib", sha256="0" * 64,
                                      metrics={"mnist_test": {"accuracy": 0.95}, "holdout": 0.85})
    ModelVersion.objects.filter(pk=active_model.pk).update(
        metrics={"mnist_test": {"accuracy": 0.965}, "holdout": 0.9},
        metadata={**active_model.metadata, "cv_curve": {"k": [1, 3, 5], "accuracy": [0.9, 0.94, 0.93],
                                                        "pca_components": 50, "weights": "distance",
                                                        "n_cv": 900, "folds": 3},
                  "hyperparameters": {"n_neighbors": 3, "n_components": 50, "weights": "distance"}})
    for days_ago, predicted, label in [(2, 1, 1), (2, 1, 7), (1, 7, 7), (0, 3, 3), (0, 5, 3)]:
        make_drawing(alice, predicted, label, version=active_model, days_ago=days_ago)
    make_drawing(bob, 8, None, version=old)
    return active_model


@pytest.mark.django_db
def test_dashboard_for_staff_shows_the_active_model_and_every_chart(client, staff, history):
    client.force_login(staff)
    response = client.get(URL)
    assert response.status_code == 200
    html = response.content.decode()
    svgs = inline_svgs(html)
    assert len(svgs) == 6
    for svg in svgs:
        ET.fromstring(svg)  # each one well-formed
    assert f"Active model <strong>v{history.pk}</strong>" in html
    assert "96.50 %" in html and "90.00 %" in html  # MNIST test, held-out users
    assert "3 of 5 labelled" in html  # its reading of users' drawings: 3 right of 5
    assert "chosen k = 3" in html
    assert "3 of 5 right (60.0 %)" in html  # the confusion heat map's title line
    assert "Share of predictions users corrected" in html
    assert "No drawings" not in html


@pytest.mark.django_db
def test_dashboard_on_an_empty_database_says_so(client, staff):
    client.force_login(staff)
    response = client.get(URL)
    assert response.status_code == 200
    html = response.content.decode()
    assert inline_svgs(html) == []
    assert "No model is active" in html
    assert "No drawings yet." in html and "No model was trained with cross-validation yet." in html


@pytest.mark.django_db
def test_dashboard_refuses_users_and_anonymous(client, alice):
    response = client.get(URL)
    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))
    client.force_login(alice)
    response = client.get(URL)
    assert response.status_code == 403
    assert b"<svg" not in response.content


@pytest.mark.django_db
def test_admin_index_links_to_the_dashboard(client, staff):
    client.force_login(staff)
    html = client.get(reverse("admin:index")).content.decode()
    assert f'href="{URL}"' in html
    assert "Site administration" in html  # still Django's own index around the link


@pytest.mark.django_db
def test_my_drawings_shows_the_users_accuracy_and_worst_digits(client, alice, bob):
    for predicted, label in [(7, 7), (1, 7), (1, 7), (3, 3), (2, 2)]:
        make_drawing(alice, predicted, label)
    make_drawing(alice, 4)
    for _ in range(3):
        make_drawing(bob, 0, 8)  # bob's mistakes are not alice's
    client.force_login(alice)
    html = client.get(reverse("my-drawings")).content.decode()
    assert "60 %" in html and "3 of your 5 labelled drawings" in html
    block = html[html.index('id="my-accuracy"'):]
    block = block[:block.index("</div>")]
    assert re.search(r'href="\?digit=7&amp;result=wrong"[^>]*>7</a>', block)
    assert "(2 of 3, read as 1 ×2)" in block
    assert "digit=8" not in block


@pytest.mark.django_db
def test_my_drawings_without_labels_shows_no_accuracy(client, alice):
    make_drawing(alice, 4)
    client.force_login(alice)
    html = client.get(reverse("my-drawings")).content.decode()
    assert 'id="my-accuracy"' not in html


@pytest.mark.django_db
def test_evaluate_model_report_writes_the_charts_and_a_metrics_table(history, tmp_path, settings):
    settings.MNIST_DIR = str(tmp_path / "no-mnist-here")
    settings.PENDIGITS_DIR = ""
    out = StringIO()
    call_command("evaluate_model", "--report", str(tmp_path / "report"), stdout=out, stderr=StringIO())
    files = {p.name for p in (tmp_path / "report").iterdir()}
    assert {"accuracy.svg", "confusion.svg", "confusion_mnist.svg", "cv.svg", "per_day.svg", "per_digit.svg",
            "corrections.svg", "metrics.md"} == files
    for name in files - {"metrics.md"}:
        root = ET.fromstring((tmp_path / "report" / name).read_text())
        assert root.tag.endswith("svg")
    table = (tmp_path / "report" / "metrics.md").read_text()
    assert f"# Model v{history.pk}" in table
    assert "| users' labelled drawings it predicted | 3 of 5 right (60.00 %) |" in table
    assert "| held-out users' drawings accuracy | 90.00 % |" in table
    assert re.search(r"\| MNIST test accuracy \| \d+\.\d\d % \|", table)
    assert "## Accuracy per digit" in table and "| 9 |" in table
    assert "Wrote 8 files" in out.getvalue()
