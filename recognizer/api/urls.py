"""REST API routes for predictions, drawings and model versions (/api/v1/)."""

from django.urls import path

from recognizer.api import views

urlpatterns = [
    path("predict", views.PredictView.as_view(), name="api-predict"),
    path("drawings", views.DrawingList.as_view(), name="api-drawings"),
    path("drawings/export", views.DrawingExport.as_view(), name="api-drawings-export"),
    path("drawings/<int:pk>", views.DrawingDetail.as_view(), name="api-drawing"),
    path("drawings/<int:pk>/label", views.LabelDrawing.as_view(), name="api-drawing-label"),
    path("models", views.ModelVersionList.as_view(), name="api-models"),
    path("models/active", views.ActiveModelVersion.as_view(), name="api-model-active"),
    path("models/<int:pk>", views.ModelVersionDetail.as_view(), name="api-model"),
    path("auth/token", views.TokenView.as_view(), name="api-token"),
    path("account", views.AccountView.as_view(), name="api-account"),
]
