"""The rules about refresh tokens: issuing one (the first of a family, or the successor of the
one being rotated), finding the live one a client presents, rotating it exactly once, and
telling introspection whether one is live.

Who writes ``tokens_refreshtoken``: this module, through tokens/token_store.py (the insert and
the rotation, the token endpoint's hot statements); tokens/revocation.py (``revoked_at``, for
every kind of revocation, including a replay found here); the janitor (deleting stale rows,
tokens/expiry.py). Nothing else.
"""

from __future__ import annotations

from datetime import timedelta

from django.db.models import Q
from django.utils import timezone

from accounts.models import User, UserSession
from tokens import revocation, token_store
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
    amr: list[str] | None = None,
    access: AccessToken | None,
    parent: RefreshToken | None = None,
    code: AuthorizationCode | None = None,
) -> RefreshToken:
    """Keep the digest of a new refresh token: the first of a family, or the child of ``parent``.

    Tokens without ``offline_access`` are bound to the browser session that approved them and
    die with it (``sid``); the idle expiry never passes the family's absolute one.
    """
    now = timezone.now()
    if parent is not None:
        family, family_expires = parent.family, parent.family_expires
    else:
        family = None
        family_expires = now + timedelta(seconds=client.refresh_token_lifetime)
    bound_sid = "" if OFFLINE_ACCESS in scope.split() else sid
    row = RefreshToken(
        token_digest=token_digest(value),
        **({"family": family} if family else {}),
        parent=parent,
        authorization_code=code,
        client=client,
        user=user,
        sid=bound_sid,
        scope=scope,
        auth_time=auth_time,
        amr=list(amr or []),
        created=now,
        expires=min(now + timedelta(seconds=client.refresh_token_idle_lifetime), family_expires),
        family_expires=family_expires,
        access_jti=access.jti if access else "",
        access_expires=access.expires_at if access else None,
    )
    return token_store.insert(row)


def find_refresh_token(value: str, client: Client, *, request=None) -> RefreshToken | None:
    """The live refresh token ``value`` of ``client``, or None.

    A token that was already rotated (or revoked) is a replay: someone holds a copy. The whole
    family is revoked and the event recorded (RFC 9700 §4.14.2).
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
    if row.client_id != client.pk:
        return None
    if row.rotated_at is not None or row.revoked_at is not None:
        if row.rotated_at is not None:
            revocation.revoke_refresh_replay(row, client, request=request)
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


def rotate(row: RefreshToken) -> bool:
    """Mark ``row`` used, if nobody else has: one atomic compare-and-set.

    Of any number of concurrent refreshes with one token, exactly one gets True.
    """
    return token_store.rotate(row.pk, timezone.now())


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
