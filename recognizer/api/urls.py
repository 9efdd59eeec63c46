"""REST API routes for predictions, drawings and model versions (/api/v1/)."""

urlpatterns: list = []
