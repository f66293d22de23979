"""Interoperability: Authlib's own client library, unmodified, against the live server.

OAuth2Session does what a third-party application would: the code flow with PKCE (S256), then
refresh, revoke, introspect, and the client credentials grant, with client_secret_basic (its
default). Nothing here knows how the server is built; only the person's part of the code flow
(sign in, allow) is played by a plain ``requests.Session``.
"""

import html
import re
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from authlib.common.security import generate_token
from authlib.integrations.base_client import OAuthError
from authlib.integrations.requests_client import OAuth2Session

from tests.factories import PASSWORD, UserFactory
from tests.tokens.conftest import REDIRECT, Registered

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _cookies_over_plain_http(settings):
    # The live server speaks plain HTTP, and requests never sends a Secure cookie over it
    # (Chromium treats localhost as secure; http.cookiejar does not): without this the sign-in
    # form would fail its CSRF check and the session would not stick.
    settings.CSRF_COOKIE_SECURE = False
    settings.SESSION_COOKIE_SECURE = False


def hidden(page: requests.Response, name: str) -> str:
    match = re.search(rf'name="{name}" value="([^"]*)"', page.text)
    assert match, f"no {name} on {page.url}"
    return html.unescape(match.group(1))


def person_allows(live_server, authorization_url: str, username: str) -> str:
    """The person's browser: open the authorization URL, sign in, press Allow. Returns the
    Location the server sends the browser to (the client's redirect URI), without following it."""
    with requests.Session() as browser:
        login = browser.get(authorization_url, timeout=10)
        assert login.status_code == 200
        assert login.url.startswith(f"{live_server.url}/login/?next=")
        consent = browser.post(
            f"{live_server.url}/login/",
            data={
                "csrfmiddlewaretoken": hidden(login, "csrfmiddlewaretoken"),
                "next": hidden(login, "next"),
                "username": username,
                "password": PASSWORD,
            },
            headers={"Referer": login.url},
            timeout=10,
        )
        assert consent.status_code == 200, consent.text[-500:]
        assert consent.url == authorization_url  # back from the sign-in page to the same request
        assert 'Allow <span class="client-name">Example App</span>' in consent.text
        answer = browser.post(
            consent.url,
            data={
                "csrfmiddlewaretoken": hidden(consent, "csrfmiddlewaretoken"),
                "decision": "allow",
            },
            headers={"Referer": consent.url},
            allow_redirects=False,
            timeout=10,
        )
        assert answer.status_code == 302, answer.text[-500:]
        return answer.headers["Location"]


def test_authlib_client_code_flow_refresh_revoke_introspect(
    live_server, confidential: Registered, settings
):
    user = UserFactory()
    token_url = f"{live_server.url}/token"
    client = OAuth2Session(
        confidential.client_id,
        confidential.secret,
        scope="openid profile",
        redirect_uri=REDIRECT,
        code_challenge_method="S256",
        default_timeout=10,
    )
    verifier = generate_token(48)

    # Authorization code with PKCE.
    url, state = client.create_authorization_url(
        f"{live_server.url}/authorize", code_verifier=verifier
    )
    assert "code_challenge_method=S256" in url
    location = person_allows(live_server, url, user.username)
    assert location.startswith(REDIRECT + "?")
    answer = {name: values[0] for name, values in parse_qs(urlsplit(location).query).items()}
    assert answer["state"] == state
    assert answer["iss"] == settings.ISSUER

    token = client.fetch_token(token_url, authorization_response=location, code_verifier=verifier)
    assert token["token_type"] == "Bearer"
    assert token["scope"] == "openid profile"
    assert token["access_token"] and token["refresh_token"]
    assert token["expires_in"] == confidential.client.access_token_lifetime
    first_refresh_token = token["refresh_token"]

    # Refresh: a new access token and a new refresh token (rotation), same scope.
    refreshed = client.refresh_token(token_url)
    assert refreshed["token_type"] == "Bearer"
    assert refreshed["scope"] == "openid profile"
    assert refreshed["access_token"] != token["access_token"]
    assert refreshed["refresh_token"] != first_refresh_token
    refresh_token, access_token = refreshed["refresh_token"], refreshed["access_token"]

    # Introspection (RFC 7662), the same confidential client authenticating.
    introspect_url = f"{live_server.url}/introspect"
    about = client.introspect_token(introspect_url, token=access_token).json()
    assert about["active"] is True
    assert about["client_id"] == confidential.client_id
    assert about["sub"] == str(user.pk)
    assert about["scope"] == "openid profile"
    about = client.introspect_token(
        introspect_url, token=refresh_token, token_type_hint="refresh_token"
    ).json()
    assert about["active"] is True
    assert about["token_type"] == "refresh_token"

    # Revocation (RFC 7009) of the refresh token: it, and the access token issued with it, die.
    revoked = client.revoke_token(
        f"{live_server.url}/revoke", token=refresh_token, token_type_hint="refresh_token"
    )
    assert revoked.status_code == 200, revoked.text
    for value in (refresh_token, access_token):
        assert client.introspect_token(introspect_url, token=value).json() == {"active": False}
    with pytest.raises(OAuthError) as refused:
        client.refresh_token(token_url, refresh_token=refresh_token)
    assert refused.value.error == "invalid_grant"


def test_authlib_client_credentials(live_server, confidential: Registered):
    service = OAuth2Session(confidential.client_id, confidential.secret, default_timeout=10)

    token = service.fetch_token(f"{live_server.url}/token", grant_type="client_credentials")

    assert token["token_type"] == "Bearer"
    assert token["access_token"]
    assert "refresh_token" not in token
    about = service.introspect_token(
        f"{live_server.url}/introspect", token=token["access_token"]
    ).json()
    assert about["active"] is True
    assert about["client_id"] == about["sub"] == confidential.client_id
