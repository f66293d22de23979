"""Password reset by emailed link: signed, single use, expiring, and silent about who exists."""

import re
from datetime import timedelta

import pytest
from django.contrib.auth.tokens import default_token_generator
from django.core import mail
from django.test import Client

from accounts.models import SecurityEvent, UserSession
from tests.conftest import sign_in

pytestmark = pytest.mark.django_db

NEW = "a freshly chosen passphrase"


def request_reset(client: Client, email: str):
    return client.post("/password-reset/", {"email": email})


def emailed_path() -> str:
    """The reset link's path from the last email; the link itself is built on ISSUER."""
    match = re.search(
        r"https://auth\.example\.test(/password-reset/\S+/\S+/)", mail.outbox[-1].body
    )
    assert match, mail.outbox[-1].body
    return match.group(1)


def choose_password(client: Client, path: str, password: str = NEW):
    landing = client.get(path)  # Django swaps the token into the session and redirects
    if landing.status_code != 302:
        return landing
    return client.post(landing["Location"], {"new_password1": password, "new_password2": password})


def test_a_known_address_gets_a_link_built_on_the_issuer_not_the_host_header(client, user):
    response = request_reset(client, user.email.upper())
    assert response.status_code == 302 and response["Location"] == "/password-reset/sent/"
    assert len(mail.outbox) == 1 and mail.outbox[0].to == [user.email]
    assert "evil.example" not in mail.outbox[0].body
    emailed_path()
    assert SecurityEvent.objects.filter(kind="password_reset_requested", user=user).exists()


def test_an_unknown_address_gets_the_same_answer_and_no_email(client, user):
    known = request_reset(client, user.email)
    unknown = request_reset(client, "nobody@example.com")
    assert known.status_code == unknown.status_code == 302
    assert known["Location"] == unknown["Location"]
    assert len(mail.outbox) == 1


def test_the_link_sets_a_new_password_and_signs_every_session_out(user):
    elsewhere = Client()
    sign_in(elsewhere, user.username)
    client = Client()
    request_reset(client, user.email)
    done = choose_password(client, emailed_path())
    assert done.status_code == 302 and done["Location"] == "/password-reset/done/"
    user.refresh_from_db()
    assert user.check_password(NEW)
    assert elsewhere.get("/").status_code == 302
    assert not UserSession.objects.active().filter(user=user).exists()
    assert SecurityEvent.objects.filter(kind="password_reset", user=user).exists()
    assert sign_in(Client(), user.username, NEW).status_code == 302


def test_the_link_works_only_once(client, user):
    request_reset(client, user.email)
    path = emailed_path()
    choose_password(client, path)
    again = choose_password(Client(), path, "yet another passphrase")
    assert again.status_code == 200
    assert b"This link no longer works" in again.content
    user.refresh_from_db()
    assert user.check_password(NEW)


def test_an_expired_link_is_refused(client, user, settings, monkeypatch):
    request_reset(client, user.email)
    path = emailed_path()
    later = default_token_generator._now() + timedelta(seconds=settings.PASSWORD_RESET_TIMEOUT + 1)
    monkeypatch.setattr(default_token_generator, "_now", lambda: later)
    response = choose_password(Client(), path)
    assert b"This link no longer works" in response.content
    user.refresh_from_db()
    assert not user.check_password(NEW)


def test_a_tampered_link_is_refused(client, user):
    request_reset(client, user.email)
    path = emailed_path()
    tampered = path[:-3] + ("x" if path[-3] != "x" else "y") + path[-2:]
    assert b"This link no longer works" in choose_password(Client(), tampered).content


def test_a_weak_new_password_is_refused_with_a_reason(client, user):
    request_reset(client, user.email)
    response = choose_password(client, emailed_path(), "password")
    assert response.status_code == 200
    assert b"This password is too common" in response.content
