"""The rules about refresh tokens: issuing one (the first of a family, or the successor of the
one being rotated), finding the live one a client presents, rotating it exactly once, answering
a retry of a rotated one within its client's window, and telling introspection whether one is
live.

The retry window. A client whose refresh response was lost (a mobile network dropping it)
presents the same refresh token again. Without a window that is a replay and revokes the
family: the person is signed out. Within the window (``retry_window``), the same client
presenting the same token, while its successor is still unused, gets the same response again:
the successor's refresh token, the same access token (same ``jti``, ``expires_in`` counted
down), and whatever else the first answer held (an ID token). Exactly one successor ever
exists: the compare-and-set in ``store_refresh_token`` still lets one request through, and every other one
(concurrent or later) reads the answer the winner stored, sealed on the successor's row
(tokens/sealing.py), in the same INSERT that stores the successor, so the first refresh costs
no extra statement. Outside the window, once the successor has been used, from another client,
or asking for another scope, presenting the rotated token is the replay it always was.

Who writes ``tokens_refreshtoken``: this module, through tokens/token_store.py (the rotation
with its successor's insert, the token endpoint's hot statement); tokens/revocation.py (``revoked_at``, for
every kind of revocation, including a replay found here); the janitor (deleting stale rows,
tokens/expiry.py). Nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from accounts.models import User, UserSession
from authserver.metrics import REFRESH_RETRIES
from tokens import revocation, sealing, token_store
from tokens.access_tokens import AccessToken
from tokens.models import AuthorizationCode, Client, RefreshToken, token_digest

OFFLINE_ACCESS = "offline_access"


def store_refresh_token(
    value: str,
    *,
    client: Client,
    user: User,
    scope: str,
    sid: str,
    auth_time=None,
    acr: str = "",
    amr: str = "",
    access: AccessToken | None,
    parent: RefreshToken | None = None,
    code: AuthorizationCode | None = None,
    dpop_jkt: str = "",
    answer: dict | None = None,
    parent_value: str = "",
) -> RefreshToken | None:
    """Keep the digest of a new refresh token: the first of a family, or the child of ``parent``,
    which is rotated (used up) by the same statement, if nobody else has: None if somebody did.

    Tokens without ``offline_access`` are bound to the browser session that approved them and
    die with it (``sid``); the idle expiry never passes the family's absolute one. ``dpop_jkt``:
    the DPoP key a public client's token is bound to (RFC 9449 §5). ``answer`` (the token
    response delivering a child) is sealed for ``parent_value`` when the client has a retry
    window.

    Of any number of concurrent rotations of one token, exactly one writes a child (one atomic
    compare-and-set). A loser waited on the winner's row lock until the winner's statement
    committed, so the winner's child is visible to the loser's next statement (READ
    COMMITTED): ``resend`` answers with it.
    """
    now = timezone.now()
    if parent is not None:
        family, family_expires = parent.family, parent.family_expires
    else:
        family = None
        family_expires = now + timedelta(seconds=client.refresh_token_lifetime)
    bound_sid = "" if OFFLINE_ACCESS in scope.split() else sid
    digest = token_digest(value)
    sealed = None
    if answer is not None and parent is not None and retry_window(client, bound=bool(dpop_jkt)):
        sealed = sealing.seal(answer, parent_value=parent_value, successor_digest=digest)
    row = RefreshToken(
        token_digest=digest,
        **({"family": family} if family else {}),
        parent=parent,
        authorization_code=code,
        client=client,
        user=user,
        sid=bound_sid,
        scope=scope,
        auth_time=auth_time,
        acr=acr,
        amr=amr,
        created=now,
        expires=min(now + timedelta(seconds=client.refresh_token_idle_lifetime), family_expires),
        family_expires=family_expires,
        access_jti=access.jti if access else "",
        access_expires=access.expires_at if access else None,
        dpop_jkt=dpop_jkt,
        retry_response=sealed,
        retry_sealed=sealed is not None,
    )
    if parent is None:
        return token_store.insert(row)
    # The answer that delivered the parent (if sealed) is wiped by the same statement.
    return row if token_store.rotate_and_insert(parent.pk, now, row) else None


def retry_window(client: Client, *, bound: bool = False) -> int:
    """Seconds after a rotation during which ``client`` retrying it gets the same answer; 0: off.

    Off for public clients' bearer refresh tokens: nothing but the token backs them (no client
    authentication), so a copy presented within the window would be answered just the same.
    ``bound``: the token is bound to the client's DPoP key (RFC 9449 §5), so a copy is useless
    without the key, and a public client may have the window too (the retry must carry a proof
    with that key, checked before the answer is given: tokens/oauth/grants.py).
    """
    if client.is_public and not bound:
        return 0
    window = client.refresh_retry_window
    return settings.REFRESH_RETRY_WINDOW if window is None else window


@dataclass(frozen=True)
class Resent:
    """A retried refresh answered again: the rotated token and the response its rotation gave."""

    row: RefreshToken
    answer: dict


def find_refresh_token(
    value: str, client: Client, *, scope: str | None = None, request=None
) -> RefreshToken | Resent | None:
    """The live refresh token ``value`` of ``client``; a retry's answer (``Resent``); or None.

    A token that was already rotated is a replay: someone holds a copy. The whole family is
    revoked and the event recorded (RFC 9700 §4.14.2), unless it is the same client retrying
    within its window while the successor is unused (``resend``).
    """
    if not value or len(value) > 256:
        return None
    # One statement for the token, its person and its session (the ORM spent more building
    # three queries than PostgreSQL spends answering one).
    now = timezone.now()
    found = token_store.find(token_digest(value), now)
    if found is None:
        return None
    row, session_alive = found
    if row.rotated_at is not None:
        retry = row.revoked_at is None and row.client_id == client.pk
        if retry and session_alive and row.user.is_active:
            if answer := resend(value, row, client, scope=scope, now=now):
                return Resent(row, answer)
        # A rotated token from another client is a copy too: the family goes all the same.
        revocation.revoke_refresh_replay(row, client, request=request)
        return None
    if row.client_id != client.pk or row.revoked_at is not None:
        return None
    if row.expires <= now or not row.user.is_active:
        return None
    if not session_alive:
        # Bound to a session that has ended: the cascade should have caught it; finish the job.
        revocation.revoke_family(
            row.family, reason=RefreshToken.Reason.SESSION_ENDED, request=request
        )
        return None
    return row


def resend(
    value: str, row: RefreshToken, client: Client, *, scope: str | None, now=None
) -> dict | None:
    """The response that rotating ``row`` (whose value is ``value``) gave, if ``client`` may
    have it again: within its retry window, the successor neither used, revoked nor expired,
    the same scope asked for. None otherwise. The retry path's one extra statement: the
    successor's row."""
    window = retry_window(client, bound=bool(row.dpop_jkt))
    if not window or row.client_id != client.pk:
        return None
    now = now or timezone.now()
    child = (
        RefreshToken.objects.filter(parent_id=row.pk)
        .only(
            "token_digest",
            "created",
            "expires",
            "rotated_at",
            "revoked_at",
            "access_expires",
            "retry_response",
        )
        .first()
    )
    if (
        child is None
        or child.retry_response is None
        or child.rotated_at is not None
        or child.revoked_at is not None
        or child.expires <= now
        or now - child.created > timedelta(seconds=window)
    ):
        return None
    answer = sealing.unseal(
        child.retry_response, parent_value=value, successor_digest=child.token_digest
    )
    if answer is None:
        return None
    # A retry is the same request again: a different scope is not one (RFC 6749 §6).
    asked = set((scope or row.scope).split())
    if asked != set(answer.get("scope", "").split()):
        return None
    if child.access_expires is not None and "expires_in" in answer:
        answer["expires_in"] = max(0, int((child.access_expires - now).total_seconds()))
    REFRESH_RETRIES.inc()
    return answer


def live_refresh_tokens(now=None):
    now = now or timezone.now()
    return RefreshToken.objects.filter(
        Q(rotated_at__isnull=True) & Q(revoked_at__isnull=True), expires__gt=now
    )


def refresh_token_is_live(row: RefreshToken) -> bool:
    """For introspection (RFC 7662): unused, unrevoked, unexpired, its client and person
    active, its session (if bound to one) alive."""
    now = timezone.now()
    if row.rotated_at or row.revoked_at or row.expires <= now or not row.client.is_active:
        return False
    if not row.user.is_active:
        return False
    return not row.sid or UserSession.objects.active(now).filter(sid=row.sid).exists()
