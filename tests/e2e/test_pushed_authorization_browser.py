"""Interoperability for pushed authorization requests (RFC 9126): Authlib's own client library
(OAuth2Session, unmodified) pushes the request with its client authentication, a real Chromium
signs in and consents with only client_id and request_uri in its address bar, and the client
exchanges the code with its PKCE verifier. Against the live server, nothing stubbed."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session
from django.conf import settings
from playwright.sync_api import expect

from tests.e2e.test_authorize_browser import (  # noqa: F401 - browsing is a fixture
    REDIRECT,
    browsing,
    on_consent_page,
    register,
    sign_in_when_asked,
)
from tests.factories import UserFactory

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_rfc9126_authlib_client_pushes_the_browser_signs_in_and_the_code_exchanges(
    browsing,  # noqa: F811 - the fixture imported above
    live_server,
):
    user = UserFactory()
    client, secret = register()
    session = OAuth2Session(
        client.client_id,
        secret,
        scope="openid profile",
        redirect_uri=REDIRECT,
        code_challenge_method="S256",
        default_timeout=10,
    )
    verifier = generate_token(48)
    # Authlib builds the authorization request; the client pushes its parameters (§2.1) with
    # its token-endpoint authentication (client_secret_basic) instead of sending them along.
    url, state = session.create_authorization_url(
        f"{live_server.url}/authorize", code_verifier=verifier, nonce=generate_token(16)
    )
    parameters = dict(parse_qsl(urlsplit(url).query))
    pushed = session.post(
        f"{live_server.url}/par",
        data=parameters,
        auth=session.client_auth(session.token_endpoint_auth_method),
        withhold_token=True,
    )
    assert pushed.status_code == 201, pushed.text
    request_uri = pushed.json()["request_uri"]
    assert request_uri.startswith("urn:ietf:params:oauth:request_uri:")

    page = browsing.page
    authorize = "/authorize?" + urlencode(
        {"client_id": client.client_id, "request_uri": request_uri}
    )
    page.goto(authorize)
    sign_in_when_asked(page, live_server, user.username)
    on_consent_page(page)
    assert state not in page.url and "code_challenge" not in page.url  # §1: not in the browser
    page.get_by_role("button", name="Allow", exact=True).click()
    answer = browsing.callback()
    assert answer["state"] == state
    assert answer["iss"] == settings.ISSUER

    callback = f"{REDIRECT}?{urlencode(answer)}"
    token = session.fetch_token(
        f"{live_server.url}/token", authorization_response=callback, code_verifier=verifier
    )
    assert token["token_type"] == "Bearer"
    assert token["scope"] == "openid profile"
    assert token["access_token"] and token["id_token"]

    # §4: spent. The same browser opening it again gets an error page and goes nowhere.
    response = page.goto(authorize)
    assert response is not None and response.status == 400
    expect(page.get_by_text("already been used")).to_be_visible()
    assert len(browsing.visited) == 1
