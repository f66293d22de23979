"""OIDC Core §3.1.2.1 request parameters: prompt, max_age, login_hint, id_token_hint."""

import re
import time

import pytest
from django.test import Client as Browser

from accounts.models import UserSession
from accounts.sessions import AUTH_TIME_KEY
from tests.conftest import session_row, sign_in
from tests.factories import PASSWORD, UserFactory
from tests.tokens.conftest import authorize_url, exchange, get_code, pkce_pair, query
from tokens.models import Client

pytestmark = pytest.mark.django_db

ISSUER = "https://auth.example.test"


def ask(browser: Browser, client, **params):
    return browser.get(authorize_url(client, challenge=pkce_pair()[1], **params), secure=True)


@pytest.fixture
def remembered(logged_in_client, confidential):
    """A person signed in who already allowed the client."""
    get_code(logged_in_client, confidential, scope="openid profile")
    return logged_in_client


def id_token_for(browser, client, **kwargs) -> str:
    code, verifier = get_code(browser, client, scope="openid", **kwargs)
    return exchange(client, code, verifier).json()["id_token"]


def test_prompt_none_with_nobody_signed_in_answers_login_required_without_a_page(confidential):
    response = ask(Browser(), confidential, scope="openid", prompt="none")
    assert response.status_code == 302
    assert query(response["Location"]) == {
        "error": "login_required",
        "state": "xyz",
        "iss": ISSUER,
    } | {k: v for k, v in query(response["Location"]).items() if k == "error_description"}


def test_prompt_none_without_consent_answers_consent_required(logged_in_client, confidential):
    response = ask(logged_in_client, confidential, scope="openid", prompt="none")
    assert query(response["Location"])["error"] == "consent_required"


def test_prompt_none_with_session_and_consent_answers_with_a_code(remembered, confidential):
    response = ask(remembered, confidential, scope="openid", prompt="none")
    assert "code" in query(response["Location"])


def test_prompt_none_cannot_be_combined(remembered, confidential):
    response = ask(remembered, confidential, scope="openid", prompt="none login")
    assert query(response["Location"])["error"] == "invalid_request"


def test_an_unknown_prompt_value_is_invalid_request(remembered, confidential):
    assert (
        query(ask(remembered, confidential, scope="openid", prompt="maybe")["Location"])["error"]
        == "invalid_request"
    )


def test_prompt_consent_asks_even_when_remembered(remembered, confidential):
    response = ask(remembered, confidential, scope="openid", prompt="consent")
    assert response.status_code == 200 and b"Allow" in response.content


def test_prompt_consent_asks_even_a_first_party_client(logged_in_client, confidential):
    Client.objects.update(consent=Client.Consent.SKIP)
    response = ask(logged_in_client, confidential, scope="openid", prompt="consent")
    assert response.status_code == 200


def test_prompt_login_asks_for_the_password_again_and_updates_auth_time(
    remembered, confidential, user
):
    response = ask(remembered, confidential, scope="openid", prompt="login")
    location = response["Location"]
    assert location.startswith("/login/?")
    params = query(location)
    assert params["reauth"] == "1"
    assert "prompt" not in query(params["next"])  # answered by this sign-in: no loop
    page = remembered.get(location)
    assert page.status_code == 200 and b"Confirm it is you" in page.content
    assert f'value="{user.username}"'.encode() in page.content
    before = session_row(remembered)
    session = remembered.session
    session[AUTH_TIME_KEY] = int(time.time()) - 600  # the first sign-in was ten minutes ago
    session.save()
    action = re.search(r'<form method="post" action="(/login/[^"]*)"', page.content.decode()).group(
        1
    )
    assert "reauth=1" in action  # the form posts back as a re-authentication
    refused = remembered.post(
        action, {"username": user.username, "password": "wrong", "next": params["next"]}
    )
    assert refused.status_code == 200  # a wrong password is refused, not waved through
    done = remembered.post(
        action, {"username": user.username, "password": PASSWORD, "next": params["next"]}
    )
    assert done["Location"] == params["next"]
    after = session_row(remembered)
    assert after.sid == before.sid  # the same session, re-authenticated
    assert after.auth_time.timestamp() > time.time() - 60
    assert "code" in query(remembered.get(done["Location"], secure=True)["Location"])


def test_max_age_forces_a_fresh_sign_in_when_auth_time_is_older(remembered, confidential):
    session = remembered.session
    session[AUTH_TIME_KEY] = int(time.time()) - 120
    session.save()
    assert ask(remembered, confidential, scope="openid", max_age="600")["Location"].startswith(
        REDIRECT_PREFIX
    )
    response = ask(remembered, confidential, scope="openid", max_age="60")
    assert response["Location"].startswith("/login/?")
    assert "max_age" not in query(query(response["Location"])["next"])


REDIRECT_PREFIX = "https://app.example.com/callback?"


def test_max_age_with_prompt_none_answers_login_required(remembered, confidential):
    session = remembered.session
    session[AUTH_TIME_KEY] = int(time.time()) - 120
    session.save()
    response = ask(remembered, confidential, scope="openid", max_age="60", prompt="none")
    assert query(response["Location"])["error"] == "login_required"


@pytest.mark.parametrize("value", ["-1", "ten", "1.5", "99999999999"])
def test_a_malformed_max_age_is_invalid_request(remembered, confidential, value):
    assert (
        query(ask(remembered, confidential, scope="openid", max_age=value)["Location"])["error"]
        == "invalid_request"
    )


def test_login_hint_fills_in_the_sign_in_form(confidential):
    response = ask(Browser(), confidential, scope="openid", login_hint="ada@example.com")
    page = Browser().get(response["Location"])
    assert b'value="ada@example.com"' in page.content


def test_an_id_token_hint_for_the_signed_in_person_is_accepted(remembered, confidential):
    hint = id_token_for(remembered, confidential)
    response = ask(remembered, confidential, scope="openid", prompt="none", id_token_hint=hint)
    assert "code" in query(response["Location"])


def test_an_id_token_hint_for_someone_else_needs_a_new_sign_in(remembered, confidential):
    other = UserFactory()
    other_browser = Browser()
    sign_in(other_browser, other.username)
    hint = id_token_for(other_browser, confidential)
    silent = ask(remembered, confidential, scope="openid", prompt="none", id_token_hint=hint)
    assert query(silent["Location"])["error"] == "login_required"
    loud = ask(remembered, confidential, scope="openid", id_token_hint=hint)
    assert loud["Location"].startswith("/login/?")
    assert "id_token_hint" not in query(query(loud["Location"])["next"])


def test_a_forged_id_token_hint_is_invalid_request(remembered, confidential):
    response = ask(
        remembered,
        confidential,
        scope="openid",
        id_token_hint="eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0.",
    )
    assert query(response["Location"])["error"] == "invalid_request"


def test_an_access_token_is_not_an_id_token_hint(remembered, confidential):
    code, verifier = get_code(remembered, confidential, scope="openid")
    access = exchange(confidential, code, verifier).json()["access_token"]
    response = ask(remembered, confidential, scope="openid", id_token_hint=access)
    assert query(response["Location"])["error"] == "invalid_request"


def test_signing_in_as_someone_else_ends_the_previous_login_properly(
    remembered, confidential, user
):
    first = session_row(remembered)
    other = UserFactory()
    location = ask(remembered, confidential, scope="openid", prompt="login")["Location"]
    remembered.post(location, {"username": other.username, "password": PASSWORD})
    ended = UserSession.objects.get(pk=first.pk)
    assert ended.revoked_at is not None and ended.end_reason == "another account signed in"
    assert session_row(remembered).user == other


def test_a_signed_in_person_posting_the_sign_in_form_still_has_the_password_checked(
    remembered, user
):
    """However the form is reached, a submitted password is checked, never waved through."""
    response = remembered.post(
        "/login/", {"username": user.username, "password": "wrong", "next": "/"}
    )
    assert response.status_code == 200
    assert b"do not match" in response.content
