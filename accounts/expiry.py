"""What the janitor (authserver/janitor.py) may delete from this app."""

from datetime import timedelta

from django.conf import settings
from django.db.models import Q

from accounts.models import LoginCounter, TotpDevice, UserSession
from authserver.janitor import Kind
from tokens import revocation


def _stale_sessions(now):
    # Expired, or ended longer ago than operators keep them visible.
    retention = now - timedelta(days=settings.SESSION_RETENTION_DAYS)
    return Q(expire_date__lt=now) | Q(revoked_at__lt=retention)


def _announce_expired(rows) -> None:
    """Sessions that simply ran out were never "ended": their tokens go now, and the clients
    that used them are told (back-channel logout), in the transaction that deletes them."""
    revocation.end_expired_sessions(
        [sid for _pk, sid, revoked_at in rows if sid and revoked_at is None]
    )


SESSIONS = Kind(
    name="sessions",
    label="browser sessions",
    task_name="accounts.expire_sessions",
    model=UserSession,
    stale=_stale_sessions,
    since="expire_date",
    keep=("sid", "revoked_at"),
    after_delete=_announce_expired,
)

LOGIN_COUNTERS = Kind(
    name="login_counters",
    label="sign-in counters kept during a cache outage",
    task_name="accounts.expire_login_counters",
    model=LoginCounter,
    stale=lambda now: Q(expires__lt=now),
    since="expires",
)

TOTP_ENROLMENTS = Kind(
    name="totp_enrolments",
    label="authenticator-app enrolments never confirmed",
    task_name="accounts.expire_totp_enrolments",
    model=TotpDevice,
    # A day to type the first code is plenty; an abandoned secret should not sit there.
    stale=lambda now: Q(confirmed_at__isnull=True, created__lt=now - timedelta(days=1)),
    since="created",
)

KINDS = (SESSIONS, LOGIN_COUNTERS, TOTP_ENROLMENTS)
