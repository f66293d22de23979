"""Every revocation, in one place: ending browser sessions (the person signing out or using
"My sessions", a password change or reset, an operator, the expiry job), deactivating a person
or a client, a refresh token or authorization code presented twice, an operator revoking token
families, and the revocation endpoint.

Each public function is one ``transaction.atomic()``: the sessions are marked ended, the
refresh tokens bound to them revoked, their access tokens deny-listed, the security events and
the back-channel logout deliveries written, all or nothing. What lives outside the database
(the session cache, the broker) is touched only once the transaction has committed
(``transaction.on_commit``): a rolled-back revocation leaves every live session in the cache
and queues no logout, and a committed one drops the sessions from the cache at once.

What it writes: ``accounts_usersession`` (``revoked_at``, ``ended_by``, ``end_reason``),
``accounts_user.is_active`` and ``tokens_client.is_active`` (deactivation),
``tokens_refreshtoken`` (``revoked_at``, ``revoke_reason``), ``tokens_revokedaccesstoken`` (the
deny list), ``accounts_securityevent``, and ``tokens_backchannellogout`` (through
tokens/logout.py). Admin, views, commands, the Authlib glue and the janitor call these
functions directly; no signal stands in between. Nested calls (a revocation inside the token endpoint's transaction,
or the janitor's delete) join the caller's transaction as a savepoint.
"""

from __future__ import annotations

import logging
from collections import defaultdict

from django.contrib.auth import logout as django_logout
from django.core.cache import cache
from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone

from accounts.models import SecurityEvent, User, UserSession
from accounts.services import record_event, security_event
from accounts.sessions import SID_KEY, SessionStore
from authserver.metrics import CODE_REPLAYS, REFRESH_REPLAYS
from tokens import liveness, logout
from tokens.models import AuthorizationCode, Client, RefreshToken, RevokedAccessToken

logger = logging.getLogger(__name__)

Actor = SecurityEvent.Actor
EndedBy = UserSession.EndedBy


# --- browser sessions -------------------------------------------------------------------------
def end_sessions(
    sessions,
    *,
    by: str,
    reason: str,
    request: HttpRequest | None = None,
    actor_user: User | None = None,
) -> int:
    """End every live session in the queryset ``sessions``; return how many were ended.

    The rows are marked ended, the refresh tokens bound to them revoked (their access tokens
    carry the ``sid`` and introspect as inactive; they are deny-listed too), one security event
    written per session, and every client that got tokens in them is owed a back-channel
    logout. Once committed, each browser is signed out on its very next request, on any web
    process. Ending is idempotent.
    """
    with transaction.atomic():
        return len(
            _end_sessions(sessions, by=by, reason=reason, request=request, actor_user=actor_user)
        )


def end_session_by_sid(user: User, sid: str, *, request: HttpRequest) -> bool:
    """A person ends one of their own sessions from "My sessions"."""
    return bool(
        end_sessions(
            UserSession.objects.filter(user=user, sid=sid),
            by=EndedBy.PERSON,
            reason="ended from My sessions",
            request=request,
        )
    )


def end_other_sessions(user: User, request: HttpRequest, *, reason: str) -> int:
    """End every session of ``user`` except the one making ``request`` (a password change)."""
    return end_sessions(
        UserSession.objects.filter(user=user).exclude(session_key=request.session.stored_key or ""),
        by=EndedBy.PERSON,
        reason=reason,
        request=request,
    )


def password_changed(user: User, request: HttpRequest) -> int:
    """The person changed their password: record it and sign every other browser out (whoever
    else had the old password is gone). This browser keeps its session."""
    with transaction.atomic():
        record_event(SecurityEvent.Kind.PASSWORD_CHANGED, request=request, user=user)
        return end_other_sessions(user, request, reason="password changed")


def password_reset(user: User, request: HttpRequest) -> int:
    """A password was reset by emailed link: record it and end every session of the person."""
    with transaction.atomic():
        record_event(SecurityEvent.Kind.PASSWORD_RESET, request=request, user=user)
        if not user.email_verified:
            # Following the emailed link shows the person reads that address.
            User.objects.filter(pk=user.pk).update(email_verified=True)
        return end_sessions(
            UserSession.objects.filter(user=user),
            by=EndedBy.PERSON,
            reason="password reset",
            request=request,
        )


def sign_out(request: HttpRequest) -> None:
    """End the current browser session (the person clicked "Sign out", or a relying party's
    RP-initiated logout), then let Django forget it in this response."""
    user = request.user if request.user.is_authenticated else None
    key = request.session.stored_key
    if user is not None and key:
        sid = request.session.get(SID_KEY, "")
        with transaction.atomic():
            _end_sessions(
                UserSession.objects.filter(session_key=key),
                by=EndedBy.PERSON,
                reason="signed out",
                request=request,
            )
            record_event(SecurityEvent.Kind.LOGOUT, request=request, user=user, sid=sid)
    django_logout(request)


def end_expired_sessions(sids: list[str]) -> int:
    """Sessions that simply ran out were never "ended": the janitor deletes them and, in the
    same transaction, calls this, so their tokens go and their clients are told (back-channel
    logout) exactly when the rows go."""
    if not sids:
        return 0
    with transaction.atomic():
        revoked = _revoke_refresh_tokens(_bound_to(sids), reason=RefreshToken.Reason.SESSION_ENDED)
        logout.schedule(sids)
    return revoked


def _bound_to(sids: list[str]):
    """The refresh tokens bound to these sessions. (Not sid='': the index on sid leaves out
    the offline_access tokens, which are bound to none.)"""
    return RefreshToken.objects.filter(sid__in=sids).exclude(sid="")


def _end_sessions(sessions, *, by, reason, request=None, actor_user=None) -> list[str]:
    """The cascade, inside the caller's transaction; returns the sids it ended."""
    live = list(
        sessions.filter(revoked_at__isnull=True).values_list("session_key", "sid", "user_id")
    )
    if not live:
        return []
    keys = [key for key, _sid, _user in live]
    UserSession.objects.filter(session_key__in=keys, revoked_at__isnull=True).update(
        revoked_at=timezone.now(), ended_by=by, end_reason=reason[:200]
    )
    liveness.changed()
    _drop_cached_sessions_on_commit(keys)
    SecurityEvent.objects.bulk_create(
        security_event(
            SecurityEvent.Kind.SESSION_ENDED,
            request=request,
            user_id=user_id,
            actor=by,
            actor_user=actor_user,
            sid=sid or "",
            reason=reason,
        )
        for _key, sid, user_id in live
        if user_id is not None
    )
    sids = [sid for _key, sid, _user in live if sid]
    if sids:
        _revoke_refresh_tokens(_bound_to(sids), reason=RefreshToken.Reason.SESSION_ENDED)
        logout.schedule(sids)
    logger.info("Ended %d session(s): %s (by %s)", len(live), reason, by)
    return sids


def _drop_cached_sessions_on_commit(keys: list[str]) -> None:
    cache_keys = [SessionStore.cache_key_for(key) for key in keys]

    def drop() -> None:
        try:
            cache.delete_many(cache_keys)
        except Exception:
            # The rows are the record; a cache that cannot be reached cannot serve them either.
            logger.exception("Could not drop ended sessions from the cache")

    transaction.on_commit(drop)


# --- people and clients -----------------------------------------------------------------------
def deactivate_user(
    user: User, *, by: str, actor_user: User | None = None, request: HttpRequest | None = None
) -> int:
    """Stop a person signing in, end all their sessions, and revoke every token they hold
    (offline ones too). Returns how many sessions were ended."""
    with transaction.atomic():
        if User.objects.filter(pk=user.pk, is_active=True).update(is_active=False):
            liveness.changed()
            record_event(
                SecurityEvent.Kind.USER_DEACTIVATED,
                request=request,
                user=user,
                actor=by,
                actor_user=actor_user,
            )
        user.is_active = False
        ended = _end_sessions(
            UserSession.objects.filter(user=user),
            by=by,
            reason="user deactivated",
            request=request,
            actor_user=actor_user,
        )
        _revoke_refresh_tokens(
            RefreshToken.objects.filter(user=user),
            reason=RefreshToken.Reason.USER,
            actor=by,
            actor_user=actor_user,
        )
    return len(ended)


def deactivate_client(
    client: Client, *, actor_user: User | None = None, request: HttpRequest | None = None
) -> int:
    """Stop a client: no new tokens, and its existing ones stop working (introspection checks
    the client; its refresh tokens are revoked here). Nothing else is touched."""
    actor = Actor.OPERATOR if actor_user else Actor.SYSTEM
    with transaction.atomic():
        Client.objects.filter(pk=client.pk).update(is_active=False, updated=timezone.now())
        liveness.changed()
        client.is_active = False
        record_event(
            SecurityEvent.Kind.CLIENT_DEACTIVATED,
            request=request,
            actor=actor,
            actor_user=actor_user,
            client_id=client.client_id,
        )
        return _revoke_refresh_tokens(
            RefreshToken.objects.filter(client=client),
            reason=RefreshToken.Reason.CLIENT,
            request=request,
            actor=actor,
            actor_user=actor_user,
        )


# --- tokens -----------------------------------------------------------------------------------
def revoke_refresh_tokens(
    queryset,
    *,
    reason: str,
    request: HttpRequest | None = None,
    actor: str = Actor.SYSTEM,
    actor_user: User | None = None,
) -> int:
    """Revoke the refresh tokens in ``queryset`` and the access tokens issued alongside them
    (an operator's "revoke families"). Returns how many were still unrevoked."""
    with transaction.atomic():
        return _revoke_refresh_tokens(
            queryset, reason=reason, request=request, actor=actor, actor_user=actor_user
        )


def revoke_family(
    family,
    *,
    reason: str,
    request: HttpRequest | None = None,
    actor: str = Actor.SYSTEM,
    actor_user: User | None = None,
) -> int:
    """Revoke every token descended from one original grant (RFC 7009 §2.1: revoking a refresh
    token may revoke the grant)."""
    return revoke_refresh_tokens(
        RefreshToken.objects.filter(family=family),
        reason=reason,
        request=request,
        actor=actor,
        actor_user=actor_user,
    )


def revoke_refresh_replay(row: RefreshToken, client: Client, *, request=None) -> int:
    """A rotated refresh token was presented again: someone holds a copy, so the whole family
    goes and the event is recorded (RFC 9700 §4.14.2)."""
    REFRESH_REPLAYS.inc()
    with transaction.atomic():
        record_event(
            SecurityEvent.Kind.REFRESH_REPLAY,
            request=request,
            user=row.user,
            actor=Actor.SYSTEM,
            sid=row.sid,
            client_id=client.client_id,
            family=str(row.family),
        )
        return _revoke_refresh_tokens(
            RefreshToken.objects.filter(family=row.family),
            reason=RefreshToken.Reason.REPLAY,
            request=request,
        )


def revoke_code_tokens(code: AuthorizationCode, *, request: HttpRequest | None = None) -> int:
    """A code redeemed twice: revoke what the first redemption produced (RFC 6749 §4.1.2)."""
    CODE_REPLAYS.inc()
    with transaction.atomic():
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
        return _revoke_refresh_tokens(
            RefreshToken.objects.filter(family__in=families),
            reason=RefreshToken.Reason.CODE_REPLAY,
            request=request,
        )


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
        liveness.changed()


def _revoke_refresh_tokens(
    queryset, *, reason: str, request=None, actor: str = Actor.SYSTEM, actor_user=None
) -> int:
    """Inside the caller's transaction: revoke, deny-list, one security event per person."""
    rows = list(
        queryset.filter(revoked_at__isnull=True).values_list(
            "pk", "family", "user_id", "client__client_id", "access_jti", "access_expires"
        )
    )
    if not rows:
        return 0
    RefreshToken.objects.filter(pk__in=[row[0] for row in rows], revoked_at__isnull=True).update(
        revoked_at=timezone.now(), revoke_reason=reason, retry_response=None, retry_sealed=False
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
        security_event(
            SecurityEvent.Kind.TOKENS_REVOKED,
            user_id=user_id,
            actor=actor,
            actor_user=actor_user,
            reason=reason,
            refresh_tokens=summary["count"],
            families=sorted(summary["families"]),
            clients=sorted(summary["clients"]),
        )
        for user_id, summary in by_user.items()
    )
    logger.info("Revoked %d refresh token(s): %s", len(rows), reason)
    return len(rows)
