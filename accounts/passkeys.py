"""Passkeys (WebAuthn Level 2/3, through Duo Labs' ``webauthn``): registering one, and checking
an assertion for a passwordless sign-in or as a second factor.

* The relying party is the issuer: rpId its host name, the only origin accepted its origin
  (WebAuthn §7.1 steps 9 and 13, §7.2 steps 13 and 15), never the request's Host header.
* Attestation ``none``: we do not vet authenticator makers, so we ask for no attestation.
* Challenges are random (the library's 64 bytes), kept in the server-side session for two
  minutes, and single use: taken out of the session before the response is checked.
* A passwordless sign-in requires user verification (``uv``: the authenticator's PIN or
  biometric, WebAuthn §7.2 step 17); as a second factor, presence is enough.
* The signature counter (§7.2 step 21): a count that does not go up, when the authenticator keeps
  one, may be a cloned key: refused, and a security event written.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings
from django.db.models import Q
from django.http import HttpRequest
from django.utils import timezone
from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import (
    base64url_to_bytes,
    bytes_to_base64url,
    parse_authentication_credential_json,
)
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AttestationConveyancePreference,
    AuthenticatorSelectionCriteria,
    CredentialDeviceType,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from accounts import services
from accounts.models import Passkey, SecurityEvent, User

CHALLENGE_KEY = "_webauthn"
CHALLENGE_SECONDS = 120
TIMEOUT_MS = 60_000
RP_NAME = "Authorization server"


class PasskeyError(Exception):
    """The ceremony failed; the message is safe to show."""


def rp_id() -> str:
    return urlsplit(settings.ISSUER).hostname or "localhost"


def origin() -> str:
    parts = urlsplit(settings.ISSUER)
    return f"{parts.scheme}://{parts.netloc}"


def user_handle(user: User) -> str:
    """WebAuthn user.id (base64url): random, no personal data (§14.6.1), the same for all of a
    person's passkeys so an authenticator keeps one per account."""
    existing = Passkey.objects.filter(user=user).values_list("user_handle", flat=True).first()
    return existing or bytes_to_base64url(secrets.token_bytes(32))


def _remember(
    request: HttpRequest, purpose: str, challenge: bytes, user: User | None, handle: str = ""
) -> None:
    request.session[CHALLENGE_KEY] = {
        "purpose": purpose,
        "challenge": bytes_to_base64url(challenge),
        "until": int(time.time()) + CHALLENGE_SECONDS,
        "user": user.pk if user else None,
        "handle": handle,
    }


def _take_challenge(request: HttpRequest, purpose: str, user: User | None) -> dict:
    """The ceremony's state (its challenge, in bytes), removed from the session: single use."""
    state = request.session.pop(CHALLENGE_KEY, None)
    if (
        not isinstance(state, dict)
        or state.get("purpose") != purpose
        or state.get("until", 0) < time.time()
        or state.get("user") != (user.pk if user else None)
    ):
        raise PasskeyError("This request has expired. Please try again.")
    return {**state, "challenge": base64url_to_bytes(state["challenge"])}


# --- registration (WebAuthn §7.1) -------------------------------------------------------------
def registration_options(request: HttpRequest, user: User) -> str:
    handle = user_handle(user)
    options = generate_registration_options(
        rp_id=rp_id(),
        rp_name=RP_NAME,
        user_id=base64url_to_bytes(handle),
        user_name=user.get_username(),
        user_display_name=user.get_full_name() or user.get_username(),
        timeout=TIMEOUT_MS,
        attestation=AttestationConveyancePreference.NONE,
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.REQUIRED,  # discoverable: no username needed
            user_verification=UserVerificationRequirement.PREFERRED,
        ),
        exclude_credentials=[
            PublicKeyCredentialDescriptor(id=base64url_to_bytes(cid))
            for cid in Passkey.objects.filter(user=user).values_list("credential_id", flat=True)
        ],
    )
    _remember(request, "register", options.challenge, user, handle)
    return options_to_json(options)


def register(request: HttpRequest, user: User, credential: dict, name: str) -> Passkey:
    state = _take_challenge(request, "register", user)
    try:
        verified = verify_registration_response(
            credential=credential,
            expected_challenge=state["challenge"],
            expected_rp_id=rp_id(),
            expected_origin=origin(),
        )
    except (WebAuthnException, ValueError, KeyError, TypeError) as error:
        raise PasskeyError("The passkey could not be checked.") from error
    credential_id = bytes_to_base64url(verified.credential_id)
    if Passkey.objects.filter(credential_id=credential_id).exists():
        raise PasskeyError("This passkey is registered already.")
    response = credential.get("response")
    transports = response.get("transports") if isinstance(response, dict) else None
    if not isinstance(transports, list):
        transports = []
    passkey = Passkey.objects.create(
        user=user,
        name=(name or "Passkey").strip()[:100] or "Passkey",
        credential_id=credential_id,
        user_handle=state["handle"],
        public_key=verified.credential_public_key,
        sign_count=verified.sign_count,
        synced=verified.credential_backed_up,
        transports=[t for t in transports if isinstance(t, str)][:8],
        aaguid=verified.aaguid,
    )
    services.record_event(
        SecurityEvent.Kind.FACTOR_ADDED, request=request, user=user, factor="passkey",
        passkey=passkey.name,
    )  # fmt: skip
    return passkey


def remove(request: HttpRequest, user: User, passkey_id: str) -> bool:
    if not passkey_id.isascii() or not passkey_id.isdigit() or len(passkey_id) > 18:
        return False
    passkey = Passkey.objects.filter(pk=int(passkey_id), user=user).first()
    if passkey is None:
        return False
    passkey.delete()
    services.record_event(
        SecurityEvent.Kind.FACTOR_REMOVED, request=request, user=user, factor="passkey",
        passkey=passkey.name,
    )  # fmt: skip
    return True


# --- authentication (WebAuthn §7.2) -----------------------------------------------------------
@dataclass(frozen=True)
class Assertion:
    user: User
    amr: list[str]  # RFC 8176: hwk or swk, and mfa when the authenticator verified the person


def authentication_options(request: HttpRequest, user: User | None) -> str:
    """Options for a passwordless sign-in (``user`` None: any discoverable passkey, the person
    verified) or for a second factor of ``user`` (their passkeys only)."""
    allowed = []
    if user is not None:
        allowed = [
            PublicKeyCredentialDescriptor(id=base64url_to_bytes(cid))
            for cid in Passkey.objects.filter(user=user).values_list("credential_id", flat=True)
        ]
    options = generate_authentication_options(
        rp_id=rp_id(),
        timeout=TIMEOUT_MS,
        allow_credentials=allowed,
        user_verification=UserVerificationRequirement.REQUIRED
        if user is None
        else UserVerificationRequirement.PREFERRED,
    )
    _remember(request, "login" if user is None else "verify", options.challenge, user)
    return options_to_json(options)


def authenticate(request: HttpRequest, credential: dict | str, user: User | None) -> Assertion:
    """Check an assertion: passwordless when ``user`` is None, else a second factor of ``user``."""
    challenge = _take_challenge(request, "login" if user is None else "verify", user)["challenge"]
    try:
        parsed = parse_authentication_credential_json(credential)
    except (WebAuthnException, ValueError, KeyError, TypeError) as error:
        raise PasskeyError("The passkey answer could not be read.") from error
    passkey = (
        Passkey.objects.select_related("user")
        .filter(credential_id=bytes_to_base64url(parsed.raw_id), user__is_active=True)
        .first()
    )
    # §7.2 step 6: the credential belongs to the person identified, and the user handle agrees.
    if passkey is None or (user is not None and passkey.user_id != user.pk):
        raise PasskeyError("This passkey is not registered here.")
    handle = parsed.response.user_handle
    if handle is not None and bytes_to_base64url(handle) != passkey.user_handle:
        raise PasskeyError("This passkey is not registered here.")
    try:
        verified = verify_authentication_response(
            credential=parsed,
            expected_challenge=challenge,
            expected_rp_id=rp_id(),
            expected_origin=origin(),
            credential_public_key=bytes(passkey.public_key),
            credential_current_sign_count=0,  # compared below, so a clone is recorded as one
            require_user_verification=user is None,
        )
    except (WebAuthnException, ValueError, KeyError, TypeError) as error:
        raise PasskeyError("The passkey could not be checked.") from error
    _advance_counter(request, passkey, verified.new_sign_count)
    synced = verified.credential_device_type == CredentialDeviceType.MULTI_DEVICE
    amr = ["swk" if synced or verified.credential_backed_up else "hwk"]
    if verified.user_verified:
        amr.append("mfa")  # the key and the PIN or biometric that unlocked it
    return Assertion(passkey.user, amr)


def _advance_counter(request: HttpRequest, passkey: Passkey, count: int) -> None:
    """WebAuthn §7.2 step 21: when either count is non-zero, the new one must be greater. The
    update is a compare-and-set, so two uses of one count cannot both pass."""
    now = timezone.now()
    if count == 0 and passkey.sign_count == 0:  # this authenticator keeps no counter
        Passkey.objects.filter(pk=passkey.pk).update(last_used_at=now)
        return
    advanced = (
        Passkey.objects.filter(pk=passkey.pk)
        .filter(Q(sign_count__lt=count))
        .update(sign_count=count, last_used_at=now)
    )
    if not advanced:
        services.record_event(
            SecurityEvent.Kind.PASSKEY_CLONED,
            request=request,
            user=passkey.user,
            actor=SecurityEvent.Actor.SYSTEM,
            passkey=passkey.name,
            stored_count=passkey.sign_count,
            presented_count=count,
        )
        raise PasskeyError("This passkey cannot be used: its counter went back.")
