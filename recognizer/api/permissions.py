"""Who may see a drawing: its owner, and staff. Everyone else gets a 404 (the queryset is restricted),
so the API never says that another user's drawing exists."""

from __future__ import annotations

from django.db.models import QuerySet

from recognizer.models import Drawing


def visible_drawings(user) -> QuerySet[Drawing]:
    return Drawing.objects.select_related("user", "model_version").visible_to(user)
