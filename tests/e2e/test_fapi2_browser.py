"""Interoperability for the FAPI 2.0 profile (issue 14, "Done means"): Authlib's own client
library (OAuth2Session with its PrivateKeyJWT client authentication, unmodified) pushes the
authorization request (RFC 9126) signed in as a fapi2 client, a real Chromium signs in and
consents, and the client exchanges the code with PKCE and a DPoP proof made here with joserfc
(RFC 9449), refreshes with DPoP and calls userinfo with ``Authorization: DPoP``. The tokens are
checked here: cnf.jkt is the RFC 7638 thumbprint computed by hand. Against the live server."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc7523 import PrivateKeyJWT
from django.conf import settings
from playwright.sync_api import expect

from tests.e2e.test_authorize_browser import (  # noqa: F401 - browsing is a fixture
    APP_NAME,
    REDIRECT,
    browsing,
    sign_in_when_asked,
)
from tests.factories import UserFactory
from tests.tokens.client_side import new_key, public_jwks
from tests.tokens.dpop_client import TOKEN_URL, USERINFO_URL, Holder, claims_of
from tokens.clients import create_client
from tokens.models import Client

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

ALG = "PS256"  # FAPI 2.0 §5.4: not RS256


def test_fapi2_authlib_client_par_browser_code_with_dpop_refresh_and_userinfo(
    browsing,  # noqa: F811 - the fixture imported above
    live_server,
):
    user = UserFactory()
    key = new_key(ALG)
    client, secret = create_client(
        name=APP_NAME,
        redirect_uris=[REDIRECT],
        scopes=["openid", "profile", "offline_access"],
        token_endpoint_auth_method=Client.AuthMethod.PRIVATE_KEY_JWT,
        jwks=public_jwks(key),
        fapi2=True,
    )
    assert secret is None  # §5.3.3: a key, never a secret
    # RFC 7523 §3 / FAPI 2.0: the assertion's audience is the issuer identifier.
    auth = PrivateKeyJWT(settings.ISSUER, alg=ALG, headers={"kid": key.kid})
    session = OAuth2Session(
        client.client_id,
        key,
        scope="openid profile offline_access",
        redirect_uri=REDIRECT,
        code_challenge_method="S256",
        token_endpoint_auth_method=auth,
        default_timeout=10,
    )
    verifier = generate_token(48)
    url, state = session.create_authorization_url(
        f"{live_server.url}/authorize", code_verifier=verifier, nonce=generate_token(16)
    )
    pushed = session.post(
        f"{live_server.url}/par",
        data=dict(parse_qsl(urlsplit(url).query)),
        auth=session.client_auth(session.token_endpoint_auth_method),
        withhold_token=True,
    )
    assert pushed.status_code == 201, pushed.text

    # §5.3.2.1: a plain authorization request of this client is refused, to the client, before
    # anyone is asked to sign in.
    page = browsing.page
    page.goto(url.replace(live_server.url, ""))
    refused = browsing.callback()
    assert refused["error"] == "invalid_request" and "code" not in refused
    browsing.visited.clear()

    page.goto(
        "/authorize?"
        + urlencode({"client_id": client.client_id, "request_uri": pushed.json()["request_uri"]})
    )
    sign_in_when_asked(page, live_server, user.username)
    expect(
        page.get_by_role("heading", name=f"Allow {APP_NAME} to use your account?")
    ).to_be_visible()
    page.get_by_role("button", name="Allow", exact=True).click()
    answer = browsing.callback()
    assert answer["state"] == state and answer["iss"] == settings.ISSUER  # RFC 9207

    holder = Holder()  # the client's DPoP key, its proofs made with joserfc
    token = session.fetch_token(
        f"{live_server.url}/token",
        authorization_response=f"{REDIRECT}?{urlencode(answer)}",
        code_verifier=verifier,
        headers={"DPoP": holder.proof("POST", TOKEN_URL)},
    )
    assert token["token_type"] == "DPoP"
    access = claims_of(token["access_token"])
    assert access["cnf"] == {"jkt": holder.thumbprint}
    assert access["client_id"] == client.client_id and access["iss"] == settings.ISSUER
    id_token = claims_of(token["id_token"])
    assert id_token["aud"] == client.client_id and id_token["sub"] == access["sub"]

    refreshed = session.refresh_token(
        f"{live_server.url}/token",
        refresh_token=token["refresh_token"],
        headers={"DPoP": holder.proof("POST", TOKEN_URL)},
    )
    assert refreshed["token_type"] == "DPoP"
    assert claims_of(refreshed["access_token"])["cnf"] == {"jkt": holder.thumbprint}

    proof = holder.proof("GET", USERINFO_URL, access_token=refreshed["access_token"])
    userinfo = session.get(
        f"{live_server.url}/userinfo",
        headers={"Authorization": f"DPoP {refreshed['access_token']}", "DPoP": proof},
        withhold_token=True,
    )
    assert userinfo.status_code == 200, userinfo.text
    assert userinfo.json()["sub"] == access["sub"]
    # RFC 9449 §7.1: the bound token as a bearer token is refused.
    as_bearer = session.get(
        f"{live_server.url}/userinfo",
        headers={"Authorization": f"Bearer {refreshed['access_token']}"},
        withhold_token=True,
    )
    assert as_bearer.status_code == 401
