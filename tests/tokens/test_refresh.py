"""Refresh tokens: RFC 6749 §6, rotation and replay detection (RFC 9700 §4.14.2)."""

from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.models import SecurityEvent, UserSession
from tests.conftest import session_row
from tests.tokens.conftest import endpoint, exchange, get_code, past_the_retry_window, refresh
from tests.tokens.test_token_endpoint import assert_oauth_error
from tokens import revocation
from tokens.access_tokens import read
from tokens.models import Client, RefreshToken

pytestmark = pytest.mark.django_db


@pytest.fixture
def tokens(logged_in_client, confidential):
    def obtain(scope="openid profile"):
        code, verifier = get_code(logged_in_client, confidential, scope=scope)
        response = exchange(confidential, code, verifier)
        assert response.status_code == 200
        return response.json()

    return obtain


def test_a_refresh_rotates_the_refresh_token(confidential, tokens):
    first = tokens()
    response = refresh(confidential, first["refresh_token"])
    assert response.status_code == 200
    second = response.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    assert second["scope"] == "openid profile"
    old, new = RefreshToken.objects.order_by("pk")
    assert old.rotated_at is not None and new.parent == old and new.family == old.family


def test_the_refresh_path_runs_prepared_statements(confidential, tokens):
    """tokens/token_store.py: the lookup, and the compare-and-set with the successor's insert
    (one statement), are planned once per connection (DATABASE_PREPARED_STATEMENTS), not on every refresh: prepared at once
    by hand, or by psycopg after ``prepare_threshold`` runs when Django binds on the server
    (``server_side_binding``), so the chain refreshes past that threshold."""
    from django.db import connection

    value = tokens()["refresh_token"]
    for _ in range(6):  # authserver/env.py: prepare_threshold = 5
        value = refresh(confidential, value).json()["refresh_token"]
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        prepared = [row[0] for row in cursor.fetchall()]
    assert any(
        sql.startswith("WITH rotated AS (UPDATE") and "INSERT INTO" in sql for sql in prepared
    )
    assert any(sql.startswith("SELECT") and "token_digest" in sql for sql in prepared)


def test_a_rotated_token_presented_again_revokes_the_whole_family(confidential, tokens):
    """RFC 9700 §4.14.2: replay detection by rotation (past the retry window)."""
    first = tokens()
    second = refresh(confidential, first["refresh_token"]).json()
    past_the_retry_window()
    assert_oauth_error(refresh(confidential, first["refresh_token"]), "invalid_grant")
    # The attacker or the victim, whoever holds the newest token, is cut off too.
    assert_oauth_error(refresh(confidential, second["refresh_token"]), "invalid_grant")
    assert endpoint("/introspect", confidential, {"token": second["access_token"]}).json() == {
        "active": False
    }
    assert set(RefreshToken.objects.values_list("revoke_reason", flat=True)) == {"replay"}
    event = SecurityEvent.objects.get(kind="refresh_replay")
    assert event.detail["client_id"] == confidential.client_id
    assert SecurityEvent.objects.filter(kind="tokens_revoked").exists()


def test_other_families_survive_a_replay_in_one(confidential, tokens):
    first, other = tokens(), tokens()
    refresh(confidential, first["refresh_token"])
    past_the_retry_window()
    refresh(confidential, first["refresh_token"])  # replay
    assert refresh(confidential, other["refresh_token"]).status_code == 200


def test_scope_may_be_narrowed_but_not_widened(confidential, tokens):
    """RFC 6749 §6: the requested scope MUST NOT include any scope not originally granted."""
    first = tokens("openid profile")
    assert_oauth_error(
        refresh(confidential, first["refresh_token"], scope="openid profile email"), "invalid_scope"
    )
    narrowed = refresh(
        confidential, first["refresh_token"], scope="openid"
    )  # the failure burnt nothing
    assert narrowed.status_code == 200
    body = narrowed.json()
    assert body["scope"] == "openid"
    assert read(body["access_token"])["scope"] == "openid"
    # The new refresh token keeps the original grant's scope (RFC 6749 §6).
    assert RefreshToken.objects.get(rotated_at__isnull=True).scope == "openid profile"
    assert refresh(confidential, body["refresh_token"], scope="profile").status_code == 200


def test_a_refresh_token_belongs_to_its_client(confidential, tokens):
    from tests.tokens.conftest import Registered
    from tokens.clients import create_client

    first = tokens()
    other, secret = create_client(name="Other", redirect_uris=["https://other.example/cb"])
    assert_oauth_error(refresh(Registered(other, secret), first["refresh_token"]), "invalid_grant")
    assert refresh(confidential, first["refresh_token"]).status_code == 200  # not burnt


def test_an_idle_refresh_token_expires(confidential, tokens):
    first = tokens()
    RefreshToken.objects.update(expires=timezone.now() - timedelta(seconds=1))
    assert_oauth_error(refresh(confidential, first["refresh_token"]), "invalid_grant")


def test_rotation_never_extends_the_family_past_its_absolute_lifetime(confidential, tokens):
    Client.objects.update(refresh_token_lifetime=3600, refresh_token_idle_lifetime=7200)
    first = tokens()
    soon = timezone.now() + timedelta(minutes=5)
    RefreshToken.objects.update(family_expires=soon)
    second = refresh(confidential, first["refresh_token"]).json()
    child = RefreshToken.objects.get(rotated_at__isnull=True)
    assert child.expires == child.family_expires == soon
    assert second["refresh_token"]


def test_ending_the_browser_session_ends_its_refresh_tokens(logged_in_client, confidential, tokens):
    first = tokens("openid profile")
    logged_in_client.post("/logout/")
    assert_oauth_error(refresh(confidential, first["refresh_token"]), "invalid_grant")
    assert RefreshToken.objects.get().revoke_reason == "session_ended"


def test_offline_access_tokens_outlive_the_browser_session(logged_in_client, confidential, tokens):
    first = tokens("openid offline_access")
    assert RefreshToken.objects.get().sid == ""
    logged_in_client.post("/logout/")
    assert refresh(confidential, first["refresh_token"]).status_code == 200


def test_a_session_that_died_without_telling_anyone_is_still_checked(
    logged_in_client, confidential, tokens
):
    """Safety net: if the cascade missed, the refresh grant itself finds the session gone."""
    first = tokens()
    UserSession.objects.filter(pk=session_row(logged_in_client).pk).update(
        revoked_at=timezone.now()
    )
    assert_oauth_error(refresh(confidential, first["refresh_token"]), "invalid_grant")
    assert RefreshToken.objects.get().revoked_at is not None


def test_deactivating_the_person_revokes_even_offline_tokens(user, confidential, tokens):
    first = tokens("openid offline_access")
    revocation.deactivate_user(user, by="operator")
    assert_oauth_error(refresh(confidential, first["refresh_token"]), "invalid_grant")
    assert RefreshToken.objects.get().revoke_reason == "user"


def test_a_client_without_the_refresh_grant_gets_no_refresh_token(logged_in_client):
    from tests.tokens.conftest import REDIRECT, Registered
    from tokens.clients import create_client

    client, secret = create_client(
        name="No refresh", redirect_uris=[REDIRECT], grant_types=["authorization_code"]
    )
    registered = Registered(client, secret)
    code, verifier = get_code(logged_in_client, registered)
    body = exchange(registered, code, verifier).json()
    assert "refresh_token" not in body and body["access_token"]


def test_missing_refresh_token_parameter_is_invalid_request(confidential):
    from tests.tokens.conftest import token_request

    assert_oauth_error(
        token_request(confidential, {"grant_type": "refresh_token"}), "invalid_request"
    )
