"""A drawing's label is a digit, 0-9, or none: the field's validators refuse anything else in forms, and a
database check constraint refuses it from bulk updates and any code that skips validation (a label of 42
would break every retrain). The migration that adds the constraint clears labels that are not digits."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.migrations.executor import MigrationExecutor

from recognizer.models import Drawing
from tests.training_helpers import make_drawing

BEFORE = [("recognizer", "0002_training_run_lock")]


@pytest.mark.django_db
@pytest.mark.parametrize("label", [10, 42, 32767])
def test_the_database_refuses_a_label_that_is_not_a_digit(alice, fallback_data, label):
    drawing = make_drawing(alice, fallback_data.test_images[0], 3)
    with pytest.raises(IntegrityError), transaction.atomic():
        Drawing.objects.filter(pk=drawing.pk).update(label=label)  # no validation on this path
    drawing.label = label
    with pytest.raises(IntegrityError), transaction.atomic():
        drawing.save(update_fields=["label"])
    drawing.refresh_from_db()
    assert drawing.label == 3


@pytest.mark.django_db
@pytest.mark.parametrize("label", [None, 0, 9])
def test_no_label_and_every_digit_are_allowed(alice, fallback_data, label):
    drawing = make_drawing(alice, fallback_data.test_images[0], 3)
    Drawing.objects.filter(pk=drawing.pk).update(label=label)
    drawing.refresh_from_db()
    assert drawing.label == label
    drawing.full_clean()


@pytest.mark.django_db
def test_validation_names_the_label_field(alice, fallback_data):
    drawing = make_drawing(alice, fallback_data.test_images[0], 3)
    drawing.label = 42
    with pytest.raises(ValidationError) as info:
        drawing.full_clean()
    assert "label" in info.value.message_dict
    assert "less than or equal to 9" in " ".join(info.value.message_dict["label"])


@pytest.mark.django_db(transaction=True)
def test_the_migration_clears_labels_that_are_not_digits_before_adding_the_constraint(alice):
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    try:
        old_apps = MigrationExecutor(connection).loader.project_state(BEFORE).apps
        OldDrawing = old_apps.get_model("recognizer", "Drawing")
        common = {"user_id": alice.pk, "image": "drawings/x.png", "preprocessed": b"\0" * 784, "predicted_digit": 4,
                  "confidence": 0.5, "probabilities": [0.1] * 10}
        bad = OldDrawing.objects.create(label=42, labelled_at="2026-01-01T00:00:00Z", **common)
        good = OldDrawing.objects.create(label=7, labelled_at="2026-01-01T00:00:00Z", **common)
        unlabelled = OldDrawing.objects.create(label=None, **common)
    finally:
        executor = MigrationExecutor(connection)  # forward again to the latest, whatever happened above
        executor.migrate(executor.loader.graph.leaf_nodes())

    labels = dict(Drawing.objects.values_list("pk", "label"))
    assert labels == {bad.pk: None, good.pk: 7, unlabelled.pk: None}
    assert Drawing.objects.get(pk=bad.pk).labelled_at is None
    assert Drawing.objects.get(pk=good.pk).strokes is None
    with pytest.raises(IntegrityError), transaction.atomic():
        Drawing.objects.filter(pk=good.pk).update(label=42)
