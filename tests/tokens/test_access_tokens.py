"""JWT access tokens (RFC 9068) and the client credentials grant (RFC 6749 §4.4)."""

import base64
import json
import time

import pytest
from django.db import connection
from django.test import Client as Browser
from django.test.utils import CaptureQueriesContext
from joserfc import jwt
from joserfc.jwk import KeySet, OctKey

from tests.conftest import session_row
from tests.tokens.conftest import exchange, get_code, token_request
from tests.tokens.test_token_endpoint import assert_oauth_error
from tokens import access_tokens
from tokens.models import SigningKey

pytestmark = pytest.mark.django_db

ISSUER = "https://auth.example.test"


def published_keys() -> KeySet:
    response = Browser().get("/.well-known/jwks.json", secure=True)
    assert response.status_code == 200
    return KeySet.import_key_set(response.json())


def test_the_jwks_publishes_public_keys_only(confidential):
    token_request(confidential, {"grant_type": "client_credentials"})
    document = Browser().get("/.well-known/jwks.json", secure=True).json()
    assert document["keys"]
    for key in document["keys"]:
        assert {"kid", "alg", "use", "kty"} <= key.keys()
        assert "d" not in key and "p" not in key and "q" not in key


def test_a_fresh_install_creates_its_first_signing_key_on_demand(confidential):
    assert not SigningKey.objects.exists()
    assert token_request(confidential, {"grant_type": "client_credentials"}).status_code == 200
    key = SigningKey.objects.get()
    assert (key.state, key.algorithm) == ("active", "ES256")


def test_client_credentials_gives_a_jwt_for_the_client_itself_and_writes_no_row(confidential):
    """RFC 6749 §4.4.3 (no refresh token); RFC 9068 §2.2 (sub is the client)."""
    token_request(confidential, {"grant_type": "client_credentials"})  # first key created
    with CaptureQueriesContext(connection) as queries:
        response = token_request(
            confidential, {"grant_type": "client_credentials", "scope": "profile"}
        )
    assert response.status_code == 200
    body = response.json()
    assert "refresh_token" not in body and body["scope"] == "profile"
    writes = [
        q["sql"]
        for q in queries.captured_queries
        if q["sql"].split()[0] in ("INSERT", "UPDATE", "DELETE")
    ]
    assert writes == []
    claims = jwt.decode(body["access_token"], published_keys()).claims
    assert claims["sub"] == claims["client_id"] == confidential.client_id
    assert "sid" not in claims


def test_client_credentials_refuses_scopes_the_client_was_not_given(confidential):
    assert_oauth_error(
        token_request(confidential, {"grant_type": "client_credentials", "scope": "admin"}),
        "invalid_scope",
    )


def test_an_access_token_is_an_rfc_9068_jwt_that_a_third_party_library_accepts(
    logged_in_client, confidential, user
):
    """RFC 9068 §2.1-2.2, checked with joserfc against the published JWKS, not our code."""
    code, verifier = get_code(logged_in_client, confidential, scope="openid profile")
    value = exchange(confidential, code, verifier).json()["access_token"]
    token = jwt.decode(value, published_keys(), algorithms=["ES256"])
    assert (
        token.header["typ"] == "at+jwt" and token.header["alg"] == "ES256" and token.header["kid"]
    )
    claims = token.claims
    jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": ISSUER},
        aud={"essential": True, "value": ISSUER},
        sub={"essential": True, "value": str(user.pk)},
        client_id={"essential": True, "value": confidential.client_id},
        exp={"essential": True},
        iat={"essential": True},
        jti={"essential": True},
    ).validate(claims)
    assert claims["scope"] == "openid profile"
    assert claims["exp"] - claims["iat"] == 600
    assert claims["sid"] == session_row(logged_in_client).sid
    assert abs(claims["auth_time"] - time.time()) < 60


def test_rs256_is_available(settings, confidential):
    settings.ACCESS_TOKEN_SIGNING_ALG = "RS256"
    value = token_request(confidential, {"grant_type": "client_credentials"}).json()["access_token"]
    token = jwt.decode(value, published_keys(), algorithms=["RS256"])
    assert token.header["alg"] == "RS256"


def forge(claims: dict, header: dict) -> str:
    encode = lambda part: base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=").decode()  # noqa: E731
    return f"{encode(header)}.{encode(claims)}."


def test_tokens_with_alg_none_or_an_hmac_key_confusion_are_rejected(confidential):
    """RFC 8725 §2.1/§3.1: never accept 'none', never verify with a public key as an HMAC secret."""
    good = token_request(confidential, {"grant_type": "client_credentials"}).json()["access_token"]
    claims = access_tokens.read(good)
    assert claims is not None
    assert access_tokens.read(forge(claims, {"alg": "none", "typ": "at+jwt"})) is None
    public = Browser().get("/.well-known/jwks.json", secure=True).json()["keys"][0]
    confused = jwt.encode(
        {"alg": "HS256", "typ": "at+jwt", "kid": public["kid"]},
        claims,
        OctKey.import_key(json.dumps(public)),
    )
    assert access_tokens.read(confused) is None


def test_an_id_token_or_other_jwt_type_is_not_an_access_token(confidential):
    """RFC 9068 §4: the typ header keeps other JWTs we sign from passing as access tokens."""
    from tokens import keys

    good = token_request(confidential, {"grant_type": "client_credentials"}).json()["access_token"]
    claims = access_tokens.read(good)
    kid, key = keys.signing_key()
    other = jwt.encode({"alg": "ES256", "kid": kid, "typ": "JWT"}, claims, key)
    assert access_tokens.read(other) is None


def test_an_expired_or_foreign_token_is_not_read(confidential, settings):
    from tokens import keys

    kid, key = (
        token_request(confidential, {"grant_type": "client_credentials"}),
        keys.signing_key(),
    )[1]
    now = int(time.time())
    base = {"iss": ISSUER, "aud": ISSUER, "sub": "1", "client_id": "x", "jti": "j", "iat": now}
    header = {"alg": "ES256", "kid": kid, "typ": "at+jwt"}
    assert (
        access_tokens.read(jwt.encode(header, {**base, "exp": int(time.time()) - 1}, key)) is None
    )
    assert (
        access_tokens.read(
            jwt.encode(header, {**base, "exp": int(time.time()) + 60, "iss": "https://evil"}, key)
        )
        is None
    )
    assert (
        access_tokens.read(jwt.encode(header, {**base, "exp": int(time.time()) + 60}, key))
        is not None
    )
    # RFC 9068 §2.2: iss exp aud sub client_id iat jti are all REQUIRED; NumericDates are numbers.
    for claim in ("aud", "sub", "client_id", "iat", "jti"):
        claims = {k: v for k, v in base.items() if k != claim} | {"exp": now + 60}
        assert access_tokens.read(jwt.encode(header, claims, key)) is None, claim
    for bad in ({"exp": "soon"}, {"exp": True}, {"iat": now + 3600}, {"sub": 1}, {"client_id": ""}):
        claims = base | {"exp": now + 60} | bad
        assert access_tokens.read(jwt.encode(header, claims, key)) is None, bad
    for garbage in ("", "a.b.c", "....", "é.é.é", "x" * 10_000):
        assert access_tokens.read(garbage) is None


def test_a_deactivated_client_is_refused_at_once_despite_the_client_cache(confidential):
    """Clients are cached for the hot path; every way of changing one drops the cached copy."""
    from tokens.models import Client

    assert (
        token_request(confidential, {"grant_type": "client_credentials"}).status_code == 200
    )  # cached now
    Client.objects.filter(pk=confidential.client.pk).update(is_active=False)  # a bulk update
    assert (
        token_request(confidential, {"grant_type": "client_credentials"}).json()["error"]
        == "invalid_client"
    )
    client = Client.objects.get(pk=confidential.client.pk)
    client.is_active = True
    client.save()
    assert token_request(confidential, {"grant_type": "client_credentials"}).status_code == 200
    client.delete()
    assert (
        token_request(confidential, {"grant_type": "client_credentials"}).json()["error"]
        == "invalid_client"
    )


def test_client_secrets_survive_a_secret_key_rotation(confidential, settings):
    """SECRET_KEY moves to SECRET_KEY_FALLBACKS: secrets keyed with it still verify."""
    old = settings.SECRET_KEY
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = "a-brand-new-secret-key-" + "x" * 40, [old]
    assert token_request(confidential, {"grant_type": "client_credentials"}).status_code == 200
    settings.SECRET_KEY_FALLBACKS = []
    assert token_request(confidential, {"grant_type": "client_credentials"}).status_code == 401
