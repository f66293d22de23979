"""private_key_jwt client authentication (RFC 7523 §2.2 and §3, OIDC Core §9) at the token,
introspection and revocation endpoints, with the client's keys registered inline (jwks) or
published at its jwks_uri (a real loopback HTTP server), over HTTP against the real server."""

from __future__ import annotations

import json
import time
from io import StringIO
from urllib.parse import urlencode

import pytest
from django.core.management import call_command
from django.test import Client as Browser
from joserfc.jwk import OctKey

from tests.factories import ClientFactory, Registered
from tests.test_resilience import cache_down  # noqa: F401 - the fixture
from tests.tokens.client_side import (
    ISSUER,
    TOKEN_ENDPOINT,
    KeyHost,
    assertion_claims,
    assertion_form,
    new_key,
    public_jwks,
    sign,
    unsigned,
)
from tests.tokens.conftest import exchange, get_code, token_request
from tests.tokens.test_client_admin import ADD_URL, add_form, form_errors, shown
from tokens.models import Client


def post(path: str, data: dict, **headers):
    return Browser().post(
        path, urlencode(data), content_type="application/x-www-form-urlencoded", secure=True,
        **headers,
    )  # fmt: skip


def client_credentials(client_id: str, key, alg: str = "RS256", **claims):
    return post(
        "/token",
        {"grant_type": "client_credentials", **assertion_form(client_id, key, alg, **claims)},
    )


def refused(response, status: int = 401) -> str:
    assert response.status_code == status, response.content
    assert response["Cache-Control"] == "no-store"
    body = response.json()
    assert body["error"] == "invalid_client", body
    return body.get("error_description", "")


@pytest.fixture
def key():
    return new_key("RS256")


def key_client(**fields) -> Registered:
    return Registered.of(
        ClientFactory(token_endpoint_auth_method=Client.AuthMethod.PRIVATE_KEY_JWT, **fields)
    )


@pytest.fixture
def signer(db, key) -> Registered:
    """A client that registered its public key inline (``jwks``) and has no secret."""
    return key_client(jwks=public_jwks(key))


@pytest.fixture
def host(settings):
    settings.CLIENT_FETCH_ALLOW_PRIVATE_NETWORKS = True  # it lives on loopback
    server = KeyHost()
    yield server
    server.stop()


# --- it works ---------------------------------------------------------------------------------
def test_rfc7523_2_2_a_private_key_jwt_client_has_no_secret_and_gets_tokens(signer, key):
    assert signer.secret is None and signer.client.secret_digest == ""
    response = client_credentials(signer.client_id, key)
    assert response.status_code == 200, response.content
    assert response.json()["token_type"] == "Bearer"


@pytest.mark.parametrize("alg", ["RS256", "PS256", "ES256", "Ed25519"])
def test_rfc7523_3_every_advertised_algorithm_is_accepted(db, alg):
    key = new_key(alg)
    client = key_client(jwks=public_jwks(key))
    assert client_credentials(client.client_id, key, alg).status_code == 200


@pytest.mark.parametrize(
    "aud", [ISSUER, TOKEN_ENDPOINT, [ISSUER, "https://elsewhere.example"]], ids=str
)
def test_rfc7523_3_aud_may_be_the_issuer_or_the_token_endpoint(signer, key, aud):
    """RFC 7523 §3 item 3 (and OIDC Core §9: the token endpoint URL; RFC 7523bis: the issuer)."""
    assert client_credentials(signer.client_id, key, aud=aud).status_code == 200


def test_oidc_core_9_the_code_flow_and_refresh_with_private_key_jwt(signer, key, user):
    browser = Browser()
    browser.force_login(user)
    code, verifier = get_code(browser, signer, scope="openid offline_access", prompt="consent")
    response = post(
        "/token",
        {
            "grant_type": "authorization_code",
            "code": code,
            "code_verifier": verifier,
            "redirect_uri": signer.client.redirect_uris[0],
            **assertion_form(signer.client_id, key),
        },
    )
    assert response.status_code == 200, response.content
    tokens = response.json()
    assert "id_token" in tokens and "refresh_token" in tokens
    refreshed = post(
        "/token",
        {
            "grant_type": "refresh_token",
            "refresh_token": tokens["refresh_token"],
            **assertion_form(signer.client_id, key),
        },
    )
    assert refreshed.status_code == 200, refreshed.content


def test_rfc7662_2_1_and_rfc7009_2_1_introspection_and_revocation_accept_it(signer, key):
    access = client_credentials(signer.client_id, key).json()["access_token"]
    introspected = post(
        "/introspect",
        {"token": access, **assertion_form(signer.client_id, key, aud=ISSUER + "/introspect")},
    )
    assert introspected.status_code == 200 and introspected.json()["active"] is True
    revoked = post("/revoke", {"token": access, **assertion_form(signer.client_id, key)})
    assert revoked.status_code == 200, revoked.content
    again = post("/introspect", {"token": access, **assertion_form(signer.client_id, key)})
    assert again.json() == {"active": False}
    bad = post("/introspect", {"token": access, **assertion_form(signer.client_id, new_key())})
    refused(bad)


def test_rfc7521_4_2_a_client_id_sent_alongside_must_name_the_same_client(
    signer, key, confidential
):
    form = {"grant_type": "client_credentials", **assertion_form(signer.client_id, key)}
    assert post("/token", {**form, "client_id": signer.client_id}).status_code == 200
    form = {"grant_type": "client_credentials", **assertion_form(signer.client_id, key)}
    refused(post("/token", {**form, "client_id": confidential.client_id}))


# --- what is refused (RFC 6749 §5.2 invalid_client, 401) -------------------------------------
def test_rfc7523_3_a_replayed_assertion_is_refused(signer, key):
    form = {"grant_type": "client_credentials", **assertion_form(signer.client_id, key)}
    assert post("/token", form).status_code == 200
    assert "used before" in refused(post("/token", form))


def test_rfc7523_3_the_replay_check_is_per_client_and_shared_across_workers(signer, key, db):
    """The jti is remembered in the shared cache (Redis), not in this process: another client
    may pick the same jti; this one may not, wherever its next request lands."""
    other_key = new_key()
    other = key_client(jwks=public_jwks(other_key))
    assert client_credentials(signer.client_id, key, jti="same").status_code == 200
    assert client_credentials(other.client_id, other_key, jti="same").status_code == 200
    refused(client_credentials(signer.client_id, key, jti="same"))


def test_rfc7523_3_a_wrong_audience_is_refused(signer, key):
    refused(client_credentials(signer.client_id, key, aud="https://other.example/token"))


def test_rfc7523_3_an_expired_assertion_is_refused(signer, key):
    now = int(time.time())
    refused(client_credentials(signer.client_id, key, iat=now - 600, exp=now - 120))


def test_rfc7523_3_an_assertion_expiring_too_far_ahead_is_refused(signer, key):
    assert "ahead" in refused(client_credentials(signer.client_id, key, lifetime=7200))


@pytest.mark.parametrize("missing", ["exp", "jti", "iss", "sub", "aud"])
def test_rfc7523_3_required_claims_are_required(signer, key, missing):
    refused(client_credentials(signer.client_id, key, **{missing: None}))


def test_rfc7523_3_an_assertion_from_the_future_is_refused(signer, key):
    now = int(time.time())
    refused(client_credentials(signer.client_id, key, nbf=now + 120, exp=now + 200))
    refused(client_credentials(signer.client_id, key, iat=now + 120, exp=now + 200))


def test_rfc7523_3_iss_and_sub_must_both_be_the_client_id(signer, key):
    refused(client_credentials(signer.client_id, key, iss="someone-else"))


def test_rfc7523_3_a_key_not_in_the_clients_jwks_is_refused(signer):
    refused(client_credentials(signer.client_id, new_key(kid=None)))


def test_rfc7523_3_an_unknown_client_is_refused(db, key):
    refused(client_credentials("no-such-client", key))


def test_rfc7518_3_6_alg_none_and_hmac_are_never_accepted(signer, key):
    claims = assertion_claims(signer.client_id)
    for value in (
        unsigned(claims),
        sign(claims, OctKey.generate_key(256), "HS256"),
    ):
        form = {
            "grant_type": "client_credentials",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": value,
        }
        refused(post("/token", form))


def test_oidc_registration_2_the_registered_signing_alg_is_the_only_one(db):
    """token_endpoint_auth_signing_alg: "All Token Requests ... MUST be rejected, if the JWT is
    not signed with this algorithm"."""
    rsa = new_key("RS256")
    client = key_client(jwks=public_jwks(rsa), token_endpoint_auth_signing_alg="PS256")
    refused(client_credentials(client.client_id, rsa, "RS256"))
    assert client_credentials(client.client_id, rsa, "PS256").status_code == 200


def test_rfc6749_2_3_a_secret_based_client_sending_an_assertion_is_refused(confidential, key):
    assert "private_key_jwt" in refused(client_credentials(confidential.client_id, key))


def test_rfc6749_2_3_a_private_key_jwt_client_cannot_use_a_secret(signer):
    response = token_request(
        Registered(signer.client, "guessed"), {"grant_type": "client_credentials"}
    )
    assert response.status_code == 401 and response.json()["error"] == "invalid_client"


def test_a_garbage_assertion_is_invalid_client_never_a_500(signer):
    for value in ("not.a.jwt", "x", "e30.e30.", "eyJhbGciOiJSUzI1NiJ9.WzFd.c2ln"):
        form = {
            "grant_type": "client_credentials",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": value,
        }
        response = post("/token", form)
        assert response.status_code in (400, 401) and response.json()["error"] == "invalid_client"


def test_with_redis_down_assertions_are_refused_as_temporarily_unavailable(
    signer,
    key,
    cache_down,  # noqa: F811
):
    """The replay check cannot run without the shared cache: fail closed, and say it is
    temporary (503, Retry-After) so the client retries rather than thinking its key is bad."""
    response = client_credentials(signer.client_id, key)
    assert response.status_code == 503, response.content
    assert response.json()["error"] == "temporarily_unavailable"
    assert response["Retry-After"]


# --- jwks_uri ---------------------------------------------------------------------------------
def test_rfc7591_2_jwks_uri_is_fetched_once_and_cached(db, host, key):
    client = key_client(jwks_uri=host.publish_jwks(key))
    for _ in range(3):
        assert client_credentials(client.client_id, key).status_code == 200
    assert host.hits["/jwks"] == 1


def test_oidc_core_10_1_1_a_rotated_rp_key_is_picked_up_with_one_refetch(db, host, key):
    client = key_client(jwks_uri=host.publish_jwks(key))
    assert client_credentials(client.client_id, key).status_code == 200
    rotated = new_key()
    host.publish_jwks(rotated)
    assert client_credentials(client.client_id, rotated).status_code == 200
    assert host.hits["/jwks"] == 2
    refused(client_credentials(client.client_id, key))  # the old key is gone from the set


def test_unknown_kids_refetch_the_jwks_at_most_once_per_interval(db, host, key):
    """A stream of made-up kids must not make us fetch the client's URL for each of them."""
    client = key_client(jwks_uri=host.publish_jwks(key))
    for _ in range(4):
        refused(client_credentials(client.client_id, new_key()))
    assert host.hits["/jwks"] == 2  # the first fetch, then one refetch for the unknown kid
    assert client_credentials(client.client_id, key).status_code == 200


def test_a_jwks_uri_that_fails_is_invalid_client(db, host, key):
    client = key_client(jwks_uri=host.url("/missing"))
    assert "jwks_uri" in refused(client_credentials(client.client_id, key))


def test_the_jwks_uri_goes_through_the_ssrf_guard(db, host, key, settings):
    """Fetched like a back-channel logout URI: a loopback or private address is refused
    unless CLIENT_FETCH_ALLOW_PRIVATE_NETWORKS."""
    client = key_client(jwks_uri=host.publish_jwks(key))
    settings.CLIENT_FETCH_ALLOW_PRIVATE_NETWORKS = False
    refused(client_credentials(client.client_id, key))
    assert "/jwks" not in host.hits


# --- the hot path -----------------------------------------------------------------------------
def test_secret_based_clients_pay_nothing_for_private_key_jwt(
    confidential, django_assert_num_queries
):
    """client_credentials with a secret reads no row (the client comes from process memory
    after the first request), whatever this feature added."""
    assert token_request(confidential, {"grant_type": "client_credentials"}).status_code == 200
    with django_assert_num_queries(0):
        assert token_request(confidential, {"grant_type": "client_credentials"}).status_code == 200


def test_secret_clients_code_flow_is_unchanged(confidential, user):
    browser = Browser()
    browser.force_login(user)
    code, verifier = get_code(browser, confidential, scope="openid")
    assert exchange(confidential, code, verifier).status_code == 200


# --- set up by an operator --------------------------------------------------------------------
def test_an_operator_registers_a_private_key_jwt_client_in_admin(staff_client, key):
    form = add_form(
        token_endpoint_auth_method="private_key_jwt",
        jwks=json.dumps(public_jwks(key)),
        token_endpoint_auth_signing_alg="RS256",
        userinfo_signed_response_alg="RS256",
        request_uris="https://billing.example.com/request.jwt",
    )
    response = staff_client.post(ADD_URL, form)
    assert response.status_code == 200, form_errors(response) if response.context else ""
    assert "it has no secret" in response.content.decode()
    client = Client.objects.get(client_id=shown(response, "client-id"))
    assert client.uses_keys and client.secret_digest == ""
    assert client.request_uris == ["https://billing.example.com/request.jwt"]
    assert client_credentials(client.client_id, key).status_code == 200


def test_admin_refuses_a_jwks_holding_a_private_key(staff_client, key):
    private = {"keys": [{**key.as_dict(private=True), "kid": key.kid}]}
    form = add_form(token_endpoint_auth_method="private_key_jwt", jwks=json.dumps(private))
    errors = form_errors(staff_client.post(ADD_URL, form))
    assert "private members" in str(errors["jwks"])
    assert not Client.objects.filter(name="Billing").exists()


def test_create_client_registers_a_private_key_jwt_client(db, key):
    out = StringIO()
    call_command(
        "create_client", "--name", "Batch", "--grant-type", "client_credentials",
        "--auth-method", "private_key_jwt", "--jwks", json.dumps(public_jwks(key)),
        "--token-endpoint-auth-signing-alg", "RS256", stdout=out,
    )  # fmt: skip
    printed = json.loads(out.getvalue())
    assert printed["client_secret"] is None
    assert printed["token_endpoint_auth_method"] == "private_key_jwt"
    assert client_credentials(printed["client_id"], key).status_code == 200


def test_a_stored_jwks_that_is_not_usable_is_invalid_client_never_a_500(signer, key):
    """Registration, admin and the model check the JWKS; a row written around them (a bulk
    update) still gets RFC 6749 §5.2 invalid_client."""
    Client.objects.filter(pk=signer.client.pk).update(jwks={"keys": [{"kty": "RSA", "n": "x"}]})
    refused(client_credentials(signer.client_id, key))
