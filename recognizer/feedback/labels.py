"""Labelling, by a drawing's owner and by staff, on one path: every change of labels asks for the check that
may start a retrain early."""

from __future__ import annotations

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from recognizer import dispatch
from recognizer.models import Drawing


def label_drawing(drawing: Drawing, label: int) -> Drawing:
    """The owner (or staff through the API) says which digit the drawing really is."""
    if not 0 <= int(label) <= 9:
        raise ValueError("A label is a digit from 0 to 9.")
    drawing.label = int(label)
    drawing.labelled_at = timezone.now()
    drawing.save(update_fields=["label", "labelled_at"])
    labels_changed()
    return drawing


def review(drawings: QuerySet, reviewer, status: str, label: int | None = None) -> int:
    """Staff approve or reject drawings, relabelling them first when `label` is given; how many changed.
    Approving needs a label: unlabelled drawings are left as they are."""
    now = timezone.now()
    fields = {"status": status, "reviewer": reviewer, "reviewed_at": now}
    if label is not None:
        if not 0 <= int(label) <= 9:
            raise ValueError("A label is a digit from 0 to 9.")
        fields.update(label=int(label), labelled_at=now)
    elif status == Drawing.Status.APPROVED:
        drawings = drawings.labelled()
    count = drawings.update(**fields)
    labels_changed()
    return count


def review_drawing(drawing: Drawing, reviewer, *, label_changed: bool) -> Drawing:
    """Staff edited one drawing's label or status (the admin's change form): stamp and save it."""
    now = timezone.now()
    drawing.reviewer, drawing.reviewed_at = reviewer, now
    if label_changed:
        drawing.labelled_at = now
    drawing.save()
    labels_changed()
    return drawing


def reject_pending_labels_of(user_ids, reviewer) -> int:
    """Bulk reject by account: every labelled drawing of these users that staff have not approved."""
    return review(Drawing.objects.filter(user_id__in=list(user_ids)).pending(), reviewer, Drawing.Status.REJECTED)


def labels_changed() -> None:
    # Enough new trusted drawings start a retrain before the nightly one. A worker counts them, after
    # this transaction commits: the request makes no count, and at most one broker call a window.
    transaction.on_commit(dispatch.request_threshold_check)
