"""Filters for GET /api/v1/drawings: ?label=, ?predicted_digit=, ?status=, ?reviewed=, ?labelled=, ?wrong=."""

from __future__ import annotations

import django_filters
from django.db.models import F

from recognizer.models import Drawing


class DrawingFilter(django_filters.FilterSet):
    label = django_filters.NumberFilter(help_text="The digit the user (or staff) says it is.")
    predicted_digit = django_filters.NumberFilter(help_text="The digit the model answered.")
    status = django_filters.ChoiceFilter(choices=Drawing.Status.choices, help_text="Staff review state.")
    reviewed = django_filters.BooleanFilter(method="filter_reviewed", help_text="Approved or rejected by staff.")
    labelled = django_filters.BooleanFilter(field_name="label", lookup_expr="isnull", exclude=True,
                                            help_text="Has a label.")
    wrong = django_filters.BooleanFilter(method="filter_wrong", help_text="Labelled, and the label differs from the prediction.")
    user = django_filters.CharFilter(field_name="user__username", help_text="Owner's username (useful to staff).")

    class Meta:
        model = Drawing
        fields = ["label", "predicted_digit", "status"]

    def filter_reviewed(self, queryset, name, value):
        pending = queryset.filter(status=Drawing.Status.PENDING)
        return queryset.exclude(status=Drawing.Status.PENDING) if value else pending

    def filter_wrong(self, queryset, name, value):
        labelled = queryset.filter(label__isnull=False)
        return labelled.exclude(label=F("predicted_digit")) if value else labelled.filter(label=F("predicted_digit"))
