"""JWT access tokens (RFC 9068): issued here, and checked here for every reader: introspection
and revocation (tokens/oauth/endpoints.py), userinfo and resource servers (tokens/oauth/resource.py,
also against a remote JWKS). ``verify`` is the one place their claims are checked."""

from __future__ import annotations

import functools
import hashlib
import math
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime

from authlib.oauth2.rfc9068.claims import JWTAccessTokenClaimsValidator
from django.conf import settings
from django.utils import timezone
from joserfc import jwt
from joserfc.errors import DecodeError, InvalidClaimError, InvalidHeaderValueError, JoseError
from joserfc.jwk import KeySet

from tokens import keys, liveness, token_store

ALGORITHMS = ["ES256", "RS256"]
TYPES = ("at+jwt", "application/at+jwt")
MAX_LENGTH = 8_192
# Hosts' clocks differ a little: a token signed on one may carry an iat a second ahead of another.
CLOCK_SKEW = 60


@dataclass(frozen=True)
class AccessToken:
    value: str
    jti: str
    expires_in: int
    expires_at: datetime


def issue(
    *,
    client,
    user,
    scope: str,
    sid: str = "",
    auth_time: int | None = None,
    jkt: str = "",
    acr: str = "",
    amr: list[str] | None = None,
    extra_claims: dict | None = None,
    lifetime: int | None = None,
) -> AccessToken:
    """Sign an access token with the active key. ``sub`` is the person, or the client itself
    when no person is involved (client credentials, RFC 9068 §2.2). ``jkt``: the thumbprint of
    the DPoP key the token is bound to (RFC 9449 §6.1, ``cnf``). ``acr`` and ``amr`` say how
    the person signed in (RFC 9068 §2.2.1), as in the ID token. ``extra_claims`` add to or
    replace the standard ones (token exchange: a narrower ``aud``, ``act``); ``lifetime``, when
    given, is used instead of the client's (token exchange: never past the subject token)."""
    now = int(time.time())
    lifetime = client.access_token_lifetime if lifetime is None else lifetime
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
    if jkt:
        claims["cnf"] = {"jkt": jkt}
    if extra_claims:
        claims.update(extra_claims)
    if acr:
        claims["acr"] = acr
    if amr:
        claims["amr"] = list(amr)
    kid, key = keys.signing_key()
    header = {"alg": settings.ACCESS_TOKEN_SIGNING_ALG, "typ": "at+jwt", "kid": kid}
    return AccessToken(
        value=jwt.encode(header, claims, key),
        jti=jti,
        expires_in=lifetime,
        expires_at=datetime.fromtimestamp(now + lifetime, UTC),
    )


class AccessTokenClaims(JWTAccessTokenClaimsValidator):
    """RFC 9068 §2.2 and §4 on Authlib's registry of access-token claims (joserfc's registry:
    types of ``iss sub aud exp iat jti auth_time amr``, ``exp`` in the future)."""

    def validate_iat(self, value: object) -> None:
        # joserfc refuses an iat one second ahead of this host's clock; another host signed it.
        numeric = isinstance(value, int | float) and not isinstance(value, bool)
        if not numeric or not math.isfinite(value) or value > self.now + CLOCK_SKEW:
            raise InvalidClaimError("iat")


@functools.lru_cache(maxsize=16)
def claims_registry(issuer: str, audience: str | None) -> AccessTokenClaims:
    """Built once per issuer and audience (settings can change under tests)."""
    essential = {"essential": True}
    return AccessTokenClaims(
        iss={"essential": True, "value": issuer},
        aud={"essential": True, "value": audience} if audience else essential,
        **{name: essential for name in ("sub", "exp", "iat", "jti", "client_id")},
    )


class _Verified:
    """Tokens whose signature this process has checked, by digest: (header typ, claims).

    Verifying an ES256 signature was a fifth of introspection's CPU, and resource servers
    present the same token many times. What is kept is only that our key signed these exact
    bytes, which no revocation changes; the claims (expiry, issuer, audience) are validated on
    every use, and whether the token is live is asked on every use (``access_token_is_live``).
    Bounded (least recently used out), per process, and an entry dies with its token's ``exp``. Keys are dropped only once nothing they signed can be
    valid (tokens/keys.py), and an entry whose key is gone is checked afresh."""

    SIZE = 4_096

    def __init__(self) -> None:
        self.entries: OrderedDict[bytes, tuple[object, object, dict]] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, digest: bytes) -> tuple[object, object, dict] | None:
        with self.lock:
            entry = self.entries.get(digest)
            if entry is not None:
                self.entries.move_to_end(digest)
            return entry

    def put(self, digest: bytes, kid: object, typ: object, claims: dict) -> None:
        with self.lock:
            self.entries[digest] = (kid, typ, claims)
            if len(self.entries) > self.SIZE:
                self.entries.popitem(last=False)

    def clear(self) -> None:
        with self.lock:
            self.entries.clear()


verified = _Verified()


def _signed_by_us(value: str) -> tuple[object, dict]:
    """(typ, claims) of a JWS one of our published keys signed, checked once per process."""
    digest = hashlib.sha256(value.encode()).digest()
    found = verified.get(digest)
    if found is not None and keys.is_published(found[0]):  # an operator may delete a key
        return found[1], dict(found[2])
    token = keys.decode(value, ALGORITHMS)
    typ = token.header.get("typ")
    verified.put(digest, token.header.get("kid"), typ, dict(token.claims))
    return typ, token.claims


def verify(value: str, key_set: KeySet | None = None, *, audience: str | None = None) -> dict:
    """The claims of an unexpired access token, or raise a JoseError saying what is wrong.

    Signed by one of our keys (``key_set``: the JWKS a remote resource server fetched), with our
    algorithms only (no ``none``, no HMAC with a public key), ``typ: at+jwt`` so an ID token can
    never pass for an access token (RFC 9068 §4), our issuer and, when given, ``audience``.
    """
    if not value or len(value) > MAX_LENGTH:
        raise DecodeError("No token, or one too long to be ours.")
    try:
        if key_set is None:
            typ, claims = _signed_by_us(value)
        else:
            token = jwt.decode(value, key_set, algorithms=ALGORITHMS)
            typ, claims = token.header.get("typ"), token.claims
    except (ValueError, TypeError, KeyError) as error:  # not even a JWS
        raise DecodeError(type(error).__name__) from None
    if typ not in TYPES:
        raise InvalidHeaderValueError("typ")
    claims_registry(settings.ISSUER, audience).validate(claims)
    return claims


def bound_jkt(claims: dict) -> str | None:
    """The DPoP key thumbprint a token is bound to (RFC 9449 §6.1 ``cnf.jkt``), else None."""
    cnf = claims.get("cnf")
    jkt = cnf.get("jkt") if isinstance(cnf, dict) else None
    return jkt if isinstance(jkt, str) and jkt else None


def read(value: str) -> dict | None:
    """The claims of an unexpired access token that this server signed, or None."""
    try:
        return verify(value)
    except JoseError:
        return None


def access_token_is_live(claims: dict) -> bool:
    """Beyond signature and expiry (already checked): not deny-listed, client active, the person
    active, and the browser session it came from still alive. This is what makes revocation
    immediate for anyone who introspects. One statement (tokens/token_store.py) on the rows
    themselves (the ORM took ten times longer to build it than PostgreSQL takes to answer it),
    or this process's memory of that answer, which every revocation anywhere wipes at once
    (tokens/liveness.py). Never Redis: a Redis outage delays no revocation."""
    client_id = claims["client_id"]
    if not isinstance(client_id, str) or not client_id or "\x00" in client_id:
        return False
    subject, sid = claims.get("sub"), claims.get("sid") or ""
    person = None
    if subject != client_id:
        if not str(subject).isdigit():
            return False
        person = int(subject)
    jti = claims["jti"]
    known, generation = liveness.lookup(jti) if isinstance(jti, str) else (False, None)
    if known:
        return True
    client_active, denied, session_expires, person_active = token_store.access_live(
        client_id, jti, sid, person, timezone.now()
    )
    live = (
        client_active and not denied and (not sid or session_expires is not None) and person_active
    )
    if live and generation is not None:
        until = claims["exp"] if not sid else min(claims["exp"], session_expires.timestamp())
        liveness.remember(jti, generation, until)
    return live
