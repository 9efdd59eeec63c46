"""The staff dashboard: the active model's figures and charts of the models and the drawings.

Staff only: anonymous visitors are sent to the login page, other users get 403. The figures and
charts come from recognizer.insights (cached SVGs), so this view stays thin.
"""

from __future__ import annotations

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from recognizer import insights
from recognizer.models import Drawing, ModelVersion


def staff_dashboard(request: HttpRequest) -> HttpResponse:
    if not request.user.is_authenticated:
        return redirect_to_login(request.get_full_path())
    if not request.user.is_staff:
        raise PermissionDenied("Staff only.")
    active = ModelVersion.objects.filter(is_active=True).first()
    return render(request, "recognizer/dashboard.html", {
        "active": insights.model_summary(active),
        "charts": insights.build_charts(active),
        "counts": {
            "drawings": Drawing.objects.count(),
            "labelled": Drawing.objects.filter(label__isnull=False).count(),
            "versions": ModelVersion.objects.count(),
        },
    })
