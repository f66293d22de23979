"""Dynamic client registration (RFC 7591, OpenID Connect Dynamic Client Registration 1.0) and
its management protocol (RFC 7592), driven over HTTP as a developer's tooling would.

Registration is closed by default: an initial access token (RFC 7591 §1.2, §3) from the
``create_initial_access_token`` command or Django admin opens it, once per use.
"""

import json
import re
import time
from datetime import timedelta
from io import StringIO
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.core.management import call_command
from django.test import Client as Browser
from django.utils import timezone
from joserfc.jwk import RSAKey

from tests.tokens.conftest import (
    Registered,
    authorize_url,
    exchange,
    get_code,
    pkce_pair,
    query,
    refresh,
    token_request,
)
from tokens.models import Client, InitialAccessToken, token_digest

pytestmark = pytest.mark.django_db

WEB_APP = {
    "client_name": "Reports",
    "redirect_uris": ["https://reports.example.com/callback"],
    "grant_types": ["authorization_code", "refresh_token"],
    "response_types": ["code"],
    "token_endpoint_auth_method": "client_secret_basic",
    "scope": "openid profile offline_access",
    "post_logout_redirect_uris": ["https://reports.example.com/signed-out"],
    "client_uri": "https://reports.example.com/",
    "logo_uri": "https://reports.example.com/logo.png",
    "contacts": ["ops@reports.example.com"],
}
SERVICE = {
    "client_name": "Nightly sync",
    "grant_types": ["client_credentials"],
    "token_endpoint_auth_method": "client_secret_basic",
    "scope": "profile",
}
NATIVE_APP = {
    "client_name": "Reports for desktop",
    "redirect_uris": ["http://127.0.0.1:8765/cb"],
    "grant_types": ["authorization_code", "refresh_token"],
    "token_endpoint_auth_method": "none",
    "scope": "openid profile",
}
# RFC 7592 §2.2: the server's own fields, which an update must not carry.
SERVER_OWNED = (
    "registration_access_token",
    "registration_client_uri",
    "client_id_issued_at",
    "client_secret_expires_at",
)


# --- helpers ----------------------------------------------------------------------------------
# One client for the JSON API calls: each new test client loads the middleware, and WhiteNoise
# then rescans STATIC_ROOT, which a concurrent run's collectstatic may be rewriting.
_API = Browser(raise_request_exception=False)


def api() -> Browser:
    """The shared API client, with no cookies: registration is authenticated by tokens only."""
    _API.cookies.clear()
    return _API


def issue_initial_token(*args: str) -> dict:
    """Run the operator's command; it prints JSON with the token, shown only there."""
    out = StringIO()
    call_command("create_initial_access_token", *args, stdout=out)
    return json.loads(out.getvalue())


def bearer(token: str | None) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}


def register(metadata, token: str | None = None, *, content_type="application/json", **headers):
    """POST a registration (RFC 7591 §3.1); ``metadata`` may be raw text or bytes."""
    body = metadata if isinstance(metadata, str | bytes) else json.dumps(metadata)
    return api().post(
        "/register", body, content_type=content_type, secure=True, **bearer(token), **headers
    )


def manage(method: str, uri: str, token: str | None, body=None, **headers):
    """A request to a client configuration endpoint (RFC 7592 §2) by its absolute URI."""
    call = getattr(api(), method.lower())
    path = urlsplit(uri).path
    if body is None:
        return call(path, secure=True, **bearer(token), **headers)
    data = body if isinstance(body, str) else json.dumps(body)
    return call(
        path, data, content_type="application/json", secure=True, **bearer(token), **headers
    )


def as_registered(body: dict) -> Registered:
    """The test helpers' view of a registered client: the row and the secret it was given."""
    return Registered(Client.objects.get(client_id=body["client_id"]), body.get("client_secret"))


def update_of(registration: dict, **changes) -> dict:
    """A full replacement (RFC 7592 §2.2): the registered metadata, changed, minus server fields."""
    body = {k: v for k, v in registration.items() if k not in SERVER_OWNED}
    body.pop("client_secret", None)
    body.update(changes)
    return body


def row(client_id: str) -> dict:
    values = Client.objects.filter(client_id=client_id).values().get()
    for volatile in (
        "updated",
        "registration_token_digest",
        "registration_token_previous_digest",
        "registration_token_previous_expires",
    ):
        values.pop(volatile)
    return values


def assert_error(response, error: str, status: int = 400) -> dict:
    """RFC 7591 §3.2.2 / RFC 6749 §5.2: a JSON error object, never cached."""
    assert response.status_code == status, response.content[:500]
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    assert "no-store" in response["Cache-Control"]
    body = response.json()
    assert body["error"] == error, body
    return body


def assert_bearer_challenge(response) -> None:
    """RFC 6750 §3 / §3.1: 401 invalid_token with a Bearer challenge."""
    assert_error(response, "invalid_token", status=401)
    challenge = response["WWW-Authenticate"]
    assert challenge.startswith("Bearer ") and 'error="invalid_token"' in challenge


@pytest.fixture
def initial_token(db) -> str:
    return issue_initial_token("--uses", "20", "--note", "tests")["initial_access_token"]


@pytest.fixture
def web_app(initial_token) -> dict:
    response = register(WEB_APP, initial_token)
    assert response.status_code == 201, response.content
    return response.json()


@pytest.fixture
def other_app(initial_token) -> dict:
    response = register(
        {
            **WEB_APP,
            "client_name": "Someone else",
            "redirect_uris": ["https://other.example.org/cb"],
        },
        initial_token,
    )
    assert response.status_code == 201, response.content
    return response.json()


# --- closed by default (RFC 7591 §3) ----------------------------------------------------------
def test_registration_without_an_initial_access_token_is_refused_with_a_bearer_challenge():
    """RFC 7591 §3: the endpoint MAY require an initial access token; here it does unless the
    operator opened it. RFC 6750 §3.1: no token means 401 invalid_token."""
    assert_bearer_challenge(register(WEB_APP))
    assert not Client.objects.exists()


@pytest.mark.parametrize(
    "authorization",
    ["Bearer not-a-token", "Bearer " + "x" * 300, "Basic " + "x" * 20, "Bearer"],
    ids=["unknown", "oversized", "basic-scheme", "empty"],
)
def test_registration_with_a_bad_initial_access_token_is_refused(initial_token, authorization):
    """RFC 7591 §3 / RFC 6750 §3.1: anything but a live initial access token is 401."""
    assert_bearer_challenge(register(WEB_APP, HTTP_AUTHORIZATION=authorization))
    assert not Client.objects.exists()


def test_the_command_prints_a_token_for_the_advertised_registration_endpoint():
    """RFC 7591 §3 / OIDC Discovery §3: registration_endpoint is where the token is used."""
    printed = issue_initial_token("--note", "Reports team", "--days", "3", "--uses", "2")
    assert printed["registration_endpoint"] == settings.ISSUER + "/register"
    assert printed["expires_in_days"] == 3 and printed["uses"] == 2
    discovery = api().get("/.well-known/openid-configuration", secure=True).json()
    assert discovery["registration_endpoint"] == printed["registration_endpoint"]
    stored = InitialAccessToken.objects.get()
    assert stored.note == "Reports team" and stored.uses_left == 2
    assert abs(stored.expires - (timezone.now() + timedelta(days=3))) < timedelta(minutes=1)
    # Only its digest is kept: the printed value is the one copy.
    assert stored.token_digest == token_digest(printed["initial_access_token"])
    assert printed["initial_access_token"] not in str(InitialAccessToken.objects.values().get())


def test_an_initial_access_token_registers_a_confidential_client_and_the_metadata_is_echoed():
    """RFC 7591 §3.2.1: 201 with client_id, client_secret, client_id_issued_at,
    client_secret_expires_at (0: never) and the registered metadata; RFC 7592 §3 adds
    registration_access_token and registration_client_uri. OIDC Registration §3.2 likewise."""
    token = issue_initial_token()["initial_access_token"]
    before = int(time.time())
    response = register(WEB_APP, token)
    assert response.status_code == 201, response.content
    assert response["Content-Type"].startswith("application/json")
    assert "no-store" in response["Cache-Control"]  # it carries secrets
    body = response.json()

    assert body["client_id"] and body["client_secret"] and len(body["client_secret"]) >= 43
    assert before - 1 <= body["client_id_issued_at"] <= int(time.time()) + 1
    assert body["client_secret_expires_at"] == 0
    assert body["registration_access_token"] and body["registration_access_token"] != token
    assert body["registration_client_uri"] == f"{settings.ISSUER}/register/{body['client_id']}"
    for name, value in WEB_APP.items():
        assert body[name] == value, name
    assert body["id_token_signed_response_alg"] == "RS256"

    client = Client.objects.get(client_id=body["client_id"])
    assert client.name == "Reports" and client.client_type == Client.Type.CONFIDENTIAL
    assert client.redirect_uris == WEB_APP["redirect_uris"]
    assert client.post_logout_redirect_uris == WEB_APP["post_logout_redirect_uris"]
    assert client.allowed_scopes == ["openid", "profile", "offline_access"]
    assert client.grant_types == ["authorization_code", "refresh_token"]


def test_a_single_use_initial_access_token_registers_exactly_one_client():
    """RFC 7591 §3 / §5: the operator decides how many registrations a token buys."""
    token = issue_initial_token("--uses", "1")["initial_access_token"]
    assert register(WEB_APP, token).status_code == 201
    assert_bearer_challenge(register(SERVICE, token))
    assert Client.objects.count() == 1
    assert InitialAccessToken.objects.get().uses_left == 0


def test_a_token_for_two_uses_registers_two_clients_and_no_third():
    token = issue_initial_token("--uses", "2")["initial_access_token"]
    assert register(WEB_APP, token).status_code == 201
    assert register(SERVICE, token).status_code == 201
    assert_bearer_challenge(register(NATIVE_APP, token))
    assert Client.objects.count() == 2


def test_an_expired_initial_access_token_is_refused():
    """RFC 7591 §3: an expired token is no token (RFC 6750 §3.1 invalid_token)."""
    token = issue_initial_token("--uses", "5")["initial_access_token"]
    InitialAccessToken.objects.update(expires=timezone.now() - timedelta(seconds=1))
    assert_bearer_challenge(register(WEB_APP, token))
    assert not Client.objects.exists()


def test_a_registration_refused_for_its_metadata_does_not_spend_the_initial_access_token():
    """RFC 7591 §3.2.2: an error response registers nothing, so it should cost nothing."""
    token = issue_initial_token("--uses", "1")["initial_access_token"]
    refused = register({**WEB_APP, "redirect_uris": ["http://reports.example.com/cb"]}, token)
    assert_error(refused, "invalid_redirect_uri")
    assert register(WEB_APP, token).status_code == 201


def test_open_registration_needs_no_initial_access_token(settings):
    """RFC 7591 §3: an operator may open the endpoint to anyone (OPEN_REGISTRATION)."""
    settings.OPEN_REGISTRATION = True
    response = register(WEB_APP)
    assert response.status_code == 201, response.content
    assert Client.objects.filter(client_id=response.json()["client_id"]).exists()


def test_open_registration_still_refuses_a_bad_initial_access_token(settings):
    """A token that is presented is checked, even where none is needed (RFC 6750 §3.1)."""
    settings.OPEN_REGISTRATION = True
    assert_bearer_challenge(register(WEB_APP, "not-a-token"))
    assert not Client.objects.exists()


def test_registration_and_initial_access_tokens_are_not_interchangeable(initial_token, web_app):
    """RFC 7592 §1.2: the registration access token is for the configuration endpoint only;
    the initial access token is for the registration endpoint only."""
    assert_bearer_challenge(register(SERVICE, web_app["registration_access_token"]))
    assert_bearer_challenge(manage("GET", web_app["registration_client_uri"], initial_token))


# --- the registered client works --------------------------------------------------------------
def test_a_client_registered_for_client_credentials_gets_tokens_with_its_secret(initial_token):
    """RFC 7591 §3.2.1: the client_secret issued at registration authenticates at the token
    endpoint (RFC 6749 §2.3.1, §4.4)."""
    body = register(SERVICE, initial_token).json()
    assert body["redirect_uris"] == [] and body["response_types"] == []
    client = as_registered(body)
    response = token_request(client, {"grant_type": "client_credentials", "scope": "profile"})
    assert response.status_code == 200, response.content
    assert response.json()["scope"] == "profile"
    wrong = Registered(client.client, "not-the-secret")
    assert_error(
        token_request(wrong, {"grant_type": "client_credentials"}), "invalid_client", status=401
    )


def test_a_client_registered_with_client_secret_post_authenticates_in_the_body(initial_token):
    """RFC 7591 §2: token_endpoint_auth_method is honoured, and only that method works."""
    body = register({**SERVICE, "token_endpoint_auth_method": "client_secret_post"}, initial_token)
    client = as_registered(body.json())
    data = {"grant_type": "client_credentials"}
    assert token_request(client, data, auth="post").status_code == 200
    assert token_request(client, data, auth="basic").status_code == 401


def test_a_registered_web_app_runs_the_code_flow_with_its_secret(logged_in_client, web_app):
    """RFC 6749 §4.1 with RFC 7636: the registered redirect URI, scope and secret all work."""
    client = as_registered(web_app)
    code, verifier = get_code(logged_in_client, client, scope="openid profile offline_access")
    response = exchange(client, code, verifier)
    assert response.status_code == 200, response.content
    tokens = response.json()
    assert tokens["scope"] == "openid profile offline_access"
    assert tokens["id_token"] and tokens["refresh_token"]
    assert refresh(client, tokens["refresh_token"]).status_code == 200


def test_the_client_secret_and_registration_access_token_are_kept_only_as_digests(web_app):
    """RFC 7591 §5 / RFC 7592 §5: both are credentials; the server keeps no usable copy."""
    client = Client.objects.get(client_id=web_app["client_id"])
    stored = json.dumps(Client.objects.filter(pk=client.pk).values().get(), default=str)
    assert web_app["client_secret"] not in stored
    assert web_app["registration_access_token"] not in stored
    assert client.secret_digest and client.check_client_secret(web_app["client_secret"])
    assert client.registration_token_digest == token_digest(web_app["registration_access_token"])


def test_a_public_registration_gets_no_secret_and_must_use_pkce(initial_token, logged_in_client):
    """RFC 7591 §2: token_endpoint_auth_method "none" is a public client; §3.2.1: no
    client_secret, so no client_secret_expires_at. RFC 9700 §2.1.1 / RFC 7636: PKCE required."""
    body = register(NATIVE_APP, initial_token).json()
    assert "client_secret" not in body and "client_secret_expires_at" not in body
    assert body["token_endpoint_auth_method"] == "none"
    client = as_registered(body)
    assert client.client.is_public and client.client.secret_digest == ""

    without_pkce = logged_in_client.get(authorize_url(client), secure=True)
    assert query(without_pkce["Location"])["error"] == "invalid_request"

    code, verifier = get_code(logged_in_client, client)
    assert exchange(client, code, None, auth="none").status_code == 400
    code, verifier = get_code(logged_in_client, client)
    response = exchange(client, code, verifier, auth="none")
    assert response.status_code == 200, response.content


# --- metadata validation (RFC 7591 §2, §3.2.2; OIDC Registration §2, §3.3) -----------------
@pytest.mark.parametrize(
    "redirect_uris",
    [
        ["http://reports.example.com/callback"],
        ["https://reports.example.com/callback", "http://10.0.0.8/callback"],
        [],
        pytest.param(
            ["https://reports.example.com/callback#fragment"],
        ),
        pytest.param(
            ["not a url"],
        ),
        pytest.param(
            ["https:///callback"],
        ),
    ],
    ids=[
        "plain-http",
        "one-of-two-plain-http",
        "none-for-the-code-grant",
        "fragment",
        "garbage",
        "no-host",
    ],
)
def test_a_bad_redirect_uri_is_invalid_redirect_uri(initial_token, redirect_uris):
    """RFC 7591 §3.2.2: invalid_redirect_uri. RFC 7591 §2: a redirect-based grant needs one;
    RFC 6749 §3.1.2: no fragment; RFC 8252 §7.3: plain http only on loopback."""
    body = assert_error(
        register({**WEB_APP, "redirect_uris": redirect_uris}, initial_token),
        "invalid_redirect_uri",
    )
    assert body.get("error_description")
    assert not Client.objects.exists()


def test_a_native_app_may_register_a_private_use_scheme_redirect_uri(initial_token):
    """RFC 8252 §7.1 / §8.4: native apps register reverse-domain private-use scheme URIs."""
    metadata = {**NATIVE_APP, "redirect_uris": ["com.example.reports:/oauth2redirect"]}
    response = register(metadata, initial_token)
    assert response.status_code == 201, response.content
    assert response.json()["redirect_uris"] == ["com.example.reports:/oauth2redirect"]


def test_a_plain_http_loopback_redirect_uri_is_accepted(initial_token):
    """RFC 8252 §7.3: loopback interface redirection for native apps."""
    metadata = {**NATIVE_APP, "redirect_uris": ["http://127.0.0.1/cb", "http://[::1]:9000/cb"]}
    assert register(metadata, initial_token).status_code == 201


_RSA = RSAKey.generate_key(2048, private=True)
PUBLIC_JWKS = {"keys": [{**_RSA.as_dict(private=False), "kid": "k1"}]}
PRIVATE_JWKS = {"keys": [{**_RSA.as_dict(private=True), "kid": "k1"}]}


def test_rfc7591_2_a_private_key_jwt_client_registers_its_jwks_and_gets_no_secret(initial_token):
    """RFC 7591 §2 jwks / token_endpoint_auth_method; OIDC Registration §2
    token_endpoint_auth_signing_alg, request_object_signing_alg, request_uris,
    userinfo_signed_response_alg: registered, echoed, kept; no client_secret to leak."""
    metadata = {
        **WEB_APP,
        "token_endpoint_auth_method": "private_key_jwt",
        "jwks": PUBLIC_JWKS,
        "token_endpoint_auth_signing_alg": "RS256",
        "request_object_signing_alg": "RS256",
        "request_uris": ["https://reports.example.com/request.jwt#abc"],
        "userinfo_signed_response_alg": "RS256",
    }
    response = register(metadata, initial_token)
    assert response.status_code == 201, response.content
    body = response.json()
    assert "client_secret" not in body and "client_secret_expires_at" not in body
    for name in (
        "jwks", "token_endpoint_auth_method", "token_endpoint_auth_signing_alg",
        "request_object_signing_alg", "request_uris", "userinfo_signed_response_alg",
    ):  # fmt: skip
        assert body[name] == metadata[name], name
    client = Client.objects.get(client_id=body["client_id"])
    assert client.uses_keys and client.secret_digest == "" and client.jwks == PUBLIC_JWKS


def test_rfc7591_2_a_jwks_uri_registers_and_an_update_to_a_secret_method_gets_a_secret(
    initial_token,
):
    metadata = {
        **WEB_APP,
        "token_endpoint_auth_method": "private_key_jwt",
        "jwks_uri": "https://reports.example.com/jwks.json",
    }
    body = register(metadata, initial_token).json()
    assert body["jwks_uri"] == metadata["jwks_uri"] and "client_secret" not in body
    update = update_of(body, token_endpoint_auth_method="client_secret_basic", jwks_uri=None)
    update.pop("jwks_uri")
    uri, token = body["registration_client_uri"], body["registration_access_token"]
    response = manage("PUT", uri, token, update)
    assert response.status_code == 200, response.content
    assert response.json()["client_secret"]
    assert Client.objects.get(client_id=body["client_id"]).jwks_uri == ""


INVALID_METADATA = {
    "implicit-grant": {"grant_types": ["implicit"]},
    "password-grant": {"grant_types": ["password"]},
    "token-response-type": {"response_types": ["token"]},
    "id-token-response-type": {"response_types": ["code id_token"]},
    "code-without-authorization-code": {
        "grant_types": ["client_credentials"],
        "response_types": ["code"],
    },
    "unknown-scope": {"scope": "openid admin"},
    "private-key-jwt-without-keys": {"token_endpoint_auth_method": "private_key_jwt"},
    "private-key-jwt-empty-jwks": {
        "token_endpoint_auth_method": "private_key_jwt",
        "jwks": {"keys": []},
    },
    "jwks-and-jwks-uri": {
        "token_endpoint_auth_method": "private_key_jwt",
        "jwks": PUBLIC_JWKS,
        "jwks_uri": "https://reports.example.com/jwks.json",
    },
    "jwks-with-a-private-key": {
        "token_endpoint_auth_method": "private_key_jwt",
        "jwks": PRIVATE_JWKS,
    },
    "jwks-not-an-object": {"token_endpoint_auth_method": "private_key_jwt", "jwks": "keys"},
    "jwks-symmetric-key": {"jwks": {"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}},
    "token-auth-alg-none": {"token_endpoint_auth_signing_alg": "none"},
    "token-auth-alg-hs256": {"token_endpoint_auth_signing_alg": "HS256"},
    "request-object-alg-hs256": {"request_object_signing_alg": "HS256"},
    "userinfo-alg-hs256": {"userinfo_signed_response_alg": "HS256"},
    "userinfo-alg-none": {"userinfo_signed_response_alg": "none"},
    "client-secret-jwt": {"token_endpoint_auth_method": "client_secret_jwt"},
    "encrypted-id-token": {"id_token_encrypted_response_alg": "RSA-OAEP-256"},
    "request-uris-plain-http": {"request_uris": ["http://reports.example.com/request.jwt"]},
    "jwks-uri-plain-http": {
        "token_endpoint_auth_method": "private_key_jwt",
        "jwks_uri": "http://reports.example.com/jwks.json",
    },
    "hs256-id-token": {"id_token_signed_response_alg": "HS256"},
    "none-id-token": {"id_token_signed_response_alg": "none"},
    "pairwise-subject": {"subject_type": "pairwise"},
    "public-client-credentials": {
        "token_endpoint_auth_method": "none",
        "grant_types": ["client_credentials"],
        "response_types": [],
        "redirect_uris": [],
    },
    "redirect-uris-not-a-list": {"redirect_uris": "https://reports.example.com/callback"},
    "grant-types-not-strings": {"grant_types": [5]},
    "auth-method-not-a-string": {"token_endpoint_auth_method": 5},
    "contacts-not-a-list": {"contacts": "ops@reports.example.com"},
}


@pytest.mark.parametrize("changes", INVALID_METADATA.values(), ids=INVALID_METADATA.keys())
def test_unsupported_or_inconsistent_metadata_is_invalid_client_metadata(initial_token, changes):
    """RFC 7591 §3.2.2 invalid_client_metadata; §2.1: grant_types and response_types agree;
    OIDC Registration §3.3: unsupported OIDC metadata is refused, not silently ignored."""
    body = assert_error(register({**WEB_APP, **changes}, initial_token), "invalid_client_metadata")
    assert body.get("error_description")
    assert not Client.objects.exists()


# --- default and checked scopes (RFC 7591 §2, OIDC Core §11; the rule is tokens/scopes.py) ------
DEFAULT_SCOPES = {
    "code": (["authorization_code"], "openid profile email"),
    "code-and-refresh": (
        ["authorization_code", "refresh_token"],
        "openid profile email offline_access",
    ),
    "client-credentials": (["client_credentials"], ""),
    "all-three": (
        ["authorization_code", "refresh_token", "client_credentials"],
        "openid profile email offline_access",
    ),
}


@pytest.mark.parametrize(
    ("grant_types", "scope"), DEFAULT_SCOPES.values(), ids=DEFAULT_SCOPES.keys()
)
def test_a_registration_without_scope_gets_the_scopes_its_grant_types_can_use(
    initial_token, grant_types, scope
):
    """RFC 7591 §2: "If omitted, an authorization server MAY register a client with a default
    set of scopes." Here: the OpenID Connect scopes for the code grant, offline_access too when
    it may refresh (OIDC Core §11), and nothing for a client with no person behind it."""
    metadata = {k: v for k, v in WEB_APP.items() if k != "scope"}
    metadata["grant_types"] = grant_types
    if "authorization_code" not in grant_types:
        metadata.update(response_types=[], redirect_uris=[])
    response = register(metadata, initial_token)
    assert response.status_code == 201, response.content
    assert response.json()["scope"] == scope
    assert Client.objects.get(client_id=response.json()["client_id"]).allowed_scopes == (
        scope.split()
    )


def test_a_client_registered_for_refresh_without_scope_gets_a_refresh_token_for_offline_access(
    initial_token, logged_in_client
):
    """RFC 7591 §2 with OIDC Core §11: a client registered with grant_types
    [authorization_code, refresh_token] and no scope asks for "openid offline_access" at the
    authorization endpoint, as certified relying parties do, and gets a refresh token."""
    metadata = {
        "client_name": "Certified RP",
        "redirect_uris": ["https://rp.example.com/cb"],
        "grant_types": ["authorization_code", "refresh_token"],
    }
    client = as_registered(register(metadata, initial_token).json())
    code, verifier = get_code(logged_in_client, client, scope="openid offline_access")
    response = exchange(client, code, verifier)
    assert response.status_code == 200, response.content
    tokens = response.json()
    assert tokens["scope"] == "openid offline_access"
    assert tokens["refresh_token"] and tokens["id_token"]
    refreshed = refresh(client, tokens["refresh_token"])
    assert refreshed.status_code == 200, refreshed.content
    assert refreshed.json()["scope"] == "openid offline_access"


def test_every_scope_discovery_advertises_can_be_registered_and_no_other(initial_token, settings):
    """RFC 7591 §2 / §3.2.2: a requested scope is checked against what the server offers,
    which is what discovery advertises (OIDC Discovery §3 scopes_supported), operator-defined
    scopes included; anything else is invalid_client_metadata, naming the culprit."""
    settings.OAUTH_SCOPES = {**settings.OAUTH_SCOPES, "orders.read": "Read your orders"}
    advertised = api().get("/.well-known/openid-configuration", secure=True).json()
    assert "orders.read" in advertised["scopes_supported"]
    response = register(
        {**WEB_APP, "scope": " ".join(advertised["scopes_supported"])}, initial_token
    )
    assert response.status_code == 201, response.content
    assert response.json()["scope"].split() == advertised["scopes_supported"]

    refused = register({**WEB_APP, "scope": "openid orders.write"}, initial_token)
    body = assert_error(refused, "invalid_client_metadata")
    assert "orders.write" in body["error_description"]
    assert Client.objects.count() == 1


def test_an_update_without_scope_gets_the_defaults_of_its_new_grant_types(web_app):
    """RFC 7592 §2.2: an update replaces the registration, so an omitted scope is omitted:
    the server's default for the grant types it now names (RFC 7591 §2)."""
    update = update_of(web_app, grant_types=["authorization_code"])
    del update["scope"]
    uri, token = web_app["registration_client_uri"], web_app["registration_access_token"]
    response = manage("PUT", uri, token, update)
    assert response.status_code == 200, response.content
    assert response.json()["scope"] == "openid profile email"


def test_authorization_code_without_the_code_response_type_is_invalid_client_metadata(
    initial_token,
):
    """RFC 7591 §2.1: authorization_code goes with the "code" response type."""
    metadata = {**WEB_APP, "grant_types": ["authorization_code"], "response_types": []}
    assert_error(register(metadata, initial_token), "invalid_client_metadata")


TYPE_CONFUSED = {
    "redirect-uri-number": {"redirect_uris": [1]},
    "scope-list": {"scope": ["openid"]},
    "client-name-number": {"client_name": 5},
    "logo-uri-number": {"logo_uri": 5},
    "response-types-number": {"response_types": [5]},
    "post-logout-redirect-uri-number": {"post_logout_redirect_uris": [5]},
}


@pytest.mark.parametrize("changes", TYPE_CONFUSED.values(), ids=TYPE_CONFUSED.keys())
def test_metadata_of_the_wrong_json_type_is_a_400_never_a_500(initial_token, changes):
    """RFC 7591 §3.2.2: a bad value is invalid_client_metadata (or invalid_redirect_uri)."""
    response = register({**WEB_APP, **changes}, initial_token)
    assert response.status_code == 400, response.status_code
    assert response.json()["error"] in ("invalid_client_metadata", "invalid_redirect_uri")


NOT_ASCII_SAFE = {
    "post-logout-uri-with-fragment": {
        "post_logout_redirect_uris": ["https://reports.example.com/out#x"]
    },
    "non-ascii-host": {"redirect_uris": ["http://rep\u00f6rts.example.com/cb"]},
    "double-quote": {"redirect_uris": ['http://reports.example.com/"cb']},
}


@pytest.mark.parametrize("changes", NOT_ASCII_SAFE.values(), ids=NOT_ASCII_SAFE.keys())
def test_a_refused_uri_that_is_not_ascii_safe_is_still_a_400(initial_token, changes):
    """RFC 7591 §3.2.2: invalid_redirect_uri; RFC 6749 §5.2: error_description is %x20-21 /
    %x23-5B / %x5D-7E, so the server must clean it, not crash on it."""
    assert_error(register({**WEB_APP, **changes}, initial_token), "invalid_redirect_uri")


BAD_BODIES = {
    "not-json": ("{not json", "application/json"),
    "json-array": ("[]", "application/json"),
    "json-null": ("null", "application/json"),
    "json-string": ('"client"', "application/json"),
    "not-utf8": (b"\xff\xfe{}", "application/json"),
    "form-encoded": ("client_name=Reports", "application/x-www-form-urlencoded"),
    "text-plain": (json.dumps(WEB_APP), "text/plain"),
    "over-64-kib": (
        json.dumps({**WEB_APP, "client_name": "x" * 70_000}),
        "application/json",
    ),
}


@pytest.mark.parametrize(("body", "content_type"), BAD_BODIES.values(), ids=BAD_BODIES.keys())
def test_a_body_that_is_not_a_json_object_is_invalid_client_metadata(
    initial_token, body, content_type
):
    """RFC 7591 §3.1: the request is a JSON object sent as application/json."""
    assert_error(
        register(body, initial_token, content_type=content_type), "invalid_client_metadata"
    )
    assert not Client.objects.exists()


def test_a_body_beyond_djangos_upload_limit_is_a_json_invalid_client_metadata(initial_token):
    huge = json.dumps({**WEB_APP, "client_name": "x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1)})
    response = register(huge, initial_token)
    assert response.status_code == 400
    assert_error(response, "invalid_client_metadata")


@pytest.mark.parametrize("method", ["get", "put", "delete", "patch"])
def test_the_registration_endpoint_only_takes_post(method, initial_token):
    """RFC 7591 §3: registration is an HTTP POST."""
    response = getattr(api(), method)("/register", secure=True, **bearer(initial_token))
    assert_error(response, "invalid_request", status=405)
    assert response["Allow"] == "POST"


# --- consent ----------------------------------------------------------------------------------
def test_a_registered_client_asks_for_consent_once_whatever_it_sends(
    initial_token, logged_in_client
):
    """Nobody vouched for a self-registered client: consent is "remember", never "skip"
    (RFC 7591 §5 and RFC 6819 §5.2.3.2: do not trust dynamically registered clients)."""
    metadata = {**WEB_APP, "consent": "skip", "skip_consent": True, "trusted": True}
    body = register(metadata, initial_token).json()
    client = as_registered(body)
    assert client.client.consent == Client.Consent.REMEMBER
    assert "consent" not in body and "trusted" not in body

    url = authorize_url(client, challenge=pkce_pair()[1])
    assert logged_in_client.get(url, secure=True).status_code == 200  # the consent page
    assert logged_in_client.post(url, {"decision": "allow"}, secure=True).status_code == 302
    again = logged_in_client.get(authorize_url(client, challenge=pkce_pair()[1]), secure=True)
    assert again.status_code == 302 and "code" in query(again["Location"])


def test_an_update_cannot_make_a_registered_client_skip_consent(web_app):
    """RFC 7592 §2.2: an update is metadata only; the consent policy is the server's."""
    update = update_of(web_app, consent="skip")
    response = manage(
        "PUT", web_app["registration_client_uri"], web_app["registration_access_token"], update
    )
    assert response.status_code == 200, response.content
    assert Client.objects.get(client_id=web_app["client_id"]).consent == Client.Consent.REMEMBER


def test_an_update_keeps_an_operators_stricter_ask_every_time_policy(web_app):
    """RFC 7592 §2.2: the client replaces its metadata, not the operator's decisions."""
    Client.objects.filter(client_id=web_app["client_id"]).update(consent=Client.Consent.ASK)
    update = update_of(web_app)
    manage("PUT", web_app["registration_client_uri"], web_app["registration_access_token"], update)
    assert Client.objects.get(client_id=web_app["client_id"]).consent == Client.Consent.ASK


# --- RFC 7592: read, update, delete -----------------------------------------------------------
def test_reading_the_registration_returns_the_metadata_and_keeps_the_registration_access_token(
    web_app,
):
    """RFC 7592 §2.1 / §3: the current metadata, with the registration access token (REQUIRED
    in the response). The server MAY rotate it, but not on a read by default: a client that
    reads twice at once, or loses one response, must not be locked out of its registration."""
    uri, old = web_app["registration_client_uri"], web_app["registration_access_token"]
    response = manage("GET", uri, old)
    assert response.status_code == 200, response.content
    assert "no-store" in response["Cache-Control"]
    body = response.json()
    for name, value in WEB_APP.items():
        assert body[name] == value, name
    assert body["client_id"] == web_app["client_id"]
    assert body["client_id_issued_at"] == pytest.approx(web_app["client_id_issued_at"], abs=2)
    assert body["client_secret_expires_at"] == 0
    assert "client_secret" not in body  # only its digest exists
    assert body["registration_client_uri"] == uri
    assert body["registration_access_token"] == old

    again = manage("GET", uri, old)
    assert again.status_code == 200 and again.json()["registration_access_token"] == old


def test_an_update_replaces_the_registration(web_app, logged_in_client):
    """RFC 7592 §2.2: PUT with the full metadata and the client_id replaces the registration;
    what is left out is dropped; the client secret stays the same."""
    uri, token = web_app["registration_client_uri"], web_app["registration_access_token"]
    update = update_of(web_app, redirect_uris=["https://reports.example.com/v2/callback"])
    del update["post_logout_redirect_uris"], update["logo_uri"]
    update["client_name"] = "Reports v2"
    response = manage("PUT", uri, token, update)
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["redirect_uris"] == ["https://reports.example.com/v2/callback"]
    assert body["client_name"] == "Reports v2"
    assert body["post_logout_redirect_uris"] == [] and "logo_uri" not in body
    assert body["registration_access_token"] != token
    assert "client_secret" not in body

    client = as_registered({**body, "client_secret": web_app["client_secret"]})
    assert client.client.name == "Reports v2"
    code, verifier = get_code(logged_in_client, client)
    assert exchange(client, code, verifier).status_code == 200  # the same secret still works
    old_redirect = authorize_url(
        client, redirect_uri=WEB_APP["redirect_uris"][0], challenge=pkce_pair()[1]
    )
    refused = logged_in_client.get(old_redirect, secure=True)
    assert refused.status_code == 400 and "Location" not in refused


def test_sending_back_what_was_read_changes_nothing(web_app):
    """RFC 7592 §2.2: the read response minus the server's own fields is a valid update."""
    uri = web_app["registration_client_uri"]
    before = row(web_app["client_id"])
    read = manage("GET", uri, web_app["registration_access_token"]).json()
    response = manage("PUT", uri, read["registration_access_token"], update_of(read))
    assert response.status_code == 200, response.content
    assert row(web_app["client_id"]) == before


@pytest.mark.parametrize(
    "changes",
    [
        {"registration_access_token": "x"},
        {"registration_client_uri": "https://auth.example.test/register/x"},
        {"client_id_issued_at": 0},
        {"client_secret_expires_at": 0},
        {"client_id": "someone-else"},
        {"client_id": None},
        {"client_secret": "not-the-secret"},
    ],
    ids=[
        "registration-access-token",
        "registration-client-uri",
        "client-id-issued-at",
        "client-secret-expires-at",
        "other-client-id",
        "no-client-id",
        "wrong-client-secret",
    ],
)
def test_an_update_with_server_fields_or_another_client_id_is_invalid_request(web_app, changes):
    """RFC 7592 §2.2: the update MUST NOT carry registration_access_token,
    registration_client_uri, client_secret_expires_at or client_id_issued_at; it MUST carry
    the client's own client_id; a client_secret, if sent, MUST match."""
    before = row(web_app["client_id"])
    update = update_of(web_app, client_name="Changed", **changes)
    update = {k: v for k, v in update.items() if v is not None}
    uri, token = web_app["registration_client_uri"], web_app["registration_access_token"]
    assert_error(manage("PUT", uri, token, update), "invalid_request")
    assert row(web_app["client_id"]) == before


def test_an_update_that_sends_the_right_client_secret_is_accepted(web_app):
    """RFC 7592 §2.2: a client_secret that matches the current one is allowed."""
    update = update_of(web_app, client_secret=web_app["client_secret"], client_name="Again")
    uri, token = web_app["registration_client_uri"], web_app["registration_access_token"]
    assert manage("PUT", uri, token, update).status_code == 200


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"redirect_uris": ["http://reports.example.com/callback"]}, "invalid_redirect_uri"),
        ({"grant_types": ["implicit"]}, "invalid_client_metadata"),
        ({"response_types": ["token"]}, "invalid_client_metadata"),
        ({"scope": "openid admin"}, "invalid_client_metadata"),
        ({"token_endpoint_auth_method": "private_key_jwt"}, "invalid_client_metadata"),
        ({"id_token_signed_response_alg": "HS256"}, "invalid_client_metadata"),
        ({"request_uris": ["http://reports.example.com/r.jwt"]}, "invalid_client_metadata"),
    ],
    ids=["plain-http", "implicit", "token", "unknown-scope", "private-key-jwt", "hs256", "request"],
)
def test_an_update_with_invalid_metadata_is_refused_and_changes_nothing(web_app, changes, error):
    """RFC 7592 §2.2: errors as in RFC 7591 §3.2.2; a refused update leaves the registration
    and its registration access token as they were."""
    before = row(web_app["client_id"])
    uri, token = web_app["registration_client_uri"], web_app["registration_access_token"]
    assert_error(manage("PUT", uri, token, update_of(web_app, **changes)), error)
    assert row(web_app["client_id"]) == before
    assert manage("GET", uri, token).status_code == 200


@pytest.mark.parametrize(
    ("body", "content_type"),
    [("{not json", "application/json"), ("[]", "application/json"), ("a=b", "text/plain")],
    ids=["not-json", "array", "text-plain"],
)
def test_an_update_that_is_not_a_json_object_is_invalid_client_metadata(
    web_app, body, content_type
):
    before = row(web_app["client_id"])
    response = api().put(
        urlsplit(web_app["registration_client_uri"]).path,
        body,
        content_type=content_type,
        secure=True,
        **bearer(web_app["registration_access_token"]),
    )
    assert_error(response, "invalid_client_metadata")
    assert row(web_app["client_id"]) == before


def test_a_public_registration_updated_to_a_secret_method_gets_a_secret(initial_token):
    """RFC 7592 §2.2: the server MAY issue a new client_secret in the response; a confidential
    client without one is unusable, so here it must."""
    body = register(NATIVE_APP, initial_token).json()
    update = update_of(
        body,
        token_endpoint_auth_method="client_secret_basic",
        grant_types=["authorization_code", "client_credentials"],
    )
    response = manage(
        "PUT", body["registration_client_uri"], body["registration_access_token"], update
    )
    assert response.status_code == 200, response.content
    updated = response.json()
    assert updated["client_secret"]
    answer = token_request(as_registered(updated), {"grant_type": "client_credentials"})
    assert answer.status_code == 200


def test_deleting_the_registration_ends_the_client_and_its_tokens(web_app, logged_in_client):
    """RFC 7592 §2.3: 204; the client_id, secret, registration access token and the grants
    and tokens issued to the client are all invalidated."""
    client = as_registered(web_app)
    code, verifier = get_code(logged_in_client, client, scope="openid profile offline_access")
    tokens = exchange(client, code, verifier).json()
    uri, token = web_app["registration_client_uri"], web_app["registration_access_token"]

    response = manage("DELETE", uri, token)
    assert response.status_code == 204 and response.content == b""
    assert "no-store" in response["Cache-Control"]
    assert not Client.objects.filter(client_id=web_app["client_id"]).exists()

    assert_bearer_challenge(manage("GET", uri, token))
    assert_bearer_challenge(manage("DELETE", uri, token))
    refused = token_request(client, {"grant_type": "authorization_code", "code": "x"})
    assert_error(refused, "invalid_client", status=401)
    assert_error(refresh(client, tokens["refresh_token"]), "invalid_client", status=401)
    userinfo = api().get("/userinfo", secure=True, **bearer(tokens["access_token"]))
    assert userinfo.status_code == 401


def test_a_client_credentials_client_cannot_get_tokens_after_deletion(initial_token):
    body = register(SERVICE, initial_token).json()
    client = as_registered(body)
    assert token_request(client, {"grant_type": "client_credentials"}).status_code == 200
    manage("DELETE", body["registration_client_uri"], body["registration_access_token"])
    answer = token_request(client, {"grant_type": "client_credentials"})
    assert_error(answer, "invalid_client", status=401)


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_another_clients_registration_access_token_neither_reveals_nor_changes_it(
    web_app, other_app, method
):
    """RFC 7592 §2: a registration access token is good for its own client's record only."""
    before = row(other_app["client_id"])
    body = update_of(other_app, client_name="Hijacked") if method == "PUT" else None
    response = manage(
        method, other_app["registration_client_uri"], web_app["registration_access_token"], body
    )
    assert response.status_code in (400, 401, 403), response.status_code
    text = response.content.decode()
    assert other_app["client_id"] not in text and "Someone else" not in text
    assert "registration_access_token" not in text
    assert row(other_app["client_id"]) == before
    assert (
        manage(
            "GET", other_app["registration_client_uri"], other_app["registration_access_token"]
        ).status_code
        == 200
    )


def test_another_clients_registration_access_token_is_refused_as_unauthorized(web_app, other_app):
    """RFC 7592 §2.1 / RFC 6750 §3.1: the token is not valid for this record: 401 (or 403)."""
    response = manage(
        "GET", other_app["registration_client_uri"], web_app["registration_access_token"]
    )
    assert response.status_code in (401, 403), response.status_code


def test_a_valid_token_on_an_unknown_client_uri_is_401(web_app):
    """RFC 7592 §2.1: a client that does not exist is 401 Unauthorized."""
    response = manage(
        "GET", f"{settings.ISSUER}/register/no-such-client", web_app["registration_access_token"]
    )
    assert response.status_code == 401


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer not-a-token", "Basic " + "x" * 20],
    ids=["none", "unknown", "basic-scheme"],
)
def test_the_configuration_endpoint_needs_the_registration_access_token(
    web_app, method, authorization
):
    """RFC 7592 §2 / RFC 6750 §3.1: no valid registration access token, 401 invalid_token."""
    headers = {"HTTP_AUTHORIZATION": authorization} if authorization else {}
    body = update_of(web_app, client_name="Changed") if method == "PUT" else None
    response = manage(method, web_app["registration_client_uri"], None, body, **headers)
    assert_bearer_challenge(response)
    assert web_app["client_id"] not in response.content.decode()
    assert Client.objects.get(client_id=web_app["client_id"]).name == "Reports"


def test_the_configuration_endpoint_takes_only_get_put_and_delete(web_app):
    response = manage(
        "POST", web_app["registration_client_uri"], web_app["registration_access_token"], {}
    )
    assert_error(response, "invalid_request", status=405)
    assert response["Allow"] == "GET, PUT, DELETE"


def test_back_channel_logout_metadata_is_registered_and_echoed(initial_token):
    """OIDC Back-Channel Logout 1.0 §2.2: backchannel_logout_uri and
    backchannel_logout_session_required are registration metadata (and discovery advertises
    backchannel_logout_supported)."""
    metadata = {
        **WEB_APP,
        "backchannel_logout_uri": "https://reports.example.com/backchannel-logout",
        "backchannel_logout_session_required": False,
    }
    body = register(metadata, initial_token).json()
    assert body["backchannel_logout_uri"] == metadata["backchannel_logout_uri"]
    assert body["backchannel_logout_session_required"] is False
    client = Client.objects.get(client_id=body["client_id"])
    assert client.backchannel_logout_uri == metadata["backchannel_logout_uri"]
    assert client.backchannel_logout_session_required is False


# --- RFC 7592 §3: rotating the registration access token (REGISTRATION_TOKEN_ROTATION) -------
def read_with(uri: str, token: str) -> str:
    """GET the registration (RFC 7592 §2.1); the registration access token it hands back."""
    response = manage("GET", uri, token)
    assert response.status_code == 200, response.content
    return response.json()["registration_access_token"]


def update_with(uri: str, token: str, registration: dict, **changes) -> str:
    """PUT the registration (RFC 7592 §2.2); the registration access token it hands back."""
    response = manage("PUT", uri, token, update_of(registration, **changes))
    assert response.status_code == 200, response.content
    return response.json()["registration_access_token"]


def test_rfc7592_s3_by_default_an_update_rotates_the_token_and_a_read_never_does(web_app):
    """RFC 7592 §3: the server MAY issue a new registration access token; here on update
    (REGISTRATION_TOKEN_ROTATION=on_update, the default), never on a read, so two reads at
    once (or a lost read response) cannot lock the client out."""
    assert settings.REGISTRATION_TOKEN_ROTATION == "on_update"
    uri, first = web_app["registration_client_uri"], web_app["registration_access_token"]
    assert read_with(uri, first) == first
    assert read_with(uri, first) == first
    second = update_with(uri, first, web_app, client_name="Renamed")
    assert second not in (first, None)
    assert read_with(uri, second) == second
    stored = Client.objects.get(client_id=web_app["client_id"])
    assert stored.registration_token_digest == token_digest(second)
    assert stored.registration_token_previous_digest == token_digest(first)


def test_rfc7592_s3_rotation_never_keeps_one_token_through_reads_and_updates(web_app, settings):
    """RFC 7592 §3: rotating is optional (MAY); REGISTRATION_TOKEN_ROTATION=never turns it off."""
    settings.REGISTRATION_TOKEN_ROTATION = "never"
    uri, token = web_app["registration_client_uri"], web_app["registration_access_token"]
    assert update_with(uri, token, web_app, client_name="Renamed") == token
    assert read_with(uri, token) == token
    assert update_with(uri, token, web_app, client_name="Again") == token
    stored = Client.objects.get(client_id=web_app["client_id"])
    assert stored.name == "Again" and stored.registration_token_previous_digest == ""


def test_rfc7592_s3_rotation_on_every_use_gives_a_new_token_on_each_read_too(web_app, settings):
    """RFC 7592 §3: REGISTRATION_TOKEN_ROTATION=on_every_use rotates on reads as well; each
    response carries the new token, which the client MUST use from then on."""
    settings.REGISTRATION_TOKEN_ROTATION = "on_every_use"
    uri, first = web_app["registration_client_uri"], web_app["registration_access_token"]
    second = read_with(uri, first)
    third = read_with(uri, second)
    fourth = update_with(uri, third, web_app, client_name="Renamed")
    assert len({first, second, third, fourth}) == 4
    assert read_with(uri, fourth) not in (first, second, third, fourth)
    # Only the newest and the one just replaced work; the older ones are gone.
    for old in (first, second, third):
        assert_bearer_challenge(manage("GET", uri, old))


def test_rfc7592_s3_the_replaced_token_still_works_during_the_overlap_and_gets_a_fresh_one(
    web_app,
):
    """RFC 7592 §3 says the client MUST discard its old token once a response carries a new
    one; a response can be lost, so after a rotation the replaced token keeps working for
    REGISTRATION_TOKEN_OVERLAP seconds, and a request made with it gets a fresh token (the
    server keeps only digests, so it cannot hand back the one that was lost)."""
    uri, old = web_app["registration_client_uri"], web_app["registration_access_token"]
    lost = update_with(uri, old, web_app, client_name="Renamed")  # the client never sees it

    recovered = read_with(uri, old)  # a read, which never rotates by itself
    assert recovered not in (old, lost)
    assert read_with(uri, recovered) == recovered
    assert_bearer_challenge(manage("GET", uri, old))  # replaced twice: gone at once


def test_rfc7592_s3_the_replaced_token_stops_working_when_the_overlap_ends(web_app, settings):
    """RFC 7592 §3: the overlap is short; after it only the newest token works."""
    settings.REGISTRATION_TOKEN_OVERLAP = 1
    uri, old = web_app["registration_client_uri"], web_app["registration_access_token"]
    new = update_with(uri, old, web_app, client_name="Renamed")
    time.sleep(1.2)
    assert_bearer_challenge(manage("GET", uri, old))
    assert_bearer_challenge(manage("PUT", uri, old, update_of(web_app, client_name="Late")))
    assert_bearer_challenge(manage("DELETE", uri, old))
    assert read_with(uri, new) == new
    assert Client.objects.get(client_id=web_app["client_id"]).name == "Renamed"


def test_rfc7592_s3_a_refused_update_rotates_nothing(web_app):
    """RFC 7592 §2.2 / §3: an error response carries no new token, so nothing may change."""
    uri, token = web_app["registration_client_uri"], web_app["registration_access_token"]
    refused = manage("PUT", uri, token, update_of(web_app, grant_types=["implicit"]))
    assert_error(refused, "invalid_client_metadata")
    stored = Client.objects.get(client_id=web_app["client_id"])
    assert stored.registration_token_digest == token_digest(token)
    assert stored.registration_token_previous_digest == ""


def test_rfc7592_s5_rotated_registration_access_tokens_are_kept_only_as_digests(web_app):
    """RFC 7592 §5: the registration access token is a credential; neither the current one
    nor the one it replaced is stored in a usable form."""
    uri, old = web_app["registration_client_uri"], web_app["registration_access_token"]
    new = update_with(uri, old, web_app, client_name="Renamed")
    stored = json.dumps(
        Client.objects.filter(client_id=web_app["client_id"]).values().get(), default=str
    )
    assert old not in stored and new not in stored
    assert token_digest(old) in stored and token_digest(new) in stored


# --- Django admin -----------------------------------------------------------------------------
ADMIN_ADD = "/admin/tokens/initialaccesstoken/add/"
ADMIN_LIST = "/admin/tokens/initialaccesstoken/"


def test_an_initial_access_token_added_in_admin_is_shown_once_and_opens_registration(
    staff_client,
):
    """RFC 7591 §3: the operator hands out the initial access token out of band; the server
    keeps only its digest, so it is shown on the page after it is made and never again."""
    page = staff_client.post(
        ADMIN_ADD, {"note": "Reports team", "uses_left": "1", "days": "7"}, secure=True
    )
    assert page.status_code == 200, page.content[-500:]
    match = re.search(r'<code id="initial-access-token">([^<]+)</code>', page.content.decode())
    assert match, "the token is not on the page"
    token = match.group(1)
    assert settings.ISSUER + "/register" in page.content.decode()

    stored = InitialAccessToken.objects.get()
    assert stored.note == "Reports team" and stored.uses_left == 1
    assert stored.token_digest == token_digest(token)
    assert abs(stored.expires - (timezone.now() + timedelta(days=7))) < timedelta(minutes=1)

    listing = staff_client.get(ADMIN_LIST, secure=True)
    assert listing.status_code == 200 and "Reports team" in listing.content.decode()
    detail = staff_client.get(f"{ADMIN_LIST}{stored.pk}/change/", secure=True)
    for shown in (listing, detail):
        assert token not in shown.content.decode()
        assert stored.token_digest not in shown.content.decode()

    response = register(WEB_APP, token)
    assert response.status_code == 201, response.content
    assert_bearer_challenge(register(SERVICE, token))  # one use, as the operator chose
