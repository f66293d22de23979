"""OpenID Connect through HTTP: Discovery 1.0 §3-4 and RFC 8414 §2-3 (checked with Authlib's own
metadata validators), ID tokens (OIDC Core §2, §3.1.3.6-3.1.3.7, checked with joserfc against the
published JWKS, never with our code) and the UserInfo endpoint (OIDC Core §5.3, RFC 6750 §3)."""

import base64
import hashlib
import time

import pytest
from authlib.oauth2 import rfc8414, rfc9207
from authlib.oidc import discovery, rpinitiated
from django.conf import settings
from django.core import mail
from django.test import Client as Browser
from django.urls import resolve
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from accounts.models import User
from tests.accounts.test_password_reset import NEW, choose_password, emailed_path, request_reset
from tests.conftest import session_row, sign_in
from tests.tokens.client_side import assertion_form, new_key, public_jwks
from tests.tokens.conftest import (
    REDIRECT,
    Registered,
    authorize_url,
    endpoint,
    exchange,
    get_code,
    pkce_pair,
    query,
    token_request,
)
from tests.tokens.test_token_endpoint import assert_oauth_error
from tokens.clients import create_client
from tokens.models import Client

pytestmark = pytest.mark.django_db

ISSUER = "https://auth.example.test"
PROFILE_CLAIMS = {"name", "given_name", "family_name", "preferred_username"}
EMAIL_CLAIMS = {"email", "email_verified"}
# The endpoints the metadata names, and the view each must reach (OIDC Discovery §3, RFC 8414 §2).
ENDPOINTS = {
    "authorization_endpoint": "tokens:authorize",
    "token_endpoint": "tokens:token",
    "userinfo_endpoint": "tokens:userinfo",
    "jwks_uri": "tokens:jwks",
    "registration_endpoint": "tokens:register",
    "end_session_endpoint": "tokens:end_session",
    "introspection_endpoint": "tokens:introspect",
    "revocation_endpoint": "tokens:revoke",
    "pushed_authorization_request_endpoint": "tokens:par",
    "device_authorization_endpoint": "tokens:device_authorization",
}


# --- helpers ----------------------------------------------------------------------------------
def provider_metadata(path: str = "/.well-known/openid-configuration") -> dict:
    response = Browser().get(path, secure=True)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    return response.json()


def published_keys() -> KeySet:
    response = Browser().get("/.well-known/jwks.json", secure=True)
    assert response.status_code == 200
    return KeySet.import_key_set(response.json())


def left_half_hash(value: str) -> str:
    """OIDC Core §3.1.3.6: base64url of the left-most half of the SHA-256 hash of the ASCII
    octets of the access token (RS256 and ES256 both hash with SHA-256)."""
    digest = hashlib.sha256(value.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest[: len(digest) // 2]).rstrip(b"=").decode()


def code_flow(browser: Browser, client: Registered, scope: str, **extra) -> dict:
    """Authorize (consenting if asked) and redeem the code: the token endpoint's JSON."""
    code, verifier = get_code(browser, client, scope=scope, **extra)
    response = exchange(client, code, verifier)
    assert response.status_code == 200, response.content
    return response.json()


def decode_id_token(value: str, client: Registered, alg: str = "RS256") -> jwt.Token:
    """OIDC Core §3.1.3.7, as a relying party does it: signature against the published JWKS with
    the client's registered algorithm only, then iss, aud, azp, exp and iat."""
    token = jwt.decode(value, published_keys(), algorithms=[alg])
    assert token.header["alg"] == alg
    assert token.header["kid"]
    jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": ISSUER},
        aud={"essential": True, "value": client.client_id},
        sub={"essential": True},
        exp={"essential": True},
        iat={"essential": True},
    ).validate(token.claims)
    claims = token.claims
    audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
    assert audiences == [client.client_id]
    assert claims["azp"] == client.client_id
    return token


def userinfo(access_token: str | None, method: str = "get", **extra):
    if access_token is not None:
        extra["HTTP_AUTHORIZATION"] = f"Bearer {access_token}"
    return getattr(Browser(), method)("/userinfo", secure=True, **extra)


def all_scopes_client() -> Registered:
    client, secret = create_client(
        name="Every Scope",
        redirect_uris=[REDIRECT],
        grant_types=["authorization_code", "refresh_token", "client_credentials"],
        scopes=list(settings.OAUTH_SCOPES),
    )
    return Registered(client, secret)


# --- Discovery --------------------------------------------------------------------------------
def test_openid_configuration_and_oauth_authorization_server_metadata_are_the_same_document():
    """OIDC Discovery §4 and RFC 8414 §3: both well-known URIs answer 200 with one JSON object."""
    openid = provider_metadata("/.well-known/openid-configuration")
    oauth = provider_metadata("/.well-known/oauth-authorization-server")
    assert openid == oauth


def test_the_metadata_passes_authlibs_own_validators():
    """OIDC Discovery §3 (OpenIDProviderMetadata, with RP-Initiated Logout §2.1) and RFC 8414 §2
    (AuthorizationServerMetadata, with RFC 9207 §3): every value has the right shape."""
    data = provider_metadata()
    discovery.OpenIDProviderMetadata(data).validate(
        metadata_classes=[rpinitiated.OpenIDProviderMetadata]
    )
    rfc8414.AuthorizationServerMetadata(data).validate(
        metadata_classes=[rfc9207.AuthorizationServerMetadata]
    )


def test_the_issuer_is_exactly_the_configured_issuer():
    """OIDC Discovery §3 / §4.3 and RFC 8414 §3.3: the issuer value MUST be identical to the
    issuer the client used, and every ID token's iss says the same."""
    data = provider_metadata()
    assert data["issuer"] == settings.ISSUER == ISSUER
    assert data["authorization_response_iss_parameter_supported"] is True  # RFC 9207 §3


def test_every_advertised_endpoint_resolves_to_one_of_our_views():
    """OIDC Discovery §3 / RFC 8414 §2: each endpoint URL is https, on the issuer, and served here."""
    data = provider_metadata()
    advertised = {key for key in data if key.endswith("_endpoint") or key == "jwks_uri"}
    assert advertised == set(ENDPOINTS)
    for key, view_name in ENDPOINTS.items():
        url = data[key]
        assert url.startswith(ISSUER + "/"), (key, url)
        match = resolve(url[len(ISSUER) :])
        assert match.view_name == view_name, (key, url, match.view_name)
        assert match.func.__module__.startswith("tokens."), (key, match.func.__module__)
    keys = Browser().get(data["jwks_uri"][len(ISSUER) :], secure=True).json()["keys"]
    assert keys  # the jwks_uri is live, not just routed


def test_every_advertised_scope_is_accepted_at_authorize(logged_in_client):
    """OIDC Discovery §3 scopes_supported: a client allowed a scope gets a code for it, and the
    token response grants it (RFC 6749 §3.3, §5.1); the code comes back in the query, with iss
    (response_modes_supported ["query"]; RFC 9207)."""
    client = all_scopes_client()
    scopes = provider_metadata()["scopes_supported"]
    assert "openid" in scopes  # OIDC Discovery §3: the server MUST support the openid scope
    for scope in scopes:
        verifier, challenge = pkce_pair()
        url = authorize_url(client, scope=scope, challenge=challenge)
        response = logged_in_client.get(url, secure=True)
        if response.status_code == 200:
            response = logged_in_client.post(url, {"decision": "allow"}, secure=True)
        assert response.status_code == 302, (scope, response.content.decode()[-500:])
        assert response["Location"].startswith(REDIRECT + "?"), scope
        params = query(response["Location"])
        assert "code" in params and params["iss"] == ISSUER, (scope, params)
        body = exchange(client, params["code"], verifier).json()
        assert body["scope"] == scope, (scope, body)


def test_pkce_is_advertised_as_s256_only_and_plain_is_refused(logged_in_client, confidential):
    """RFC 8414 §2 code_challenge_methods_supported; RFC 7636 §4.2 and RFC 9700 §2.1.1."""
    assert provider_metadata()["code_challenge_methods_supported"] == ["S256"]
    url = authorize_url(
        confidential, code_challenge="a" * 43, code_challenge_method="plain", scope="openid"
    )
    params = query(logged_in_client.get(url, secure=True)["Location"])
    assert params["error"] == "invalid_request"
    assert "code" not in params


def test_every_advertised_token_endpoint_auth_method_authenticates_a_client(logged_in_client):
    """RFC 8414 §2 token_endpoint_auth_methods_supported: each one works at /token."""
    methods = provider_metadata()["token_endpoint_auth_methods_supported"]
    assert set(methods) == {"client_secret_basic", "client_secret_post", "none", "private_key_jwt"}
    auth = {"client_secret_basic": "basic", "client_secret_post": "post", "none": "none"}
    key = new_key()
    for method in methods:
        client, secret = create_client(
            name=f"Uses {method}",
            redirect_uris=[REDIRECT],
            public=method == "none",
            token_endpoint_auth_method=method,
            scopes=["openid"],
            **({"jwks": public_jwks(key)} if method == "private_key_jwt" else {}),
        )
        registered = Registered(client, secret)
        code, verifier = get_code(logged_in_client, registered, scope="openid")
        if method == "private_key_jwt":
            response = exchange(
                registered, code, verifier, auth="", **assertion_form(client.client_id, key)
            )
        else:
            response = exchange(registered, code, verifier, auth=auth[method])
        assert response.status_code == 200, (method, response.content)
        assert "id_token" in response.json()


def test_every_advertised_id_token_algorithm_signs_a_token_that_validates(
    logged_in_client, confidential
):
    """OIDC Discovery §3 id_token_signing_alg_values_supported (RS256 MUST be there) and OIDC
    Dynamic Client Registration §2 id_token_signed_response_alg."""
    algorithms = provider_metadata()["id_token_signing_alg_values_supported"]
    assert "RS256" in algorithms and "none" not in algorithms
    for alg in algorithms:
        Client.objects.filter(pk=confidential.client.pk).update(id_token_signed_response_alg=alg)
        body = code_flow(logged_in_client, confidential, "openid")
        assert decode_id_token(body["id_token"], confidential, alg).header["alg"] == alg


def test_every_advertised_prompt_value_is_accepted(logged_in_client, confidential):
    """OIDC Discovery §3 prompt_values_supported; OIDC Core §3.1.2.1 prompt: none answers at
    once, consent asks again, login and select_account send the person to sign in again."""
    get_code(logged_in_client, confidential, scope="openid")  # consent remembered for "none"
    advertised = provider_metadata()["prompt_values_supported"]
    assert set(advertised) == {"none", "login", "consent", "select_account"}
    for prompt in advertised:
        url = authorize_url(confidential, scope="openid", challenge=pkce_pair()[1], prompt=prompt)
        response = logged_in_client.get(url, secure=True)
        if prompt == "none":
            assert response.status_code == 302 and response["Location"].startswith(REDIRECT)
            assert "code" in query(response["Location"]), response["Location"]
        elif prompt == "consent":
            assert response.status_code == 200 and b"decision" in response.content
        else:
            assert response.status_code == 302, prompt
            assert response["Location"].startswith("/login/?"), (prompt, response["Location"])
            assert query(response["Location"])["reauth"] == "1"


def test_nothing_unsupported_is_advertised():
    """OIDC Discovery §3 / RFC 8414 §2: no implicit or hybrid response types, no implicit or
    password grant (RFC 9700 §2.1.2, §2.4), no request objects, no plain PKCE."""
    data = provider_metadata()
    assert data["response_types_supported"] == ["code"]
    for response_type in data["response_types_supported"]:
        assert "token" not in response_type.split() and "id_token" not in response_type.split()
    assert set(data["grant_types_supported"]) == {
        "authorization_code",
        "refresh_token",
        "client_credentials",
        "urn:ietf:params:oauth:grant-type:device_code",  # RFC 8628
        "urn:ietf:params:oauth:grant-type:token-exchange",  # RFC 8693
    }
    assert "implicit" not in data["grant_types_supported"]
    assert "password" not in data["grant_types_supported"]
    assert data["response_modes_supported"] == ["query"]
    assert data["subject_types_supported"] == ["public"]
    assert data["claims_parameter_supported"] is False
    for key in (
        "id_token_encryption_alg_values_supported",
        "userinfo_encryption_alg_values_supported",
        "request_object_encryption_alg_values_supported",
    ):
        assert key not in data, key
    assert "client_secret_jwt" not in data["token_endpoint_auth_methods_supported"]
    for key in (
        "token_endpoint_auth_signing_alg_values_supported",
        "introspection_endpoint_auth_signing_alg_values_supported",
        "revocation_endpoint_auth_signing_alg_values_supported",
    ):  # RFC 8414 §2: never none; no HS*: a secret is not a signing key here
        assert not {"none", "HS256", "HS384", "HS512"} & set(data[key]), key


def test_what_is_not_advertised_does_not_work(logged_in_client, confidential, user):
    """The other half of the promise: response_type=token / id_token issue nothing (OIDC Core
    §3.1.2.6 unsupported_response_type), and the password grant is unsupported_grant_type
    (RFC 6749 §5.2)."""
    for response_type in ("token", "id_token", "code id_token", "id_token token"):
        url = authorize_url(
            confidential, scope="openid", nonce="n", challenge=pkce_pair()[1]
        ).replace("response_type=code", "response_type=" + response_type.replace(" ", "+"))
        response = logged_in_client.get(url, secure=True)
        assert response.status_code == 302, response_type
        location = response["Location"]
        assert location.startswith(REDIRECT + "?") and "#" not in location, response_type
        params = query(location)
        assert params["error"] == "unsupported_response_type", (response_type, params)
        assert not {"code", "access_token", "id_token"} & set(params), (response_type, params)
    assert_oauth_error(
        token_request(
            confidential, {"grant_type": "password", "username": user.username, "password": "x"}
        ),
        "unsupported_grant_type",
    )


def test_request_objects_are_advertised_with_what_they_may_be_signed_with():
    """OIDC Discovery §3: request and request_uri are supported (tokens/test_request_objects.py
    shows each), request_uri only when registered, signed with the asymmetric algorithms we
    verify client keys with, or unsigned; OIDC Core §15.2 makes request_uri mandatory for
    dynamic OPs."""
    data = provider_metadata()
    assert data["request_parameter_supported"] is True
    assert data["request_uri_parameter_supported"] is True
    assert data["require_request_uri_registration"] is True
    assert set(data["request_object_signing_alg_values_supported"]) == {
        "RS256", "PS256", "ES256", "Ed25519", "none",
    }  # fmt: skip
    assert "RS256" in data["userinfo_signing_alg_values_supported"]


def test_claims_supported_lists_every_claim_we_release(logged_in_client, confidential):
    """OIDC Discovery §3 claims_supported: what an ID token and the UserInfo response carry."""
    supported = set(provider_metadata()["claims_supported"])
    body = code_flow(logged_in_client, confidential, "openid profile email", nonce="n-claims")
    id_claims = decode_id_token(body["id_token"], confidential).claims
    assert set(id_claims) <= supported, set(id_claims) - supported
    info = userinfo(body["access_token"]).json()
    assert set(info) <= supported, set(info) - supported


# --- ID tokens --------------------------------------------------------------------------------
def test_the_code_flow_with_openid_returns_an_id_token_a_relying_party_can_validate(
    logged_in_client, confidential, user
):
    """OIDC Core §3.1.3.3 (id_token in the token response), §2 (its claims), §3.1.3.6 (at_hash),
    §3.1.3.7 (validation: signature by the JWKS, iss, aud, azp, exp, iat, nonce)."""
    before = int(time.time())
    body = code_flow(logged_in_client, confidential, "openid profile email", nonce="n-0S6_WzA2Mj")
    assert body["token_type"] == "Bearer" and "id_token" in body
    token = decode_id_token(body["id_token"], confidential)
    assert token.header["alg"] == "RS256"  # the client default (OIDC Registration §2)
    assert token.header["kid"] in {key.kid for key in published_keys()}
    claims = token.claims
    assert claims["iss"] == ISSUER
    assert claims["sub"] == str(user.pk)
    assert isinstance(claims["iat"], int) and before - 5 <= claims["iat"] <= time.time() + 5
    assert claims["exp"] - claims["iat"] == settings.ID_TOKEN_LIFETIME
    assert isinstance(claims["auth_time"], int)
    assert before - 60 <= claims["auth_time"] <= time.time() + 5
    assert claims["nonce"] == "n-0S6_WzA2Mj"
    assert claims["at_hash"] == left_half_hash(body["access_token"])
    assert claims["sid"] == session_row(logged_in_client).sid
    assert claims["acr"] == "pwd"  # a password only (accounts/assurance.py)
    assert claims["amr"] == ["pwd"]


def test_the_id_token_carries_the_profile_and_email_claims_the_scopes_ask_for(
    logged_in_client, confidential, user
):
    """OIDC Core §5.4 (profile, email scopes) and §5.1 (the standard claims)."""
    body = code_flow(logged_in_client, confidential, "openid profile email")
    claims = decode_id_token(body["id_token"], confidential).claims
    assert claims["name"] == "Ada Lovelace"
    assert claims["given_name"] == "Ada" and claims["family_name"] == "Lovelace"
    assert claims["preferred_username"] == user.username
    assert claims["email"] == user.email
    assert claims["email_verified"] is False  # nobody has shown they read the address yet


def test_the_id_token_releases_only_what_the_granted_scopes_allow(logged_in_client, confidential):
    """OIDC Core §5.4: no profile scope, no profile claims; no email scope, no email claims."""
    claims = decode_id_token(
        code_flow(logged_in_client, confidential, "openid")["id_token"], confidential
    ).claims
    assert not (set(claims) & (PROFILE_CLAIMS | EMAIL_CLAIMS)), claims


def test_a_client_registered_for_es256_gets_an_es256_id_token_that_validates(
    logged_in_client, confidential, user
):
    """OIDC Registration §2 id_token_signed_response_alg; OIDC Core §3.1.3.6 at_hash for ES256
    (SHA-256, like RS256)."""
    Client.objects.filter(pk=confidential.client.pk).update(id_token_signed_response_alg="ES256")
    body = code_flow(logged_in_client, confidential, "openid", nonce="n-es")
    token = decode_id_token(body["id_token"], confidential, "ES256")
    assert token.header["alg"] == "ES256"
    assert token.claims["sub"] == str(user.pk) and token.claims["nonce"] == "n-es"
    assert token.claims["at_hash"] == left_half_hash(body["access_token"])
    with pytest.raises(JoseError):  # a relying party expecting RS256 refuses it
        jwt.decode(body["id_token"], published_keys(), algorithms=["RS256"])


def test_without_openid_in_the_scope_there_is_no_id_token(logged_in_client, confidential):
    """OIDC Core §3.1.2.1: without the openid scope the request is plain OAuth 2.0."""
    body = code_flow(logged_in_client, confidential, "profile email")
    assert "id_token" not in body
    assert body["scope"] == "profile email"


def test_no_nonce_in_the_request_means_no_nonce_in_the_id_token(logged_in_client, confidential):
    """OIDC Core §2: nonce is present only if the authentication request had one."""
    claims = decode_id_token(
        code_flow(logged_in_client, confidential, "openid")["id_token"], confidential
    ).claims
    assert "nonce" not in claims


def test_a_nonce_reused_by_the_same_client_is_refused_at_authorize(logged_in_client, confidential):
    """OIDC Core §3.1.2.1 / §15.5.2: the nonce mitigates replay; a second authentication request
    with a nonce this client already used is an invalid_request sent back to the redirect URI
    (§3.1.2.6), with the state and the issuer, and no code."""
    code_flow(logged_in_client, confidential, "openid", nonce="used-once")
    url = authorize_url(confidential, scope="openid", challenge=pkce_pair()[1], nonce="used-once")
    response = logged_in_client.get(url, secure=True)
    assert response.status_code == 302
    assert response["Location"].startswith(REDIRECT + "?")
    params = query(response["Location"])
    assert params["error"] == "invalid_request"
    assert params["state"] == "xyz" and params["iss"] == ISSUER
    assert "code" not in params


def test_another_client_may_use_the_same_nonce(logged_in_client, confidential):
    """The nonce is the relying party's value (OIDC Core §3.1.2.1): one client's nonce does not
    block another's request."""
    code_flow(logged_in_client, confidential, "openid", nonce="shared-value")
    client, secret = create_client(name="Other", redirect_uris=[REDIRECT], scopes=["openid"])
    other = Registered(client, secret)
    body = code_flow(logged_in_client, other, "openid", nonce="shared-value")
    assert decode_id_token(body["id_token"], other).claims["nonce"] == "shared-value"


# --- UserInfo ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("scope", "expected"),
    [
        ("openid", {"sub"}),
        ("openid profile", {"sub"} | PROFILE_CLAIMS),
        ("openid email", {"sub"} | EMAIL_CLAIMS),
        ("openid profile email", {"sub"} | PROFILE_CLAIMS | EMAIL_CLAIMS),
    ],
)
@pytest.mark.parametrize("method", ["get", "post"])
def test_userinfo_returns_the_claims_the_tokens_scopes_allow(
    logged_in_client, confidential, user, scope, expected, method
):
    """OIDC Core §5.3.1 (GET or POST, the token as a Bearer header: RFC 6750 §2.1), §5.3.2 (JSON,
    sub always, equal to the ID token's sub), §5.4 (claims by scope)."""
    body = code_flow(logged_in_client, confidential, scope)
    response = userinfo(body["access_token"], method)
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "application/json"
    info = response.json()
    assert set(info) == expected
    assert info["sub"] == decode_id_token(body["id_token"], confidential).claims["sub"]
    assert info["sub"] == str(user.pk)
    if "name" in expected:
        assert info["name"] == "Ada Lovelace"
        assert info["preferred_username"] == user.username
    if "email" in expected:
        assert info["email"] == user.email and info["email_verified"] is False


def test_userinfo_without_a_token_is_401_with_a_bare_bearer_challenge():
    """RFC 6750 §3 / §3.1: no authentication information, so WWW-Authenticate: Bearer and no
    error code."""
    response = userinfo(None)
    assert response.status_code == 401
    challenge = response["WWW-Authenticate"]
    assert challenge.startswith("Bearer")
    assert "error=" not in challenge


def test_userinfo_with_a_bad_token_is_401_invalid_token():
    """RFC 6750 §3.1 invalid_token; OIDC Core §5.3.3."""
    response = userinfo("not-a-token")
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert 'error="invalid_token"' in response["WWW-Authenticate"]
    assert response.json()["error"] == "invalid_token"


def test_userinfo_with_a_token_lacking_openid_is_403_insufficient_scope(confidential):
    """RFC 6750 §3.1 insufficient_scope: the token is good but was not granted openid."""
    access = token_request(
        confidential, {"grant_type": "client_credentials", "scope": "profile"}
    ).json()["access_token"]
    response = userinfo(access)
    assert response.status_code == 403
    assert 'error="insufficient_scope"' in response["WWW-Authenticate"]
    assert 'scope="openid"' in response["WWW-Authenticate"]


def test_userinfo_with_a_token_that_speaks_for_no_person_is_401(confidential):
    """OIDC Core §5.3: UserInfo is about an End-User; a client's own token has none."""
    access = token_request(
        confidential, {"grant_type": "client_credentials", "scope": "openid"}
    ).json()["access_token"]
    response = userinfo(access)
    assert response.status_code == 401
    assert 'error="invalid_token"' in response["WWW-Authenticate"]


def test_userinfo_refuses_a_revoked_access_token(logged_in_client, confidential):
    """RFC 7009 §2: after revocation the token is no longer usable; RFC 6750 §3.1 invalid_token."""
    access = code_flow(logged_in_client, confidential, "openid")["access_token"]
    assert userinfo(access).status_code == 200
    assert endpoint("/revoke", confidential, {"token": access}).status_code == 200
    response = userinfo(access)
    assert response.status_code == 401
    assert 'error="invalid_token"' in response["WWW-Authenticate"]


def test_userinfo_refuses_a_token_once_the_person_signs_out(logged_in_client, confidential):
    """The token is bound to the browser session (sid); signing out ends it (RFC 6750 §3.1)."""
    access = code_flow(logged_in_client, confidential, "openid profile")["access_token"]
    assert userinfo(access).status_code == 200
    assert logged_in_client.post("/logout/", secure=True).status_code == 200
    response = userinfo(access)
    assert response.status_code == 401
    assert 'error="invalid_token"' in response["WWW-Authenticate"]


def test_email_verified_becomes_true_after_a_completed_password_reset(confidential, user):
    """OIDC Core §5.1 email_verified: the person followed the emailed link, so they read it."""
    browser = Browser()
    request_reset(browser, user.email)
    assert len(mail.outbox) == 1
    done = choose_password(browser, emailed_path())
    assert done.status_code == 302 and done["Location"] == "/password-reset/done/"
    assert User.objects.get(pk=user.pk).email_verified is True

    browser = Browser()
    assert sign_in(browser, user.username, NEW).status_code == 302
    body = code_flow(browser, confidential, "openid email")
    info = userinfo(body["access_token"]).json()
    assert info["email"] == user.email and info["email_verified"] is True
    assert decode_id_token(body["id_token"], confidential).claims["email_verified"] is True
