"""What the janitor (authserver/janitor.py) may delete from this app, and when.

Used codes and rotated refresh tokens are kept a while after they stop working: presenting one
again is how a replay is recognised (RFC 6749 §4.1.2, RFC 9700 §4.14.2), so they stay as long
as what they could reveal is alive.
"""

from datetime import timedelta

from django.db.models import Exists, OuterRef, Q

from accounts.models import UserSession
from authserver.janitor import Kind
from tokens.models import (
    MAX_REFRESH_RETRY_WINDOW,
    AuthorizationCode,
    BackchannelLogout,
    Consent,
    DeviceAuthorization,
    InitialAccessToken,
    PushedAuthorizationRequest,
    RefreshToken,
    RevokedAccessToken,
    SessionClient,
)

CODE_RETENTION = timedelta(hours=1)
REFRESH_TOKEN_RETENTION = timedelta(days=1)
DELIVERY_RETENTION = timedelta(days=30)


def _stale_refresh_tokens(now):
    cutoff = now - REFRESH_TOKEN_RETENTION
    # Gone a day after whichever comes first: the whole family past its absolute lifetime
    # (family_expires), the family's live end idled out (expires, not rotated), or revoked.
    # Since expires <= family_expires, the first two both have expires < cutoff, so both are
    # found through the index on expires (rotated_at and family_expires have none: the
    # rotation sets the one, and an index on the other would be written by every INSERT).
    ended = Q(family_expires__lt=cutoff) | Q(rotated_at__isnull=True)
    return (Q(expires__lt=cutoff) & ended) | Q(revoked_at__lt=cutoff)


KINDS = (
    Kind(
        name="authorization_codes",
        label="authorization codes",
        task_name="tokens.expire_authorization_codes",
        model=AuthorizationCode,
        stale=lambda now: Q(expires__lt=now - CODE_RETENTION),
        since="expires",
    ),
    Kind(
        name="refresh_tokens",
        label="refresh tokens",
        task_name="tokens.expire_refresh_tokens",
        model=RefreshToken,
        stale=_stale_refresh_tokens,
        since="expires",
    ),
    Kind(
        name="refresh_retry_answers",
        label="refresh retry answers",
        task_name="tokens.wipe_refresh_retry_answers",
        model=RefreshToken,
        # Sealed answers a retry can no longer get: past the longest window (each client's own
        # window is checked when a retry comes). The token rows stay; only the answer goes.
        # (retry_sealed, not retry_response: see the model.)
        stale=lambda now: Q(
            retry_sealed=True,
            created__lt=now - timedelta(seconds=MAX_REFRESH_RETRY_WINDOW),
        ),
        since="created",
        wipe={"retry_response": None, "retry_sealed": False},
    ),
    Kind(
        name="consents",
        label="consents",
        task_name="tokens.expire_consents",
        model=Consent,
        stale=lambda now: Q(expires__lt=now),
        since="expires",
    ),
    Kind(
        name="deny_list",
        label="deny-list entries",
        task_name="tokens.prune_deny_list",
        model=RevokedAccessToken,
        stale=lambda now: Q(expires__lt=now),  # the token itself has expired
        since="expires",
    ),
    Kind(
        name="initial_access_tokens",
        label="initial access tokens",
        task_name="tokens.expire_initial_access_tokens",
        model=InitialAccessToken,
        stale=lambda now: Q(expires__lt=now) | Q(uses_left=0),
        since="expires",
    ),
    Kind(
        name="session_clients",
        label="session participants",
        task_name="tokens.expire_session_clients",
        model=SessionClient,
        # Needed until the session ends (its clients are told then); an expired session that
        # the sessions job has not yet purged still counts as not ended.
        stale=lambda now: (
            ~Exists(UserSession.objects.filter(sid=OuterRef("sid"), revoked_at__isnull=True))
        ),
        since="created",
    ),
    Kind(
        name="logout_deliveries",
        label="back-channel logout deliveries",
        task_name="tokens.expire_logout_deliveries",
        model=BackchannelLogout,
        stale=lambda now: Q(
            status__in=[BackchannelLogout.Status.DELIVERED, BackchannelLogout.Status.ABANDONED],
            created__lt=now - DELIVERY_RETENTION,
        ),
        since="created",
    ),
    Kind(
        name="pushed_authorization_requests",
        label="pushed authorization requests",
        task_name="tokens.expire_pushed_authorization_requests",
        model=PushedAuthorizationRequest,
        # Spent or not, a request_uri past its expiry is refused; an unknown one is refused alike.
        stale=lambda now: Q(expires__lt=now),
        since="expires",
    ),
    Kind(
        name="device_authorizations",
        label="device authorizations",
        task_name="tokens.expire_device_authorizations",
        model=DeviceAuthorization,
        # Kept an hour past expiry, like codes: a device still polling is told expired_token.
        stale=lambda now: Q(expires__lt=now - CODE_RETENTION),
        since="expires",
    ),
)
