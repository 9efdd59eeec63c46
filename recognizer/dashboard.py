"""The staff dashboard: the active model's figures and charts of the models and the drawings.

Staff only: anonymous visitors are sent to the login page, other users get 403. The figures and
charts come from recognizer.insights (cached SVGs), so this view stays thin.
"""

from __future__ import annotations

from django.contrib.auth.mixins import UserPassesTestMixin
from django.views.generic import TemplateView

from recognizer import insights
from recognizer.models import Drawing, ModelVersion


class StaffDashboard(UserPassesTestMixin, TemplateView):
    template_name = "recognizer/dashboard.html"
    permission_denied_message = "Staff only."

    def test_func(self) -> bool:
        return self.request.user.is_staff

    def get_context_data(self, **kwargs) -> dict:
        active = ModelVersion.objects.filter(is_active=True).first()
        return super().get_context_data(
            active=insights.model_summary(active),
            charts=insights.build_charts(active),
            counts={
                "drawings": Drawing.objects.count(),
                "labelled": Drawing.objects.labelled().count(),
                "versions": ModelVersion.objects.count(),
            },
            **kwargs,
        )
