"""Fuzz every API operation from the OpenAPI schema (schemathesis, in process against the WSGI app):
whatever the caller sends, anonymous, with a user's token or with a staff token, the answer is never 5xx.

Bounded: a few examples per operation and mode (valid and invalid data), and a time cap for each caller.
A 5xx comes with the request that caused it (method, path, query, body) in the assertion message.
"""

from __future__ import annotations

import base64
import io
import time

import pytest
import schemathesis
from django.core.cache import cache
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient
from schemathesis import GenerationMode

from tests.test_fuzz_preprocess import SEEDS, mutate, mutation

pytestmark = [pytest.mark.integration, pytest.mark.django_db]

EXAMPLES_PER_OPERATION = 15
SECONDS_PER_CALLER = 25.0


@pytest.fixture
def schema():
    from django.core import signals
    from django.db import close_old_connections

    from digitsite.wsgi import application

    # Called straight through WSGI, each request's end would close the test's database connection (and
    # its transaction) as in production; Django's own test client disconnects these handlers the same way.
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    try:
        yield schemathesis.openapi.from_wsgi("/api/schema/?format=json", application)
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)


@pytest.fixture
def world(active_model, alice, bob, staff, digit_png):
    """Drawings of two users (labelled and not), so ids the fuzzer tries exist, belong to others, or do not."""
    from recognizer import feedback, serving

    cache.clear()  # throttle counters from other tests
    for user in (alice, bob, alice, bob):
        result = serving.predict_image(digit_png(1), user)
        feedback.label_drawing(result.drawing, 1)
    serving.predict_image(digit_png(7), alice)
    return {"anonymous": {}, **{user.username: {"Authorization": f"Token {Token.objects.create(user=user).key}"}
                                 for user in (alice, staff)}}


def describe(case, response) -> str:
    body = case.body if not isinstance(case.body, (bytes, str)) else repr(case.body[:300])
    return (f"{response.status_code} on {case.method} {case.formatted_path} query={case.query!r} "
            f"headers={case.headers!r} body={body!s:.600}\n{response.text[:2000]}")


def fuzz_operations(schema, headers: dict) -> int:
    """Every operation in both generation modes; returns how many requests were sent."""
    deadline = time.monotonic() + SECONDS_PER_CALLER
    sent = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        strategy = st.one_of(operation.as_strategy(GenerationMode.POSITIVE),
                             operation.as_strategy(GenerationMode.NEGATIVE))

        @settings(max_examples=EXAMPLES_PER_OPERATION * 2, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=strategy)
        def run(case):
            nonlocal sent
            if time.monotonic() > deadline:
                return
            response = case.call(headers=headers)
            sent += 1
            assert response.status_code < 500, describe(case, response)

        run()
    return sent


@pytest.mark.parametrize("caller", ["anonymous", "alice", "staff"])
def test_no_api_operation_answers_5xx_to_anything_in_its_schema(schema, world, caller):
    operations = [result.ok().label for result in schema.get_all_operations()]
    assert "POST /api/v1/predict" in operations and "POST /api/v1/models/retrain" in operations
    sent = fuzz_operations(schema, world[caller])
    print(f"{caller}: {sent} requests over {len(operations)} operations")
    assert sent >= len(operations) * 5  # the cap left every operation several requests


def test_the_fuzzer_reports_a_5xx(schema, world, monkeypatch):
    # The property can fail: a view that breaks is caught by it.
    from recognizer.api import views

    def broken(self, request, *args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(views.ModelVersionList, "get", broken)
    only_models = schema.include(path="/api/v1/models", method="GET")
    with pytest.raises(Exception, match="500 on GET /api/v1/models"):
        fuzz_operations(only_models, world["alice"])


@pytest.mark.parametrize("as_file", [False, True], ids=["base64", "multipart"])
def test_corrupted_drawings_posted_by_a_logged_in_user_are_never_a_5xx(world, alice, as_file):
    # The schema only says "a string": these are real images (every format, mutated) that reach the
    # decoder, the model and the storage of the drawing.
    client = APIClient(raise_request_exception=False)
    client.force_authenticate(alice)

    @settings(max_examples=60, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.sampled_from(sorted(SEEDS)), st.lists(mutation, max_size=3))
    def post(seed, ops):
        data = mutate(SEEDS[seed], ops)
        if as_file:
            upload = io.BytesIO(data)
            upload.name = "drawing.bin"
            response = client.post("/api/v1/predict", {"image": upload}, format="multipart")
        else:
            response = client.post("/api/v1/predict", {"image": base64.b64encode(data).decode()}, format="json")
        assert response.status_code in (200, 400, 413, 422), (seed, ops, response.status_code, response.content[:300])

    for seed in sorted(SEEDS):  # every format once unmutated, whatever hypothesis draws
        post = example(seed, [])(post)
    post()


def cmyk_jpeg() -> bytes:
    image = Image.new("L", (200, 200), 255)
    ImageDraw.Draw(image).line([(100, 30), (100, 170)], fill=0, width=14)
    buffer = io.BytesIO()
    image.convert("CMYK").save(buffer, format="JPEG")
    return buffer.getvalue()


def test_a_logged_in_users_cmyk_jpeg_is_predicted_and_stored_not_a_500(world, alice):
    # The decoder reads a CMYK JPEG; storing it as PNG (serving.as_png) must convert it first.
    client = APIClient(raise_request_exception=False)
    client.force_authenticate(alice)
    response = client.post("/api/v1/predict", {"image": base64.b64encode(cmyk_jpeg()).decode()}, format="json")
    assert response.status_code == 200, response.content[:300]
    assert response.json()["drawing"] is not None
