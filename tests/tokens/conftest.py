"""Helpers for driving the OAuth endpoints over HTTP, as a client application would."""

import base64
import hashlib
import secrets
from datetime import timedelta
from urllib.parse import parse_qs, urlencode, urlsplit

from django.db.models import F
from django.test import Client as Browser

# The fixtures (confidential, public) are in tests/conftest.py, for the whole suite.
from tests.factories import REDIRECT, Registered
from tokens.models import MAX_REFRESH_RETRY_WINDOW, RefreshToken

__all__ = ["REDIRECT", "Registered"]


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    )
    return verifier, challenge


def query(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def authorize_url(
    client: Registered,
    *,
    redirect_uri=None,
    scope="openid profile",
    state="xyz",
    challenge=None,
    **extra,
) -> str:
    params = {
        "response_type": "code",
        "client_id": client.client_id,
        "scope": scope,
        "state": state,
    }
    params["redirect_uri"] = redirect_uri or client.client.redirect_uris[0]
    if challenge:
        params.update(code_challenge=challenge, code_challenge_method="S256")
    params.update(extra)
    return "/authorize?" + urlencode({k: v for k, v in params.items() if v is not None})


def get_code(browser: Browser, client: Registered, **kwargs) -> tuple[str, str | None]:
    """Run the browser side of the code flow: authorize, allow on the consent page if asked.
    Returns (code, verifier)."""
    verifier, challenge = pkce_pair()
    url = authorize_url(client, challenge=challenge, **kwargs)
    response = browser.get(url, secure=True)
    if response.status_code == 200:  # the consent page
        response = browser.post(url, {"decision": "allow"}, secure=True)
    assert response.status_code == 302, response.content.decode()[-900:]
    params = query(response["Location"])
    assert "code" in params, params
    return params["code"], verifier


def token_request(client: Registered | None, data: dict, *, auth: str = "basic", **extra):
    body = dict(data)
    headers = dict(extra)
    if client is not None:
        if auth == "basic":
            headers.update(client.basic())
        elif auth == "post":
            body.update(client_id=client.client_id, client_secret=client.secret)
        elif auth == "none":
            body["client_id"] = client.client_id
    return Browser().post(
        "/token",
        urlencode(body),
        content_type="application/x-www-form-urlencoded",
        secure=True,
        **headers,
    )


def exchange(
    client: Registered, code: str, verifier: str | None, *, auth="basic", redirect_uri=None, **extra
):
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri or client.client.redirect_uris[0],
    }
    if verifier:
        data["code_verifier"] = verifier
    data.update(extra)
    return token_request(client, data, auth=auth)


def dpop_code_flow(browser: Browser, client: Registered, proof: str, scope="openid profile"):
    """A public client's code flow whose exchange carries a DPoP proof (RFC 9449 §5): its access
    and refresh tokens are bound to the proof's key."""
    code, verifier = get_code(browser, client, scope=scope)
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": client.client.redirect_uris[0],
        "code_verifier": verifier,
    }
    response = token_request(client, data, auth="none", HTTP_DPOP=proof)
    assert response.status_code == 200, response.content
    assert response.json()["token_type"] == "DPoP"
    return response.json()


def refresh(client: Registered, refresh_token: str, *, auth="basic", **extra):
    return token_request(
        client, {"grant_type": "refresh_token", "refresh_token": refresh_token, **extra}, auth=auth
    )


def endpoint(path: str, client: Registered | None, data: dict, *, auth="basic"):
    body, headers = dict(data), {}
    if client is not None and auth == "basic":
        headers.update(client.basic())
    elif client is not None and auth == "none":
        body["client_id"] = client.client_id
    return Browser().post(
        path,
        urlencode(body),
        content_type="application/x-www-form-urlencoded",
        secure=True,
        **headers,
    )


def past_the_retry_window(seconds: int = MAX_REFRESH_RETRY_WINDOW + 1) -> None:
    """Move every refresh token's issue time back: the retry window of whatever rotated into it
    (tokens/refresh_tokens.py) has passed, so presenting the rotated token again is a replay."""
    RefreshToken.objects.update(created=F("created") - timedelta(seconds=seconds))
