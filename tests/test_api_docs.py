"""The OpenAPI schema and its browsable docs, which must work without network access."""

import pytest


@pytest.mark.django_db
def test_the_docs_page_loads_swagger_ui_from_this_site_not_a_cdn(client):
    html = client.get("/api/docs/").content.decode()
    assert "drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in html
    assert "cdn.jsdelivr.net" not in html and "unpkg.com" not in html


@pytest.mark.django_db
def test_the_schema_lists_the_predict_endpoint(client):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    assert "/api/v1/predict" in schema["paths"]
