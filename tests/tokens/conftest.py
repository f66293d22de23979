"""Helpers for driving the OAuth endpoints over HTTP, as a client application would."""

import base64
import hashlib
import secrets
from dataclasses import dataclass
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from django.test import Client as Browser

from tokens import keys
from tokens.clients import create_client
from tokens.oauth.server import get_server

REDIRECT = "https://app.example.com/callback"


@pytest.fixture(autouse=True)
def _fresh_server_and_keys():
    get_server.cache_clear()
    keys.forget()
    yield
    keys.forget()


@dataclass
class Registered:
    client: object
    secret: str | None

    @property
    def client_id(self) -> str:
        return self.client.client_id

    def basic(self) -> dict:
        raw = f"{self.client_id}:{self.secret}".encode()
        return {"HTTP_AUTHORIZATION": "Basic " + base64.b64encode(raw).decode()}


@pytest.fixture
def confidential(db) -> Registered:
    client, secret = create_client(
        name="Example App",
        redirect_uris=[REDIRECT],
        grant_types=["authorization_code", "refresh_token", "client_credentials"],
        scopes=["openid", "profile", "email", "offline_access"],
    )
    return Registered(client, secret)


@pytest.fixture
def public(db) -> Registered:
    client, secret = create_client(
        name="Example SPA",
        redirect_uris=["http://127.0.0.1:8765/cb"],
        public=True,
        scopes=["openid", "profile"],
    )
    return Registered(client, secret)


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
