"""The rules about people and their sessions, shared by views, admin, commands and jobs.

Every path that ends a session (sign-out, "My sessions", an operator, a password change or
reset, deactivation, the purge job) goes through :func:`end_sessions`, which is also the one
place that writes the security event for it.
"""

from __future__ import annotations

import logging
import time

from django.core.cache import cache
from django.dispatch import Signal
from django.http import HttpRequest
from django.utils import timezone

from accounts.models import SecurityEvent, User, UserSession, new_sid
from accounts.network import client_ip, user_agent
from accounts.sessions import AMR_KEY, AUTH_TIME_KEY, SID_KEY, SessionStore

logger = logging.getLogger(__name__)

EndedBy = UserSession.EndedBy

# Sent after sessions end, with ``sids`` and ``reason``: the tokens app revokes what was bound to
# them. Receivers must be idempotent (ending twice is harmless).
sessions_ended = Signal()
# Sent after a person is deactivated, with ``user``: tokens not bound to a session go too.
user_deactivated = Signal()


def record_event(
    kind: str,
    *,
    request: HttpRequest | None = None,
    user: User | None = None,
    identifier: str = "",
    actor: str = EndedBy.PERSON,
    actor_user: User | None = None,
    sid: str = "",
    **detail,
) -> SecurityEvent:
    """Write one security event. ``detail`` must never hold a secret (password, token, key)."""
    return SecurityEvent.objects.create(
        kind=kind,
        user=user,
        identifier=identifier[:254],
        actor=actor,
        actor_user=actor_user,
        sid=sid,
        ip_address=client_ip(request) if request else None,
        user_agent=user_agent(request) if request else "",
        detail=detail,
    )


def start_session(request: HttpRequest, user: User) -> None:
    """Called right after Django's ``login()``: name the new session and note when and how."""
    session = request.session
    if SID_KEY not in session:
        session[SID_KEY] = new_sid()
    session[AUTH_TIME_KEY] = int(time.time())
    session[AMR_KEY] = ["pwd"]
    record_event(
        SecurityEvent.Kind.LOGIN_SUCCEEDED, request=request, user=user, sid=session[SID_KEY]
    )


def end_sessions(
    sessions,
    *,
    by: str,
    reason: str,
    request: HttpRequest | None = None,
    actor_user: User | None = None,
) -> int:
    """End every live session in the queryset ``sessions``; return how many were ended.

    The rows are marked revoked in one statement and dropped from the cache, so each browser is
    signed out on its very next request, on any web process. Ending is idempotent.
    """
    now = timezone.now()
    live = list(
        sessions.filter(revoked_at__isnull=True).values_list("session_key", "sid", "user_id")
    )
    if not live:
        return 0
    keys = [key for key, _sid, _user in live]
    UserSession.objects.filter(session_key__in=keys, revoked_at__isnull=True).update(
        revoked_at=now, ended_by=by, end_reason=reason[:200]
    )
    try:
        cache.delete_many([SessionStore.cache_key_for(key) for key in keys])
    except Exception:
        # The rows are the record; a cache that cannot be reached cannot serve them either.
        logger.exception("Could not drop ended sessions from the cache")
    SecurityEvent.objects.bulk_create(
        SecurityEvent(
            kind=SecurityEvent.Kind.SESSION_ENDED,
            user_id=user_id,
            actor=by,
            actor_user=actor_user,
            sid=sid or "",
            ip_address=client_ip(request) if request else None,
            user_agent=user_agent(request) if request else "",
            detail={"reason": reason},
        )
        for _key, sid, user_id in live
        if user_id is not None
    )
    sids = [sid for _key, sid, _user in live if sid]
    sessions_ended.send(sender=UserSession, sids=sids, reason=reason)
    logger.info("Ended %d session(s): %s (by %s)", len(live), reason, by)
    return len(live)


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
    """End every session of ``user`` except the one making ``request``."""
    return end_sessions(
        UserSession.objects.filter(user=user).exclude(session_key=request.session.stored_key or ""),
        by=EndedBy.PERSON,
        reason=reason,
        request=request,
    )


def sign_out(request: HttpRequest) -> None:
    """End the current browser session (the person clicked "Sign out")."""
    from django.contrib.auth import logout

    user = request.user if request.user.is_authenticated else None
    key = request.session.stored_key
    if user is not None and key:
        sid = request.session.get(SID_KEY, "")
        end_sessions(
            UserSession.objects.filter(session_key=key),
            by=EndedBy.PERSON,
            reason="signed out",
            request=request,
        )
        record_event(SecurityEvent.Kind.LOGOUT, request=request, user=user, sid=sid)
    logout(request)


def deactivate_user(user: User, *, by: str, actor_user: User | None = None, request=None) -> int:
    """Stop a person signing in, and end all their sessions (and so their tokens)."""
    if user.is_active:
        User.objects.filter(pk=user.pk).update(is_active=False)
        user.is_active = False
        record_event(
            SecurityEvent.Kind.USER_DEACTIVATED,
            request=request,
            user=user,
            actor=by,
            actor_user=actor_user,
        )
    ended = end_sessions(
        UserSession.objects.filter(user=user),
        by=by,
        reason="user deactivated",
        request=request,
        actor_user=actor_user,
    )
    user_deactivated.send(sender=User, user=user, actor=by, actor_user=actor_user)
    return ended
