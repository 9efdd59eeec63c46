"""Filters for GET /api/v1/drawings (?label=, ?predicted_digit=, ?digit=, ?result=, ?status=, ?reviewed=,
?labelled=, ?wrong=, ?user=); the My drawings page filters with the same set (its ?digit= and ?result=)."""

from __future__ import annotations

import django_filters
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field

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
    digit = django_filters.TypedChoiceFilter(
        choices=[("", "Any digit")] + [(str(d), str(d)) for d in range(10)], coerce=int, empty_value=None,
        method="filter_digit", help_text="The label when there is one, otherwise the predicted digit.")
    result = django_filters.ChoiceFilter(
        choices=[("right", "Right"), ("wrong", "Wrong"), ("unlabelled", "Not labelled yet")], empty_label="Any result",
        method="filter_result", help_text="right, wrong (the label differs from the prediction) or unlabelled.")

    class Meta:
        model = Drawing
        fields = ["label", "predicted_digit", "status"]

    def filter_reviewed(self, queryset, name, value):
        pending = queryset.filter(status=Drawing.Status.PENDING)
        return queryset.exclude(status=Drawing.Status.PENDING) if value else pending

    def filter_wrong(self, queryset, name, value):
        return queryset.wrong() if value else queryset.right()

    @extend_schema_field(OpenApiTypes.INT)  # a method filter: the schema cannot read its type off a model field
    def filter_digit(self, queryset, name, value):
        return queryset.of_digit(value)

    def filter_result(self, queryset, name, value):
        return {"right": queryset.right, "wrong": queryset.wrong, "unlabelled": queryset.unlabelled}[value]()
