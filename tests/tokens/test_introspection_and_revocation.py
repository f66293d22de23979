"""Introspection (RFC 7662), revocation (RFC 7009), and revocation from every path."""

import pytest
from django.test import Client as Browser

from accounts.models import SecurityEvent, UserSession
from tests.conftest import session_row, sign_in
from tests.tokens.conftest import (
    Registered,
    endpoint,
    exchange,
    get_code,
    refresh,
    token_request,
)
from tests.tokens.test_token_endpoint import assert_oauth_error
from tokens import clients, revocation
from tokens.models import RefreshToken, RevokedAccessToken

pytestmark = pytest.mark.django_db


@pytest.fixture
def tokens(logged_in_client, confidential):
    code, verifier = get_code(logged_in_client, confidential, scope="openid profile")
    return exchange(confidential, code, verifier).json()


def introspect(client, token: str, **extra) -> dict:
    response = endpoint("/introspect", client, {"token": token, **extra})
    assert response.status_code == 200, response.content
    assert "no-store" in response["Cache-Control"]
    return response.json()


def test_introspecting_a_live_access_token(confidential, tokens, user):
    """RFC 7662 §2.2."""
    body = introspect(confidential, tokens["access_token"])
    assert body["active"] is True
    assert body["client_id"] == confidential.client_id and body["sub"] == str(user.pk)
    assert body["scope"] == "openid profile" and body["token_type"] == "Bearer"
    assert {"exp", "iat", "iss", "aud", "jti", "sid"} <= body.keys()


def test_introspecting_a_live_refresh_token(confidential, tokens, user):
    body = introspect(confidential, tokens["refresh_token"], token_type_hint="refresh_token")
    assert body["active"] is True and body["token_type"] == "refresh_token"
    assert body["username"] == user.username


def test_a_wrong_hint_still_finds_the_token(confidential, tokens):
    """RFC 7662 §2.1: the hint is only a hint."""
    assert (
        introspect(confidential, tokens["access_token"], token_type_hint="refresh_token")["active"]
        is True
    )
    assert (
        introspect(confidential, tokens["refresh_token"], token_type_hint="access_token")["active"]
        is True
    )


def test_unknown_and_malformed_tokens_are_simply_inactive(confidential):
    for token in ("nope", "a.b.c", "x" * 4000, "é.é.é"):
        assert introspect(confidential, token) == {"active": False}


def test_introspection_requires_a_confidential_client(confidential, public, tokens):
    """RFC 7662 §2.1: the endpoint requires authorization."""
    assert_oauth_error(
        endpoint("/introspect", None, {"token": tokens["access_token"]}), "invalid_client", 401
    )
    response = endpoint("/introspect", public, {"token": tokens["access_token"]}, auth="none")
    assert response.json()["error"] == "invalid_client"


def test_a_refresh_token_is_introspected_only_by_its_own_client(tokens):
    from tests.tokens.conftest import Registered

    other, secret = clients.create_client(
        name="Resource server", redirect_uris=[], grant_types=["client_credentials"], scopes=[]
    )
    resource_server = Registered(other, secret)
    assert introspect(resource_server, tokens["access_token"])["active"] is True
    assert introspect(resource_server, tokens["refresh_token"]) == {"active": False}


def test_revoking_an_access_token_puts_it_on_the_deny_list(confidential, tokens):
    """RFC 7009 §2.1."""
    response = endpoint(
        "/revoke",
        confidential,
        {"token": tokens["access_token"], "token_type_hint": "access_token"},
    )
    assert response.status_code == 200
    assert introspect(confidential, tokens["access_token"]) == {"active": False}
    entry = RevokedAccessToken.objects.get()
    assert entry.expires.timestamp() > 0
    assert refresh(confidential, tokens["refresh_token"]).status_code == 200  # the grant lives on


def test_revoking_a_refresh_token_revokes_its_family(confidential, tokens):
    """RFC 7009 §2.1: revoking a refresh token may revoke the grant; ours does."""
    second = refresh(confidential, tokens["refresh_token"]).json()
    assert endpoint("/revoke", confidential, {"token": second["refresh_token"]}).status_code == 200
    assert_oauth_error(refresh(confidential, second["refresh_token"]), "invalid_grant")
    assert introspect(confidential, second["access_token"]) == {"active": False}
    assert set(RefreshToken.objects.values_list("revoke_reason", flat=True)) == {"revoked"}
    assert SecurityEvent.objects.filter(kind="tokens_revoked", actor="client").exists()


def test_unknown_tokens_get_200(confidential):
    """RFC 7009 §2.2: invalid tokens do not cause an error response."""
    assert endpoint("/revoke", confidential, {"token": "never-issued"}).status_code == 200


def test_a_public_client_can_revoke_its_own_tokens(logged_in_client, public):
    code, verifier = get_code(logged_in_client, public)
    body = exchange(public, code, verifier, auth="none").json()
    assert (
        endpoint("/revoke", public, {"token": body["refresh_token"]}, auth="none").status_code
        == 200
    )
    assert_oauth_error(refresh(public, body["refresh_token"], auth="none"), "invalid_grant")


def test_a_client_cannot_revoke_another_clients_token(tokens):
    from tests.tokens.conftest import Registered

    other, secret = clients.create_client(name="Other", redirect_uris=["https://o.example/cb"])
    response = endpoint("/revoke", Registered(other, secret), {"token": tokens["refresh_token"]})
    assert response.status_code == 400
    assert RefreshToken.objects.get().revoked_at is None


def test_revocation_needs_a_token_parameter_and_a_known_hint(confidential):
    assert_oauth_error(endpoint("/revoke", confidential, {}), "invalid_request")
    for path in ("/revoke", "/introspect"):
        assert_oauth_error(
            endpoint(path, confidential, {"token": "x", "token_type_hint": "id_token"}),
            "unsupported_token_type",
        )


# --- revocation everywhere -------------------------------------------------------------------
def test_signing_out_makes_the_sessions_access_tokens_inactive_at_once(
    logged_in_client, confidential, tokens
):
    logged_in_client.post("/logout/")
    assert introspect(confidential, tokens["access_token"]) == {"active": False}
    assert introspect(confidential, tokens["refresh_token"]) == {"active": False}


def test_ending_a_session_from_my_sessions_revokes_its_tokens(
    user, logged_in_client, confidential, tokens
):
    other_device = Browser()
    sign_in(other_device, user.username)
    sid = session_row(logged_in_client).sid
    other_device.post(f"/account/sessions/{sid}/end/")
    assert introspect(confidential, tokens["access_token"]) == {"active": False}
    assert_oauth_error(refresh(confidential, tokens["refresh_token"]), "invalid_grant")


def test_an_operator_revoking_the_session_in_admin_revokes_its_tokens(
    staff_client, logged_in_client, confidential, tokens
):
    row = session_row(logged_in_client)
    staff_client.post(
        "/admin/accounts/usersession/", {"action": "revoke_sessions", "_selected_action": [row.pk]}
    )
    assert introspect(confidential, tokens["access_token"]) == {"active": False}
    assert RefreshToken.objects.get().revoke_reason == "session_ended"


def test_deactivating_the_person_makes_their_tokens_inactive(user, confidential, tokens):
    revocation.deactivate_user(user, by="operator")
    assert introspect(confidential, tokens["access_token"]) == {"active": False}
    assert introspect(confidential, tokens["refresh_token"]) == {"active": False}


def test_deactivating_the_client_stops_its_tokens_and_touches_nothing_else(
    user, logged_in_client, confidential, tokens
):
    from tests.tokens.conftest import Registered

    resource, secret = clients.create_client(
        name="RS", redirect_uris=[], grant_types=["client_credentials"], scopes=[]
    )
    revocation.deactivate_client(confidential.client)
    assert introspect(Registered(resource, secret), tokens["access_token"]) == {"active": False}
    assert RefreshToken.objects.get().revoke_reason == "client"
    assert UserSession.objects.active().filter(user=user).exists()  # the person stays signed in
    assert SecurityEvent.objects.filter(kind="client_deactivated").exists()


def test_password_change_ends_other_sessions_and_their_tokens(
    user, confidential, tokens, logged_in_client
):
    from tests.factories import PASSWORD

    here = Browser()
    sign_in(here, user.username)
    here.post(
        "/account/password/",
        {
            "old_password": PASSWORD,
            "new_password1": "another long passphrase",
            "new_password2": "another long passphrase",
        },
    )
    assert introspect(confidential, tokens["access_token"]) == {"active": False}


def test_client_credentials_tokens_introspect_while_the_client_is_active(confidential):
    value = token_request(confidential, {"grant_type": "client_credentials"}).json()["access_token"]
    assert introspect(confidential, value)["active"] is True
    revocation.deactivate_client(confidential.client)
    from tests.tokens.conftest import Registered

    rs, secret = clients.create_client(
        name="RS", redirect_uris=[], grant_types=["client_credentials"], scopes=[]
    )
    assert introspect(Registered(rs, secret), value) == {"active": False}


@pytest.mark.parametrize("path", ["/introspect", "/revoke"])
@pytest.mark.parametrize(
    "data",
    [{"token_type_hint": "access_token"}, {"token": ""}, {"token": "", "token_type_hint": "x"}],
    ids=["no-token", "empty-token", "empty-token-and-a-bad-hint"],
)
@pytest.mark.parametrize("credentials", ["right", "wrong", "none"])
def test_rfc7009_s2_1_and_rfc7662_s2_1_a_missing_token_is_invalid_request(
    confidential, path, data, credentials
):
    """RFC 7009 §2.1 / RFC 7662 §2.1: token is REQUIRED; RFC 6749 §5.2 invalid_request, with an
    empty value the same as none (§3.2), and the same answer whoever sends it."""
    client = {
        "right": confidential,
        "wrong": Registered(confidential.client, "not-the-secret"),
        "none": None,
    }[credentials]
    body = assert_oauth_error(endpoint(path, client, data), "invalid_request")
    assert body["error_description"] == "Missing 'token' in request."
