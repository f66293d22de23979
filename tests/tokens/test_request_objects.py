"""Request objects at the authorization endpoint: by value (``request``) and by reference
(``request_uri``, served by a real loopback HTTP server): OIDC Core §6 and RFC 9101."""

from __future__ import annotations

import time
from urllib.parse import urlencode

import pytest
from django.test import Client as Browser

from tests.factories import REDIRECT, ClientFactory, Registered
from tests.tokens.client_side import ISSUER, KeyHost, new_key, public_jwks, sign, unsigned
from tests.tokens.conftest import exchange, pkce_pair, query
from tokens.models import Client

OTHER_REDIRECT = "https://app.example.com/other"
# An error found once the object's signature checked out goes back with the object's state.
VERIFIED_STATE = "in-the-object"


@pytest.fixture
def key():
    return new_key("RS256")


@pytest.fixture
def signer(db, key) -> Registered:
    """A client that signs its request objects with its registered key (any algorithm)."""
    return Registered.of(
        ClientFactory(jwks=public_jwks(key), redirect_uris=[REDIRECT, OTHER_REDIRECT])
    )


@pytest.fixture
def browser(user) -> Browser:
    browser = Browser()
    browser.force_login(user)
    return browser


@pytest.fixture
def host(settings):
    settings.CLIENT_FETCH_ALLOW_PRIVATE_NETWORKS = True  # it lives on loopback
    server = KeyHost()
    yield server
    server.stop()


def request_claims(client: Registered, **overrides) -> tuple[dict, str]:
    """An authorization request as request object claims, and the PKCE verifier for it."""
    verifier, challenge = pkce_pair()
    claims = {
        "iss": client.client_id,
        "aud": ISSUER,
        "exp": int(time.time()) + 300,
        "client_id": client.client_id,
        "response_type": "code",
        "scope": "openid profile",
        "redirect_uri": REDIRECT,
        "state": "in-the-object",
        "nonce": "n-0",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}, verifier


def url(client: Registered, **params) -> str:
    """OIDC Core §6.1: client_id, response_type and scope (with openid) stay in the query."""
    query_params = {
        "client_id": client.client_id,
        "response_type": "code",
        "scope": "openid",
        "redirect_uri": REDIRECT,
    }
    query_params.update(params)
    return "/authorize?" + urlencode({k: v for k, v in query_params.items() if v is not None})


def answer(browser: Browser, location: str):
    """The authorization endpoint's answer to the client, after consent if asked."""
    response = browser.get(location, secure=True)
    if response.status_code == 200 and b"decision" in response.content:
        response = browser.post(location, {"decision": "allow"}, secure=True)
    return response


def redirected(response, to: str = REDIRECT) -> dict:
    assert response.status_code == 302, response.content.decode()[-600:]
    assert response["Location"].startswith(to + "?"), response["Location"]
    return query(response["Location"])


def error_at_client(response, error: str, state: str | None = "q-state") -> dict:
    params = redirected(response)
    assert "code" not in params, params
    assert params["error"] == error, params
    assert params.get("state") == state
    assert params["iss"] == ISSUER
    return params


# --- by value ---------------------------------------------------------------------------------
def test_oidc_core_6_1_a_signed_request_object_by_value_runs_the_code_flow(browser, signer, key):
    claims, verifier = request_claims(signer)
    params = redirected(answer(browser, url(signer, request=sign(claims, key))))
    assert params["state"] == "in-the-object"
    body = exchange(signer, params["code"], verifier).json()
    assert "id_token" in body, body


@pytest.mark.parametrize("alg", ["PS256", "ES256"])
def test_oidc_registration_2_the_registered_algorithm_signs_request_objects(browser, db, alg):
    key = new_key(alg)
    client = Registered.of(ClientFactory(jwks=public_jwks(key), request_object_signing_alg=alg))
    claims, _ = request_claims(client)
    assert "code" in redirected(answer(browser, url(client, request=sign(claims, key, alg))))
    other = new_key("RS256")
    Client.objects.filter(pk=client.client.pk).update(jwks=public_jwks(key, other))
    claims, _ = request_claims(client)
    response = answer(browser, url(client, request=sign(claims, other, "RS256"), state="q-state"))
    error_at_client(response, "invalid_request_object")


def test_oidc_core_6_1_an_unsigned_request_object_is_accepted_unless_the_client_signs(
    browser, signer, key, confidential
):
    """OpenID Registration §2 request_object_signing_alg: "The default, if omitted, is that any
    algorithm supported by the OP and the RP MAY be used" (none included); a client that
    registered an algorithm has every other one, none included, refused."""
    claims, _ = request_claims(confidential)
    assert "code" in redirected(answer(browser, url(confidential, request=unsigned(claims))))
    Client.objects.filter(pk=signer.client.pk).update(request_object_signing_alg="RS256")
    claims, _ = request_claims(signer)
    response = answer(browser, url(signer, request=unsigned(claims), state="q-state"))
    error_at_client(response, "invalid_request_object")


def test_oidc_registration_2_a_client_registered_for_none_may_not_sign(browser, signer, key):
    Client.objects.filter(pk=signer.client.pk).update(request_object_signing_alg="none")
    claims, _ = request_claims(signer)
    assert "code" in redirected(answer(browser, url(signer, request=unsigned(claims))))
    claims, _ = request_claims(signer)
    response = answer(browser, url(signer, request=sign(claims, key), state="q-state"))
    error_at_client(response, "invalid_request_object")


def test_rfc9101_6_3_the_request_objects_parameters_take_precedence(browser, signer, key):
    """oidcc-ensure-request-object-with-redirect-uri: the query carries a redirect_uri that is
    not registered, the object the registered one; the object's is the one used."""
    claims, _ = request_claims(signer, redirect_uri=OTHER_REDIRECT, scope="openid email")
    location = url(signer, request=sign(claims, key), redirect_uri="https://evil.example/cb")
    response = answer(browser, location)
    params = redirected(response, to=OTHER_REDIRECT)
    assert "code" in params and params["state"] == "in-the-object"


def test_oidc_core_6_3_3_query_parameters_the_object_lacks_still_count(browser, confidential):
    claims, _ = request_claims(confidential, state=None, nonce=None)
    params = redirected(answer(browser, url(confidential, request=unsigned(claims), state="q")))
    assert params["state"] == "q" and "code" in params


def test_rfc9101_5_a_plain_oauth_request_uses_only_the_objects_parameters(browser, confidential):
    claims, verifier = request_claims(confidential, scope="profile", nonce=None)
    location = url(confidential, scope=None, request=unsigned(claims), state="from-the-query")
    params = redirected(answer(browser, location))
    assert params["state"] == "in-the-object"
    body = exchange(confidential, params["code"], verifier).json()
    assert body["scope"] == "profile" and "id_token" not in body


# --- refused ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "changes",
    [
        {"iss": "someone-else"},
        {"aud": "https://other.example"},
        {"exp": -600},  # seconds from now, for the time claims
        {"nbf": +600},
        {"request_uri": "https://app.example.com/r.jwt"},
    ],
    ids=["iss", "aud", "expired", "not-yet-valid", "nested-request-uri"],
)
def test_rfc9101_4_bad_claims_are_invalid_request_object(browser, signer, key, changes):
    now = int(time.time())
    changes = {k: now + v if k in ("exp", "nbf") else v for k, v in changes.items()}
    claims, _ = request_claims(signer, **changes)
    response = answer(browser, url(signer, request=sign(claims, key), state="q-state"))
    error_at_client(response, "invalid_request_object", state=VERIFIED_STATE)


def test_rfc9101_5_client_id_in_the_object_must_match_the_query(browser, signer, key, confidential):
    claims, _ = request_claims(signer, client_id=confidential.client_id)
    response = answer(browser, url(signer, request=sign(claims, key), state="q-state"))
    error_at_client(response, "invalid_request", state=VERIFIED_STATE)


def test_oidc_core_6_1_response_type_must_be_in_the_query_too(browser, signer, key):
    claims, _ = request_claims(signer)
    location = url(signer, request=sign(claims, key), response_type=None, state="q-state")
    error_at_client(answer(browser, location), "invalid_request", state=VERIFIED_STATE)


def test_a_request_object_signed_by_another_key_is_refused(browser, signer):
    claims, _ = request_claims(signer)
    response = answer(browser, url(signer, request=sign(claims, new_key()), state="q-state"))
    error_at_client(response, "invalid_request_object")


@pytest.mark.parametrize("value", ["garbage", "a.b.c", "eyJhbGciOiJIUzI1NiJ9.e30.c2ln"])
def test_a_malformed_or_hmac_request_object_is_invalid_request_object(browser, signer, value):
    error_at_client(
        answer(browser, url(signer, request=value, state="q-state")), "invalid_request_object"
    )


def test_request_and_request_uri_together_are_refused(browser, signer, key):
    claims, _ = request_claims(signer)
    location = url(signer, request=sign(claims, key), request_uri=REDIRECT, state="q-state")
    error_at_client(answer(browser, location), "invalid_request")


def test_rfc6749_4_1_2_1_without_a_registered_redirect_uri_errors_go_to_a_page(browser, signer):
    """The object did not verify, and the query's redirect_uri is not registered: an error
    page, never a redirect (the object's redirect_uri cannot be trusted)."""
    location = url(signer, request="garbage", redirect_uri="https://evil.example/cb")
    response = browser.get(location, secure=True)
    assert response.status_code == 400 and "Location" not in response


def test_an_unknown_client_with_a_request_object_gets_an_error_page(browser, db, key):
    response = browser.get(
        "/authorize?" + urlencode({"client_id": "nobody", "request": "x"}), secure=True
    )
    assert response.status_code == 400 and "Location" not in response


# --- by reference -----------------------------------------------------------------------------
def test_oidc_core_6_2_a_registered_request_uri_is_fetched_and_used(browser, signer, key, host):
    claims, verifier = request_claims(signer)
    request_uri = host.publish("/ro.jwt", sign(claims, key))
    Client.objects.filter(pk=signer.client.pk).update(request_uris=[request_uri])
    params = redirected(answer(browser, url(signer, request_uri=request_uri + "#sha256")))
    assert params["state"] == "in-the-object"
    assert exchange(signer, params["code"], verifier).status_code == 200
    assert host.hits["/ro.jwt"] >= 1


def test_oidc_core_6_2_an_unsigned_request_object_by_reference(browser, confidential, host):
    """oidcc-request-uri-unsigned: request_uris registered, no request_object_signing_alg."""
    claims, _ = request_claims(confidential)
    request_uri = host.publish("/unsigned.jwt", unsigned(claims), content_type="application/jose")
    Client.objects.filter(pk=confidential.client.pk).update(request_uris=[request_uri])
    assert "code" in redirected(answer(browser, url(confidential, request_uri=request_uri)))


def test_oidc_core_6_2_an_unregistered_request_uri_is_never_fetched(browser, signer, key, host):
    claims, _ = request_claims(signer)
    request_uri = host.publish("/ro.jwt", sign(claims, key))
    response = answer(browser, url(signer, request_uri=request_uri, state="q-state"))
    error_at_client(response, "invalid_request_uri")
    assert "/ro.jwt" not in host.hits


def test_a_request_uri_that_fails_is_invalid_request_uri(browser, signer, host):
    request_uri = host.url("/missing.jwt")
    Client.objects.filter(pk=signer.client.pk).update(request_uris=[request_uri])
    error_at_client(
        answer(browser, url(signer, request_uri=request_uri, state="q-state")),
        "invalid_request_uri",
    )


def test_the_request_uri_goes_through_the_ssrf_guard(browser, signer, key, host, settings):
    claims, _ = request_claims(signer)
    request_uri = host.publish("/ro.jwt", sign(claims, key))
    Client.objects.filter(pk=signer.client.pk).update(request_uris=[request_uri])
    settings.CLIENT_FETCH_ALLOW_PRIVATE_NETWORKS = False
    error_at_client(
        answer(browser, url(signer, request_uri=request_uri, state="q-state")),
        "invalid_request_uri",
    )
    assert "/ro.jwt" not in host.hits


def test_a_request_uri_larger_than_the_limit_is_refused(browser, signer, host, settings):
    settings.CLIENT_FETCH_MAX_BYTES = 1000
    request_uri = host.publish("/big.jwt", "a" * 1001)
    Client.objects.filter(pk=signer.client.pk).update(request_uris=[request_uri])
    error_at_client(
        answer(browser, url(signer, request_uri=request_uri, state="q-state")),
        "invalid_request_uri",
    )


def test_rfc9126_4_a_pushed_request_urn_is_never_fetched(browser, signer):
    """Our own URNs name pushed requests (RFC 9126 §4); one we never issued is an error page,
    never a fetch and never a redirect."""
    location = url(signer, request_uri="urn:ietf:params:oauth:request_uri:abc", state="q-state")
    response = answer(browser, location)
    assert response.status_code == 400 and not response.has_header("Location")


def test_a_request_object_survives_the_sign_in(user, signer, key):
    """Anonymous: off to sign in, and back to the request the object made (prompt=login inside
    it is honoured once, not in a loop)."""
    claims, _ = request_claims(signer, prompt="login")
    anonymous = Browser()
    response = anonymous.get(url(signer, request=sign(claims, key)), secure=True)
    assert response.status_code == 302 and response["Location"].startswith("/login/")
    next_url = query(response["Location"])["next"]
    assert "request=" not in next_url and "prompt" not in query(next_url)
    anonymous.force_login(user)
    assert "code" in redirected(answer(anonymous, next_url))
