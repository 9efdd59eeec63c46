"""REST API routes for retraining, training runs and model activation (/api/v1/)."""

from django.urls import path

from recognizer.api import training_views

urlpatterns = [
    path("models/retrain", training_views.RetrainView.as_view(), name="api-retrain"),
    path("models/<int:pk>/activate", training_views.ActivateVersionView.as_view(), name="api-model-activate"),
    path("training-runs", training_views.TrainingRunList.as_view(), name="api-training-runs"),
    path("training-runs/<int:pk>", training_views.TrainingRunDetail.as_view(), name="api-training-run"),
]
