"""Revoking tokens: one place for every path (the revocation endpoint, replays, sessions
ending, people and clients deactivated, operators). Every revocation is recorded."""

from __future__ import annotations

import logging
from collections import defaultdict

from django.utils import timezone

from accounts.models import SecurityEvent
from accounts.services import record_event
from authserver.metrics import CODE_REPLAYS
from tokens.models import AuthorizationCode, RefreshToken, RevokedAccessToken

logger = logging.getLogger(__name__)

Actor = SecurityEvent.Actor


def deny_access_tokens(entries: list[tuple[str, object]]) -> None:
    """Put (jti, expires) pairs on the deny list; already-expired tokens need no entry."""
    now = timezone.now()
    rows = [
        RevokedAccessToken(jti=jti, expires=expires)
        for jti, expires in entries
        if jti and expires and expires > now
    ]
    if rows:
        RevokedAccessToken.objects.bulk_create(rows, ignore_conflicts=True)


def revoke_refresh_tokens(
    queryset,
    *,
    reason: str,
    request=None,
    actor: str = Actor.SYSTEM,
    actor_user=None,
) -> int:
    """Revoke the refresh tokens in ``queryset`` and the access tokens issued alongside them.

    Returns how many refresh tokens were still unrevoked. One security event per person.
    """
    now = timezone.now()
    rows = list(
        queryset.filter(revoked_at__isnull=True).values_list(
            "pk", "family", "user_id", "client__client_id", "access_jti", "access_expires"
        )
    )
    if not rows:
        return 0
    RefreshToken.objects.filter(pk__in=[row[0] for row in rows], revoked_at__isnull=True).update(
        revoked_at=now, revoke_reason=reason
    )
    deny_access_tokens([(jti, expires) for *_, jti, expires in rows])
    by_user: dict[int, dict] = defaultdict(
        lambda: {"families": set(), "clients": set(), "count": 0}
    )
    for _pk, family, user_id, client_id, _jti, _expires in rows:
        summary = by_user[user_id]
        summary["families"].add(str(family))
        summary["clients"].add(client_id)
        summary["count"] += 1
    SecurityEvent.objects.bulk_create(
        SecurityEvent(
            kind=SecurityEvent.Kind.TOKENS_REVOKED,
            user_id=user_id,
            actor=actor,
            actor_user=actor_user,
            detail={
                "reason": reason,
                "refresh_tokens": summary["count"],
                "families": sorted(summary["families"]),
                "clients": sorted(summary["clients"]),
            },
        )
        for user_id, summary in by_user.items()
    )
    logger.info("Revoked %d refresh token(s): %s", len(rows), reason)
    return len(rows)


def revoke_family(
    family, *, reason: str, request=None, actor: str = Actor.SYSTEM, actor_user=None
) -> int:
    """Revoke every token descended from one original grant."""
    return revoke_refresh_tokens(
        RefreshToken.objects.filter(family=family),
        reason=reason,
        request=request,
        actor=actor,
        actor_user=actor_user,
    )


def revoke_code_tokens(code: AuthorizationCode, *, request=None) -> int:
    """A code redeemed twice: revoke what the first redemption produced (RFC 6749 §4.1.2)."""
    CODE_REPLAYS.inc()
    record_event(
        SecurityEvent.Kind.CODE_REPLAY,
        request=request,
        user=code.user,
        actor=Actor.SYSTEM,
        sid=code.sid,
        client_id=code.client.client_id,
    )
    deny_access_tokens([(code.access_jti, code.access_expires)])
    families = RefreshToken.objects.filter(authorization_code=code).values("family")
    return revoke_refresh_tokens(
        RefreshToken.objects.filter(family__in=families),
        reason=RefreshToken.Reason.CODE_REPLAY,
        request=request,
    )


def revoke_for_sessions(sids: list[str], *, reason: str = RefreshToken.Reason.SESSION_ENDED) -> int:
    """Browser sessions ended: the refresh tokens bound to them go too. Their access tokens
    carry the ``sid`` and introspect as inactive already; they are deny-listed as well."""
    if not sids:
        return 0
    return revoke_refresh_tokens(RefreshToken.objects.filter(sid__in=sids), reason=reason)
