"""Resource servers accepting our tokens: RFC 6750 over DRF and plain Django views."""

import pytest
from django.test import Client as Browser

from tests.tokens.conftest import endpoint, exchange, get_code, token_request
from tokens.oauth import resource

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _resource_urls(settings):
    settings.ROOT_URLCONF = "tests.urls_resource"


@pytest.fixture
def user_token(logged_in_client, confidential) -> str:
    code, verifier = get_code(logged_in_client, confidential, scope="openid profile")
    return exchange(confidential, code, verifier).json()["access_token"]


def call(path: str, token: str | None = None, scheme: str = "Bearer"):
    headers = {"HTTP_AUTHORIZATION": f"{scheme} {token}"} if token else {}
    return Browser().get(path, secure=True, **headers)


@pytest.mark.parametrize("path", ["/api/profile", "/plain/profile"])
def test_a_valid_token_with_the_scope_is_accepted(path, user_token, user):
    response = call(path, user_token)
    assert response.status_code == 200
    assert response.json()["user"] == user.username


@pytest.mark.parametrize("path", ["/api/profile", "/plain/profile"])
def test_no_token_is_401_with_a_bare_bearer_challenge(path):
    """RFC 6750 §3.1: no error code when the request had no token."""
    response = call(path)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert "error=" not in response["WWW-Authenticate"]


@pytest.mark.parametrize("path", ["/api/profile", "/plain/profile"])
def test_a_bad_token_is_401_invalid_token(path):
    response = call(path, "not-a-token")
    assert response.status_code == 401
    assert 'error="invalid_token"' in response["WWW-Authenticate"]


def test_a_token_without_the_scope_is_403_insufficient_scope(confidential):
    """RFC 6750 §3.1: insufficient_scope."""
    value = token_request(
        confidential, {"grant_type": "client_credentials", "scope": "email"}
    ).json()["access_token"]
    response = call("/plain/profile", value)
    assert response.status_code == 403
    assert (
        'error="insufficient_scope"' in response["WWW-Authenticate"]
        and 'scope="profile"' in response["WWW-Authenticate"]
    )
    assert call("/api/profile", value).status_code == 403


def test_a_client_token_carries_no_person(confidential):
    value = token_request(
        confidential, {"grant_type": "client_credentials", "scope": "profile"}
    ).json()["access_token"]
    response = call("/api/profile", value)
    assert response.status_code == 200
    assert response.json() == {"user": None, "client": confidential.client_id}


def test_a_revoked_token_is_refused_at_once(confidential, user_token):
    endpoint("/revoke", confidential, {"token": user_token})
    assert call("/plain/profile", user_token).status_code == 401
    assert call("/api/profile", user_token).status_code == 401


def test_a_token_for_another_audience_is_refused(settings, user_token):
    settings.ACCESS_TOKEN_AUDIENCE = "https://another-api.example"
    assert call("/plain/profile", user_token).status_code == 401


def test_the_token_must_come_as_a_bearer_header(user_token):
    assert call("/plain/profile", user_token, scheme="Token").status_code == 401
    assert (
        Browser().get(f"/plain/profile?access_token={user_token}", secure=True).status_code == 401
    )


@pytest.mark.django_db(transaction=True)
def test_a_remote_resource_server_checks_signatures_against_the_published_jwks(
    live_server, settings, confidential
):
    """Offline validation, as another deployment would do it: keys from the JWKS URL."""
    value = token_request(
        confidential, {"grant_type": "client_credentials", "scope": "profile"}
    ).json()["access_token"]
    settings.RESOURCE_SERVER_JWKS_URL = f"{live_server.url}/.well-known/jwks.json"
    resource._jwks = None
    try:
        assert call("/plain/profile", value).status_code == 200
        assert call("/plain/profile", value[:-4] + "AAAA").status_code == 401
    finally:
        resource._jwks = None
