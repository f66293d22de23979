"""Logout: OpenID Connect RP-Initiated Logout 1.0 and Back-Channel Logout 1.0.

RP-initiated logout is driven over HTTP as a browser would. Back-channel deliveries go over real
HTTP to relying parties on loopback: a small server here for the unit-level tests (deliveries run
synchronously through ``tokens.logout.deliver``), and ``live_server`` with a real Celery worker for
the operator-in-admin case.
"""

import base64
import html
import json
import re
import socket
import threading
import time
import urllib.request
from dataclasses import dataclass
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import pytest
from celery.contrib.testing.worker import start_worker
from celery.exceptions import Retry
from django.conf import settings
from django.test import Client as Browser
from django.utils import timezone
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey

from accounts.expiry import SESSIONS
from accounts.models import UserSession
from authserver import janitor
from authserver.celery import app
from tests import urls_rp
from tests.conftest import second_connection, session_row, sign_in
from tests.factories import UserFactory
from tests.tokens.conftest import REDIRECT, Registered, exchange, get_code, refresh
from tokens import logout, revocation
from tokens.clients import create_client
from tokens.models import BackchannelLogout, Client, RefreshToken
from tokens.tasks import MAX_RETRIES, deliver_backchannel_logout

pytestmark = pytest.mark.django_db

END_SESSION = "/logout/end-session"
CONFIRM = "/logout/end-session/confirm"
LOGGED_OUT = "https://app.example.com/logged-out"
ORIGIN = "https://testserver"  # what a browser sends as Origin when posting the confirmation form
EVENT = "http://schemas.openid.net/event/backchannel-logout"


# --- helpers ----------------------------------------------------------------------------------
def tokens_for(browser: Browser, client: Registered, scope: str = "openid") -> dict:
    """The code flow in this browser's session; the token response (with an ID token)."""
    code, verifier = get_code(browser, client, scope=scope)
    response = exchange(client, code, verifier)
    assert response.status_code == 200, response.content
    return response.json()


def end_session(browser: Browser, method: str = "get", **params):
    send = browser.get if method == "get" else browser.post
    return send(END_SESSION, params, secure=True)


def signed_in(browser: Browser) -> bool:
    return browser.get("/").status_code == 200


def csrf_enforcing(browser: Browser) -> Browser:
    """From now on this browser's POSTs are held to CSRF checks, like a real one's."""
    browser.handler.enforce_csrf_checks = True
    return browser


def hidden_fields(page) -> dict[str, str]:
    """The confirmation form's hidden inputs (the logout parameters and the CSRF token)."""
    form = re.search(
        r'<form[^>]*action="' + CONFIRM + r'"[^>]*>(.*?)</form>', page.content.decode(), re.S
    )
    assert form, "no confirmation form on the page"
    pairs = re.findall(r'<input type="hidden" name="([^"]*)" value="([^"]*)"', form.group(1))
    return {html.unescape(name): html.unescape(value) for name, value in pairs}


def confirm(browser: Browser, fields: dict, **extra):
    return browser.post(CONFIRM, fields, secure=True, HTTP_ORIGIN=ORIGIN, **extra)


def registered(name: str, **fields) -> Registered:
    client, secret = create_client(
        name=name, redirect_uris=[REDIRECT], scopes=["openid", "profile"], **fields
    )
    return Registered(client, secret)


def other_browser(user) -> Browser:
    browser = Browser()
    assert sign_in(browser, user.username).status_code == 302
    return browser


def published_jwks() -> dict:
    return Browser().get("/.well-known/jwks.json", secure=True).json()


def validated_logout_token(token: str, client: Client, jwks: dict) -> dict:
    """Back-Channel Logout §2.4 and §2.6, checked with joserfc alone against the published JWKS:
    the explicit type, the client's algorithm, iss aud iat exp jti sub sid events, no nonce."""
    algorithm = client.id_token_signed_response_alg
    decoded = jwt.decode(token, KeySet.import_key_set(jwks), algorithms=[algorithm])
    assert decoded.header["typ"] == "logout+jwt"
    assert decoded.header["alg"] == algorithm
    assert decoded.header["kid"] in {key["kid"] for key in jwks["keys"]}
    claims = decoded.claims
    jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": settings.ISSUER},
        aud={"essential": True, "value": client.client_id},
        iat={"essential": True},
        exp={"essential": True},
        jti={"essential": True},
        sub={"essential": True},
        sid={"essential": True},
        events={"essential": True},
    ).validate(claims)
    assert claims["iat"] <= time.time() < claims["exp"] <= claims["iat"] + 600
    assert claims["events"] == {EVENT: {}}
    assert "nonce" not in claims  # §2.4: a logout token MUST NOT contain a nonce
    return claims


# --- a relying party's back-channel endpoint, on a real loopback server ---------------------
@dataclass
class Received:
    method: str
    path: str
    content_type: str
    body: str


class RelyingParty:
    """Records every request; answers each path with planned statuses (the last one repeats)."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.answers: dict[str, list[int]] = {}
        self.redirects: dict[str, str] = {}
        rp = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                rp._answer(self)

            do_GET = do_POST

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self._server.server_address[1]}{path}"

    def _answer(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length).decode()
        self.received.append(
            Received(handler.command, handler.path, handler.headers.get("Content-Type", ""), body)
        )
        plan = self.answers.get(handler.path) or [200]
        status = plan.pop(0) if len(plan) > 1 else plan[0]
        handler.send_response(status)
        if handler.path in self.redirects:
            handler.send_header("Location", self.redirects[handler.path])
        handler.send_header("Cache-Control", "no-store")
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    def logout_tokens(self, path: str) -> list[str]:
        tokens = []
        for request in self.received:
            assert (request.method, request.path) == ("POST", path), request
            assert request.content_type == "application/x-www-form-urlencoded"  # §2.5
            form = parse_qs(request.body)
            assert list(form) == ["logout_token"] and len(form["logout_token"]) == 1
            tokens.append(form["logout_token"][0])
        return tokens

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def rp(settings):
    settings.BACKCHANNEL_LOGOUT_ALLOW_PRIVATE_NETWORKS = True  # it lives on loopback
    server = RelyingParty()
    yield server
    server.stop()


@pytest.fixture
def rp_client(confidential) -> Registered:
    """The example app, with a post-logout redirect URI registered (RP-Initiated Logout §3.1)."""
    confidential.client.post_logout_redirect_uris = [LOGGED_OUT]
    confidential.client.save()
    return confidential


@pytest.fixture
def bcl_client(confidential, rp) -> Registered:
    """The example app, with a back-channel logout URI on the test relying party (§2.2)."""
    confidential.client.backchannel_logout_uri = rp.url("/bcl/example")
    confidential.client.save()
    return confidential


def the_delivery() -> BackchannelLogout:
    (delivery,) = BackchannelLogout.objects.all()
    return delivery


# === RP-Initiated Logout 1.0 ==================================================================
@pytest.mark.parametrize("method", ["get", "post"])
@pytest.mark.parametrize("with_client_id", [False, True], ids=["hint-only", "hint-and-client_id"])
def test_a_hint_for_this_browsers_session_signs_out_at_once_and_redirects_with_state(
    logged_in_client, rp_client, method, with_client_id
):
    """§2: an id_token_hint for this session needs no confirmation (and a relying party's form
    POST needs no CSRF token); §3: the exactly registered post_logout_redirect_uri, with state."""
    hint = tokens_for(logged_in_client, rp_client)["id_token"]
    row = session_row(logged_in_client)
    params = {"id_token_hint": hint, "post_logout_redirect_uri": LOGGED_OUT, "state": "af0ifjsl"}
    if with_client_id:
        params["client_id"] = rp_client.client_id
    response = end_session(csrf_enforcing(logged_in_client), method, **params)
    assert response.status_code == 302
    assert response["Location"] == LOGGED_OUT + "?state=af0ifjsl"
    assert not signed_in(logged_in_client)
    row.refresh_from_db()
    assert row.revoked_at is not None and row.ended_by == "person"


def test_logging_out_this_way_revokes_the_sessions_refresh_tokens(logged_in_client, rp_client):
    """§2 ends the OP session; Back-Channel Logout §2.7: its refresh tokens (not offline_access)
    are revoked with it."""
    tokens = tokens_for(logged_in_client, rp_client, scope="openid profile")
    end_session(logged_in_client, id_token_hint=tokens["id_token"])
    response = refresh(rp_client, tokens["refresh_token"])
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"
    assert RefreshToken.objects.get().revoke_reason == "session_ended"


@pytest.mark.parametrize(
    "uri",
    [
        LOGGED_OUT + "/",
        LOGGED_OUT + "?next=/",
        LOGGED_OUT + "#top",
        "https://APP.example.com/logged-out",
        "http://app.example.com/logged-out",
        "https://app.example.com.evil.test/logged-out",
        "https://evil.example/logged-out",
    ],
)
def test_a_post_logout_redirect_uri_not_registered_exactly_is_never_redirected_to(
    logged_in_client, rp_client, uri
):
    """§3: the OP MUST NOT redirect unless the URI exactly matches a registered one; the person
    is still signed out (the hint ties the request to the session) and sees the logged-out page."""
    hint = tokens_for(logged_in_client, rp_client)["id_token"]
    response = end_session(
        logged_in_client,
        id_token_hint=hint,
        client_id=rp_client.client_id,
        post_logout_redirect_uri=uri,
        state="s",
    )
    assert response.status_code == 200 and "Location" not in response
    assert b"You are signed out" in response.content
    assert uri.encode() not in response.content
    assert not signed_in(logged_in_client)


def test_confirming_a_request_with_an_unregistered_uri_signs_out_without_redirecting(
    logged_in_client, rp_client
):
    """§3 holds on the confirmation path too."""
    page = end_session(
        logged_in_client, client_id=rp_client.client_id, post_logout_redirect_uri=LOGGED_OUT + "/"
    )
    assert page.status_code == 200 and b"Sign out?" in page.content
    response = confirm(logged_in_client, hidden_fields(page))
    assert response.status_code == 200 and "Location" not in response
    assert not signed_in(logged_in_client)


def test_a_client_id_that_is_not_the_hints_audience_is_a_400_page_and_signs_nobody_out(
    logged_in_client, rp_client
):
    """§2: with both, client_id MUST match the ID token's aud; §4: on an error, no redirection."""
    other = registered("Other App", post_logout_redirect_uris=["https://other.example.com/bye"])
    hint = tokens_for(logged_in_client, rp_client)["id_token"]
    response = end_session(
        logged_in_client,
        id_token_hint=hint,
        client_id=other.client_id,
        post_logout_redirect_uri="https://other.example.com/bye",
    )
    assert response.status_code == 400 and "Location" not in response
    assert b"This sign-out link does not work" in response.content
    assert signed_in(logged_in_client)


@pytest.mark.parametrize("method", ["get", "post"])
def test_without_a_hint_nothing_ends_until_the_person_posts_the_csrf_protected_confirmation(
    logged_in_client, rp_client, method
):
    """§2 and §6: a request that cannot be tied to the session is confirmed by the person first;
    the confirmation is CSRF-protected; then §3 redirection with state (client_id was given)."""
    browser = csrf_enforcing(logged_in_client)
    row = session_row(browser)
    page = end_session(
        browser,
        method,
        client_id=rp_client.client_id,
        post_logout_redirect_uri=LOGGED_OUT,
        state="st8",
    )
    assert (
        page.status_code == 200 and b"Sign out?" in page.content and b"Example App" in page.content
    )
    assert signed_in(browser)
    row.refresh_from_db()
    assert row.revoked_at is None
    fields = hidden_fields(page)
    assert {k: v for k, v in fields.items() if k != "csrfmiddlewaretoken"} == {
        "client_id": rp_client.client_id,
        "post_logout_redirect_uri": LOGGED_OUT,
        "state": "st8",
    }
    no_token = {k: v for k, v in fields.items() if k != "csrfmiddlewaretoken"}
    assert confirm(browser, no_token).status_code == 403
    cross_site = browser.post(CONFIRM, fields, secure=True, HTTP_ORIGIN="https://evil.example")
    assert cross_site.status_code == 403
    assert signed_in(browser)
    response = confirm(browser, fields)
    assert response.status_code == 302
    assert response["Location"] == LOGGED_OUT + "?state=st8"
    assert not signed_in(browser)


@pytest.mark.parametrize("whose", ["same-person-other-browser", "someone-else"])
def test_a_hint_from_another_session_asks_first_and_ends_only_this_browsers_session(
    logged_in_client, user, rp_client, whose
):
    """§2: a hint is tied to a session by its sid; one from another session (or person) is not
    enough to sign this browser out without asking, and never ends that other session."""
    other = other_browser(user if whose == "same-person-other-browser" else UserFactory())
    hint = tokens_for(other, rp_client)["id_token"]
    browser = csrf_enforcing(logged_in_client)
    page = end_session(browser, id_token_hint=hint, post_logout_redirect_uri=LOGGED_OUT, state="x")
    assert page.status_code == 200 and b"Sign out?" in page.content
    assert signed_in(browser) and signed_in(other)
    response = confirm(browser, hidden_fields(page))
    assert response.status_code == 302 and response["Location"] == LOGGED_OUT + "?state=x"
    assert not signed_in(browser)
    assert signed_in(other)


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _foreign_key(tokens, user, client) -> str:
    key = RSAKey.generate_key(2048, private=True)
    now = int(time.time())
    claims = {"iss": settings.ISSUER, "aud": client.client_id, "sub": str(user.pk)}
    claims.update(iat=now, exp=now + 600)
    return jwt.encode({"alg": "RS256", "kid": key.thumbprint()}, claims, key)


def _tampered(tokens, user, client) -> str:
    header, payload, signature = tokens["id_token"].split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = "1" + claims["sub"]
    return f"{header}.{_b64(claims)}.{signature}"


FORGERIES = {
    "garbage": lambda tokens, user, client: "not-a-token",
    "alg-none": lambda tokens, user, client: (
        _b64({"alg": "none"})
        + "."
        + _b64({"iss": settings.ISSUER, "sub": str(user.pk), "aud": client.client_id})
        + "."
    ),
    "signed-by-another-key": _foreign_key,
    "tampered-claims": _tampered,
    "an-access-token": lambda tokens, user, client: tokens["access_token"],
}


@pytest.mark.parametrize("forgery", FORGERIES)
def test_a_forged_or_garbage_hint_is_a_400_page_and_signs_nobody_out(
    logged_in_client, user, rp_client, forgery
):
    """§2: the OP MUST validate that it issued the ID token; §4: errors never redirect."""
    tokens = tokens_for(logged_in_client, rp_client)
    hint = FORGERIES[forgery](tokens, user, rp_client)
    response = end_session(
        logged_in_client, id_token_hint=hint, post_logout_redirect_uri=LOGGED_OUT
    )
    assert response.status_code == 400 and "Location" not in response
    assert b"This sign-out link does not work" in response.content
    assert signed_in(logged_in_client)


def test_an_expired_id_token_is_still_accepted_as_a_hint(logged_in_client, rp_client, settings):
    """§2: the OP SHOULD accept ID tokens whose exp has passed for a current session."""
    settings.ID_TOKEN_LIFETIME = -60
    hint = tokens_for(logged_in_client, rp_client)["id_token"]
    claims = jwt.decode(hint, KeySet.import_key_set(published_jwks())).claims
    assert claims["exp"] < time.time()
    response = end_session(
        logged_in_client, id_token_hint=hint, post_logout_redirect_uri=LOGGED_OUT
    )
    assert response.status_code == 302 and response["Location"] == LOGGED_OUT
    assert not signed_in(logged_in_client)


@pytest.mark.parametrize("tie", ["id_token_hint", "client_id"])
def test_with_nobody_signed_in_a_valid_request_just_redirects(user, rp_client, tie):
    """§2/§3: nothing to end here; the registered redirect is still honoured. A hint used from
    another browser does not end the session it came from."""
    someone = other_browser(user)
    params = {"post_logout_redirect_uri": LOGGED_OUT, "state": "st"}
    if tie == "id_token_hint":
        params["id_token_hint"] = tokens_for(someone, rp_client)["id_token"]
    else:
        params["client_id"] = rp_client.client_id
    response = end_session(Browser(), **params)
    assert response.status_code == 302 and response["Location"] == LOGGED_OUT + "?state=st"
    assert signed_in(someone)


@pytest.mark.parametrize("redirect", [None, "https://evil.example/bye"])
def test_with_nobody_signed_in_and_no_usable_redirect_the_logged_out_page_is_shown(
    rp_client, redirect
):
    params = {"client_id": rp_client.client_id}
    if redirect:
        params["post_logout_redirect_uri"] = redirect
    response = end_session(Browser(), **params)
    assert response.status_code == 200 and "Location" not in response
    assert b"You are signed out" in response.content


def test_the_confirmation_pages_csp_form_action_allows_the_post_logout_redirect_origin(
    logged_in_client, rp_client
):
    """Browsers hold the redirect after the confirmation POST to CSP form-action: the registered
    post-logout redirect origin is allowed there, and nothing else."""
    page = end_session(
        logged_in_client, client_id=rp_client.client_id, post_logout_redirect_uri=LOGGED_OUT
    )
    assert "form-action 'self' https://app.example.com;" in page["Content-Security-Policy"]
    unregistered = end_session(
        logged_in_client,
        client_id=rp_client.client_id,
        post_logout_redirect_uri="https://evil.example/bye",
    )
    assert b"Sign out?" in unregistered.content
    csp = unregistered["Content-Security-Policy"]
    assert "form-action 'self';" in csp and "evil.example" not in csp


# === Back-Channel Logout 1.0, deliveries run synchronously ====================================
def _sign_out(browser, user, tokens) -> None:
    assert browser.post("/logout/").status_code in (200, 302)


def _rp_initiated(browser, user, tokens) -> None:
    assert end_session(browser, id_token_hint=tokens["id_token"]).status_code == 200


def _my_sessions(browser, user, tokens) -> None:
    sid = session_row(browser).sid
    assert other_browser(user).post(f"/account/sessions/{sid}/end/").status_code == 302


def _operator(browser, user, tokens) -> None:
    row = session_row(browser)
    staff = other_browser(UserFactory(staff=True))
    action = {"action": "revoke_sessions", "_selected_action": [row.pk]}
    assert staff.post("/admin/accounts/usersession/", action).status_code == 302


def _deactivation(browser, user, tokens) -> None:
    revocation.deactivate_user(user, by=UserSession.EndedBy.OPERATOR)


def _expiry_and_purge(browser, user, tokens) -> None:
    past = timezone.now() - timedelta(minutes=1)
    UserSession.objects.filter(pk=session_row(browser).pk).update(expire_date=past)
    assert janitor.purge(SESSIONS).deleted == 1


ENDINGS = {
    "sign-out": _sign_out,
    "rp-initiated-logout": _rp_initiated,
    "my-sessions": _my_sessions,
    "operator-in-admin": _operator,
    "deactivation": _deactivation,
    "purge-of-expired-session": _expiry_and_purge,
}


@pytest.mark.parametrize("ending", ENDINGS)
def test_every_way_a_session_ends_sends_the_client_exactly_one_valid_logout_token(
    logged_in_client, user, bcl_client, rp, ending
):
    """§2.4 the logout token, §2.5 POSTed as the form field logout_token, §2.7 once per session
    and client, even for a client that got tokens twice in that session."""
    tokens_for(logged_in_client, bcl_client)
    tokens = tokens_for(logged_in_client, bcl_client, scope="openid profile")
    sid = session_row(logged_in_client).sid
    ENDINGS[ending](logged_in_client, user, tokens)
    delivery = the_delivery()
    assert (delivery.sid, delivery.client_id, delivery.user_id, delivery.status) == (
        sid,
        bcl_client.client.pk,
        user.pk,
        "pending",
    )
    assert logout.deliver(delivery.pk) == "delivered"
    (token,) = rp.logout_tokens("/bcl/example")
    claims = validated_logout_token(token, bcl_client.client, published_jwks())
    assert (claims["sub"], claims["sid"]) == (str(user.pk), sid)
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("delivered", 1, 200)
    assert delivery.delivered_at is not None and delivery.last_error == ""


def test_only_clients_that_got_tokens_in_that_session_and_registered_a_uri_are_told(
    logged_in_client, user, bcl_client, rp
):
    """§2.7: the OP tells each RP with a session there; nobody else."""
    second = registered(
        "Second App",
        backchannel_logout_uri=rp.url("/bcl/second"),
        id_token_signed_response_alg="ES256",
    )
    no_uri = registered("No Back-channel App")
    code_only = registered("Code Only App", backchannel_logout_uri=rp.url("/bcl/code-only"))
    elsewhere = registered("Elsewhere App", backchannel_logout_uri=rp.url("/bcl/elsewhere"))
    for client in (bcl_client, second, no_uri):
        tokens_for(logged_in_client, client)
    get_code(logged_in_client, code_only)  # a code never exchanged: no tokens, nothing to tell
    other = other_browser(user)
    tokens_for(other, elsewhere)  # tokens in another session of the same person
    sid = session_row(logged_in_client).sid
    logged_in_client.post("/logout/")
    deliveries = BackchannelLogout.objects.order_by("pk")
    assert {(d.sid, d.client_id) for d in deliveries} == {
        (sid, bcl_client.client.pk),
        (sid, second.client.pk),
    }
    assert all(logout.deliver(d.pk) == "delivered" for d in deliveries)
    assert sorted(r.path for r in rp.received) == ["/bcl/example", "/bcl/second"]
    jwks = published_jwks()
    claims = [
        validated_logout_token(
            parse_qs(r.body)["logout_token"][0],
            bcl_client.client if r.path == "/bcl/example" else second.client,
            jwks,
        )
        for r in rp.received
    ]
    assert {c["sid"] for c in claims} == {sid} and claims[0]["jti"] != claims[1]["jti"]
    assert signed_in(other)


def test_ending_a_session_again_sends_nothing_more(logged_in_client, user, bcl_client, rp):
    """Ending is idempotent (tokens/revocation.py), and so is telling the client (§2.7)."""
    tokens_for(logged_in_client, bcl_client)
    row = session_row(logged_in_client)
    logged_in_client.post("/logout/")
    delivery = the_delivery()
    assert logout.deliver(delivery.pk) == "delivered"
    revocation.end_sessions(UserSession.objects.filter(pk=row.pk), by="operator", reason="again")
    revocation.deactivate_user(user, by=UserSession.EndedBy.OPERATOR)
    UserSession.objects.filter(pk=row.pk).update(expire_date=timezone.now() - timedelta(minutes=1))
    janitor.purge(SESSIONS)
    assert logout.schedule([row.sid]) == []  # even told again, the receiver owes nothing new
    assert BackchannelLogout.objects.count() == 1
    assert logout.deliver(delivery.pk) == "skipped"
    assert len(rp.received) == 1


def test_a_delivery_already_delivered_is_never_sent_again(
    logged_in_client, bcl_client, rp, staff_client
):
    tokens_for(logged_in_client, bcl_client)
    logged_in_client.post("/logout/")
    delivery = the_delivery()
    assert logout.deliver(delivery.pk) == "delivered"
    assert logout.deliver(delivery.pk) == "skipped"
    assert deliver_backchannel_logout(delivery.pk) == "skipped"  # the task: no retry either
    # The admin's "Send again now" leaves a delivered row alone.
    response = staff_client.post(
        "/admin/tokens/backchannellogout/",
        {"action": "retry", "_selected_action": [delivery.pk]},
        follow=True,
    )
    assert b"Queued 0 deliver(ies)." in response.content
    assert len(rp.received) == 1
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("delivered", 1)


@pytest.mark.parametrize("status", [200, 204])
def test_200_and_204_both_count_as_delivered(logged_in_client, bcl_client, rp, status):
    """§2.8: 200 OK, and 204 from frameworks that substitute it for an empty 200."""
    rp.answers["/bcl/example"] = [status]
    tokens_for(logged_in_client, bcl_client)
    logged_in_client.post("/logout/")
    assert logout.deliver(the_delivery().pk) == "delivered"
    assert the_delivery().last_status_code == status


def test_an_rp_answering_500_leaves_the_delivery_failed_and_the_task_retries(
    logged_in_client, bcl_client, rp
):
    """§2.8: anything but 200/204 is a failure; the task asks Celery for a retry."""
    rp.answers["/bcl/example"] = [500]
    tokens_for(logged_in_client, bcl_client)
    logged_in_client.post("/logout/")
    delivery = the_delivery()
    with pytest.raises(Retry):
        deliver_backchannel_logout(delivery.pk)  # called directly: first attempt, retries == 0
    delivery.refresh_from_db()
    assert (delivery.status, delivery.last_status_code, delivery.attempts) == ("failed", 500, 1)
    assert delivery.last_error == "HTTP 500"
    assert len(rp.received) == 1


def test_a_retry_that_reaches_a_recovered_rp_delivers(logged_in_client, bcl_client, rp):
    rp.answers["/bcl/example"] = [500, 200]
    tokens_for(logged_in_client, bcl_client)
    logged_in_client.post("/logout/")
    delivery = the_delivery()
    result = deliver_backchannel_logout.apply(args=[delivery.pk])  # eager: retries run at once
    assert result.get() == "delivered"
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("delivered", 2, 200)
    assert len(rp.received) == 2


def test_after_the_last_retry_the_delivery_is_abandoned(logged_in_client, bcl_client, rp):
    rp.answers["/bcl/example"] = [500]
    tokens_for(logged_in_client, bcl_client)
    logged_in_client.post("/logout/")
    delivery = the_delivery()
    result = deliver_backchannel_logout.apply(args=[delivery.pk])  # eager: every retry at once
    assert result.get() == "retry"
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("abandoned", MAX_RETRIES + 1)
    assert (delivery.last_status_code, delivery.last_error) == (500, "HTTP 500")
    assert len(rp.received) == MAX_RETRIES + 1
    assert logout.deliver(delivery.pk) == "skipped"  # abandoned stays abandoned


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_a_loopback_uri_is_refused_when_private_networks_are_not_allowed(
    logged_in_client, bcl_client, rp, settings, host
):
    """SSRF guard: clients register these URLs; with the setting off, nothing is sent into the
    provider's own network."""
    bcl_client.client.backchannel_logout_uri = rp.url("/bcl/example", host=host)
    bcl_client.client.save()
    settings.BACKCHANNEL_LOGOUT_ALLOW_PRIVATE_NETWORKS = False
    tokens_for(logged_in_client, bcl_client)
    logged_in_client.post("/logout/")
    delivery = the_delivery()
    assert logout.deliver(delivery.pk) == "retry"
    delivery.refresh_from_db()
    assert delivery.status == "failed" and delivery.last_status_code is None
    assert "SSRF" in delivery.last_error
    assert rp.received == []


def test_a_shared_address_space_uri_is_refused_too(
    logged_in_client, bcl_client, rp, settings, monkeypatch
):
    connections = []

    def no_network(address, *args, **kwargs):
        connections.append(address)
        raise OSError("the test allows no connection here")

    monkeypatch.setattr(socket, "create_connection", no_network)
    bcl_client.client.backchannel_logout_uri = "http://100.100.100.200/latest/meta-data/"
    bcl_client.client.save()
    settings.BACKCHANNEL_LOGOUT_ALLOW_PRIVATE_NETWORKS = False
    tokens_for(logged_in_client, bcl_client)
    logged_in_client.post("/logout/")
    delivery = the_delivery()
    logout.deliver(delivery.pk)
    delivery.refresh_from_db()
    assert connections == []
    assert "SSRF" in delivery.last_error


def test_an_rp_redirect_is_neither_followed_nor_counted_as_delivered(
    logged_in_client, bcl_client, rp
):
    """§2.8: only 200 (or 204) from the registered URI means the RP logged the session out."""
    rp.answers["/bcl/example"] = [302]
    rp.redirects["/bcl/example"] = rp.url("/internal/only")
    tokens_for(logged_in_client, bcl_client)
    logged_in_client.post("/logout/")
    delivery = the_delivery()
    logout.deliver(delivery.pk)
    delivery.refresh_from_db()
    assert [r.path for r in rp.received] == ["/bcl/example"]
    assert (delivery.status, delivery.last_status_code) == ("failed", 302)


@pytest.mark.django_db(transaction=True)
def test_a_delivery_is_not_skipped_while_another_worker_claims_one_for_the_same_client(
    bcl_client, user, rp
):
    """Two sessions of one person end together (e.g. deactivation): two deliveries to the same
    client, taken by two workers at once."""
    first, second = (
        BackchannelLogout.objects.create(sid=f"sid-{n}", client=bcl_client.client, user=user)
        for n in (1, 2)
    )
    claim_sql = (
        f"SELECT d.id FROM {BackchannelLogout._meta.db_table} d "
        f"JOIN {Client._meta.db_table} c ON c.id = d.client_id "
        "WHERE d.id = %s FOR UPDATE SKIP LOCKED"
    )
    with second_connection() as other_worker:
        assert other_worker.execute(claim_sql, [first.pk]).fetchone() == (first.pk,)
        outcome = logout.deliver(second.pk)  # meanwhile, in this worker
    second.refresh_from_db()
    assert outcome == "delivered" and second.status == "delivered"


def test_the_admin_lists_deliveries_and_is_read_only(
    logged_in_client, bcl_client, rp, staff_client
):
    tokens_for(logged_in_client, bcl_client)
    sid = session_row(logged_in_client).sid
    logged_in_client.post("/logout/")
    delivery = the_delivery()
    page = staff_client.get("/admin/tokens/backchannellogout/")
    body = page.content.decode()
    assert page.status_code == 200
    assert sid in body and "Example App" in body and "pending" in body
    assert staff_client.get("/admin/tokens/backchannellogout/add/").status_code == 403
    change_url = f"/admin/tokens/backchannellogout/{delivery.pk}/change/"
    change = staff_client.get(change_url).content.decode()
    assert sid in change
    assert 'name="status"' not in change and 'name="sid"' not in change
    staff_client.post(change_url, {"status": "delivered", "sid": "forged", "attempts": "9"})
    delivery.refresh_from_db()
    assert (delivery.status, delivery.sid, delivery.attempts) == ("pending", sid, 0)


# === Back-Channel Logout 1.0 through a real Celery worker =====================================
@pytest.mark.django_db(transaction=True)
def test_an_operator_revokes_a_session_in_admin_and_the_rp_receives_a_valid_logout_token_through_a_real_celery_worker(
    live_server, settings, user, staff_client
):
    """The issue's end-to-end case: admin → revocation.end_sessions → schedule → broker →
    worker → HTTP POST to the RP's back-channel endpoint (§2.5), checked independently (§2.4)."""
    settings.ROOT_URLCONF = "tests.urls_rp"
    settings.BACKCHANNEL_LOGOUT_ALLOW_PRIVATE_NETWORKS = True
    urls_rp.RECEIVED.clear()
    rp_app = registered("Worker RP", id_token_signed_response_alg="ES256")
    rp_app.client.backchannel_logout_uri = live_server.url + "/rp/backchannel-logout"
    rp_app.client.save()
    browser = other_browser(user)
    tokens = tokens_for(browser, rp_app, scope="openid profile")
    row = session_row(browser)

    with start_worker(app, perform_ping_check=False, shutdown_timeout=10):
        response = staff_client.post(
            "/admin/accounts/usersession/",
            {"action": "revoke_sessions", "_selected_action": [row.pk]},
        )
        assert response.status_code == 302
        deadline = time.monotonic() + 20
        delivered = False
        while not delivered and time.monotonic() < deadline:
            time.sleep(0.1)
            delivered = (
                bool(urls_rp.RECEIVED)
                and BackchannelLogout.objects.filter(
                    sid=row.sid, client=rp_app.client, status="delivered"
                ).exists()
            )

    assert len(urls_rp.RECEIVED) == 1, urls_rp.RECEIVED
    received = urls_rp.RECEIVED[0]
    assert received["content_type"] == "application/x-www-form-urlencoded"
    assert received["fields"] == ["logout_token"]
    with urllib.request.urlopen(live_server.url + "/.well-known/jwks.json", timeout=5) as answer:
        jwks = json.load(answer)
    claims = validated_logout_token(received["logout_token"], rp_app.client, jwks)
    assert claims["sub"] == str(user.pk) and claims["sid"] == row.sid
    delivery = BackchannelLogout.objects.get()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("delivered", 1, 200)
    assert not signed_in(browser)
    assert refresh(rp_app, tokens["refresh_token"]).json()["error"] == "invalid_grant"


def test_a_task_requeued_while_its_dead_workers_claim_is_fresh_retries_instead_of_dropping(
    logged_in_client, bcl_client, rp
):
    """A pool process SIGKILLed mid-request (OOM): Celery requeues the task at once, while the row
    still says "sending" by the dead process. The task must come back later, not call it done;
    once the claim is stale (STALE_SENDING), the retry sends it (found by `make faults`)."""
    tokens_for(logged_in_client, bcl_client)
    logged_in_client.post("/logout/")
    delivery = the_delivery()
    BackchannelLogout.objects.filter(pk=delivery.pk).update(
        status="sending", last_attempt_at=timezone.now(), attempts=1
    )  # what the dead process left
    assert logout.deliver(delivery.pk) == "retry"
    with pytest.raises(Retry):
        deliver_backchannel_logout(delivery.pk)  # the task backs off instead of acknowledging
    assert rp.received == []
    BackchannelLogout.objects.filter(pk=delivery.pk).update(
        last_attempt_at=timezone.now() - logout.STALE_SENDING - timedelta(seconds=1)
    )
    assert logout.deliver(delivery.pk) == "delivered"
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, len(rp.received)) == ("delivered", 2, 1)
