"""Accounts: sign up, log in (throttled), log out, password change and reset by email."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from django.core.cache import cache

from recognizer.api import throttles

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_throttles():
    cache.clear()
    yield
    cache.clear()


def test_a_visitor_signs_up_and_is_logged_in(client):
    response = client.post("/accounts/signup/", {"username": "carol", "email": "carol@example.com",
                                                 "password1": "a-long-pass-phrase-9", "password2": "a-long-pass-phrase-9"})
    assert response.status_code == 302 and response["Location"] == "/"
    assert get_user_model().objects.filter(username="carol", email="carol@example.com").exists()
    assert 'data-authenticated="true"' in client.get("/").content.decode()


def test_sign_up_shows_errors_for_mismatched_passwords(client):
    response = client.post("/accounts/signup/", {"username": "carol", "email": "carol@example.com",
                                                 "password1": "a-long-pass-phrase-9", "password2": "different-9"})
    assert response.status_code == 200
    assert "didn’t match" in response.content.decode() or "didn't match" in response.content.decode()
    assert not get_user_model().objects.filter(username="carol").exists()


def test_the_login_page_posts_to_the_throttled_login(client):
    html = client.get("/accounts/login/").content.decode()
    assert 'action="/accounts/login/"' in html


def test_a_user_logs_in_and_out(client, alice):
    response = client.post("/accounts/login/", {"username": "alice", "password": "alice-password-1"})
    assert response.status_code == 302 and response["Location"] == "/"
    assert client.get("/drawings/").status_code == 200
    assert client.post("/accounts/logout/").status_code == 302
    assert client.get("/drawings/").status_code == 302


def test_a_wrong_password_shows_the_form_again(client, alice):
    response = client.post("/accounts/login/", {"username": "alice", "password": "wrong"})
    assert response.status_code == 200
    assert "correct username and password" in response.content.decode()


def test_login_attempts_are_throttled(client, alice, monkeypatch):
    monkeypatch.setattr(throttles.LoginThrottle, "rate", "2/minute", raising=False)
    codes = [client.post("/accounts/login/", {"username": "alice", "password": "wrong"}).status_code
             for _ in range(3)]
    assert codes == [200, 200, 429]


def test_a_user_changes_their_password(client, alice):
    client.force_login(alice)
    response = client.post("/accounts/password_change/", {"old_password": "alice-password-1",
                                                           "new_password1": "new-pass-phrase-42",
                                                           "new_password2": "new-pass-phrase-42"})
    assert response.status_code == 302
    alice.refresh_from_db()
    assert alice.check_password("new-pass-phrase-42")


def test_a_password_reset_mail_carries_a_link_that_works(client, alice):
    response = client.post("/accounts/password_reset/", {"email": "alice@example.com"})
    assert response.status_code == 302
    assert len(mail.outbox) == 1
    assert mail.outbox[0].subject == "Reset your digitsite password"
    link = re.search(r"https?://[^/]+(/accounts/reset/\S+)", mail.outbox[0].body).group(1)
    form = client.get(link, follow=True)
    assert form.status_code == 200
    done = client.post(form.redirect_chain[-1][0], {"new_password1": "reset-pass-phrase-7",
                                                     "new_password2": "reset-pass-phrase-7"})
    assert done.status_code == 302
    alice.refresh_from_db()
    assert alice.check_password("reset-pass-phrase-7")


@pytest.mark.parametrize("url", ["/accounts/login/", "/accounts/signup/", "/accounts/password_reset/",
                                 "/accounts/password_reset/done/", "/accounts/reset/done/"])
def test_account_pages_render(client, url):
    assert client.get(url).status_code == 200



def test_the_admin_login_shares_the_login_throttle(client, staff, monkeypatch):
    monkeypatch.setattr(throttles.LoginThrottle, "rate", "2/minute", raising=False)
    codes = [client.post("/admin/login/", {"username": "staff", "password": "wrong"}).status_code for _ in range(2)]
    refused = client.post("/admin/login/", {"username": "staff", "password": "staff-password-1"})
    assert codes == [200, 200]
    assert refused.status_code == 429 and "Too many attempts" in refused.content.decode()
    assert "_auth_user_id" not in client.session  # the right password does not get through once throttled


def test_password_reset_requests_are_throttled(client, alice, monkeypatch):
    monkeypatch.setattr(throttles.LoginThrottle, "rate", "2/minute", raising=False)
    codes = [client.post("/accounts/password_reset/", {"email": "alice@example.com"}).status_code for _ in range(3)]
    assert codes == [302, 302, 429]
    assert len(mail.outbox) == 2
