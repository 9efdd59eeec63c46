"""REST API routes for retraining, training runs and model activation (/api/v1/)."""

urlpatterns: list = []
