"""Pushed authorization requests (RFC 9126): keeping what a client pushed, and handing it to the
authorization endpoint once, to one browser.

The life of a pushed request:

1. **pushed** (``push``): the parameters, validated by tokens/oauth/pushed.py, are stored under
   the digest of a random reference; the client gets ``urn:ietf:params:oauth:request_uri:<it>``,
   good for PUSHED_AUTHORIZATION_REQUEST_LIFETIME seconds.
2. **claimed** (``claim``): the first browser that presents it at /authorize, with the same
   ``client_id`` (§4), binds it to itself: a cookie's digest goes on the row, and the browser has
   PUSHED_AUTHORIZATION_SIGN_IN_TIME seconds to sign in and consent. Those pages send it back to
   /authorize with the same ``request_uri``; only the browser holding the cookie gets through.
   A second browser (a leaked or replayed request_uri, §7.3-§7.4) is refused.
3. **completed** (``complete``): /authorize answered the client (a code or an error); the
   request_uri is spent, for that browser too.

§4 lets a server choose between single use at first presentation and at the code; this is both:
nobody but the first browser ever uses it, and that browser gets at most one answer from it.

Who writes ``tokens_pushedauthorizationrequest``: this module; the janitor deletes the rows past
``expires`` (tokens/expiry.py).
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.http import HttpResponse
from django.urls import reverse
from django.utils import timezone

from tokens.models import Client, PushedAuthorizationRequest, token_digest

URN_PREFIX = "urn:ietf:params:oauth:request_uri:"
BROWSER_COOKIE = "authserver_par"
# Parameters that a fresh sign-in answers. A plain request's continuation drops them after the
# sign-in (tokens/views.py, _redirect_to_sign_in); a pushed one cannot be edited, so they are
# dropped on every pass after a sign-in made since the browser claimed it.
ANSWERED_BY_SIGN_IN = ("max_age", "id_token_hint")
SIGN_IN_PROMPTS = {"login", "select_account"}


def is_pushed_reference(value: str | None) -> bool:
    """Whether a request_uri names one of our pushed requests (and not a remote request object)."""
    return bool(value) and value.startswith(URN_PREFIX)


def required_for(client: Client) -> bool:
    """RFC 9126 §5 (the server) and §6 (the client's metadata), and FAPI 2.0 §5.3.2.1 (a fapi2
    client): authorization requests only by PAR."""
    return (
        settings.REQUIRE_PUSHED_AUTHORIZATION_REQUESTS
        or client.require_pushed_authorization_requests
        or client.fapi2
    )


def push(client: Client, parameters: dict[str, str]) -> tuple[str, int]:
    """Store validated authorization request parameters; return (request_uri, expires_in).

    §2.2 / §7.1: the reference is 256 random bits, so a request_uri cannot be guessed; only its
    SHA-256 is kept, so the table does not hand out live request_uris either."""
    reference = secrets.token_urlsafe(32)
    lifetime = settings.PUSHED_AUTHORIZATION_REQUEST_LIFETIME
    now = timezone.now()
    PushedAuthorizationRequest.objects.create(
        reference_digest=token_digest(reference),
        client=client,
        parameters=parameters,
        created=now,
        expires=now + timedelta(seconds=lifetime),
    )
    return URN_PREFIX + reference, lifetime


class Refused(Exception):
    """The request_uri cannot be used (unknown, expired, another client's, spent, another
    browser's). The description is for the person: there is no trusted redirect URI to tell."""

    def __init__(self, description: str):
        super().__init__(description)
        self.description = description


START_AGAIN = "Go back to the application and sign in again."


@dataclass
class Claimed:
    """A pushed request this browser may continue with."""

    row: PushedAuthorizationRequest
    browser_secret: str  # the cookie that binds it to this browser
    first_presentation: bool

    def parameters(self, auth_time: int | None) -> dict[str, str]:
        """The pushed parameters for this pass. After a sign-in made since the claim, without
        the ones that sign-in answered (prompt=login and select_account, max_age, the hint),
        or the person would be sent round in circles."""
        parameters = dict(self.row.parameters)
        claimed = int(self.row.claimed_at.timestamp())  # auth_time has whole seconds
        if self.first_presentation or auth_time is None or auth_time < claimed:
            return parameters
        for name in ANSWERED_BY_SIGN_IN:
            parameters.pop(name, None)
        prompts = (parameters.get("prompt") or "").split()
        remaining = [prompt for prompt in prompts if prompt not in SIGN_IN_PROMPTS]
        if remaining:
            parameters["prompt"] = " ".join(remaining)
        else:
            parameters.pop("prompt", None)
        return parameters


def claim(request_uri: str, client_id: str | None, browser_secret: str | None) -> Claimed:
    """The pushed request ``request_uri`` names, for this browser, row-locked until the
    transaction ends (run inside ``transaction.atomic()``); raises Refused.

    Two browsers presenting one fresh request_uri at once queue on the lock: the first claims it,
    the second finds it claimed by another browser."""
    reference = request_uri[len(URN_PREFIX) :]
    if not reference or len(reference) > 100:
        raise Refused(f"This sign-in link is not valid. {START_AGAIN}")
    row = (
        PushedAuthorizationRequest.objects.select_for_update(of=("self",))
        .select_related("client")
        .filter(reference_digest=token_digest(reference))
        .first()
    )
    now = timezone.now()
    if row is None or row.expires <= now or not row.client.is_active:
        raise Refused(f"This sign-in link has expired. {START_AGAIN}")
    # §4: the client_id of the authorization request must be the one that pushed it.
    if not client_id or not hmac.compare_digest(
        row.client.client_id.encode(), client_id.encode("utf-8", "surrogatepass")
    ):
        raise Refused(f"This sign-in link belongs to another application. {START_AGAIN}")
    if row.completed_at is not None:
        raise Refused(f"This sign-in link has already been used. {START_AGAIN}")
    if row.browser_digest:
        if not browser_secret or not hmac.compare_digest(
            token_digest(browser_secret), row.browser_digest
        ):
            raise Refused(f"This sign-in link has already been used. {START_AGAIN}")
        return Claimed(row, browser_secret, first_presentation=False)
    # One secret per browser, reused by its other pushed requests (two tabs, two applications).
    if not browser_secret or len(browser_secret) != 43:
        browser_secret = secrets.token_urlsafe(32)
    row.browser_digest = token_digest(browser_secret)
    row.claimed_at = now
    row.expires = now + timedelta(seconds=settings.PUSHED_AUTHORIZATION_SIGN_IN_TIME)
    row.save(update_fields=["browser_digest", "claimed_at", "expires"])
    return Claimed(row, browser_secret, first_presentation=True)


def complete(claimed: Claimed) -> None:
    """/authorize has answered the client: the request_uri is spent (§4: one-time use)."""
    claimed.row.completed_at = timezone.now()
    claimed.row.save(update_fields=["completed_at"])


def keep_browser_binding(response: HttpResponse, claimed: Claimed) -> None:
    """The cookie that lets this browser, and no other, continue with its pushed requests."""
    response.set_cookie(
        BROWSER_COOKIE,
        claimed.browser_secret,
        max_age=settings.PUSHED_AUTHORIZATION_SIGN_IN_TIME,
        path=reverse("tokens:authorize"),
        secure=settings.SESSION_COOKIE_SECURE,
        httponly=True,
        samesite="Lax",  # sent on the top-level navigation from the client's site
    )
