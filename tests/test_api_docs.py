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


def test_the_schema_documents_number_mode_with_its_segmentation_strokes_and_second_reading(client):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    components = schema["components"]["schemas"]
    number = components["NumberPrediction"]["properties"]
    assert {"number", "digits", "uncertain", "segmentation", "alternative"} <= set(number)
    assert number["alternative"].get("nullable") is True
    segmentation = components["Segmentation"]["properties"]
    assert segmentation["method"]["allOf"][0]["$ref"].endswith("/SegmentationMethodEnum")
    assert set(components["SegmentationMethodEnum"]["enum"]) == {"strokes", "image"}
    digit = components["NumberDigit"]["properties"]
    assert {"box", "strokes", "strokes_used", "label_url"} <= set(digit)
    request = components["PredictRequestRequest"]["properties"] if "PredictRequestRequest" in components \
        else components["PredictRequest"]["properties"]
    assert "grouped by the pen" in request["mode"]["description"]
