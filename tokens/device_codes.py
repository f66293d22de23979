"""The device authorization grant (RFC 8628): starting one for a device, the person approving or
denying it at /device, and the device's polls at the token endpoint.

The codes: the device code is 256 random bits, stored as a SHA-256. The user code is 8 letters
from RFC 8628 §6.1's base-20 alphabet (no vowels, so no words), shown as ``XXXX-XXXX``, typed in
any case, with or without the dash or spaces; it is stored as a keyed HMAC (SECRET_KEY, and the
fallbacks while rotating), because 20^8 codes could all be hashed in minutes. Guessing is
limited at /device per person and per IP (accounts/throttle.py).

Exactly one token per device code: the poll that finds the request approved turns it to
``issued`` with one compare-and-set (``UPDATE ... WHERE status = 'approved'``, row count
checked), in the token endpoint's transaction, like refresh-token rotation: of many concurrent
polls one wins; the rest see it issued.

Who writes ``tokens_deviceauthorization``: this module; the janitor deletes the rows an hour
after they expire (kept that long so a late poll is told ``expired_token``).
"""

from __future__ import annotations

import secrets
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone
from django.utils.crypto import salted_hmac

from accounts.models import User
from tokens.models import Client, DeviceAuthorization, SessionClient, token_digest

USER_CODE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"  # RFC 8628 §6.1
USER_CODE_LENGTH = 8
SLOW_DOWN_STEP = 5  # RFC 8628 §3.5: seconds added to the interval on each slow_down


def _user_code_digest(normalized: str, key: str) -> str:
    return salted_hmac(
        "tokens.DeviceAuthorization.user_code", normalized, secret=key, algorithm="sha256"
    ).hexdigest()


def normalize_user_code(typed: str) -> str | None:
    """The user code as typed (any case, dashes and spaces anywhere) as the 8 letters it stands
    for, or None if it cannot be one (§6.1: "the characters ... SHOULD be case-insensitive")."""
    letters = "".join(ch for ch in (typed or "")[:64] if ch not in "- \t").upper()
    if len(letters) != USER_CODE_LENGTH or any(ch not in USER_CODE_ALPHABET for ch in letters):
        return None
    return letters


def format_user_code(letters: str) -> str:
    return f"{letters[:4]}-{letters[4:]}"


def start(client: Client, scope: str) -> dict:
    """A new device authorization (RFC 8628 §3.2): the codes, shown only now, and how long and
    how often the device may poll."""
    device_code = secrets.token_urlsafe(32)
    now = timezone.now()
    for _ in range(5):  # a user code already taken (1 in 10^10 per live code): draw another
        letters = "".join(secrets.choice(USER_CODE_ALPHABET) for _ in range(USER_CODE_LENGTH))
        try:
            with transaction.atomic():
                DeviceAuthorization.objects.create(
                    device_code_digest=token_digest(device_code),
                    user_code_digest=_user_code_digest(letters, settings.SECRET_KEY),
                    client=client,
                    scope=scope,
                    interval=settings.DEVICE_CODE_INTERVAL,
                    created=now,
                    expires=now + timedelta(seconds=settings.DEVICE_CODE_LIFETIME),
                )
            break
        except IntegrityError:
            continue
    else:
        raise RuntimeError("could not draw a free user code")
    return {
        "device_code": device_code,
        "user_code": format_user_code(letters),
        "expires_in": settings.DEVICE_CODE_LIFETIME,
        "interval": settings.DEVICE_CODE_INTERVAL,
    }


def pending(typed_user_code: str) -> DeviceAuthorization | None:
    """The live, undecided request this user code names, or None."""
    letters = normalize_user_code(typed_user_code)
    if letters is None:
        return None
    digests = [
        _user_code_digest(letters, key)
        for key in (settings.SECRET_KEY, *settings.SECRET_KEY_FALLBACKS)
    ]
    return (
        DeviceAuthorization.objects.live()
        .select_related("client")
        .filter(
            user_code_digest__in=digests,
            status=DeviceAuthorization.Status.PENDING,
            client__is_active=True,
        )
        .first()
    )


def decide(
    row: DeviceAuthorization,
    *,
    user: User | None,
    sid: str = "",
    auth_time=None,
    acr: str = "",
    amr: list[str] | None = None,
) -> bool:
    """The person approved (``user``, signed in ``auth_time`` in the session ``sid`` with the
    methods ``amr``, reaching ``acr``) or denied (None) the request; False if it was decided
    meanwhile or has expired (only the first answer counts)."""
    now = timezone.now()
    if user is None:
        fields = {"status": DeviceAuthorization.Status.DENIED}
    else:
        fields = {
            "status": DeviceAuthorization.Status.APPROVED,
            "user": user,
            "sid": sid,
            "auth_time": auth_time,
            "acr": acr,
            "amr": " ".join(amr or []),
        }
    return bool(
        DeviceAuthorization.objects.filter(
            pk=row.pk, status=DeviceAuthorization.Status.PENDING, expires__gt=now
        ).update(decided_at=now, **fields)
    )


class Pending(Exception):
    """Not yet: ``slow_down`` if the device polled faster than its interval (RFC 8628 §3.5)."""

    def __init__(self, slow_down: bool):
        super().__init__("slow_down" if slow_down else "authorization_pending")
        self.slow_down = slow_down


class Denied(Exception):
    """The person said no (§3.5 access_denied)."""


class Expired(Exception):
    """The device code has expired (§3.5 expired_token)."""


def poll(device_code: str, client: Client) -> DeviceAuthorization | None:
    """What the device's token request gets: the approved request, now marked issued (the one
    poll that wins it), or None for a device code that is unknown, another client's or spent
    (invalid_grant); raises Pending, Denied or Expired. Runs in the token endpoint's transaction.
    """
    if not device_code or len(device_code) > 256:
        return None
    row = (
        DeviceAuthorization.objects.select_related("user")
        .filter(device_code_digest=token_digest(device_code))
        .first()
    )
    if row is None or row.client_id != client.pk:
        return None
    now = timezone.now()
    if row.status == DeviceAuthorization.Status.ISSUED:
        return None
    if row.expires <= now:
        raise Expired()
    if row.status == DeviceAuthorization.Status.DENIED:
        raise Denied()
    rows = DeviceAuthorization.objects.filter(pk=row.pk)
    if row.status == DeviceAuthorization.Status.APPROVED:
        won = rows.filter(status=DeviceAuthorization.Status.APPROVED).update(
            status=DeviceAuthorization.Status.ISSUED, issued_at=now, last_polled_at=now
        )
        if not won:
            return None  # a concurrent poll collected the token
        row.status, row.issued_at = DeviceAuthorization.Status.ISSUED, now
        _remember_session_client(row)
        return row
    # Pending. §3.5: polling faster than the interval gets slow_down, and the interval grows by
    # 5 s "for this and all subsequent requests". The check and the stamp are one statement,
    # so concurrent polls cannot all pass as one.
    on_time = (
        rows.filter(status=DeviceAuthorization.Status.PENDING)
        .exclude(last_polled_at__gt=now - timedelta(seconds=row.interval))
        .update(last_polled_at=now)
    )
    if not on_time:
        rows.update(interval=F("interval") + SLOW_DOWN_STEP, last_polled_at=now)
    raise Pending(slow_down=not on_time)


def _remember_session_client(row: DeviceAuthorization) -> None:
    """The client now holds tokens from the browser session that approved: it is told when that
    session ends (back-channel logout), as for a code (tokens/codes.py)."""
    if row.sid:
        SessionClient.objects.bulk_create(
            [SessionClient(sid=row.sid, client_id=row.client_id, user_id=row.user_id)],
            ignore_conflicts=True,
        )
