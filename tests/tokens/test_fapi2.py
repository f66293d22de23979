"""The ``fapi2`` client profile: the FAPI 2.0 Security Profile (final), §5.3.2 (authorization
server) and §5.4 (cryptography), one rule per test, through HTTP against the real server."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from io import StringIO

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.test import Client as Browser

from tests.factories import ClientFactory, Registered
from tests.tokens.client_side import ISSUER, assertion_form, new_key, public_jwks, sign, unsigned
from tests.tokens.conftest import authorize_url, pkce_pair, query, token_request
from tests.tokens.dpop_client import Holder, claims_of
from tests.tokens.test_client_admin import ADD_URL, add_form, form_errors
from tests.tokens.test_pushed_authorization import allow, authorize_path
from tests.tokens.test_pushed_authorization import push as post_to_par
from tests.tokens.test_registration import (  # noqa: F401 - initial_token is a fixture
    PUBLIC_JWKS,
    WEB_APP,
    initial_token,
    manage,
    register,
    update_of,
)
from tokens.models import AuthorizationCode, Client

pytestmark = pytest.mark.django_db

ALG = "PS256"


@pytest.fixture
def key():
    return new_key(ALG)


@pytest.fixture
def fapi(db, key) -> Registered:
    return Registered.of(
        ClientFactory(
            token_endpoint_auth_method=Client.AuthMethod.PRIVATE_KEY_JWT,
            jwks=public_jwks(key),
            fapi2=True,
        )
    )


def authenticated(client: Registered, key, alg: str = ALG, **body) -> dict:
    return {**body, **assertion_form(client.client_id, key, alg, aud=ISSUER)}


def par(client: Registered, key, *, alg: str = ALG, challenge: str | None = "", **extra):
    """Push an authorization request with private_key_jwt; challenge "" makes a fresh one."""
    if challenge == "":
        challenge = pkce_pair()[1]
    params = {
        "client_id": client.client_id,
        "response_type": "code",
        "redirect_uri": client.client.redirect_uris[0],
        "scope": "openid profile offline_access",
        "state": "fapi-state",
        "nonce": "fapi-nonce",
        "code_challenge": challenge,
        "code_challenge_method": "S256" if challenge else None,
        **extra,
    }
    params = {k: v for k, v in params.items() if v is not None}
    return post_to_par(client, authenticated(client, key, alg, **params), auth="key")


def code_through_par(client: Registered, key, browser: Browser) -> tuple[dict, str]:
    verifier, challenge = pkce_pair()
    response = par(client, key, challenge=challenge)
    assert response.status_code == 201, response.content
    answer = allow(browser, authorize_path(client.client_id, response.json()["request_uri"]))
    assert answer.status_code == 302, answer.content.decode()[-600:]
    assert answer["Location"].startswith(client.client.redirect_uris[0] + "?")
    return query(answer["Location"]), verifier


def exchange(client: Registered, key, code: str, verifier: str, holder: Holder | None):
    data = authenticated(
        client,
        key,
        grant_type="authorization_code",
        code=code,
        redirect_uri=client.client.redirect_uris[0],
        code_verifier=verifier,
    )
    headers = {"HTTP_DPOP": holder.proof()} if holder else {}
    return token_request(None, data, **headers)


def oauth_error(response, error: str, status: int = 400) -> dict:
    assert response.status_code == status, response.content
    body = response.json()
    assert body["error"] == error, body
    return body


# --- §5.3.2.1: PAR, and request_uri only from it ------------------------------------------------
def test_fapi2_5_3_2_1_plain_authorization_requests_are_refused(fapi, logged_in_client):
    _, challenge = pkce_pair()
    response = logged_in_client.get(authorize_url(fapi, challenge=challenge), secure=True)
    assert response.status_code == 302
    assert query(response["Location"])["error"] == "invalid_request"
    assert not AuthorizationCode.objects.exists()


def test_fapi2_5_3_2_1_a_pushed_request_gets_a_code_with_iss(fapi, key, logged_in_client):
    """RFC 9207 / §5.3.2.1: the authorization response names the issuer."""
    params, _ = code_through_par(fapi, key, logged_in_client)
    assert params["iss"] == ISSUER and params["state"] == "fapi-state" and params["code"]


def test_fapi2_5_3_2_1_a_request_object_by_value_at_authorize_is_refused(
    fapi, key, logged_in_client
):
    url = authorize_url(fapi, scope="openid", request=sign(request_object(fapi), key, ALG))
    response = logged_in_client.get(url, secure=True)
    assert query(response["Location"])["error"] == "invalid_request"
    assert not AuthorizationCode.objects.exists()


def test_fapi2_5_3_2_1_a_fapi2_client_registers_no_request_uris(fapi):
    fapi.client.request_uris = ["https://app.example.com/request.jwt"]
    with pytest.raises(ValidationError, match="request_uri only from PAR"):
        fapi.client.full_clean()


# --- §5.3.2.1: PKCE with S256 for every request -------------------------------------------------
def test_fapi2_5_3_2_1_pkce_is_required_of_a_confidential_client(fapi, key):
    oauth_error(par(fapi, key, challenge=None), "invalid_request")


def test_fapi2_5_3_2_1_pkce_plain_is_refused(fapi, key):
    oauth_error(par(fapi, key, code_challenge_method="plain"), "invalid_request")


# --- §5.3.2.1: only response_type=code ----------------------------------------------------------
@pytest.mark.parametrize("response_type", ["token", "code id_token", "id_token"])
def test_fapi2_5_3_2_1_response_types_other_than_code_are_refused(fapi, key, response_type):
    response = par(fapi, key, response_type=response_type)
    oauth_error(response, "unsupported_response_type")


# --- §5.3.2.1: authorization codes live at most 60 seconds -------------------------------------
def test_fapi2_5_3_2_1_codes_live_at_most_60_seconds(fapi, key, logged_in_client, settings):
    settings.AUTHORIZATION_CODE_LIFETIME = 600  # the server's setting, for other clients
    code_through_par(fapi, key, logged_in_client)
    code = AuthorizationCode.objects.get()
    assert code.expires - code.created == timedelta(seconds=60)


def test_other_clients_keep_the_configured_code_lifetime(confidential, settings):
    settings.AUTHORIZATION_CODE_LIFETIME = 600
    assert confidential.client.code_lifetime == 600


# --- §5.3.2.1: sender-constrained (DPoP) access tokens ------------------------------------------
def test_fapi2_5_3_2_1_a_token_request_without_dpop_is_refused(fapi, key, logged_in_client):
    params, verifier = code_through_par(fapi, key, logged_in_client)
    oauth_error(exchange(fapi, key, params["code"], verifier, None), "invalid_dpop_proof")
    # Refused before the code was looked at: it still exchanges, with a proof.
    holder = Holder()
    assert exchange(fapi, key, params["code"], verifier, holder).status_code == 200


def test_fapi2_5_3_2_1_tokens_are_dpop_bound_and_so_is_the_refresh(fapi, key, logged_in_client):
    params, verifier = code_through_par(fapi, key, logged_in_client)
    holder = Holder()
    response = exchange(fapi, key, params["code"], verifier, holder)
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["token_type"] == "DPoP"
    assert claims_of(body["access_token"])["cnf"] == {"jkt": holder.thumbprint}

    refresh = authenticated(
        fapi, key, grant_type="refresh_token", refresh_token=body["refresh_token"]
    )
    oauth_error(token_request(None, refresh), "invalid_dpop_proof")
    refresh = authenticated(
        fapi, key, grant_type="refresh_token", refresh_token=body["refresh_token"]
    )
    refreshed = token_request(None, refresh, HTTP_DPOP=holder.proof())
    assert refreshed.status_code == 200, refreshed.content
    assert refreshed.json()["token_type"] == "DPoP"


# --- §5.3.2.1 / §5.3.3: private_key_jwt only, no client secret ---------------------------------
def test_fapi2_5_3_3_a_client_secret_is_never_issued_nor_accepted(fapi):
    assert fapi.secret is None and fapi.client.secret_digest == ""
    response = token_request(
        None,
        {"grant_type": "client_credentials", "client_id": fapi.client_id, "client_secret": "x"},
    )
    oauth_error(response, "invalid_client", 401)


@pytest.mark.parametrize("aud", [ISSUER + "/par", ISSUER + "/token", [ISSUER]])
def test_fapi2_5_3_2_1_the_assertion_audience_is_the_issuer_string_only(fapi, key, aud):
    params = {"client_id": fapi.client_id, "response_type": "code", "scope": "openid",
              "redirect_uri": fapi.client.redirect_uris[0], "code_challenge": pkce_pair()[1],
              "code_challenge_method": "S256"}  # fmt: skip
    form = assertion_form(fapi.client_id, key, ALG, aud=aud)
    response = post_to_par(fapi, {**params, **form}, auth="key")
    oauth_error(response, "invalid_client", 401)
    assert par(fapi, key).status_code == 201  # aud: the issuer, a string


def test_other_key_clients_keep_every_audience_rfc7523_allows(db, key):
    client = Registered.of(
        ClientFactory(
            token_endpoint_auth_method=Client.AuthMethod.PRIVATE_KEY_JWT, jwks=public_jwks(key)
        )
    )
    params = {"client_id": client.client_id, "response_type": "code", "scope": "openid",
              "redirect_uri": client.client.redirect_uris[0]}  # fmt: skip
    form = assertion_form(client.client_id, key, ALG, aud=ISSUER + "/par")
    assert post_to_par(client, {**params, **form}, auth="key").status_code == 201


def test_fapi2_5_3_3_a_fapi2_client_must_use_private_key_jwt(db, key):
    client = Client(
        client_id="bank",
        name="Bank",
        redirect_uris=["https://bank.example/cb"],
        grant_types=["authorization_code"],
        jwks=public_jwks(key),
        fapi2=True,
    )
    with pytest.raises(ValidationError, match="private_key_jwt"):
        client.full_clean()


# --- §5.4: PS256, ES256 or Ed25519 only ---------------------------------------------------------
def test_fapi2_5_4_an_rs256_client_assertion_is_refused(db):
    rsa = new_key("RS256")
    client = Registered.of(
        ClientFactory(
            token_endpoint_auth_method=Client.AuthMethod.PRIVATE_KEY_JWT,
            jwks=public_jwks(rsa),
            fapi2=True,
        )
    )
    oauth_error(par(client, rsa, alg="RS256"), "invalid_client", 401)
    assert par(client, rsa, alg="PS256").status_code == 201  # the same key, an allowed alg


@pytest.mark.parametrize("alg", ["ES256", "Ed25519"])
def test_fapi2_5_4_es256_and_ed25519_sign_client_assertions(db, alg):
    signing = new_key(alg)
    client = Registered.of(
        ClientFactory(
            token_endpoint_auth_method=Client.AuthMethod.PRIVATE_KEY_JWT,
            jwks=public_jwks(signing),
            fapi2=True,
        )
    )
    assert par(client, signing, alg=alg).status_code == 201


def request_object(client: Registered) -> dict:
    return {
        "iss": client.client_id,
        "aud": ISSUER,
        "exp": int(time.time()) + 60,
        "client_id": client.client_id,
        "response_type": "code",
        "redirect_uri": client.client.redirect_uris[0],
        "scope": "openid",
        "code_challenge": pkce_pair()[1],
        "code_challenge_method": "S256",
    }


def test_fapi2_5_4_an_rs256_or_unsigned_request_object_is_refused(db):
    rsa = new_key("RS256")
    client = Registered.of(
        ClientFactory(
            token_endpoint_auth_method=Client.AuthMethod.PRIVATE_KEY_JWT,
            jwks=public_jwks(rsa),
            fapi2=True,
        )
    )
    for value in (sign(request_object(client), rsa, "RS256"), unsigned(request_object(client))):
        response = post_to_par(
            client,
            authenticated(client, rsa, "PS256", client_id=client.client_id, request=value,
                          response_type="code", scope="openid"),
            auth="key",
        )  # fmt: skip
        oauth_error(response, "invalid_request_object")
    signed = sign(request_object(client), rsa, "PS256")
    body = authenticated(client, rsa, "PS256", client_id=client.client_id, request=signed)
    assert post_to_par(client, body, auth="key").status_code == 201


def test_fapi2_5_4_a_registered_rs256_is_refused_at_save(fapi):
    fapi.client.token_endpoint_auth_signing_alg = "RS256"
    with pytest.raises(ValidationError, match="PS256, ES256 or Ed25519"):
        fapi.client.full_clean()


# --- §5.3.2.1: https redirect URIs --------------------------------------------------------------
def test_fapi2_5_3_2_1_redirect_uris_must_be_https(fapi):
    fapi.client.redirect_uris = ["http://127.0.0.1:8765/cb"]
    with pytest.raises(ValidationError, match="needs https"):
        fapi.client.full_clean()


# --- operators: create_client --profile fapi2, admin ---------------------------------------------
def test_create_client_profile_fapi2_makes_a_key_client_without_a_secret(db, key):
    out = StringIO()
    call_command(
        "create_client", "--name", "Bank", "--redirect-uri", "https://bank.example/cb",
        "--auth-method", "private_key_jwt", "--jwks", json.dumps(public_jwks(key)),
        "--profile", "fapi2", stdout=out,
    )  # fmt: skip
    printed = json.loads(out.getvalue())
    assert printed["fapi2"] is True and printed["client_secret"] is None
    made = Client.objects.get(client_id=printed["client_id"])
    assert made.fapi2 and made.uses_keys and not made.secret_digest


def test_create_client_profile_fapi2_refuses_a_secret_client(db):
    with pytest.raises(CommandError, match="private_key_jwt"):
        call_command(
            "create_client", "--name", "Bank", "--redirect-uri", "https://bank.example/cb",
            "--profile", "fapi2", stdout=StringIO(),
        )  # fmt: skip
    assert not Client.objects.exists()


def test_admin_shows_the_flag_and_refuses_a_fapi2_client_with_a_secret(staff_client, fapi):
    page = staff_client.get(f"/admin/tokens/client/{fapi.client.pk}/change/", secure=True)
    assert b'name="fapi2"' in page.content
    response = staff_client.post(ADD_URL, add_form(fapi2="on"), secure=True)
    errors = form_errors(response)
    assert "private_key_jwt" in " ".join(errors.get("token_endpoint_auth_method", [])), errors
    assert "FAPI 2.0 needs https" in " ".join(errors.get("redirect_uris", [])), errors
    assert not Client.objects.filter(fapi2=True).exclude(pk=fapi.client.pk).exists()


# --- registration (RFC 7592): no standard metadata names a profile; an update cannot leave it ---
def test_rfc7592_2_2_a_fapi2_client_cannot_update_itself_out_of_the_profile(initial_token):  # noqa: F811
    metadata = {**WEB_APP, "token_endpoint_auth_method": "private_key_jwt", "jwks": PUBLIC_JWKS}
    registered = register(metadata, initial_token)
    assert registered.status_code == 201, registered.content
    body = registered.json()
    Client.objects.filter(client_id=body["client_id"]).update(fapi2=True)  # the operator's flag

    downgrade = update_of(body, token_endpoint_auth_method="client_secret_basic", jwks=None)
    downgrade = {k: v for k, v in downgrade.items() if v is not None}
    response = manage(
        "PUT", body["registration_client_uri"], body["registration_access_token"], downgrade
    )

    assert response.status_code == 400, response.content
    assert response.json()["error"] == "invalid_client_metadata"
    client = Client.objects.get(client_id=body["client_id"])
    assert client.fapi2 and client.uses_keys and client.secret_digest == ""
