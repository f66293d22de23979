"""The authorization endpoint in a real browser: sign in, consent, back to the client with a code.

The client's redirect URI (https://app.example.test/callback) is not a real host. Every https://
request the browser makes is answered inside the browser with a tiny page and recorded (see
``browsing``), so a test sees exactly where the browser was sent. The live server itself is plain
http://localhost, which Authlib accepts as a loopback address.
"""

from __future__ import annotations

import base64
import re
import secrets
import time
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
from django.conf import settings
from playwright.sync_api import ConsoleMessage, Page, expect

from tests.e2e.conftest import DESKTOP_CHROME
from tests.factories import PASSWORD, UserFactory
from tests.tokens.conftest import pkce_pair
from tokens.clients import create_client
from tokens.models import Client

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

REDIRECT = "https://app.example.test/callback"
APP_NAME = "Example Photos"
APP_PAGE = "<!doctype html><title>Example Photos</title><h1>Back at Example Photos</h1>"


class FormActionBlocked(AssertionError):
    """Chromium refused to follow a redirect of a form submission (CSP form-action)."""


@dataclass
class Browsing:
    """A browser page on the live server. Every https:// page it opens is answered with
    ``APP_PAGE`` and its URL kept in ``visited`` (every https:// request of any kind in
    ``fetched``); its console messages are kept too."""

    page: Page
    visited: list[str] = field(default_factory=list)
    fetched: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)

    def csp_violations(self) -> list[str]:
        return [line for line in self.console if "Content Security Policy" in line]

    def wait_for_the_client(self, timeout: float = 10) -> None:
        """Until the browser reaches the client, failing at once if CSP stops it on the way."""
        deadline = time.monotonic() + timeout
        while not self.visited and time.monotonic() < deadline:
            if violations := self.csp_violations():
                raise FormActionBlocked(
                    f"the browser never reached {REDIRECT}; it stayed on {self.page.url} and "
                    f"logged: {violations}"
                )
            self.page.wait_for_timeout(100)  # lets Playwright deliver console and CDP events

    def callback(self) -> dict[str, str]:
        """The query of the browser's one visit to the client's redirect URI."""
        self.wait_for_the_client()
        self.page.wait_for_url(re.compile("^" + re.escape(REDIRECT) + r"\?"))
        expect(self.page.get_by_role("heading", name="Back at Example Photos")).to_be_visible()
        assert len(self.visited) == 1, self.visited
        parts = urlsplit(self.visited[0])
        assert f"{parts.scheme}://{parts.netloc}{parts.path}" == REDIRECT
        assert self.csp_violations() == []
        return {name: values[0] for name, values in parse_qs(parts.query).items()}


@pytest.fixture
def browsing(new_context) -> Browsing:
    """A page whose https:// requests are answered in the browser, through the DevTools
    protocol's Fetch domain.

    Not ``page.route``: Playwright calls a route handler only for the first URL of a redirect
    chain, and here the client's URL is always a redirect's target (302 from /authorize). The
    browser would look app.example.test up, fail (ERR_NAME_NOT_RESOLVED), and only reach the
    route when Chromium's error page reloads itself a second later. Fetch pauses redirected
    requests too, so the client's page is served on the first try.
    """
    context = new_context(DESKTOP_CHROME)
    page = context.new_page()
    browsing = Browsing(page)
    devtools = context.new_cdp_session(page)

    def the_client_app(event: dict) -> None:
        document = event["resourceType"] == "Document"
        browsing.fetched.append(event["request"]["url"])
        if document:
            browsing.visited.append(event["request"]["url"])
        devtools.send(
            "Fetch.fulfillRequest",
            {
                "requestId": event["requestId"],
                "responseCode": 200 if document else 404,
                "responseHeaders": [{"name": "Content-Type", "value": "text/html; charset=utf-8"}],
                "body": base64.b64encode(APP_PAGE.encode() if document else b"").decode(),
            },
        )

    def console(message: ConsoleMessage) -> None:
        browsing.console.append(f"{message.type}: {message.text.strip()}")

    devtools.on("Fetch.requestPaused", the_client_app)
    devtools.send("Fetch.enable", {"patterns": [{"urlPattern": "https://*"}]})
    page.on("console", console)
    return browsing


def register(consent: str = Client.Consent.REMEMBER) -> tuple[Client, str]:
    return create_client(
        name=APP_NAME,
        redirect_uris=[REDIRECT],
        scopes=["openid", "profile", "email"],
        consent=consent,
    )


def authorize_path(client: Client, challenge: str, state: str, redirect_uri: str = REDIRECT) -> str:
    return "/authorize?" + urlencode(
        {
            "response_type": "code",
            "client_id": client.client_id,
            "redirect_uri": redirect_uri,
            "scope": "openid profile",
            "state": state,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
    )


def fill_in_sign_in(page: Page, username: str) -> None:
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.get_by_label("Username or email", exact=True).fill(username)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Sign in", exact=True).click()


def sign_in_when_asked(page: Page, live_server, username: str) -> None:
    """An authorization request without a session goes to the sign-in page: sign in there."""
    expect(page).to_have_url(re.compile("^" + re.escape(f"{live_server.url}/login/?next=")))
    fill_in_sign_in(page, username)


def on_consent_page(page: Page) -> None:
    expect(
        page.get_by_role("heading", name=f"Allow {APP_NAME} to use your account?")
    ).to_be_visible()
    scopes = page.locator("ul.scopes li")
    expect(scopes).to_have_count(2)
    expect(scopes.nth(0)).to_contain_text("Sign you in with your account")
    expect(scopes.nth(1)).to_contain_text("See your name and username")
    expect(page.get_by_text("you will go back to app.example.test")).to_be_visible()


def exchange(live_server, client: Client, secret: str, code: str, verifier: str) -> dict:
    """What the client's back end does with the code: client_secret_basic and the PKCE verifier."""
    response = requests.post(
        f"{live_server.url}/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
            "code_verifier": verifier,
        },
        auth=(client.client_id, secret),
        timeout=10,
    )
    assert response.status_code == 200, response.text
    token = response.json()
    assert token["token_type"] == "Bearer"
    assert token["access_token"]
    assert token["scope"] == "openid profile"
    return token


def test_sign_in_consent_and_land_on_the_redirect_uri_with_a_code(browsing, live_server):
    user = UserFactory()
    client, secret = register()
    verifier, challenge = pkce_pair()
    state = secrets.token_urlsafe(16)
    page = browsing.page

    page.goto(authorize_path(client, challenge, state))
    sign_in_when_asked(page, live_server, user.username)
    on_consent_page(page)
    assert browsing.visited == []
    page.get_by_role("button", name="Allow", exact=True).click()

    answer = browsing.callback()
    assert set(answer) == {"code", "state", "iss"}
    assert answer["state"] == state
    assert answer["iss"] == settings.ISSUER  # RFC 9207
    exchange(live_server, client, secret, answer["code"], verifier)


def test_deny_lands_on_the_redirect_uri_with_access_denied(browsing, live_server):
    user = UserFactory()
    client, _ = register()
    _, challenge = pkce_pair()
    state = secrets.token_urlsafe(16)
    page = browsing.page

    page.goto(authorize_path(client, challenge, state))
    sign_in_when_asked(page, live_server, user.username)
    on_consent_page(page)
    page.get_by_role("button", name="Deny", exact=True).click()

    answer = browsing.callback()
    assert answer["error"] == "access_denied"
    assert answer["state"] == state
    assert answer["iss"] == settings.ISSUER
    assert "code" not in answer


def test_an_unknown_redirect_uri_shows_an_error_page_and_goes_nowhere(browsing, live_server):
    client, _ = register()
    _, challenge = pkce_pair()
    page = browsing.page

    response = page.goto(
        authorize_path(client, challenge, "st", redirect_uri="https://app.example.test/elsewhere")
    )

    assert response is not None and response.status == 400
    expect(page.get_by_role("heading", name="This sign-in link does not work")).to_be_visible()
    expect(page).to_have_url(re.compile("^" + re.escape(f"{live_server.url}/authorize?")))
    page.wait_for_load_state("networkidle")
    assert browsing.fetched == []


def test_a_signed_in_person_goes_straight_back_to_a_first_party_client(browsing, live_server):
    """consent="skip", already signed in: a plain GET /authorize answers with the redirect."""
    user = UserFactory()
    client, secret = register(consent=Client.Consent.SKIP)
    verifier, challenge = pkce_pair()
    state = secrets.token_urlsafe(16)
    page = browsing.page
    page.goto("/login/")
    fill_in_sign_in(page, user.username)
    expect(page.get_by_role("heading", name="Your account")).to_be_visible()

    page.goto(authorize_path(client, challenge, state))

    answer = browsing.callback()
    assert (answer["state"], answer["iss"]) == (state, settings.ISSUER)
    exchange(live_server, client, secret, answer["code"], verifier)


def test_a_first_party_client_sends_the_person_straight_back_after_signing_in(
    browsing, live_server
):
    """consent="skip", not signed in: the sign-in form's POST redirects to /authorize, which
    redirects to the client. Chromium holds that whole chain to the sign-in page's CSP
    form-action, so the page names the client's origin there (tokens/csp.py)."""
    user = UserFactory()
    client, secret = register(consent=Client.Consent.SKIP)
    verifier, challenge = pkce_pair()
    state = secrets.token_urlsafe(16)
    page = browsing.page

    page.goto(authorize_path(client, challenge, state))
    sign_in_when_asked(page, live_server, user.username)

    answer = browsing.callback()
    assert (answer["state"], answer["iss"]) == (state, settings.ISSUER)
    exchange(live_server, client, secret, answer["code"], verifier)
