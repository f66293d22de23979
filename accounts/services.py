"""The rules about people's sign-ins and their security record, shared by views, forms, admin
and the tokens app.

Ending sessions and deactivating people revoke tokens too, so they live with every other
revocation in ``tokens/revocation.py``; this module only writes security events and names new
sessions.
"""

from __future__ import annotations

import time

from django.http import HttpRequest

from accounts.models import SecurityEvent, User, UserSession, new_sid
from accounts.network import client_ip, user_agent
from accounts.sessions import AMR_KEY, AUTH_TIME_KEY, SID_KEY

EndedBy = UserSession.EndedBy


def security_event(
    kind: str,
    *,
    request: HttpRequest | None = None,
    user: User | None = None,
    user_id: int | None = None,
    identifier: str = "",
    actor: str = EndedBy.PERSON,
    actor_user: User | None = None,
    sid: str = "",
    **detail,
) -> SecurityEvent:
    """One security event, not yet saved (for ``bulk_create``). ``detail`` must never hold a
    secret (password, token, key)."""
    return SecurityEvent(
        kind=kind,
        user=user,
        **({"user_id": user_id} if user is None else {}),
        identifier=identifier[:254],
        actor=actor,
        actor_user=actor_user,
        sid=sid,
        ip_address=client_ip(request) if request else None,
        user_agent=user_agent(request) if request else "",
        detail=detail,
    )


def record_event(kind: str, **fields) -> SecurityEvent:
    """Write one security event (see :func:`security_event` for the fields)."""
    event = security_event(kind, **fields)
    event.save(force_insert=True)
    return event


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
