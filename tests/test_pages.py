"""The pages: the drawing page, My drawings (thumbnails, filters, pagination) and the image view."""

from __future__ import annotations

import re

import pytest

from recognizer import feedback, serving
from recognizer.models import Drawing

pytestmark = pytest.mark.django_db


def test_the_drawing_page_has_a_canvas_the_module_and_the_api_urls(client):
    response = client.get("/")
    assert response.status_code == 200
    html = response.content.decode()
    assert '<canvas id="pad"' in html
    assert '<script type="module" src="/static/recognizer/main.js">' in html
    assert 'data-predict-url="/api/v1/predict"' in html
    assert "/api/v1/drawings/0/" not in html  # each answer names its own label URL
    assert 'data-authenticated="false"' in html
    assert "csrftoken" in response.cookies  # the module sends it with its POSTs


def test_logged_in_users_get_the_labelling_buttons(client, alice):
    client.force_login(alice)
    html = client.get("/").content.decode()
    assert 'data-authenticated="true"' in html
    assert len(re.findall(r'data-label="\d"', html)) == 10
    assert "My drawings" in html


def test_anonymous_visitors_are_invited_to_log_in_instead(client):
    html = client.get("/").content.decode()
    assert "data-label=" not in html
    assert "/accounts/login/" in html


MODULES = ["main.js", "canvas.js", "api.js", "predict.js", "answer.js", "labelling.js"]


def test_the_static_modules_and_stylesheet_exist():
    from django.contrib.staticfiles import finders

    for name in [*MODULES, "site.css"]:
        assert finders.find(f"recognizer/{name}"), name


def test_production_static_files_import_each_module_by_its_hashed_name(tmp_path):
    """collectstatic with the production storage: the hashed main.js imports the hashed modules, which exist,
    so a browser never mixes one deploy's main.js with another's canvas.js (the hashed files are cached a year)."""
    import json

    from tests.test_settings import PRODUCTION, manage

    result = manage("collectstatic", "--noinput", "-v", "0", env={**PRODUCTION, "DJANGO_STATIC_ROOT": str(tmp_path)})
    assert result.returncode == 0, result.stderr[-2000:]
    hashed = json.loads((tmp_path / "staticfiles.json").read_text())["paths"]
    seen, todo = set(), [hashed["recognizer/main.js"]]
    while todo:
        name = todo.pop()
        seen.add(name)
        source = (tmp_path / name).read_text()
        for url in re.findall(r"""^import [^;]*?from\s*["']([^"']+)["'];""", source, re.M):
            target = (tmp_path / name).parent.joinpath(url).resolve().relative_to(tmp_path.resolve()).as_posix()
            assert target in hashed.values(), f"{name} imports {url}, not a hashed name"
            assert (tmp_path / target).is_file(), f"{name} imports {url}, which is missing"
            if target not in seen:
                todo.append(target)
    assert seen == {hashed[f"recognizer/{module}"] for module in MODULES}  # every module, all reached from main.js


def test_my_drawings_needs_a_login(client):
    response = client.get("/drawings/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def drawings_for(user, digit_png, n=1):
    return [serving.predict_image(digit_png(1), user).drawing for _ in range(n)]


def test_my_drawings_lists_only_my_drawings_as_thumbnails(client, alice, bob, active_model, digit_png):
    mine = drawings_for(alice, digit_png)[0]
    theirs = drawings_for(bob, digit_png)[0]
    client.force_login(alice)
    html = client.get("/drawings/").content.decode()
    assert f'src="/drawings/{mine.pk}/image.png"' in html
    assert f"/drawings/{theirs.pk}/image.png" not in html
    assert "1 drawing." in html


def test_my_drawings_filters_by_digit_and_by_right_or_wrong(client, alice, active_model, digit_png):
    right, wrong, unlabelled = drawings_for(alice, digit_png, 3)
    feedback.label_drawing(right, right.predicted_digit)
    other = (wrong.predicted_digit + 1) % 10
    feedback.label_drawing(wrong, other)
    client.force_login(alice)

    def shown(query):
        html = client.get(f"/drawings/?{query}").content.decode()
        return {int(pk) for pk in re.findall(r'data-drawing="(\d+)"', html)}

    assert shown("") == {right.pk, wrong.pk, unlabelled.pk}
    assert shown("result=right") == {right.pk}
    assert shown("result=wrong") == {wrong.pk}
    assert shown("result=unlabelled") == {unlabelled.pk}
    assert shown(f"digit={other}") == {wrong.pk}  # a labelled drawing counts as its label
    assert wrong.pk not in shown(f"digit={wrong.predicted_digit}")
    assert shown("digit=nonsense") == {right.pk, wrong.pk, unlabelled.pk}  # a bad filter is ignored, not a 500


def test_my_drawings_is_paginated_and_keeps_the_filter(client, alice, active_model, digit_png):
    drawings_for(alice, digit_png, 3)
    Drawing.objects.update(label=1, predicted_digit=1)
    client.force_login(alice)
    from recognizer import views

    views_page_size = views.DRAWINGS_PER_PAGE
    views.DRAWINGS_PER_PAGE = 2
    try:
        html = client.get("/drawings/?result=right").content.decode()
        assert "Page 1 of 2" in html
        assert "?result=right&amp;page=2" in html
        page2 = client.get("/drawings/?result=right&page=2").content.decode()
        assert len(re.findall(r'data-drawing="\d+"', page2)) == 1
        assert client.get("/drawings/?page=999").status_code == 200
    finally:
        views.DRAWINGS_PER_PAGE = views_page_size


def test_the_image_view_is_owner_or_staff_only(client, alice, bob, staff, active_model, digit_png):
    drawing = drawings_for(alice, digit_png)[0]
    url = f"/drawings/{drawing.pk}/image.png"
    assert client.get(url).status_code == 404
    client.force_login(bob)
    assert client.get(url).status_code == 404
    client.force_login(staff)
    assert client.get(url).status_code == 200
    client.force_login(alice)
    response = client.get(url)
    assert response.status_code == 200 and response["Content-Type"] == "image/png"
    assert "private" in response["Cache-Control"]
