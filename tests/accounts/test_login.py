"""Signing in through the login page: username or email, same answer for every failure."""

import statistics
import time

import pytest
from django.test import Client

from accounts.models import SecurityEvent, UserSession
from accounts.sessions import SessionStore
from tests.conftest import form_error, session_row, sign_in
from tests.factories import PASSWORD, UserFactory

pytestmark = pytest.mark.django_db

MISMATCH = "The username or email and password you entered do not match."


def test_login_page_renders_a_form_with_labels_and_csrf(client):
    response = client.get("/login/")
    body = response.content.decode()
    assert response.status_code == 200
    assert 'for="id_username"' in body and 'for="id_password"' in body
    assert "csrfmiddlewaretoken" in body
    assert 'autocomplete="current-password"' in body


def test_a_person_signs_in_with_their_username(client, user):
    response = sign_in(client, user.username)
    assert response.status_code == 302
    assert response["Location"] == "/"
    assert client.get("/").context["user"] == user


@pytest.mark.parametrize("transform", [str.lower, str.upper])
def test_a_person_signs_in_with_their_email_in_any_case(client, transform):
    user = UserFactory(email="Ada.Lovelace@Example.com")
    assert sign_in(client, transform(user.email)).status_code == 302
    assert client.get("/").context["user"] == user


def test_username_matches_in_any_case(client):
    user = UserFactory(username="AdaL")
    assert sign_in(client, "adal").status_code == 302
    assert client.get("/").context["user"] == user


def test_sign_in_redirects_to_a_safe_next_url_only(client, user):
    response = client.post(
        "/login/", {"username": user.username, "password": PASSWORD, "next": "/account/sessions/"}
    )
    assert response["Location"] == "/account/sessions/"
    other = Client()
    response = other.post(
        "/login/",
        {"username": user.username, "password": PASSWORD, "next": "https://evil.example/"},
    )
    assert response["Location"] == "/"


def test_wrong_password_and_unknown_user_get_the_same_answer(client, user):
    wrong = sign_in(client, user.username, "not the password")
    unknown = sign_in(client, "nobody-by-this-name", "not the password")
    inactive = UserFactory(inactive=True)
    disabled = sign_in(client, inactive.username)
    assert wrong.status_code == unknown.status_code == disabled.status_code == 200
    assert form_error(wrong) == form_error(unknown) == form_error(disabled) == MISMATCH
    assert "authserver_session" not in wrong.cookies


@pytest.mark.real_hasher
def test_unknown_user_takes_about_as_long_as_a_wrong_password(client):
    """No timing oracle for account existence: the unknown name pays the same password hash."""
    user = UserFactory()  # hashed with the production hasher (Argon2)

    def median_seconds(identifier: str) -> float:
        samples = []
        for _ in range(5):
            started = time.perf_counter()
            sign_in(Client(), identifier, "not the password")
            samples.append(time.perf_counter() - started)
        return statistics.median(samples)

    sign_in(Client(), user.username, "warm-up")
    known, unknown = median_seconds(user.username), median_seconds("nobody-by-this-name")
    assert 0.5 < unknown / known < 2.0, (known, unknown)


def test_successful_and_failed_sign_ins_are_recorded_as_security_events(client, user):
    sign_in(client, user.username, "wrong")
    sign_in(client, "ghost", "wrong")
    sign_in(client, user.username, HTTP_USER_AGENT="TestAgent/1.0")
    events = list(
        SecurityEvent.objects.order_by("created").values_list("kind", "user_id", "identifier")
    )
    assert events == [
        ("login_failed", user.pk, user.username),
        ("login_failed", None, "ghost"),
        ("login_succeeded", user.pk, ""),
    ]
    success = SecurityEvent.objects.get(kind="login_succeeded")
    assert success.user_agent == "TestAgent/1.0" and success.ip_address == "127.0.0.1"
    assert success.sid == session_row(client).sid
    # A typed password never reaches the record.
    assert not SecurityEvent.objects.filter(detail__icontains="wrong").exists()


def test_signing_in_creates_a_session_row_with_who_when_and_where(client, user):
    before = time.time()
    sign_in(
        client,
        user.username,
        HTTP_USER_AGENT="Mozilla/5.0 (Macintosh; Intel Mac OS X 14_0) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Safari/605.1.15",
    )
    row = session_row(client)
    assert row.user == user
    assert row.sid and len(row.sid) >= 32
    assert row.auth_time.timestamp() >= int(before)
    assert row.amr == ["pwd"]
    assert row.ip_address == "127.0.0.1"
    assert row.device == "Safari 17 on Mac OS X"
    assert row.revoked_at is None


def test_the_session_key_changes_at_sign_in(client, user):
    """Session fixation: a key planted before sign-in is worthless after it."""
    session = client.session  # an anonymous session, saved to the database
    session["planted"] = "by an attacker"
    session.save()
    planted_key = session.session_key
    assert UserSession.objects.filter(session_key=SessionStore.digest(planted_key)).exists()

    sign_in(client, user.username)

    new_key = client.cookies["authserver_session"].value
    assert new_key != planted_key
    assert not UserSession.objects.filter(session_key=SessionStore.digest(planted_key)).exists()
    attacker = Client()
    attacker.cookies["authserver_session"] = planted_key
    assert attacker.get("/").status_code == 302  # not signed in


def test_signed_in_people_visiting_the_login_page_go_to_their_account(logged_in_client):
    assert logged_in_client.get("/login/")["Location"] == "/"


def test_anonymous_visitors_are_sent_to_sign_in(client):
    response = client.get("/account/sessions/")
    assert response.status_code == 302
    assert response["Location"] == "/login/?next=/account/sessions/"
