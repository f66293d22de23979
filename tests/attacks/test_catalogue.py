"""The attack catalogue: RFC 9700 (Best Current Practice for OAuth 2.0 Security) and the OpenID
Connect threat model, one named test per attack (variants as parameters), each showing that the
attack fails.

Every test reads given / when / then and goes through the real endpoints, as a browser or a
client would (Django's test client; a live server and real threads where the attack is a race).
A "§" alone is a section of RFC 9700; other documents are named. Many of these defences are also
tested feature by feature in tests/tokens and tests/accounts; here they are listed by attack.

An attack that succeeds stays in the catalogue, marked ``xfail(strict=True)`` with the reason,
until the application is fixed (then the strict xfail fails and the mark comes off).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import pytest
from authlib.oauth2.base import invalid_error_characters
from django.conf import settings
from django.core import mail
from django.core.mail.backends.locmem import EmailBackend as LocmemEmailBackend
from django.test import Client as Browser
from joserfc import jwt
from joserfc.errors import InvalidClaimError
from joserfc.jwk import ECKey, KeySet, OctKey, RSAKey

from accounts.models import SecurityEvent, User, UserSession
from accounts.sessions import SessionStore
from tests import test_operations
from tests.accounts.test_login import MISMATCH
from tests.accounts.test_password_reset import emailed_path, request_reset
from tests.accounts.test_throttle import THROTTLED
from tests.attacks.conftest import N, no_server_errors, parallel_sign_ins
from tests.conftest import form_error, session_row, sign_in
from tests.factories import PASSWORD, UserFactory
from tests.tokens.conftest import (
    REDIRECT,
    Registered,
    authorize_url,
    dpop_code_flow,
    endpoint,
    exchange,
    get_code,
    past_the_retry_window,
    pkce_pair,
    query,
    refresh,
    token_request,
)
from tests.tokens.dpop_client import Holder
from tests.tokens.test_logout import CONFIRM, END_SESSION, ORIGIN, signed_in
from tests.tokens.test_oidc_core import code_flow, userinfo
from tests.tokens.test_token_exchange import (
    ACCESS,
    BILLING,
    ID_TOKEN,
    exchange_client,
    token_exchange,
)
from tokens.clients import create_client
from tokens.models import AuthorizationCode, Client, Consent, RefreshToken

pytestmark = pytest.mark.django_db

# Logs as the configured handler writes them (with its redaction filter): a fixture shared with
# tests/test_operations.py.
captured_logs = test_operations.captured_logs

ISSUER = settings.ISSUER
EVIL = "https://evil.example"
LOGGED_OUT = "https://app.example.com/logged-out"


# --- helpers ----------------------------------------------------------------------------------
@pytest.fixture
def consented(logged_in_client, confidential) -> Browser:
    """A signed-in person who has already allowed the example app: from now on /authorize
    answers at once, with no page in between. A manipulated request does the most harm here."""
    get_code(logged_in_client, confidential)
    return logged_in_client


@pytest.fixture
def other_app(db) -> Registered:
    """A second confidential client, registered at the same redirect URI as the first."""
    client, secret = create_client(name="Other App", redirect_uris=[REDIRECT])
    return Registered(client, secret)


def location_parameters(response) -> list[tuple[str, str]]:
    return parse_qsl(urlsplit(response["Location"]).query, keep_blank_values=True)


def assert_error_page(response, text: bytes = b"This sign-in link does not work") -> None:
    """RFC 6749 §4.1.2.1: the person is told; nobody is redirected anywhere."""
    assert response.status_code == 400, response.status_code
    assert "Location" not in response
    assert text in response.content


def assert_oauth_error(response, *errors: str) -> dict:
    """RFC 6749 §5.2: a 4xx JSON error, never a token."""
    assert 400 <= response.status_code < 500, (response.status_code, response.content)
    body = response.json()
    assert body["error"] in errors, body
    assert "access_token" not in body and "refresh_token" not in body
    return body


def external_references(response) -> list[str]:
    """URLs on a page that a browser would fetch or follow to another origin."""
    urls = re.findall(r'(?:src|href|action)="([^"]*)"', response.content.decode())
    return [url for url in urls if urlsplit(url).netloc not in ("", "testserver")]


# === §4.1 Insufficient redirect URI validation ====================================================
MANIPULATED_REDIRECT_URIS = {
    "another-host": "https://evil.example/callback",
    "subdomain": "https://evil.app.example.com/callback",
    "suffixed-host": "https://app.example.com.evil.example/callback",
    "path-suffix": REDIRECT + "/evil",
    "path-extension": REDIRECT + "-evil",
    "dot-segments": "https://app.example.com/callback/../evil",
    "encoded-dot-segments": "https://app.example.com/callback/%2e%2e/evil",
    "query": REDIRECT + "?next=https://evil.example/",
    "fragment": REDIRECT + "#@evil.example",
    "userinfo-then-attacker-host": "https://app.example.com@evil.example/callback",
    "attacker-userinfo": "https://evil.example@app.example.com/callback",
    "backslash": "https://app.example.com\\@evil.example/callback",
    "percent-encoded-path": "https://app.example.com/%63allback",
    "percent-encoded-host": "https://app%2Eexample.com/callback",
    "double-encoded-slash": "https://app.example.com%252F@evil.example/callback",
    "homoglyph-host": "https://app.ex\u0430mple.com/callback",  # U+0430, a Cyrillic "a"
    "fullwidth-host": "https://\uff41pp.example.com/callback",  # NFKC folds it to "app"
    "scheme-downgrade": "http://app.example.com/callback",
    "explicit-default-port": "https://app.example.com:443/callback",
    "trailing-dot-host": "https://app.example.com./callback",
    "uppercase-host": "https://APP.EXAMPLE.COM/callback",
    "leading-space": " " + REDIRECT,
    "trailing-nul": REDIRECT + "\x00",
    "javascript-scheme": "javascript://app.example.com/%0aalert(document.cookie)",
}


_CRASHES: dict = {}  # every variant once ended in a 500; none does now
REDIRECT_URI_VARIANTS = [
    pytest.param(uri, id=name, marks=_CRASHES.get(name, ()))
    for name, uri in MANIPULATED_REDIRECT_URIS.items()
]


@pytest.mark.parametrize("method", ["get", "post"])
@pytest.mark.parametrize("redirect_uri", REDIRECT_URI_VARIANTS)
def test_redirect_uri_manipulation_fails(consented, confidential, redirect_uri, method):
    """§4.1.1 (redirect URI validation attacks on the code grant), §4.1.3 and §2.1: exact string
    matching; RFC 6749 §4.1.2.1: with a bad redirect URI the person is told, never redirected."""
    # Given a person who has already allowed the app (no page would stop a redirect)
    codes_before = AuthorizationCode.objects.count()
    url = authorize_url(confidential, redirect_uri=redirect_uri, challenge=pkce_pair()[1])

    # When an attacker's link (or auto-submitted form) names a redirect URI of their making
    if method == "get":
        response = consented.get(url, secure=True)
    else:
        response = consented.post(url, {"decision": "allow"}, secure=True)

    # Then an error page, no redirect, no code
    assert_error_page(response)
    assert AuthorizationCode.objects.count() == codes_before


@pytest.mark.parametrize("redirect_uri", REDIRECT_URI_VARIANTS)
def test_redirect_uri_manipulation_through_the_sign_in_page_fails(user, confidential, redirect_uri):
    """§4.1.1 for a signed-out person: the manipulated request is refused before the sign-in
    page; and a link straight to the sign-in page carrying it as ``next`` gets a page whose CSP
    form-action admits no other origin, and a sign-in that ends on the error page, not on the
    attacker's URI with a code."""
    # Given a signed-out person following the attacker's link
    browser = Browser()
    url = authorize_url(confidential, redirect_uri=redirect_uri, challenge=pkce_pair()[1])
    # When it goes to /authorize: the error page at once, not even the sign-in page
    assert_error_page(browser.get(url, secure=True))

    # When it goes to the sign-in page with the request as next, and they sign in
    page = browser.get("/login/?next=" + quote(url), secure=True)
    signed = browser.post(
        "/login/", {"username": user.username, "password": PASSWORD, "next": url}, secure=True
    )
    response = browser.get(signed["Location"], secure=True)

    # Then the sign-in form may end on this site only, and the request is an error page
    assert page.status_code == 200
    assert "form-action 'self';" in page["Content-Security-Policy"]
    assert signed.status_code == 302 and signed["Location"] == url
    assert_error_page(response)
    assert not AuthorizationCode.objects.exists()


# === §4.11 Open redirection =======================================================================
CRAFTED_STATES = {
    "absolute-url": "https://evil.example/",
    "parameter-injection": "x&redirect_uri=https://evil.example/&iss=https://evil.example",
    "fragment-injection": "x#@evil.example",
    "header-injection": "x\r\nLocation: https://evil.example/",
    "markup": '"><script>alert(1)</script>',
    "pre-encoded": "x%26iss%3Dhttps%3A%2F%2Fevil.example",
    "non-ascii": "\u00e9t\u00e9&code=forged",
}
PHISHING = "Your account is locked. Call +1 555 0100 now."
# Attacker-chosen error fields sent along in the request: never to be reflected.
ATTACKER_FIELDS = {"error": "server_error", "error_description": PHISHING, "error_uri": EVIL}


def _deny(browser, client, state):
    url = authorize_url(client, state=state, challenge=pkce_pair()[1], **ATTACKER_FIELDS)
    return browser.post(url, {"decision": "deny"}, secure=True)


def _invalid_scope(browser, client, state):
    url = authorize_url(
        client, state=state, scope="openid admin", challenge=pkce_pair()[1], **ATTACKER_FIELDS
    )
    return browser.get(url, secure=True)


def _login_required(browser, client, state):
    url = authorize_url(
        client, state=state, prompt="none", challenge=pkce_pair()[1], **ATTACKER_FIELDS
    )
    return Browser().get(url, secure=True)  # nobody signed in


ERROR_REDIRECTS = {
    "access_denied": _deny,
    "invalid_scope": _invalid_scope,
    "login_required": _login_required,
}
URL_CHARACTERS = re.compile(r"[A-Za-z0-9\-._~:/?@!$&'()*+,;=%]+")  # RFC 3986, no fragment


@pytest.mark.parametrize("error", ERROR_REDIRECTS)
@pytest.mark.parametrize("state", CRAFTED_STATES.values(), ids=CRAFTED_STATES.keys())
def test_open_redirect_through_the_error_redirect_fails(
    logged_in_client, confidential, error, state
):
    """§4.11.2 (the authorization server as open redirector) and RFC 6749 §4.1.2.1: an error
    goes back only to the registered redirect URI. The state is echoed exactly, URL-encoded, so
    it can add no parameter, fragment or header; error fields the attacker sent are ignored."""
    # Given a request for a registered client carrying a crafted state and the attacker's own
    # error fields
    # When the answer is an error
    response = ERROR_REDIRECTS[error](logged_in_client, confidential, state)

    # Then it goes to the registered redirect URI and nowhere else
    assert response.status_code == 302
    location = response["Location"]
    parts = urlsplit(location)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == REDIRECT
    # And the state travels URL-encoded: only URL characters, no fragment, no CR/LF
    assert URL_CHARACTERS.fullmatch(location), location
    assert parts.fragment == ""
    # And it is echoed exactly; nothing is added, doubled or taken from the attacker
    parameters = location_parameters(response)
    names = [name for name, _ in parameters]
    assert len(names) == len(set(names)), names
    assert set(names) <= {"error", "error_description", "state", "iss"}, names
    values = dict(parameters)
    assert values["state"] == state
    assert values["error"] == error
    assert values["iss"] == ISSUER
    assert PHISHING not in values.get("error_description", "")


HOSTILE_NEXT = [
    "https://evil.example/",
    "//evil.example/",
    "///evil.example/",
    "/\\evil.example/",
    "\\\\evil.example/",
    "https:evil.example",
    "https://testserver@evil.example/",
    " //evil.example/",
    "javascript:alert(document.cookie)",
]


@pytest.mark.parametrize("next_url", HOSTILE_NEXT)
def test_open_redirect_through_the_sign_in_page_fails(user, next_url):
    """§4.11 (open redirection): the sign-in page's ``next`` only ever leads to this site."""
    # When a person signs in from a link whose next points elsewhere
    response = Browser().post(
        "/login/", {"username": user.username, "password": PASSWORD, "next": next_url}
    )
    # Then they land on their account page
    assert response.status_code == 302 and response["Location"] == "/"
    # And a person already signed in following the same link is not sent away either
    browser = Browser()
    sign_in(browser, user.username)
    again = browser.get("/login/?next=" + quote(next_url))
    assert again.status_code == 302 and again["Location"] == "/"


@pytest.mark.parametrize(
    "params",
    [
        {"post_logout_redirect_uri": EVIL + "/bye"},
        {"post_logout_redirect_uri": LOGGED_OUT},  # registered, but nothing names the client
        {"client_id": "{client_id}", "post_logout_redirect_uri": EVIL + "/bye"},
        {"client_id": "{client_id}", "post_logout_redirect_uri": LOGGED_OUT + "@evil.example"},
        {"client_id": "{client_id}", "post_logout_redirect_uri": LOGGED_OUT + "/../../evil"},
    ],
    ids=[
        "unregistered",
        "registered-but-no-client",
        "client-and-unregistered",
        "client-and-userinfo-trick",
        "client-and-dot-segments",
    ],
)
def test_open_redirect_through_end_session_fails(confidential, params):
    """§4.11 and OpenID RP-Initiated Logout 1.0 §3: the OP redirects only to a
    post_logout_redirect_uri registered exactly by the client the request names."""
    # Given a client with a registered post-logout redirect URI
    confidential.client.post_logout_redirect_uris = [LOGGED_OUT]
    confidential.client.save()
    filled = {k: v.format(client_id=confidential.client_id) for k, v in params.items()}
    # When a visitor follows an end-session link crafted to bounce them elsewhere
    response = Browser().get(END_SESSION, filled, secure=True)
    # Then no redirect: the signed-out page (or an error page)
    assert response.status_code in (200, 400)
    assert "Location" not in response


def test_open_redirector_through_a_self_registered_client_fails(db):
    """§4.11.2: an attacker who could register a client with their own redirect URI could use
    error redirects as an open redirector. Registration is closed without an initial access
    token."""
    # When an attacker registers a client with their own redirect URI, without a token
    response = Browser().post(
        "/register",
        json.dumps({"client_name": "Totally Legit", "redirect_uris": [EVIL + "/cb"]}),
        content_type="application/json",
        secure=True,
    )
    # Then it is refused and nothing is registered
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"
    assert not Client.objects.exists()


# === Error-description injection: RFC 6749 §4.1.2.1 and §5.2 ======================================
FORBIDDEN_IN_DESCRIPTIONS = '"\\\u00e9'  # a quote, a backslash, a non-ASCII letter


def _at_authorize(**params):
    def send(browser, client):
        return browser.get(authorize_url(client, challenge=pkce_pair()[1], **params), secure=True)

    return send


def _at_token(**params):
    def send(browser, client):
        return token_request(client, params)

    return send


REFLECTED_PARAMETERS = {
    "response_type-at-authorize": (
        _at_authorize(response_type="code" + FORBIDDEN_IN_DESCRIPTIONS),
        (),
    ),
    "scope-at-authorize": (
        _at_authorize(scope="openid x" + FORBIDDEN_IN_DESCRIPTIONS),
        (),
    ),
    "scope-at-token": (
        _at_token(grant_type="client_credentials", scope="profile x" + FORBIDDEN_IN_DESCRIPTIONS),
        (),
    ),
    "prompt-at-authorize": (_at_authorize(prompt="x" + FORBIDDEN_IN_DESCRIPTIONS), ()),
    "max_age-at-authorize": (_at_authorize(max_age="1" + FORBIDDEN_IN_DESCRIPTIONS), ()),
    "id_token_hint-at-authorize": (
        _at_authorize(id_token_hint="x" + FORBIDDEN_IN_DESCRIPTIONS),
        (),
    ),
    "grant_type-at-token": (_at_token(grant_type="x" + FORBIDDEN_IN_DESCRIPTIONS), ()),
    "refresh_token-at-token": (
        _at_token(grant_type="refresh_token", refresh_token="x" + FORBIDDEN_IN_DESCRIPTIONS),
        (),
    ),
}


@pytest.mark.parametrize(
    "send",
    [
        pytest.param(send, id=name, marks=marks)
        for name, (send, marks) in REFLECTED_PARAMETERS.items()
    ],
)
def test_error_description_injection_fails(logged_in_client, confidential, send):
    """RFC 6749 §4.1.2.1 and §5.2: error_description holds printable ASCII without quote or
    backslash, so a crafted parameter cannot carry markup or text of the attacker's choosing
    into the error a client shows. A crafted value gets a clean error (a redirect to the client,
    the error page or a JSON error) with a description in that set, never a 500."""
    # When a parameter carries characters that error_description may not hold
    response = send(logged_in_client, confidential)
    # Then a clean error
    assert response.status_code in (302, 400, 401), response.status_code
    if response.status_code == 302:
        assert response["Location"].startswith(REDIRECT + "?")
        description = query(response["Location"]).get("error_description", "")
    elif response["Content-Type"].startswith("application/json"):
        description = response.json().get("error_description", "")
    else:
        description = ""  # the error page, HTML-escaped by the template
    assert invalid_error_characters(description) == []


# === §4.4 Mix-up ==================================================================================
def _allowed(browser, client):
    url = authorize_url(client, challenge=pkce_pair()[1], iss=EVIL)
    return browser.post(url, {"decision": "allow"}, secure=True)


def _remembered(browser, client):
    get_code(browser, client)
    return browser.get(authorize_url(client, challenge=pkce_pair()[1], iss=EVIL), secure=True)


def _denied(browser, client):
    url = authorize_url(client, challenge=pkce_pair()[1], iss=EVIL)
    return browser.post(url, {"decision": "deny"}, secure=True)


def _ask(**params):
    def answer(browser, client):
        return browser.get(authorize_url(client, iss=EVIL, **params), secure=True)

    return answer


def _ask_anonymously(**params):
    def answer(browser, client):
        return Browser().get(authorize_url(client, iss=EVIL, **params), secure=True)

    return answer


AUTHORIZATION_RESPONSES = {
    "code-after-consent": ("code", _allowed),
    "code-from-remembered-consent": ("code", _remembered),
    "access_denied": ("access_denied", _denied),
    "invalid_scope": ("invalid_scope", _ask(scope="openid admin", challenge="x" * 43)),
    "unsupported_response_type": ("unsupported_response_type", _ask(response_type="token")),
    "invalid_request-plain-pkce": (
        "invalid_request",
        _ask(code_challenge="x" * 43, code_challenge_method="plain"),
    ),
    "invalid_request_object": (
        "invalid_request_object",
        _ask(request="eyJhbGciOiJSUzI1NiJ9.e30.c2ln", challenge="x" * 43),
    ),
    "invalid_request_uri": (
        "invalid_request_uri",
        # OIDC Core §6.2: a remote request_uri the client never registered is not fetched
        _ask(request_uri="https://attacker.example/request.jwt", challenge="x" * 43),
    ),
    "consent_required": ("consent_required", _ask(prompt="none", challenge="x" * 43)),
    "login_required": ("login_required", _ask_anonymously(prompt="none", challenge="x" * 43)),
}


@pytest.mark.parametrize("answer", AUTHORIZATION_RESPONSES)
def test_mix_up_fails(logged_in_client, confidential, answer):
    """§4.4 (mix-up attacks), §4.4.2 and RFC 9207 §2: every authorization response, errors
    included, names its issuer exactly once, so a client talking to several authorization
    servers can tell which one answered. An ``iss`` the attacker put in the request changes
    nothing."""
    expected, produce = AUTHORIZATION_RESPONSES[answer]
    # When the authorization endpoint answers the client, with a code or with an error
    response = produce(logged_in_client, confidential)
    # Then the answer goes to the client and carries our issuer, once
    assert response.status_code == 302
    assert response["Location"].startswith(REDIRECT + "?")
    parameters = location_parameters(response)
    assert [value for name, value in parameters if name == "iss"] == [ISSUER]
    assert (dict(parameters).get("error") or "code") == expected
    # And the issuer the client checks it against is the one we publish
    metadata = Browser().get("/.well-known/openid-configuration", secure=True).json()
    assert metadata["issuer"] == ISSUER
    assert metadata["authorization_response_iss_parameter_supported"] is True


# === §4.5 Authorization code injection ============================================================
def test_code_injection_with_another_clients_code_fails(logged_in_client, confidential, other_app):
    """§4.5 (authorization code injection), RFC 6749 §4.1.3: a code is bound to the client it
    was issued to; another client, even one authenticating properly, cannot redeem it."""
    # Given a code (and even its verifier) issued to the example app, in the attacker's hands
    code, verifier = get_code(logged_in_client, confidential)
    # When another registered client redeems it with its own valid credentials
    response = exchange(other_app, code, verifier)
    # Then invalid_grant, and the code still works for the client it belongs to
    assert_oauth_error(response, "invalid_grant")
    assert exchange(confidential, code, verifier).status_code == 200


@pytest.mark.parametrize("kind", ["confidential", "public"])
def test_code_injection_with_the_attackers_own_verifier_fails(
    logged_in_client, confidential, public, kind
):
    """§4.5.3 and §2.1.1: PKCE binds the code to the session that asked for it. An attacker who
    injects the victim's code into their own session at the client makes the client send the
    attacker's verifier: invalid_grant, and the code is not burnt."""
    client = confidential if kind == "confidential" else public
    auth = "basic" if kind == "confidential" else "none"
    # Given the victim's code, bound to the challenge of the victim's session at the client
    code, victims_verifier = get_code(logged_in_client, client)
    # When the client redeems it with the verifier of the attacker's session
    attackers_verifier, _ = pkce_pair()
    response = exchange(client, code, attackers_verifier, auth=auth)
    # Then invalid_grant; no tokens were issued
    assert_oauth_error(response, "invalid_grant")
    assert not RefreshToken.objects.exists()
    assert exchange(client, code, victims_verifier, auth=auth).status_code == 200


@pytest.mark.parametrize(
    ("redirect_uri", "error"),
    [("https://app.example.com/other", "invalid_grant"), (None, "invalid_request")],
    ids=["another-registered-uri", "none"],
)
def test_code_injection_with_a_different_redirect_uri_fails(
    logged_in_client, confidential, redirect_uri, error
):
    """§4.5 and RFC 6749 §4.1.3: the token request must repeat the redirect URI the code was
    issued for (here: another of the client's registered URIs, invalid_grant, or none at all,
    a missing required parameter: RFC 6749 §5.2 invalid_request)."""
    # Given a client with two registered redirect URIs, and a code issued for the first
    Client.objects.filter(pk=confidential.client.pk).update(
        redirect_uris=[REDIRECT, "https://app.example.com/other"]
    )
    confidential.client.refresh_from_db()
    code, verifier = get_code(logged_in_client, confidential, redirect_uri=REDIRECT)
    # When it is redeemed naming the other URI, or none
    data = {"grant_type": "authorization_code", "code": code, "code_verifier": verifier}
    if redirect_uri:
        data["redirect_uri"] = redirect_uri
    response = token_request(confidential, data)
    # Then refused, and the code is not used up
    assert_oauth_error(response, error)
    assert exchange(confidential, code, verifier, redirect_uri=REDIRECT).status_code == 200


# === §4.8 PKCE downgrade ==========================================================================
def _challenge_then_no_verifier(browser, client):
    code, _verifier = get_code(browser, client)
    return exchange(client, code, None)


def _no_challenge_then_a_verifier(browser, client):
    url = authorize_url(client)  # no code_challenge at all
    code = query(browser.post(url, {"decision": "allow"}, secure=True)["Location"])["code"]
    return exchange(client, code, pkce_pair()[0])


def _method(method: str | None):
    def attempt(browser, client):
        params = {"code_challenge": pkce_pair()[1]}
        if method:
            params["code_challenge_method"] = method
        return browser.get(authorize_url(client, **params), secure=True)

    return attempt


PKCE_DOWNGRADES = {
    "challenge-then-no-verifier": _challenge_then_no_verifier,
    "no-challenge-then-a-verifier": _no_challenge_then_a_verifier,
    "plain-method": _method("plain"),
    "no-method-means-plain": _method(None),
    "unknown-method": _method("S512"),
}


@pytest.mark.parametrize("downgrade", PKCE_DOWNGRADES)
def test_pkce_downgrade_fails(logged_in_client, confidential, downgrade):
    """§4.8 (PKCE downgrade attack), §4.8.2 and §2.1.1: a verifier is required when a challenge
    was sent and refused when none was; only S256 is accepted."""
    # When PKCE is weakened or dropped between the authorization and the token request
    response = PKCE_DOWNGRADES[downgrade](logged_in_client, confidential)
    # Then no tokens: an error from the token endpoint, or an error sent back to the client
    if response.status_code == 302:
        assert query(response["Location"])["error"] == "invalid_request"
        assert query(response["Location"])["iss"] == ISSUER
        assert not AuthorizationCode.objects.exists()
    else:
        assert_oauth_error(response, "invalid_request", "invalid_grant")
    assert not RefreshToken.objects.exists()


def test_pkce_downgrade_by_a_public_client_without_a_challenge_fails(logged_in_client, public):
    """§2.1.1: public clients must use PKCE; without a challenge there is no code."""
    response = logged_in_client.get(authorize_url(public), secure=True)
    assert query(response["Location"])["error"] == "invalid_request"
    assert not AuthorizationCode.objects.exists()


# === §4.7 CSRF, and login CSRF ====================================================================
@dataclass
class CsrfTarget:
    """A form an attacker's page would auto-submit: who is at the browser, what it posts, and
    how to tell that it took effect."""

    signed_in: bool
    path: Callable[[dict], str]
    data: Callable[[dict], dict]
    happened: Callable[[dict], bool]


def _new_password(ctx) -> dict:
    return {
        "old_password": PASSWORD,
        "new_password1": "an attacker's choice 42",
        "new_password2": "an attacker's choice 42",
    }


CSRF_TARGETS = {
    # Login CSRF: the victim's browser silently signed in to the attacker's account.
    "sign-in": CsrfTarget(
        signed_in=False,
        path=lambda ctx: "/login/",
        data=lambda ctx: {"username": ctx["attacker"].username, "password": PASSWORD},
        happened=lambda ctx: signed_in(ctx["victim"]),
    ),
    "consent": CsrfTarget(
        signed_in=True,
        path=lambda ctx: authorize_url(ctx["client"], challenge=ctx["challenge"]),
        data=lambda ctx: {"decision": "allow"},
        happened=lambda ctx: AuthorizationCode.objects.exists() or Consent.objects.exists(),
    ),
    "sign-out": CsrfTarget(
        signed_in=True,
        path=lambda ctx: "/logout/",
        data=lambda ctx: {},
        happened=lambda ctx: not signed_in(ctx["victim"]),
    ),
    "rp-logout-confirmation": CsrfTarget(
        signed_in=True,
        path=lambda ctx: CONFIRM,
        data=lambda ctx: {"client_id": ctx["client"].client_id},
        happened=lambda ctx: not signed_in(ctx["victim"]),
    ),
    "my-sessions-end-one": CsrfTarget(
        signed_in=True,
        path=lambda ctx: f"/account/sessions/{session_row(ctx['laptop']).sid}/end/",
        data=lambda ctx: {},
        happened=lambda ctx: not signed_in(ctx["laptop"]),
    ),
    "my-sessions-end-others": CsrfTarget(
        signed_in=True,
        path=lambda ctx: "/account/sessions/end-others/",
        data=lambda ctx: {},
        happened=lambda ctx: not signed_in(ctx["laptop"]),
    ),
    "password-change": CsrfTarget(
        signed_in=True,
        path=lambda ctx: "/account/password/",
        data=_new_password,
        happened=lambda ctx: not User.objects.get(pk=ctx["user"].pk).check_password(PASSWORD),
    ),
}


def honest_browser(user=None) -> Browser:
    """A browser that enforces CSRF as a real one does; signed in (if a user is given) through
    the form, with its token. Its own token is then in ``browser.cookies["csrftoken"]``."""
    browser = Browser(enforce_csrf_checks=True)
    browser.get("/login/", secure=True)
    if user is not None:
        response = browser.post(
            "/login/",
            {"username": user.username, "password": PASSWORD,
             "csrfmiddlewaretoken": browser.cookies["csrftoken"].value},
            secure=True, HTTP_ORIGIN=ORIGIN,
        )  # fmt: skip
        assert response.status_code == 302, form_error(response)
    return browser


@pytest.mark.parametrize("forgery", ["no-token", "attackers-own-token", "cross-site-origin"])
@pytest.mark.parametrize("target", CSRF_TARGETS)
def test_csrf_fails(user, confidential, target, forgery, django_capture_on_commit_callbacks):
    """§4.7 (cross-site request forgery) for the server's own forms, and login CSRF: every
    state-changing form needs the browser's own CSRF token and a same-origin request. A forged
    POST gets the friendly 403 page and changes nothing; the honest one works."""
    spec = CSRF_TARGETS[target]
    # Given the victim's browser (signed in, with a second device, where the form needs it)
    victim = honest_browser(user if spec.signed_in else None)
    laptop = Browser()
    sign_in(laptop, user.username)
    ctx = {
        "victim": victim,
        "laptop": laptop,
        "user": user,
        "attacker": UserFactory(),
        "client": confidential,
        "challenge": pkce_pair()[1],
    }
    path, data = spec.path(ctx), spec.data(ctx)
    own_token = victim.cookies["csrftoken"].value

    # When the attacker's page submits the form from the victim's browser
    if forgery == "no-token":
        forged = victim.post(path, data, secure=True, HTTP_ORIGIN=ORIGIN)
    elif forgery == "attackers-own-token":
        attackers = honest_browser().cookies["csrftoken"].value
        forged = victim.post(
            path, {**data, "csrfmiddlewaretoken": attackers}, secure=True, HTTP_ORIGIN=ORIGIN
        )
    else:  # even holding the victim's token, the request comes from another origin
        forged = victim.post(
            path, {**data, "csrfmiddlewaretoken": own_token}, secure=True, HTTP_ORIGIN=EVIL
        )

    # Then the friendly "form expired" page, and nothing changed
    assert forged.status_code == 403
    assert b"This form has expired" in forged.content
    assert not spec.happened(ctx)
    # And the same form, honestly submitted, does work (so the 403 was the CSRF check)
    with django_capture_on_commit_callbacks(execute=True):  # the request's commit
        honest = victim.post(
            path, {**data, "csrfmiddlewaretoken": own_token}, secure=True, HTTP_ORIGIN=ORIGIN
        )
    assert honest.status_code in (200, 302), honest.status_code
    assert spec.happened(ctx)


@pytest.mark.parametrize(
    "path",
    ["/logout/", "/account/sessions/{sid}/end/", "/account/sessions/end-others/", END_SESSION],
)
def test_csrf_through_a_plain_link_fails(logged_in_client, user, path):
    """§4.7: a link (GET, sent by an <img> or a top-level navigation, which SameSite=Lax lets
    through) never ends a session: it shows a confirmation page or is refused."""
    # Given a signed-in person with a second device
    laptop = Browser()
    sign_in(laptop, user.username)
    # When a cross-site link points at a state-changing URL
    response = logged_in_client.get(
        path.format(sid=session_row(laptop).sid), secure=True, HTTP_REFERER=EVIL + "/"
    )
    # Then nothing ended
    assert response.status_code in (200, 405)
    assert signed_in(logged_in_client) and signed_in(laptop)


# === §4.16 Clickjacking ===========================================================================
FRAMEABLE_PAGES = {
    "sign-in": lambda browser, client: Browser().get("/login/", secure=True),
    "consent": lambda browser, client: browser.get(
        authorize_url(client, challenge=pkce_pair()[1]), secure=True
    ),
    "sign-out-confirmation": lambda browser, client: browser.get("/logout/", secure=True),
    "rp-logout-confirmation": lambda browser, client: browser.get(
        END_SESSION, {"client_id": client.client_id}, secure=True
    ),
    "authorization-error": lambda browser, client: browser.get(
        "/authorize?response_type=code&client_id=nope", secure=True
    ),
    "rp-logout-error": lambda browser, client: browser.get(
        END_SESSION, {"id_token_hint": "garbage"}, secure=True
    ),
    "form-expired": lambda browser, client: Browser(enforce_csrf_checks=True).post(
        "/login/", {}, secure=True
    ),
    "not-found": lambda browser, client: browser.get("/no/such/page/", secure=True),
    "my-sessions": lambda browser, client: browser.get("/account/sessions/", secure=True),
    "password-change": lambda browser, client: browser.get("/account/password/", secure=True),
    "password-reset": lambda browser, client: Browser().get("/password-reset/", secure=True),
    "signed-out": lambda browser, client: browser.post("/logout/", secure=True),
}


@pytest.mark.parametrize("page", FRAMEABLE_PAGES)
def test_clickjacking_fails(logged_in_client, confidential, page):
    """§4.16 (clickjacking): no page may be framed by another site, the consent, sign-in and
    sign-out pages above all: X-Frame-Options DENY and CSP frame-ancestors 'none'."""
    # When an attacker's page tries to load one of ours in a frame
    response = FRAMEABLE_PAGES[page](logged_in_client, confidential)
    # Then the page forbids it, both ways browsers understand
    assert response.status_code in (200, 400, 403, 404), response.status_code
    assert response["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in response["Content-Security-Policy"]


# === §4.2 Credential leakage via Referer, §4.3 via browser history ================================
def test_code_leakage_via_referer_fails(user, confidential):
    """§4.2 (credential leakage via Referer headers), §4.2.2 and §4.2.4: the code appears in
    exactly one URL, the redirect to the client; no page of ours links or loads anything from
    another origin; and every page and redirect says Referrer-Policy: same-origin."""
    # Given a signed-out person starting the code flow
    browser = Browser()
    url = authorize_url(confidential, challenge=pkce_pair()[1], scope="openid profile")
    # When they sign in, see the consent page and allow
    to_sign_in = browser.get(url, secure=True)
    sign_in_page = browser.get(to_sign_in["Location"], secure=True)
    back = browser.post(
        "/login/",
        {"username": user.username, "password": PASSWORD, "next": query(to_sign_in["Location"])["next"]},
        secure=True,
    )  # fmt: skip
    consent_page = browser.get(back["Location"], secure=True)
    allowed = browser.post(back["Location"], {"decision": "allow"}, secure=True)
    code = query(allowed["Location"])["code"]

    # Then the code is only in the redirect to the client
    assert allowed.status_code == 302 and allowed["Location"].startswith(REDIRECT + "?code=")
    for response in (to_sign_in, sign_in_page, back, consent_page, allowed):
        headers = {k: v for k, v in response.items() if k != "Location" or response is not allowed}
        assert code not in json.dumps(headers) and code.encode() not in response.content
    # And the pages send no Referer elsewhere: nothing cross-origin, a same-origin policy
    for response in (to_sign_in, sign_in_page, back, consent_page, allowed):
        assert response["Referrer-Policy"] == "same-origin"
    for page in (sign_in_page, consent_page):
        assert page.status_code == 200
        assert external_references(page) == []
        assert b'<meta name="referrer" content="same-origin">' in page.content


def test_reset_token_leakage_via_referer_fails(user):
    """§4.2 for the emailed reset link: as Django does, the token is moved out of the URL (into
    the session) before any page is shown, so no Referer and no history entry carries it."""
    # Given a reset link in the person's mailbox
    request_reset(Browser(), user.email)
    path = emailed_path()
    token = path.strip("/").split("/")[-1]
    # When they follow it
    browser = Browser()
    landing = browser.get(path, secure=True)
    page = browser.get(landing["Location"], secure=True)
    # Then the token is redirected out of the URL before the page is shown
    assert landing.status_code == 302 and landing["Location"].endswith("/set-password/")
    assert token not in landing["Location"]
    assert page.status_code == 200 and token not in page.content.decode()
    # And the page leaks no Referer anywhere
    assert landing["Referrer-Policy"] == page["Referrer-Policy"] == "same-origin"
    assert external_references(page) == []


@pytest.mark.parametrize(
    "response_type", ["token", "id_token", "id_token token", "code token", "code id_token"]
)
def test_token_leakage_via_browser_history_fails(logged_in_client, confidential, response_type):
    """§4.3 (credential leakage via browser history) and §2.1.2: no implicit or hybrid flow,
    so no access or ID token ever travels in a URL."""
    # When a client (or an attacker) asks for tokens straight in the redirect
    url = authorize_url(confidential, response_type=response_type, challenge=pkce_pair()[1])
    response = logged_in_client.get(url, secure=True)
    # Then unsupported_response_type, and no token in the URL
    assert response.status_code == 302
    params = query(response["Location"])
    assert params["error"] == "unsupported_response_type"
    assert not {"access_token", "id_token", "code"} & params.keys()
    assert urlsplit(response["Location"]).fragment == ""


def test_token_leakage_through_logs_fails(captured_logs, logged_in_client, confidential, user):
    """RFC 6750 §5.3 and RFC 6819 §5.1.4.1.3: no secret in logs or in the security-event table,
    also when things go wrong (bad secrets, replays, tokens in the wrong place, forged hints)."""
    # Given a full flow, with the mistakes and attacks that make the server log
    code, verifier = get_code(logged_in_client, confidential, scope="openid profile")
    tokens = exchange(confidential, code, verifier).json()
    wrong = Registered(confidential.client, confidential.secret[::-1])
    token_request(wrong, {"grant_type": "client_credentials"})  # a wrong secret: 401, logged
    exchange(confidential, code, verifier)  # a code replay: security event, revocations
    code2, verifier2 = get_code(logged_in_client, confidential, scope="openid profile")
    second = exchange(confidential, code2, verifier2).json()
    newer = refresh(confidential, second["refresh_token"]).json()
    past_the_retry_window()
    refresh(confidential, second["refresh_token"])  # a refresh replay
    Browser().get("/userinfo?access_token=" + newer["access_token"], secure=True)  # RFC 6750 §2.3
    Browser().post(  # credentials in the URL (RFC 6749 §2.3.1)
        f"/token?client_id={confidential.client_id}&client_secret={confidential.secret}",
        f"grant_type=authorization_code&code={code}",
        content_type="application/x-www-form-urlencoded",
        secure=True,
    )
    endpoint("/introspect", confidential, {"token": newer["refresh_token"]})
    Browser().get(END_SESSION, {"id_token_hint": tokens["id_token"][:-4] + "AAAA"}, secure=True)
    # A client whose redirect URI mistakenly points here: the code lands in a 404's query string.
    Browser().get(f"/callback?code={code}&state=xyz&iss={ISSUER}", secure=True)
    endpoint("/revoke", confidential, {"token": newer["refresh_token"]})

    # Then the logs and the security events show what happened, and none of the secrets
    written = captured_logs.getvalue()
    assert "Unauthorized" in written and "Revoked" in written and "Not Found" in written
    events = json.dumps(
        list(SecurityEvent.objects.values("kind", "identifier", "detail", "user_agent")),
        default=str,
    )
    assert {"code_replay", "refresh_replay"} <= set(
        SecurityEvent.objects.values_list("kind", flat=True)
    )
    secrets = {
        "password": PASSWORD,
        "client secret": confidential.secret,
        "code": code,
        "code verifier": verifier,
        "access token": tokens["access_token"],
        "refresh token": tokens["refresh_token"],
        "id token": tokens["id_token"],
        "rotated refresh token": newer["refresh_token"],
        "rotated access token": newer["access_token"],
    }
    assert [name for name, value in secrets.items() if value in written] == []
    assert [name for name, value in secrets.items() if value in events] == []


# === §4.14 Refresh token protection ===============================================================
def test_refresh_token_replay_fails(logged_in_client, confidential):
    """§4.14.2 (refresh token rotation): a stolen refresh token can be used once, by whoever is
    first (the server cannot tell the attacker from the client); when the other presents it
    again the whole family is revoked, the newest tokens included, and the replay recorded."""
    # Given a refresh token that an attacker has copied
    code, verifier = get_code(logged_in_client, confidential, scope="openid profile")
    stolen = exchange(confidential, code, verifier).json()
    # When one party refreshes with it (rotating it) and the other presents it afterwards, once
    # the retry window (a lost response retried) has passed
    rotated = refresh(confidential, stolen["refresh_token"]).json()
    past_the_retry_window()
    replay = refresh(confidential, stolen["refresh_token"])
    # Then the replay gets invalid_grant
    assert_oauth_error(replay, "invalid_grant")
    # And whoever got the rotated pair is cut off too
    assert_oauth_error(refresh(confidential, rotated["refresh_token"]), "invalid_grant")
    introspection = endpoint("/introspect", confidential, {"token": rotated["access_token"]})
    assert introspection.json() == {"active": False}
    assert userinfo(rotated["access_token"]).status_code == 401
    # And the whole family is revoked, and the replay recorded
    family = RefreshToken.objects.filter(family=RefreshToken.objects.get(parent=None).family)
    assert set(family.values_list("revoke_reason", flat=True)) == {"replay"}
    event = SecurityEvent.objects.get(kind="refresh_replay")
    assert event.detail["client_id"] == confidential.client_id
    assert SecurityEvent.objects.filter(kind="tokens_revoked").exists()


def test_refresh_token_use_by_another_client_fails(logged_in_client, confidential, other_app):
    """§4.14.2 and RFC 6749 §6: a refresh token is bound to its client; another client, even
    authenticating properly, cannot use it (and does not burn it)."""
    code, verifier = get_code(logged_in_client, confidential, scope="openid profile")
    stolen = exchange(confidential, code, verifier).json()
    assert_oauth_error(refresh(other_app, stolen["refresh_token"]), "invalid_grant")
    assert refresh(confidential, stolen["refresh_token"]).status_code == 200


# === Client impersonation: RFC 6749 §2.3 / §3.2.1, §4.15 ==========================================
def _basic(client_id: str, secret: str) -> dict:
    raw = f"{client_id}:{secret}".encode()
    return {"HTTP_AUTHORIZATION": "Basic " + base64.b64encode(raw).decode()}


def _post_form(body: dict, path: str = "/token", **headers):
    return Browser().post(
        path, urlencode(body), content_type="application/x-www-form-urlencoded", secure=True,
        **headers,
    )  # fmt: skip


IMPERSONATIONS = {
    "wrong-secret-basic": lambda a, b, p, form: _post_form(form, **_basic(a.client_id, "wrong")),
    "wrong-secret-post": lambda a, b, p, form: _post_form(
        {**form, "client_id": a.client_id, "client_secret": "wrong"}
    ),
    "another-clients-secret": lambda a, b, p, form: _post_form(
        form, **_basic(a.client_id, b.secret)
    ),
    "empty-secret": lambda a, b, p, form: _post_form(form, **_basic(a.client_id, "")),
    "no-secret-as-if-public": lambda a, b, p, form: _post_form({**form, "client_id": a.client_id}),
    "public-client-id-with-a-made-up-secret": lambda a, b, p, form: _post_form(
        form, **_basic(p.client_id, "made-up")
    ),
    "secret-in-the-query-string": lambda a, b, p, form: _post_form(
        form, path=f"/token?client_id={a.client_id}&client_secret={a.secret}"
    ),
    "own-credentials-another-client_id-in-the-body": lambda a, b, p, form: _post_form(
        {**form, "client_id": a.client_id}, **_basic(b.client_id, b.secret)
    ),
}


@pytest.mark.parametrize("impersonation", IMPERSONATIONS)
def test_client_impersonation_fails(
    logged_in_client, confidential, other_app, public, impersonation
):
    """RFC 6749 §2.3.1 and §3.2.1 (confidential clients must authenticate), RFC 9700 §2.5: an
    attacker holding a victim's code and verifier still needs the client's own secret, sent
    the right way; nothing else passes for it, and the attempt does not burn the code."""
    # Given the example app's code and verifier, in an attacker's hands
    code, verifier = get_code(logged_in_client, confidential)
    form = {"grant_type": "authorization_code", "code": code, "code_verifier": verifier,
            "redirect_uri": REDIRECT}  # fmt: skip
    # When they redeem it without the example app's secret, or sending it where it must not go
    response = IMPERSONATIONS[impersonation](confidential, other_app, public, form)
    # Then a client error, no tokens
    assert_oauth_error(response, "invalid_client", "invalid_request", "invalid_grant")
    assert not RefreshToken.objects.exists()
    # And the real client can still redeem its code
    assert exchange(confidential, code, verifier).status_code == 200


def test_client_impersonating_a_resource_owner_fails(user, confidential, settings):
    """§4.15 (client impersonating resource owner): a client's own tokens (client credentials)
    carry sub = client_id; even a client_id equal to a person's sub does not speak for that
    person. And dynamic registration never lets a client choose its client_id."""
    # Given a client whose client_id collides with a person's subject identifier
    Client.objects.filter(pk=confidential.client.pk).update(client_id=str(user.pk))
    forged = Registered(Client.objects.get(pk=confidential.client.pk), confidential.secret)
    # When it gets a token for itself and presents it at userinfo
    token = token_request(forged, {"grant_type": "client_credentials", "scope": "openid profile"})
    assert token.status_code == 200
    response = userinfo(token.json()["access_token"])
    # Then the token speaks for nobody
    assert response.status_code == 401 and user.email not in response.content.decode()
    # And a client registering itself cannot pick a client_id at all
    settings.OPEN_REGISTRATION = True
    registered = Browser().post(
        "/register",
        json.dumps({"client_id": "1", "redirect_uris": [EVIL + "/cb"], "client_name": "x"}),
        content_type="application/json",
        secure=True,
    )
    assert registered.status_code == 201 and registered.json()["client_id"] != "1"


# === JWT attacks: none, key confusion, unknown keys, tampering (RFC 8725) =========================
def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _segment(data: dict) -> str:
    return _b64(json.dumps(data, separators=(",", ":")).encode())


def _split(token: str) -> tuple[dict, dict]:
    header, payload, _signature = token.split(".")
    decode = lambda part: json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))  # noqa: E731
    return decode(header), decode(payload)


def _published_key(kid: str) -> dict:
    jwks = Browser().get("/.well-known/jwks.json", secure=True).json()
    return next(key for key in jwks["keys"] if key["kid"] == kid)


def _attackers_key(alg: str):
    if alg == "ES256":
        return ECKey.generate_key("P-256", private=True)
    return RSAKey.generate_key(2048, private=True)


def _hmac_signed(header: dict, claims: dict, secret: bytes) -> str:
    signing_input = f"{_segment(header)}.{_segment(claims)}"
    return (
        f"{signing_input}.{_b64(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())}"
    )


def _alg_none(alg: str):
    def forge(token: str, changes: dict) -> str:
        header, claims = _split(token)
        return f"{_segment({**header, 'alg': alg})}.{_segment({**claims, **changes})}."

    return forge


def _hs256_with_public_jwk(token: str, changes: dict) -> str:
    header, claims = _split(token)
    secret = json.dumps(_published_key(header["kid"])).encode()
    return _hmac_signed({**header, "alg": "HS256"}, {**claims, **changes}, secret)


def _hs256_with_public_pem(token: str, changes: dict) -> str:
    header, claims = _split(token)
    public = KeySet.import_key_set({"keys": [_published_key(header["kid"])]}).keys[0]
    secret = public.as_pem(private=False)
    return _hmac_signed({**header, "alg": "HS256"}, {**claims, **changes}, secret)


def _signed_by_attacker(**header_changes):
    def forge(token: str, changes: dict) -> str:
        header, claims = _split(token)
        key = _attackers_key(header["alg"])
        extra = {k: v(key) if callable(v) else v for k, v in header_changes.items()}
        return jwt.encode({**header, **extra}, {**claims, **changes}, key)

    return forge


def _tampered_payload(token: str, changes: dict) -> str:
    header, _payload, signature = token.split(".")
    return f"{header}.{_segment({**_split(token)[1], **changes})}.{signature}"


def _stripped_signature(token: str, changes: dict) -> str:
    header, claims = _split(token)
    return f"{_segment(header)}.{_segment({**claims, **changes})}."


JWT_FORGERIES = {
    "alg-none": _alg_none("none"),
    "alg-None": _alg_none("None"),
    "alg-NONE": _alg_none("NONE"),
    "hs256-keyed-with-the-public-jwk": _hs256_with_public_jwk,
    "hs256-keyed-with-the-public-pem": _hs256_with_public_pem,
    "kid-of-a-missing-key": _signed_by_attacker(kid="no-such-key"),
    "our-kid-attackers-key": _signed_by_attacker(),
    "embedded-jwk-header": _signed_by_attacker(
        kid=lambda key: key.thumbprint(), jwk=lambda key: key.as_dict(private=False)
    ),
    "jku-header": _signed_by_attacker(
        kid=lambda key: key.thumbprint(), jku=EVIL + "/.well-known/jwks.json"
    ),
    "tampered-payload": _tampered_payload,
    "stripped-signature": _stripped_signature,
}


@pytest.fixture
def genuine(logged_in_client, confidential) -> dict:
    """A real token response for the signed-in person (access and ID tokens to forge from)."""
    return code_flow(logged_in_client, confidential, "openid profile email")


@pytest.mark.parametrize("forgery", JWT_FORGERIES)
def test_forged_access_token_at_userinfo_fails(genuine, forgery):
    """RFC 8725 §2.1, §3.1-3.2 and RFC 9068 §4: only our algorithms, only our keys, a valid
    signature over the exact payload. A forged token naming another person gets 401."""
    # Given someone else's account, and a genuine token that works at userinfo
    other = UserFactory()
    assert userinfo(genuine["access_token"]).status_code == 200
    # When the attacker presents a token forged to name the other person
    forged = JWT_FORGERIES[forgery](genuine["access_token"], {"sub": str(other.pk)})
    response = userinfo(forged)
    # Then 401 invalid_token, and nothing about that person
    assert response.status_code == 401
    assert 'error="invalid_token"' in response["WWW-Authenticate"]
    assert other.email not in response.content.decode()


@pytest.mark.parametrize("forgery", JWT_FORGERIES)
def test_forged_access_token_at_introspection_fails(genuine, confidential, forgery):
    """RFC 7662 §2.2 and RFC 8725: a resource server introspecting a forged token (here one
    stretched to live a year) is told it is not active."""
    assert endpoint("/introspect", confidential, {"token": genuine["access_token"]}).json()[
        "active"
    ]
    forged = JWT_FORGERIES[forgery](genuine["access_token"], {"exp": int(time.time()) + 31_536_000})
    response = endpoint("/introspect", confidential, {"token": forged})
    assert response.status_code == 200 and response.json() == {"active": False}


@pytest.mark.parametrize("forgery", JWT_FORGERIES)
def test_forged_id_token_hint_at_authorize_fails(consented, confidential, genuine, forgery):
    """OIDC Core §3.1.2.1 (id_token_hint: an ID token this server issued): a forged hint is
    refused with invalid_request, not read as naming anyone."""
    other = UserFactory()
    forged = JWT_FORGERIES[forgery](genuine["id_token"], {"sub": str(other.pk)})
    url = authorize_url(confidential, challenge=pkce_pair()[1], id_token_hint=forged)
    response = consented.get(url, secure=True)
    assert response.status_code == 302 and response["Location"].startswith(REDIRECT + "?")
    assert query(response["Location"])["error"] == "invalid_request"


@pytest.mark.parametrize("forgery", JWT_FORGERIES)
def test_forged_id_token_hint_at_end_session_fails(logged_in_client, genuine, forgery):
    """RP-Initiated Logout 1.0 §2 (the OP MUST validate that it issued the ID token) and §4: a
    forged hint for this very session would sign the person out with no confirmation. It gets
    the error page, and the person stays signed in."""
    forged = JWT_FORGERIES[forgery](genuine["id_token"], {"note": "forged"})
    response = logged_in_client.get(END_SESSION, {"id_token_hint": forged}, secure=True)
    assert_error_page(response, b"This sign-out link does not work")
    assert signed_in(logged_in_client)


def test_id_token_used_as_an_access_token_fails(genuine, confidential):
    """RFC 9068 §4 and RFC 8725 §3.11 (explicit typing): an ID token, signed by the same server,
    is not an access token, at userinfo or at introspection."""
    assert userinfo(genuine["id_token"]).status_code == 401
    assert endpoint("/introspect", confidential, {"token": genuine["id_token"]}).json() == {
        "active": False
    }


def test_access_token_used_as_an_id_token_hint_fails(consented, confidential, genuine):
    """RFC 8725 §3.11: an access token (typ at+jwt) is not an ID token, as a hint anywhere."""
    url = authorize_url(
        confidential, challenge=pkce_pair()[1], id_token_hint=genuine["access_token"]
    )
    assert query(consented.get(url, secure=True)["Location"])["error"] == "invalid_request"
    response = consented.get(END_SESSION, {"id_token_hint": genuine["access_token"]}, secure=True)
    assert_error_page(response, b"This sign-out link does not work")
    assert signed_in(consented)


# === ID tokens from another client: OIDC Core §3.1.3.7, RP-Initiated Logout §2 ====================
def test_id_token_of_another_client_fails_relying_party_validation(
    logged_in_client, confidential, other_app
):
    """OIDC Core §3.1.3.7 steps 3-5: aud names exactly the client the token was issued to, with
    azp. A relying party validating another client's ID token rejects it on aud."""
    id_token = code_flow(logged_in_client, other_app, "openid")["id_token"]
    jwks = KeySet.import_key_set(Browser().get("/.well-known/jwks.json", secure=True).json())
    claims = jwt.decode(id_token, jwks, algorithms=["RS256"]).claims
    assert (claims["aud"], claims["azp"]) == (other_app.client_id, other_app.client_id)
    with pytest.raises(InvalidClaimError):
        jwt.JWTClaimsRegistry(aud={"essential": True, "value": confidential.client_id}).validate(
            claims
        )


def test_id_token_of_another_client_at_end_session_fails(logged_in_client, confidential, other_app):
    """RP-Initiated Logout 1.0 §2: with client_id, the id_token_hint's aud must be that client.
    An ID token issued to client B used by A (to sign the person out and land them on A's page)
    gets the error page: no redirect, nobody signed out."""
    # Given a person who signed in to both A and B, and A's registered post-logout URI
    confidential.client.post_logout_redirect_uris = [LOGGED_OUT]
    confidential.client.save()
    get_code(logged_in_client, confidential)
    b_id_token = code_flow(logged_in_client, other_app, "openid")["id_token"]
    # When A's end-session request carries B's ID token
    response = logged_in_client.get(
        END_SESSION,
        {"id_token_hint": b_id_token, "client_id": confidential.client_id,
         "post_logout_redirect_uri": LOGGED_OUT, "state": "s"},
        secure=True,
    )  # fmt: skip
    # Then the error page, no redirect, and the person is still signed in
    assert_error_page(response, b"This sign-out link does not work")
    assert signed_in(logged_in_client)


def test_id_token_of_another_client_cannot_redirect_to_its_uri(
    logged_in_client, confidential, other_app
):
    """RP-Initiated Logout 1.0 §3: B's ID token alone cannot send the person to A's registered
    post-logout URI (it is not one of B's)."""
    confidential.client.post_logout_redirect_uris = [LOGGED_OUT]
    confidential.client.save()
    b_id_token = code_flow(logged_in_client, other_app, "openid")["id_token"]
    response = logged_in_client.get(
        END_SESSION, {"id_token_hint": b_id_token, "post_logout_redirect_uri": LOGGED_OUT},
        secure=True,
    )  # fmt: skip
    assert "Location" not in response


# === Token exchange privilege escalation: RFC 8693 §2.2.2, §5 ===================================
def test_token_exchange_for_an_audience_or_scope_outside_the_policy_fails(
    logged_in_client, confidential
):
    """RFC 8693 §5: the server decides what an exchange may buy. A client allowed billing and
    `profile` asks for payroll, or for `email` (which the subject token has), or for
    `offline_access` (which it has not): each is refused, and no token is issued."""
    # Given a service allowed to exchange person tokens for billing with `profile`
    service = exchange_client(token_exchange_audiences=[BILLING], token_exchange_scopes=["profile"])
    subject = code_flow(logged_in_client, confidential, "openid profile email")["access_token"]
    # When it asks for more than its policy
    attempts = {
        "another audience": ({"audience": "https://payroll.example.com"}, "invalid_target"),
        "another resource": ({"resource": "https://payroll.example.com/api"}, "invalid_target"),
        "a scope the policy lacks": ({"scope": "profile email"}, "invalid_scope"),
        "a scope the subject lacks": ({"scope": "offline_access"}, "invalid_scope"),
    }
    for name, (params, error) in attempts.items():
        # Then it is refused with the RFC's error
        assert_oauth_error(token_exchange(service, subject, **params), error), name
    # And nothing was issued; within the policy it works
    assert not SecurityEvent.objects.filter(kind="token_exchanged").exists()
    granted = token_exchange(service, subject).json()
    assert granted["scope"] == "profile"


def test_token_exchange_with_an_actor_token_from_a_revoked_session_fails(
    logged_in_client, confidential, user
):
    """RFC 8693 §2.2.2: an actor token that is not valid is invalid_request. An access token
    from a browser session that has since been ended (signed out from "My sessions") cannot
    name the actor of a delegation."""
    service = exchange_client()
    # Given an actor token from a person's session, and the session then ended
    actor = Browser()
    sign_in(actor, user.username)
    actor_token = code_flow(actor, confidential, "openid profile")["access_token"]
    actor.post("/logout/")
    subject = code_flow(logged_in_client, confidential, "openid profile")["access_token"]
    # When a service delegates with it
    response = token_exchange(service, subject, actor_token=actor_token, actor_token_type=ACCESS)
    # Then invalid_request, and nothing issued
    assert_oauth_error(response, "invalid_request")
    assert not SecurityEvent.objects.filter(kind="token_exchanged").exists()


def test_token_exchange_with_an_id_token_of_another_client_as_subject_fails(
    logged_in_client, other_app
):
    """OIDC Core §2 (aud) and RFC 8693 §2.2.2: an ID token is for its audience. A client that
    got hold of the ID token another client received cannot trade it for an access token."""
    service = exchange_client()
    id_token = code_flow(logged_in_client, other_app, "openid")["id_token"]
    response = token_exchange(service, id_token, ID_TOKEN)
    assert_oauth_error(response, "invalid_request")
    assert not SecurityEvent.objects.filter(kind="token_exchanged").exists()


# === Session fixation (OWASP Session Management: a new session id at every sign-in) ===============
def _anonymous_session(user) -> str:
    store = SessionStore()
    store["planted"] = "by an attacker"
    store.save()
    return store.session_key


def _made_up_key(user) -> str:
    return "attacker-chosen-session-key-0123456789"


def _attackers_signed_in_session(user) -> str:
    attacker = Browser()
    sign_in(attacker, UserFactory().username)
    return attacker.cookies["authserver_session"].value


PLANTED_SESSIONS = {
    "anonymous-session": _anonymous_session,
    "made-up-key": _made_up_key,
    "attackers-signed-in-session": _attackers_signed_in_session,
}


@pytest.mark.parametrize("planted", PLANTED_SESSIONS)
def test_session_fixation_fails(user, planted):
    """Session fixation: a session key the attacker planted in the victim's browser is worth
    nothing once the victim signs in: the key changes, and the planted one is not signed in as
    the victim (an attacker's own signed-in session, planted, is ended)."""
    # Given a session cookie the attacker knows, planted in the victim's browser
    key = PLANTED_SESSIONS[planted](user)
    victim = Browser()
    victim.cookies["authserver_session"] = key
    # When the victim signs in
    assert sign_in(victim, user.username).status_code == 302
    # Then the browser has a new key, signed in as the victim
    assert victim.cookies["authserver_session"].value != key
    assert session_row(victim).user == user
    # And the planted key signs nobody in
    attacker = Browser()
    attacker.cookies["authserver_session"] = key
    assert attacker.get("/").status_code == 302
    assert (
        not UserSession.objects.active()
        .filter(session_key=SessionStore.digest(key), user=user)
        .exists()
    )


# === User enumeration =============================================================================
def _comparable(response) -> str:
    """The sign-in page, without what legitimately differs: the CSRF token and the echoed name."""
    body = response.content.decode()
    body = re.sub(r'name="csrfmiddlewaretoken" value="[^"]*"', "", body)
    return re.sub(r'(name="username".*?value=")[^"]*"', r'\1"', body, flags=re.S)


def test_user_enumeration_through_sign_in_messages_fails(user):
    """Account enumeration (OWASP Authentication Cheat Sheet, "authentication responses"): a
    wrong password, an unknown name or address and an inactive account all get the same page
    and the same words."""
    inactive = UserFactory(inactive=True)
    answers = {
        "wrong password": sign_in(Browser(), user.username, "not the password"),
        "wrong password, by email": sign_in(Browser(), user.email, "not the password"),
        "unknown username": sign_in(Browser(), "nobody-by-this-name", "not the password"),
        "unknown email": sign_in(Browser(), "nobody@example.com", "not the password"),
        "inactive, right password": sign_in(Browser(), inactive.username, PASSWORD),
        "inactive, wrong password": sign_in(Browser(), inactive.username, "not the password"),
    }
    assert {name: r.status_code for name, r in answers.items()} == dict.fromkeys(answers, 200)
    assert {name: form_error(r) for name, r in answers.items()} == dict.fromkeys(answers, MISMATCH)
    assert len({_comparable(r) for r in answers.values()}) == 1
    assert not any("authserver_session" in r.cookies for r in answers.values())


def test_user_enumeration_through_the_lockout_message_fails(user):
    """Locking out says nothing either: a known and an unknown name lock the same way."""
    for identifier in (user.username, "nobody-by-this-name"):
        for _ in range(settings.LOGIN_FAILURE_LIMIT):
            sign_in(Browser(), identifier, "wrong")
    known = sign_in(Browser(), user.username, "wrong")
    unknown = sign_in(Browser(), "nobody-by-this-name", "wrong")
    assert form_error(known) == form_error(unknown) and form_error(known).startswith(THROTTLED)
    assert _comparable(known) == _comparable(unknown).replace("nobody-by-this-name", user.username)


def _median_seconds(attempts: dict[str, Callable[[], object]], rounds: int = 7) -> dict:
    """The median duration of each attempt, taken in turns (one of each per round), so a
    machine that slows down mid-test slows every kind alike."""
    timings: dict[str, list[float]] = {name: [] for name in attempts}
    for _ in range(rounds):
        for name, attempt in attempts.items():
            started = time.perf_counter()
            attempt()
            timings[name].append(time.perf_counter() - started)
    return {name: statistics.median(samples) for name, samples in timings.items()}


@pytest.mark.real_hasher
def test_user_enumeration_through_sign_in_timing_fails(settings):
    """Django #20760: with the real password hasher (Argon2), an unknown name and an inactive
    account take about as long as a wrong password, so timing tells nothing."""
    # Every sample must do the full work: no throttling shortcut for these tests.
    settings.LOGIN_FAILURE_LIMIT = settings.LOGIN_FAILURE_LIMIT_PER_IP = 1000
    known, inactive = UserFactory(), UserFactory(inactive=True)
    sign_in(Browser(), known.username, "warm-up")
    median = _median_seconds(
        {
            "wrong password": lambda: sign_in(Browser(), known.username, "not the password"),
            "unknown name": lambda: sign_in(Browser(), "nobody-by-this-name", "not it"),
            "inactive account": lambda: sign_in(Browser(), inactive.username, PASSWORD),
        }
    )
    wrong = median["wrong password"]
    assert 0.5 < median["unknown name"] / wrong < 2.0, median
    assert 0.5 < median["inactive account"] / wrong < 2.0, median


def test_user_enumeration_through_password_reset_fails(user):
    """A reset request for an unknown address gets the same answer as for a known one (and of
    course no email)."""
    known = request_reset(Browser(), user.email)
    unknown = request_reset(Browser(), "nobody@example.com")
    inactive = request_reset(Browser(), UserFactory(inactive=True).email)
    assert known.status_code == unknown.status_code == inactive.status_code == 302
    assert known["Location"] == unknown["Location"] == inactive["Location"]
    pages = [Browser().get(r["Location"]) for r in (known, unknown, inactive)]
    assert len({_comparable(page) for page in pages}) == 1
    assert len(mail.outbox) == 1


SMTP_ROUND_TRIP = 0.3  # seconds: connect, STARTTLS, AUTH, MAIL, RCPT, DATA to a real relay


class SlowSmtpBackend(LocmemEmailBackend):
    """The outbox, after the time a real SMTP relay (EMAIL_URL=smtp://...) takes to accept."""

    def send_messages(self, messages):
        time.sleep(SMTP_ROUND_TRIP)
        return super().send_messages(messages)


def test_user_enumeration_through_password_reset_timing_fails(user, settings):
    """The same answer must also come as fast: a known address may not take measurably longer
    than an unknown one (here with the latency of a real SMTP relay)."""
    settings.EMAIL_BACKEND = f"{__name__}.SlowSmtpBackend"
    settings.EMAIL_ASYNC = True  # as in production: the relay's latency is a worker's problem
    request_reset(Browser(), "warm-up@example.com")
    median = _median_seconds(
        {
            "known address": lambda: request_reset(Browser(), user.email),
            "unknown address": lambda: request_reset(Browser(), "nobody@example.com"),
        },
        rounds=5,
    )
    assert 0.5 < median["known address"] / median["unknown address"] < 2.0, median


# === Lockout bypass ===============================================================================
def _spellings(user) -> dict[str, list[str]]:
    return {
        "same-spelling": [user.username] * N,
        "case-and-spaces": [
            [user.username, user.username.upper(), f"  {user.username.title()} "][i % 3]
            for i in range(N)
        ],
        "email-spellings": [
            [user.email, user.email.upper(), f" {user.email} "][i % 3] for i in range(N)
        ],
        "username-and-email": [[user.username, user.email][i % 2] for i in range(N)],
    }


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("plain_http_cookies")
@pytest.mark.parametrize(
    "spelling",
    [
        "same-spelling",
        "case-and-spaces",
        "email-spellings",
        "username-and-email",
    ],
)
def test_lockout_bypass_by_parallel_requests_fails(live_server, settings, spelling):
    """Brute force against one account by twenty parallel requests (Zitadel GHSA-7h8m-vrxx-vr4m),
    spelling the account every way it signs in: no more than LOGIN_FAILURE_LIMIT passwords are
    checked per window, then even the right password is refused."""
    # Given an account, and a per-IP limit out of the way (every thread is 127.0.0.1)
    settings.LOGIN_FAILURE_LIMIT_PER_IP = 1000
    victim = UserFactory()
    # When twenty browsers guess its password at the same moment, in the chosen spellings
    identifiers = _spellings(victim)[spelling]
    responses = parallel_sign_ins(live_server.url, identifiers, "a wrong guess")
    # Then nothing broke, and no more guesses were checked than the limit
    no_server_errors(responses)
    checked = [r for r in responses if THROTTLED not in r.text]
    failures = SecurityEvent.objects.filter(kind="login_failed", user=victim).count()
    assert (len(checked), failures) == (settings.LOGIN_FAILURE_LIMIT,) * 2
    # And now the right password is refused too, in every spelling the attacker used
    for identifier in set(identifiers):
        assert form_error(sign_in(Browser(), identifier, PASSWORD)).startswith(THROTTLED)


@pytest.mark.parametrize("proxies", [0, 1])
def test_ip_limit_bypass_by_spoofed_forwarded_for_fails(settings, proxies):
    """§4.13 (TLS terminating reverse proxies: headers set by the proxy are trusted only from
    the proxy): an attacker spraying many accounts cannot reset the per-IP counter by writing
    their own X-Forwarded-For; only the address the last trusted proxy saw counts."""
    settings.TRUSTED_PROXY_COUNT = proxies
    settings.LOGIN_FAILURE_LIMIT_PER_IP = 6
    victim = UserFactory()
    real_address = "198.51.100.9"  # what the proxy (or the socket) sees

    def spoofed(n: int) -> Browser:
        forged = f"203.0.113.{n}"
        if proxies:  # the proxy appends the address it saw to whatever the client sent
            return Browser(HTTP_X_FORWARDED_FOR=f"{forged}, {real_address}")
        return Browser(REMOTE_ADDR=real_address, HTTP_X_FORWARDED_FOR=forged)

    # When the attacker sprays six accounts, claiming a new address each time
    for n in range(6):
        sign_in(spoofed(n), f"sprayed-{n}", "wrong password")
    # Then the seventh attempt from that address is refused, whatever it claims
    assert form_error(sign_in(spoofed(99), victim.username)).startswith(THROTTLED)


# === §4.12 307 redirect, §4.13 TLS terminating reverse proxies ====================================
def test_307_redirect_of_credentials_fails(user, confidential):
    """§4.12 (307 redirect): after a form that carried the password (or the consent), the
    server redirects with 302/303, never 307/308, so the browser never re-posts the form
    (and the password in it) to the client."""
    browser = Browser()
    url = authorize_url(confidential, challenge=pkce_pair()[1])
    signed = browser.post(
        "/login/", {"username": user.username, "password": PASSWORD, "next": url}, secure=True
    )
    allowed = browser.post(url, {"decision": "allow"}, secure=True)
    assert signed.status_code in (302, 303) and allowed.status_code in (302, 303)
    assert allowed["Location"].startswith(REDIRECT + "?code=")


def test_plain_http_claiming_https_through_a_header_fails(confidential):
    """§4.13 (TLS terminating reverse proxies) and RFC 6749 §3.2: a header the client wrote
    (X-Forwarded-Proto) is not trusted unless TRUST_X_FORWARDED_PROTO says a proxy sets it;
    plain http from a non-loopback host gets insecure_transport, no token."""
    response = Browser().post(
        "/token",
        "grant_type=client_credentials",
        content_type="application/x-www-form-urlencoded",
        HTTP_X_FORWARDED_PROTO="https",
        **confidential.basic(),
    )
    assert_oauth_error(response, "insecure_transport")


# === §4.10.1 sender-constrained tokens: DPoP (RFC 9449) =========================================
def _dpop_userinfo(token: str, proof: str | None, scheme: str = "DPoP"):
    headers = {"HTTP_AUTHORIZATION": f"{scheme} {token}"}
    if proof is not None:
        headers["HTTP_DPOP"] = proof
    return Browser().get("/userinfo", secure=True, **headers)


USERINFO = f"{settings.ISSUER}/userinfo"
STOLEN_TOKEN_USES = {
    # RFC 9449 §7.2: presented as a bearer token, as a DPoP-unaware API would take it.
    "as-bearer": lambda token, thief, owner: _dpop_userinfo(token, None, "Bearer"),
    # §11.1: the thief's own key signs a fresh proof; the token names the owner's key.
    "thiefs-own-key": lambda token, thief, owner: _dpop_userinfo(
        token, thief.proof("GET", USERINFO, access_token=token)
    ),
    # §11.1: a proof captured from the owner's earlier request, replayed.
    "replayed-proof": lambda token, thief, owner: (
        _dpop_userinfo(token, proof := owner.proof("GET", USERINFO, access_token=token)),
        _dpop_userinfo(token, proof),
    )[1],
    # §11.1: a proof the owner made for another token (ath) or endpoint (htu/htm).
    "proof-for-another-token": lambda token, thief, owner: _dpop_userinfo(
        token, owner.proof("GET", USERINFO, access_token="another-token")
    ),
    "proof-for-another-endpoint": lambda token, thief, owner: _dpop_userinfo(
        token, owner.proof("POST", f"{settings.ISSUER}/token", access_token=token)
    ),
    # §11.2: proofs signed in advance for later (a future iat).
    "precomputed-proof": lambda token, thief, owner: _dpop_userinfo(
        token,
        owner.proof("GET", USERINFO, access_token=token, claims={"iat": int(time.time()) + 3600}),
    ),
}


@pytest.mark.parametrize("use", STOLEN_TOKEN_USES)
def test_stolen_dpop_bound_access_token_fails(logged_in_client, public, use):
    """§4.10.1 / RFC 9449 §7: a DPoP-bound access token is no use without its private key."""
    # Given a DPoP-bound access token that an attacker has copied
    owner, thief = Holder(), Holder()
    token = dpop_code_flow(logged_in_client, public, owner.proof())["access_token"]
    # When the attacker presents it
    response = STOLEN_TOKEN_USES[use](token, thief, owner)
    # Then 401 with a DPoP challenge, and no claims
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("DPoP ")
    assert "sub" not in response.json()


def test_stolen_dpop_bound_refresh_token_fails(logged_in_client, public):
    """§4.14.2 / RFC 9449 §5: a public client's refresh token is bound to its DPoP key; the
    thief's refresh is refused, without a proof or with its own key, and the token survives."""
    owner, thief = Holder(), Holder()
    stolen = dpop_code_flow(logged_in_client, public, owner.proof())["refresh_token"]
    data = {"grant_type": "refresh_token", "refresh_token": stolen}
    assert_oauth_error(token_request(public, data, auth="none"), "invalid_grant")
    assert_oauth_error(
        token_request(public, data, auth="none", HTTP_DPOP=thief.proof()), "invalid_grant"
    )
    # The owner's next refresh still works: the thief burnt nothing.
    assert token_request(public, data, auth="none", HTTP_DPOP=owner.proof()).status_code == 200


def test_code_injection_into_a_dpop_bound_flow_fails(logged_in_client, public):
    """§4.5 code injection, with RFC 9449 §10: a code bound (dpop_jkt) to the client's key is
    refused to anyone proving another key, so a stolen code cannot buy tokens."""
    owner, thief = Holder(), Holder()
    code, verifier = get_code(
        logged_in_client, public, scope="openid profile", dpop_jkt=owner.thumbprint
    )
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": public.client.redirect_uris[0],
        "code_verifier": verifier,
    }
    stolen = token_request(public, data, auth="none", HTTP_DPOP=thief.proof())
    assert_oauth_error(stolen, "invalid_grant")


DPOP_KEY_CONFUSIONS = {
    "alg-none": lambda h: (
        ".".join(
            base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=").decode()
            for part in (
                {"typ": "dpop+jwt", "alg": "none", "jwk": h.public_jwk},
                {
                    "jti": "j",
                    "htm": "POST",
                    "htu": f"{settings.ISSUER}/token",
                    "iat": int(time.time()),
                },
            )
        )
        + "."
    ),
    # RFC 8725 §2.1: the public jwk, serialised, used as an HMAC secret.
    "hs256-keyed-with-the-jwk": lambda h: h.proof(
        header={"alg": "HS256"},
        signer=OctKey.import_key(json.dumps(h.public_jwk).encode()),
    ),
    "private-key-in-the-jwk": lambda h: h.proof(header={"jwk": h.key.as_dict(private=True)}),
    "jwk-of-another-key": lambda h: h.proof(header={"jwk": Holder().public_jwk}),
}


@pytest.mark.parametrize("confusion", DPOP_KEY_CONFUSIONS)
def test_dpop_proof_key_confusion_fails(confidential, confusion):
    """RFC 9449 §4.3 steps 5-7 and RFC 8725 §2.1: asymmetric algorithms only, a public key only,
    and a signature by that key; anything else is invalid_dpop_proof and no token."""
    proof = DPOP_KEY_CONFUSIONS[confusion](Holder())
    response = token_request(confidential, {"grant_type": "client_credentials"}, HTTP_DPOP=proof)
    body = assert_oauth_error(response, "invalid_dpop_proof")
    assert "access_token" not in body
