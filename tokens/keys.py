"""Signing keys: the active one signs, every published one verifies.

Keys are read from the database and kept in process memory for ``CACHE_SECONDS``. That is safe
across hosts because of the key life cycle: a key is published (state ``next``) well before it
signs anything, and stays published after it retires, so a host holding a slightly stale view
still verifies everything any other host signs.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from joserfc.jwk import ECKey, KeySet, RSAKey

from tokens.models import SigningKey

CACHE_SECONDS = 60
ALGORITHMS = ("ES256", "RS256")


@dataclass(frozen=True)
class _Keys:
    signing: dict[str, tuple[str, ECKey | RSAKey]]  # algorithm -> (kid, private key)
    verifying: KeySet
    jwks: dict
    loaded: float


_lock = threading.Lock()
_cached: _Keys | None = None


def generate(algorithm: str, state: str = SigningKey.State.NEXT) -> SigningKey:
    """Create a key pair. ``kid`` is the RFC 7638 thumbprint of the public key."""
    if algorithm == "ES256":
        key = ECKey.generate_key("P-256", private=True)
    elif algorithm == "RS256":
        key = RSAKey.generate_key(2048, private=True)
    else:
        raise ValueError(f"unsupported algorithm {algorithm}")
    kid = key.thumbprint()
    public = {**key.as_dict(private=False), "kid": kid, "alg": algorithm, "use": "sig"}
    now = timezone.now()
    return SigningKey.objects.create(
        kid=kid,
        algorithm=algorithm,
        private_jwk={**key.as_dict(private=True), "kid": kid},
        public_jwk=public,
        state=state,
        activated_at=now if state == SigningKey.State.ACTIVE else None,
    )


def _load() -> _Keys:
    # The rotation job deletes a retired key once nothing it signed can still be valid.
    rows = list(SigningKey.objects.order_by("created"))
    signing = {}
    for row in rows:
        if row.state == SigningKey.State.ACTIVE:
            key_class = ECKey if row.algorithm == "ES256" else RSAKey
            signing[row.algorithm] = (row.kid, key_class.import_key(row.private_jwk))
    public = [row.public_jwk for row in rows]
    return _Keys(
        signing=signing,
        verifying=KeySet.import_key_set({"keys": public}) if public else KeySet([]),
        jwks={"keys": public},
        loaded=time.monotonic(),
    )


def _keys() -> _Keys:
    global _cached
    keys = _cached
    if keys is None or time.monotonic() - keys.loaded > CACHE_SECONDS:
        with _lock:
            keys = _cached = _load()
    return keys


def forget() -> None:
    """Drop this process's copy (after a rotation here, and between tests)."""
    global _cached
    _cached = None


def signing_key(algorithm: str | None = None) -> tuple[str, ECKey | RSAKey]:
    """The active key for ``algorithm`` (default: ACCESS_TOKEN_SIGNING_ALG); created if missing."""
    algorithm = algorithm or settings.ACCESS_TOKEN_SIGNING_ALG
    found = _keys().signing.get(algorithm)
    if found is None:
        ensure_active_key(algorithm)
        forget()
        found = _keys().signing[algorithm]
    return found


def ensure_active_key(algorithm: str) -> SigningKey:
    """Return the active key for ``algorithm``, creating one if there is none.

    A partial unique index allows one active key per algorithm, so two processes racing here
    end up with the same key.
    """
    existing = SigningKey.objects.filter(algorithm=algorithm, state=SigningKey.State.ACTIVE).first()
    if existing:
        return existing
    try:
        with transaction.atomic():
            return generate(algorithm, state=SigningKey.State.ACTIVE)
    except IntegrityError:
        return SigningKey.objects.get(algorithm=algorithm, state=SigningKey.State.ACTIVE)


def verification_keys() -> KeySet:
    return _keys().verifying


def jwks() -> dict:
    """The public JWK Set: next, active and retired-but-still-verifying keys."""
    return _keys().jwks
