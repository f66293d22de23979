"""Interoperability as an OpenID Connect relying party sees it: Authlib's client library against
the live server, with a real Chromium playing the person.

The relying party knows nothing but the issuer's URL. It reads the discovery document (and
checks it with Authlib's own metadata validation), sends the browser to the authorization
endpoint with a nonce and PKCE (S256), redeems the code with ``OAuth2Session``, validates the ID
token the way Authlib's OIDC clients do (signature against ``jwks_uri`` with joserfc, then
``CodeIDToken``: iss, aud, exp, iat, nonce, azp, at_hash), reads ``userinfo_endpoint`` with the
access token, and signs the person out through ``end_session_endpoint`` (RP-Initiated Logout).

The issuer is the live server here (``settings.ISSUER = live_server.url``), so the discovery
document, the ``iss`` of every token and every advertised endpoint agree with the URLs the
relying party really uses. The relying party's own pages (https://rp.example.test) do not exist:
the browser's requests to them are answered inside the browser through the DevTools protocol, as
in test_authorize_browser.py, and recorded, so a test sees exactly where the browser was sent.
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from authlib.common.security import generate_token
from authlib.common.urls import add_params_to_uri
from authlib.integrations.base_client import OAuthError
from authlib.integrations.requests_client import OAuth2Session
from authlib.oidc import discovery, rpinitiated
from authlib.oidc.core import CodeIDToken, UserInfo
from joserfc import jwt
from joserfc.errors import InvalidClaimError
from joserfc.jwk import KeySet
from playwright.sync_api import ConsoleMessage, Page, Response, expect

from accounts.models import UserSession
from tests.e2e.conftest import DESKTOP_CHROME
from tests.factories import PASSWORD, UserFactory
from tokens import keys
from tokens.clients import create_client
from tokens.models import Client
from tokens.oauth.server import get_server

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

RP = "https://rp.example.test"
REDIRECT = f"{RP}/callback"
POST_LOGOUT = f"{RP}/signed-out"
RP_NAME = "Example Relying Party"
RP_PAGE = "<!doctype html><title>Example Relying Party</title><h1>Back at the relying party</h1>"
SCOPE = "openid profile email"
LEEWAY = 5  # seconds of clock skew the relying party tolerates (one clock here, but still)


@pytest.fixture(autouse=True)
def _issuer_is_the_live_server(settings, live_server):
    """The issuer is where the relying party finds the provider: the live server itself.
    Everything reads ISSUER per request; the Authlib server and the key cache are rebuilt (each
    transactional test flushes the signing keys too)."""
    settings.ISSUER = live_server.url
    get_server.cache_clear()
    keys.forget()
    yield
    get_server.cache_clear()
    keys.forget()


# --- the relying party's browser --------------------------------------------------------------
class FormActionBlocked(AssertionError):
    """Chromium refused to follow a redirect of a form submission (CSP form-action)."""


@dataclass
class RelyingPartyBrowser:
    """A page on the live server whose https:// requests (the relying party's pages) are answered
    in the browser with ``RP_PAGE``; each page the browser opens there is kept in ``visited``."""

    page: Page
    visited: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)

    def csp_violations(self) -> list[str]:
        return [line for line in self.console if "Content Security Policy" in line]

    def lands_on_the_rp(self, action: Callable[[], object], timeout: float = 10) -> str:
        """Do ``action`` (a navigation, a click) and return the one relying-party URL the browser
        ends up on; fail at once if CSP stops it on the way."""
        before = len(self.visited)
        action()
        deadline = time.monotonic() + timeout
        while len(self.visited) == before and time.monotonic() < deadline:
            if violations := self.csp_violations():
                raise FormActionBlocked(f"stuck on {self.page.url}: {violations}")
            self.page.wait_for_timeout(100)  # lets Playwright deliver console and CDP events
        assert len(self.visited) == before + 1, (self.page.url, self.visited[before:])
        url = self.visited[-1]
        self.page.wait_for_url(url)
        expect(self.page.get_by_role("heading", name="Back at the relying party")).to_be_visible()
        assert self.csp_violations() == []
        return url


@pytest.fixture
def browsing(new_context) -> RelyingPartyBrowser:
    """Fetch-domain interception, not ``page.route``: the relying party's URL is always the
    target of a redirect, which ``page.route`` does not see (test_authorize_browser.py)."""
    context = new_context(DESKTOP_CHROME)
    page = context.new_page()
    browser = RelyingPartyBrowser(page)
    devtools = context.new_cdp_session(page)

    def the_relying_party(event: dict) -> None:
        document = event["resourceType"] == "Document"
        if document:
            browser.visited.append(event["request"]["url"])
        devtools.send(
            "Fetch.fulfillRequest",
            {
                "requestId": event["requestId"],
                "responseCode": 200 if document else 404,
                "responseHeaders": [{"name": "Content-Type", "value": "text/html; charset=utf-8"}],
                "body": base64.b64encode(RP_PAGE.encode() if document else b"").decode(),
            },
        )

    def console(message: ConsoleMessage) -> None:
        browser.console.append(f"{message.type}: {message.text.strip()}")

    devtools.on("Fetch.requestPaused", the_relying_party)
    devtools.send("Fetch.enable", {"patterns": [{"urlPattern": "https://*"}]})
    page.on("console", console)
    return browser


# --- the relying party ------------------------------------------------------------------------
@dataclass
class Login:
    """One authentication request: what the relying party keeps until the browser is back."""

    url: str
    state: str
    nonce: str
    verifier: str
    max_age: str | None = None


@dataclass
class RelyingParty:
    issuer: str
    metadata: dict
    client_id: str
    secret: str
    oauth: OAuth2Session = field(init=False)

    def __post_init__(self) -> None:
        self.oauth = self.new_session()

    def new_session(self) -> OAuth2Session:
        return OAuth2Session(
            self.client_id,
            self.secret,
            scope=SCOPE,
            redirect_uri=REDIRECT,
            code_challenge_method="S256",
            default_timeout=10,
        )

    def begin(self, **extra: str) -> Login:
        """An authentication request, fresh state, nonce and PKCE verifier each time."""
        nonce, verifier = generate_token(24), generate_token(48)
        url, state = self.oauth.create_authorization_url(
            self.metadata["authorization_endpoint"], nonce=nonce, code_verifier=verifier, **extra
        )
        assert "code_challenge_method=S256" in url and "nonce=" in url
        return Login(url, state, nonce, verifier, extra.get("max_age"))

    def answer(self, callback: str, login: Login) -> dict[str, str]:
        """The authorization response on the redirect URI, its issuer checked (RFC 9207)."""
        parts = urlsplit(callback)
        assert f"{parts.scheme}://{parts.netloc}{parts.path}" == REDIRECT
        answer = {name: values[0] for name, values in parse_qs(parts.query).items()}
        assert answer["state"] == login.state
        assert answer["iss"] == self.issuer
        return answer

    def finish(self, callback: str, login: Login) -> tuple[dict, CodeIDToken]:
        """Redeem the code (Authlib checks the state again) and validate the ID token."""
        assert set(self.answer(callback, login)) == {"code", "state", "iss"}
        token = self.oauth.fetch_token(
            self.metadata["token_endpoint"],
            authorization_response=callback,
            state=login.state,
            code_verifier=login.verifier,
        )
        assert token["token_type"] == "Bearer"
        assert token["scope"] == SCOPE
        assert token["access_token"] and token["refresh_token"] and token["id_token"]
        return token, self.id_token(token, login)

    def jwks(self) -> KeySet:
        response = requests.get(self.metadata["jwks_uri"], timeout=10)
        assert response.status_code == 200, response.text
        return KeySet.import_key_set(response.json())

    def id_token(self, token: dict, login: Login, **params) -> CodeIDToken:
        """What Authlib's OpenIDMixin.parse_id_token does, with every claim option spelled out:
        the signature against the published keys, then OIDC Core §3.1.3.7 through CodeIDToken."""
        decoded = jwt.decode(
            token["id_token"],
            self.jwks(),
            algorithms=self.metadata["id_token_signing_alg_values_supported"],
        )
        claims = CodeIDToken(
            decoded.claims,
            decoded.header,
            {
                "iss": {"essential": True, "value": self.issuer},
                "aud": {"essential": True, "value": self.client_id},
                "sub": {"essential": True},
                "nonce": {"essential": True, "value": login.nonce},
                "at_hash": {"essential": True},
                "auth_time": {"essential": True},
            },
            {
                "nonce": login.nonce,
                "client_id": self.client_id,
                "access_token": token["access_token"],
                **({"max_age": login.max_age} if login.max_age is not None else {}),
                **params,
            },
        )
        claims.validate(leeway=LEEWAY)
        assert decoded.header["alg"] == "RS256"  # the client's id_token_signed_response_alg
        assert decoded.header["kid"] in {key.kid for key in self.jwks()}
        assert claims["azp"] == self.client_id
        assert claims["iat"] <= time.time() + LEEWAY < claims["exp"]
        return claims

    def logout_url(self, id_token: str, state: str) -> str:
        """What Authlib's OpenIDMixin.create_logout_url builds."""
        return add_params_to_uri(
            self.metadata["end_session_endpoint"],
            {"id_token_hint": id_token, "post_logout_redirect_uri": POST_LOGOUT, "state": state},
        )


@pytest.fixture
def rp(live_server) -> RelyingParty:
    """Discovery, then a confidential client registered with the provider."""
    response = requests.get(f"{live_server.url}/.well-known/openid-configuration", timeout=10)
    assert response.status_code == 200, response.text
    metadata = response.json()
    # OpenID Connect Discovery §4.3: the issuer is exactly the URL the document was fetched from.
    assert metadata["issuer"] == live_server.url
    discovery.OpenIDProviderMetadata(metadata).validate(
        metadata_classes=[rpinitiated.OpenIDProviderMetadata]
    )
    for name in ("authorization", "token", "userinfo", "end_session"):
        assert metadata[f"{name}_endpoint"].startswith(live_server.url + "/")
    assert metadata["jwks_uri"].startswith(live_server.url + "/")
    assert "code" in metadata["response_types_supported"]
    assert "S256" in metadata["code_challenge_methods_supported"]
    assert "RS256" in metadata["id_token_signing_alg_values_supported"]
    assert "client_secret_basic" in metadata["token_endpoint_auth_methods_supported"]
    assert metadata["authorization_response_iss_parameter_supported"] is True
    assert {"none", "login"} <= set(metadata["prompt_values_supported"])

    client, secret = create_client(
        name=RP_NAME,
        redirect_uris=[REDIRECT],
        post_logout_redirect_uris=[POST_LOGOUT],
        scopes=["openid", "profile", "email"],
        consent=Client.Consent.REMEMBER,
    )
    return RelyingParty(live_server.url, metadata, client.client_id, secret)


# --- the person's part ------------------------------------------------------------------------
def signs_in_and_allows(browsing: RelyingPartyBrowser, live_server, login: Login, user) -> str:
    """No session yet: the sign-in page, then the consent page; returns the callback URL."""
    page = browsing.page
    page.goto(login.url)
    expect(page).to_have_url(re.compile("^" + re.escape(f"{live_server.url}/login/?next=")))
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.get_by_label("Username or email", exact=True).fill(user.username)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(
        page.get_by_role("heading", name=f"Allow {RP_NAME} to use your account?")
    ).to_be_visible()
    expect(page.locator("ul.scopes li")).to_have_count(3)
    expect(page.get_by_text("you will go back to rp.example.test")).to_be_visible()
    assert browsing.visited == []
    return browsing.lands_on_the_rp(
        lambda: page.get_by_role("button", name="Allow", exact=True).click()
    )


def confirms_it_is_them(browsing: RelyingPartyBrowser, live_server, login: Login, user) -> None:
    """prompt=login or max_age with a session: the sign-in page again, the name filled in."""
    page = browsing.page
    page.goto(login.url)
    expect(page).to_have_url(re.compile("^" + re.escape(f"{live_server.url}/login/?")))
    expect(page.get_by_role("heading", name="Confirm it is you")).to_be_visible()
    expect(page.get_by_label("Username or email", exact=True)).to_have_value(user.username)
    assert len(browsing.visited) == 1  # only the first sign-in's callback so far


def straight_back(browsing: RelyingPartyBrowser, url: str) -> str:
    """Open ``url``; the browser must go to the relying party in one redirect, no page shown."""
    responses: list[Response] = []
    callback = browsing.lands_on_the_rp(lambda: responses.append(browsing.page.goto(url)))
    final = responses[0]
    assert final is not None and final.url == callback
    first = final.request.redirected_from
    assert first is not None and first.url == url
    assert first.redirected_from is None  # nothing in between: no sign-in, no consent page
    return callback


def signed_out(page: Page, live_server) -> None:
    page.goto("/account/sessions/")
    expect(page).to_have_url(
        re.compile("^" + re.escape(f"{live_server.url}/login/?next=/account/sessions/"))
    )
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()


def logs_out(browsing: RelyingPartyBrowser, rp: RelyingParty, id_token: str) -> None:
    """RP-Initiated Logout with id_token_hint: no question asked, back on the post-logout URI."""
    state = generate_token(16)
    landed = browsing.lands_on_the_rp(lambda: browsing.page.goto(rp.logout_url(id_token, state)))
    assert landed == f"{POST_LOGOUT}?state={state}"


# --- the tests --------------------------------------------------------------------------------
def test_discovery_login_id_token_userinfo_and_rp_initiated_logout(browsing, rp, live_server):
    user = UserFactory()
    login = rp.begin()

    callback = signs_in_and_allows(browsing, live_server, login, user)
    token, claims = rp.finish(callback, login)

    assert claims["sub"] == str(user.pk)
    assert claims["nonce"] == login.nonce
    assert claims["at_hash"]  # and CodeIDToken checked it against the access token
    assert abs(claims["auth_time"] - time.time()) < 60
    assert claims["sid"] == UserSession.objects.active().get(user=user).sid
    assert (claims["name"], claims["email"]) == ("Ada Lovelace", user.email)
    # The checks bite: another nonce, or another access token, and validation fails.
    with pytest.raises(InvalidClaimError, match="nonce"):
        rp.id_token(token, Login(login.url, login.state, "another-nonce", login.verifier))
    with pytest.raises(InvalidClaimError, match="at_hash"):
        rp.id_token({**token, "access_token": token["access_token"] + "x"}, login)

    response = rp.oauth.get(rp.metadata["userinfo_endpoint"])
    assert response.status_code == 200, response.text
    info = UserInfo(response.json())
    assert info.sub == claims["sub"]
    assert info.email == user.email and info.email_verified is not None
    assert info.name == "Ada Lovelace"
    assert info.preferred_username == user.username

    logs_out(browsing, rp, token["id_token"])

    signed_out(browsing.page, live_server)
    assert UserSession.objects.get(user=user).revoked_at is not None
    # What the session gave the relying party went with it.
    response = rp.oauth.get(rp.metadata["userinfo_endpoint"])
    assert response.status_code == 401, response.text
    with pytest.raises(OAuthError) as refused:
        rp.oauth.refresh_token(rp.metadata["token_endpoint"])
    assert refused.value.error == "invalid_grant"


def test_prompt_none_answers_without_a_page_and_login_required_after_logout(
    browsing, rp, live_server
):
    user = UserFactory()
    first_login = rp.begin()
    first_token, first = rp.finish(
        signs_in_and_allows(browsing, live_server, first_login, user), first_login
    )

    # Signed in, consent remembered: prompt=none answers at once with a code.
    silent = rp.begin(prompt="none")
    _, claims = rp.finish(straight_back(browsing, silent.url), silent)
    assert claims["sub"] == first["sub"]
    assert claims["sid"] == first["sid"]
    assert claims["auth_time"] == first["auth_time"]  # nobody authenticated again
    assert claims["nonce"] == silent.nonce != first_login.nonce

    logs_out(browsing, rp, first_token["id_token"])

    # Signed out: prompt=none cannot sign anyone in, and says so to the relying party.
    after = rp.begin(prompt="none")
    answer = rp.answer(straight_back(browsing, after.url), after)
    assert answer["error"] == "login_required"
    assert "code" not in answer
    signed_out(browsing.page, live_server)


@pytest.mark.parametrize("ask", [{"prompt": "login"}, {"max_age": "0"}], ids=["login", "max_age"])
def test_reauthentication_asks_for_the_password_and_moves_auth_time(browsing, rp, live_server, ask):
    user = UserFactory()
    first_login = rp.begin()
    _, first = rp.finish(signs_in_and_allows(browsing, live_server, first_login, user), first_login)
    while int(time.time()) <= first["auth_time"]:  # auth_time counts whole seconds
        browsing.page.wait_for_timeout(100)

    login = rp.begin(**ask)
    confirms_it_is_them(browsing, live_server, login, user)
    browsing.page.get_by_label("Password", exact=True).fill(PASSWORD)
    started = int(time.time())
    callback = browsing.lands_on_the_rp(
        lambda: browsing.page.get_by_role("button", name="Sign in", exact=True).click()
    )
    _, claims = rp.finish(callback, login)

    assert claims["sub"] == first["sub"]
    assert claims["sid"] == first["sid"]  # the same browser session, authenticated again
    assert claims["auth_time"] > first["auth_time"]
    assert claims["auth_time"] >= started


def test_reauthentication_refuses_a_wrong_password(browsing, rp, live_server):
    user = UserFactory()
    first_login = rp.begin()
    rp.finish(signs_in_and_allows(browsing, live_server, first_login, user), first_login)

    login = rp.begin(prompt="login")
    confirms_it_is_them(browsing, live_server, login, user)
    page = browsing.page
    page.get_by_label("Password", exact=True).fill("not the password")
    with page.expect_navigation():
        page.get_by_role("button", name="Sign in", exact=True).click()

    assert len(browsing.visited) == 1, browsing.visited  # not back at the relying party
    expect(page).to_have_url(re.compile("^" + re.escape(f"{live_server.url}/login/")))
    expect(page.get_by_role("alert")).to_contain_text(
        "The username or email and password you entered do not match."
    )
