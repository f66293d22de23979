"""Second factors: authenticator apps (TOTP, RFC 6238), one-time recovery codes, and the
sign-in that waits for a factor after the password.

* The TOTP secret is encrypted at rest with Fernet (AES-128-CBC + HMAC-SHA256) under a key
  derived from SECRET_KEY by HKDF-SHA256; SECRET_KEY_FALLBACKS still decrypt, so the key can be
  rotated like Django's. A copy of the table alone lets nobody compute codes. It is shown once,
  on the enrolment page, and never again.
* Recovery codes are 16 characters of a 31-letter alphabet (79 random bits) generated here, so a keyed SHA-256 (Django's salted_hmac)
  is enough to store them; each is spent by one compare-and-set UPDATE, so it works once.
* A TOTP code is taken for the current time step or one step either side (clock drift), and
  only for a step later than the last one accepted (RFC 6238 §5.2: "the verifier MUST NOT accept
  the second attempt of the OTP after the successful validation"), again by one atomic UPDATE.
"""

from __future__ import annotations

import base64
import hmac
import secrets
import time
from datetime import UTC, datetime
from functools import lru_cache

import pyotp
import segno
from cryptography.fernet import Fernet, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.http import HttpRequest
from django.utils import timezone
from django.utils.crypto import salted_hmac

from accounts import services
from accounts.models import Passkey, RecoveryCode, SecurityEvent, TotpDevice, User

ISSUER_LABEL = "Authorization server"
RECOVERY_CODE_COUNT = 10
DRIFT_STEPS = 1  # RFC 6238 §5.2: one step of clock drift either way
PENDING_KEY = "_factor_pending"
PENDING_SECONDS = 300  # how long a correct password waits for its second factor
_RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i to misread


# --- the secret at rest -----------------------------------------------------------------------
@lru_cache(maxsize=4)
def _fernet(secret_key: str, fallbacks: tuple[str, ...]) -> MultiFernet:
    def derive(key: str) -> Fernet:
        raw = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"accounts.totp").derive(
            key.encode()
        )
        return Fernet(base64.urlsafe_b64encode(raw))

    return MultiFernet([derive(secret_key), *(derive(key) for key in fallbacks)])


def _cipher() -> MultiFernet:
    return _fernet(settings.SECRET_KEY, tuple(settings.SECRET_KEY_FALLBACKS))


def _secret(device: TotpDevice) -> str:
    return _cipher().decrypt(device.encrypted_secret.encode()).decode()


# --- enrolment --------------------------------------------------------------------------------
def start_totp_enrolment(user: User) -> tuple[TotpDevice, str]:
    """A new, unconfirmed authenticator app for ``user`` (replacing any unfinished one), and its
    secret in base32, to show once."""
    secret = pyotp.random_base32()  # 160 bits, RFC 4226 §4's recommendation
    with transaction.atomic():
        TotpDevice.objects.filter(user=user, confirmed_at__isnull=True).delete()
        device = TotpDevice.objects.create(
            user=user, encrypted_secret=_cipher().encrypt(secret.encode()).decode()
        )
    return device, secret


def provisioning_uri(user: User, secret: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=user.get_username(), issuer_name=ISSUER_LABEL)


def qr_svg(uri: str) -> str:
    """The QR code of ``uri`` as an inline SVG element (no script, no style: CSP-clean)."""
    return segno.make(uri, error="m").svg_inline(scale=5, border=2, dark="#111", light="#fff")


def pending_device(user: User, device_id: int | None) -> TotpDevice | None:
    """The unconfirmed enrolment ``device_id`` of ``user``, if it is still there."""
    if not device_id:
        return None
    return TotpDevice.objects.filter(pk=device_id, user=user, confirmed_at__isnull=True).first()


def pending_secret(device: TotpDevice) -> str:
    """The secret of an enrolment not yet confirmed (shown again after a wrong first code)."""
    if device.confirmed_at is not None:
        raise ValueError("a confirmed secret is never shown again")
    return _secret(device)


def confirm_totp(
    user: User, device_id: int, code: str, *, request: HttpRequest | None = None
) -> bool:
    """Finish an enrolment with its first valid code: the app becomes this person's one
    authenticator app (an earlier one is replaced)."""
    device = TotpDevice.objects.filter(pk=device_id, user=user, confirmed_at__isnull=True).first()
    if device is None:
        return False
    step = _matching_step(_secret(device), code)
    if step is None:
        return False
    with transaction.atomic():
        TotpDevice.objects.filter(user=user, confirmed_at__isnull=False).delete()
        device.confirmed_at, device.last_used_step = timezone.now(), step
        device.save(update_fields=["confirmed_at", "last_used_step"])
    services.record_event(
        SecurityEvent.Kind.FACTOR_ADDED, request=request, user=user, factor="totp"
    )
    return True


def remove_totp(user: User, *, request: HttpRequest | None = None) -> bool:
    deleted, _ = TotpDevice.objects.filter(user=user).delete()
    if deleted:
        services.record_event(
            SecurityEvent.Kind.FACTOR_REMOVED, request=request, user=user, factor="totp"
        )
    return bool(deleted)


def new_recovery_codes(user: User) -> list[str]:
    """Replace ``user``'s recovery codes with fresh ones; returned once, stored only hashed."""
    codes = [
        "".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(16))
        for _ in range(RECOVERY_CODE_COUNT)
    ]
    with transaction.atomic():
        RecoveryCode.objects.filter(user=user).delete()
        RecoveryCode.objects.bulk_create(
            RecoveryCode(user=user, digest=_recovery_digest(code, settings.SECRET_KEY))
            for code in codes
        )
    return [f"{code[:4]}-{code[4:8]}-{code[8:12]}-{code[12:]}" for code in codes]


def _recovery_digest(code: str, key: str) -> str:
    return salted_hmac("accounts.RecoveryCode", code, secret=key, algorithm="sha256").hexdigest()


# --- what a person has ------------------------------------------------------------------------
def has_totp(user: User) -> bool:
    return TotpDevice.objects.filter(user=user, confirmed_at__isnull=False).exists()


def recovery_codes_left(user: User) -> int:
    return RecoveryCode.objects.filter(user=user, used_at__isnull=True).count()


def has_second_factor(user: User) -> bool:
    """Whether signing in as ``user`` asks for more than the password."""
    return has_totp(user) or Passkey.objects.filter(user=user).exists()


def can_reach(user: User, acr: str) -> bool:
    """Could ``user`` reach the level ``acr`` (accounts/assurance.py) with the factors they have?"""
    if acr == "phr":
        return Passkey.objects.filter(user=user).exists()
    if acr == "mfa":
        return (
            has_totp(user)
            or Passkey.objects.filter(user=user).exists()
            or RecoveryCode.objects.filter(user=user, used_at__isnull=True).exists()
        )
    return acr == "pwd"


def reset_factors(user: User, *, operator: User, request: HttpRequest | None = None) -> int:
    """An operator's reset: every authenticator app, recovery code and passkey of ``user`` goes
    (the person lost them); the person signs in with the password and enrols again."""
    with transaction.atomic():
        count = TotpDevice.objects.filter(user=user, confirmed_at__isnull=False).count()
        count += Passkey.objects.filter(user=user).count()
        TotpDevice.objects.filter(user=user).delete()
        Passkey.objects.filter(user=user).delete()
        RecoveryCode.objects.filter(user=user).delete()
        services.record_event(
            SecurityEvent.Kind.FACTORS_RESET,
            request=request,
            user=user,
            actor=SecurityEvent.Actor.OPERATOR,
            actor_user=operator,
            factors=count,
        )
    return count


# --- verification -----------------------------------------------------------------------------
def _matching_step(secret: str, code: str, now: float | None = None) -> int | None:
    """The time step (RFC 6238 §4: floor(unix time / 30)) within the drift whose code is ``code``."""
    code = code.strip().replace(" ", "")
    if len(code) != 6 or not code.isascii() or not code.isdigit():
        return None
    totp = pyotp.TOTP(secret)
    current = totp.timecode(datetime.fromtimestamp(now or time.time(), UTC))
    found = None
    for step in range(current - DRIFT_STEPS, current + DRIFT_STEPS + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            found = step  # every step is compared: the time taken does not depend on which
    return found


def verify_code(user: User, code: str, *, request: HttpRequest | None = None) -> str | None:
    """Check a code typed at the second-factor step: a TOTP code, or a recovery code. Return
    ``"otp"`` (RFC 8176) when it is taken, None otherwise. Throttling is the caller's."""
    code = code.strip()
    if code.replace(" ", "").isdigit():
        device = TotpDevice.objects.filter(user=user, confirmed_at__isnull=False).first()
        step = _matching_step(_secret(device), code) if device else None
        if step is None:
            return None
        # RFC 6238 §5.2: one use per step; a later step than any accepted, set atomically.
        taken = (
            TotpDevice.objects.filter(pk=device.pk)
            .filter(Q(last_used_step__isnull=True) | Q(last_used_step__lt=step))
            .update(last_used_step=step)
        )
        return "otp" if taken else None
    normalized = code.lower().replace("-", "").replace(" ", "")
    if len(normalized) != 16:
        return None
    keys = [settings.SECRET_KEY, *settings.SECRET_KEY_FALLBACKS]
    digests = [_recovery_digest(normalized, key) for key in keys]
    spent = RecoveryCode.objects.filter(user=user, digest__in=digests, used_at__isnull=True).update(
        used_at=timezone.now()
    )
    if not spent:
        return None
    services.record_event(
        SecurityEvent.Kind.RECOVERY_CODE_USED,
        request=request,
        user=user,
        left=recovery_codes_left(user),
    )
    return "otp"


# --- the sign-in waiting for its second factor ------------------------------------------------
def begin_pending_sign_in(request: HttpRequest, user: User, next_url: str) -> None:
    """The password was right and a second factor is due: remember who, until when, and where to
    go after, in the (still anonymous) session. Nobody is signed in yet."""
    request.session[PENDING_KEY] = {
        "user": user.pk,
        "backend": getattr(user, "backend", settings.AUTHENTICATION_BACKENDS[0]),
        "until": int(time.time()) + PENDING_SECONDS,
        "next": next_url,
        "auth_time": int(time.time()),
    }


def pending_sign_in(request: HttpRequest) -> tuple[User, dict] | None:
    """The person waiting at the second-factor step, or None (none waiting, or too late)."""
    state = request.session.get(PENDING_KEY)
    if not isinstance(state, dict) or state.get("until", 0) < time.time():
        return None
    user = User.objects.filter(pk=state.get("user"), is_active=True).first()
    return (user, state) if user else None


def end_pending_sign_in(request: HttpRequest) -> None:
    request.session.pop(PENDING_KEY, None)
