"""JWT access tokens (RFC 9068): issued here, checked here and by resource servers."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from django.conf import settings
from django.utils import timezone
from joserfc import jwt
from joserfc.errors import JoseError

from tokens import clients, keys, token_store

ALGORITHMS = ["ES256", "RS256"]


@dataclass(frozen=True)
class AccessToken:
    value: str
    jti: str
    expires_in: int
    expires_at: datetime


def issue(*, client, user, scope: str, sid: str = "", auth_time: int | None = None) -> AccessToken:
    """Sign an access token with the active key. ``sub`` is the person, or the client itself
    when no person is involved (client credentials, RFC 9068 §2.2)."""
    now = int(time.time())
    lifetime = client.access_token_lifetime
    jti = secrets.token_urlsafe(16)
    claims = {
        "iss": settings.ISSUER,
        "sub": str(user.pk) if user is not None else client.client_id,
        "aud": settings.ACCESS_TOKEN_AUDIENCE,
        "client_id": client.client_id,
        "iat": now,
        "exp": now + lifetime,
        "jti": jti,
    }
    if scope:
        claims["scope"] = scope
    if sid:
        claims["sid"] = sid
    if auth_time:
        claims["auth_time"] = auth_time
    kid, key = keys.signing_key()
    header = {"alg": settings.ACCESS_TOKEN_SIGNING_ALG, "typ": "at+jwt", "kid": kid}
    return AccessToken(
        value=jwt.encode(header, claims, key),
        jti=jti,
        expires_in=lifetime,
        expires_at=datetime.fromtimestamp(now + lifetime, UTC),
    )


def read(value: str, *, leeway: int = 0) -> dict | None:
    """The claims of an unexpired access token that this server signed, or None.

    Only our algorithms and keys are accepted (no ``none``, no HMAC with a public key), and the
    ``typ`` header must be ``at+jwt`` so an ID token can never pass for an access token
    (RFC 9068 §4).
    """
    if not value or len(value) > 8_192:
        return None
    try:
        token = keys.decode(value, ALGORITHMS)
    except (JoseError, ValueError, TypeError, KeyError):
        return None
    if token.header.get("typ") not in ("at+jwt", "application/at+jwt"):
        return None
    claims = token.claims
    exp = claims.get("exp")
    if claims.get("iss") != settings.ISSUER or not isinstance(exp, int | float):
        return None
    if exp + leeway <= time.time() or not claims.get("jti") or not claims.get("client_id"):
        return None
    return claims


def access_token_is_live(claims: dict) -> bool:
    """Beyond signature and expiry (already checked): not deny-listed, client active, the person
    active, and the browser session it came from still alive. This is what makes revocation
    immediate for anyone who introspects. One statement (tokens/token_store.py): the ORM took
    ten times longer to build it than PostgreSQL takes to answer it."""
    if clients.active_client(claims["client_id"]) is None:
        return False
    subject, sid = claims.get("sub"), claims.get("sid") or ""
    person = None
    if subject != claims["client_id"]:
        if not str(subject).isdigit():
            return False
        person = int(subject)
    denied, session_alive, person_active = token_store.access_live(
        claims["jti"], sid, person, timezone.now()
    )
    return not denied and session_alive and person_active
