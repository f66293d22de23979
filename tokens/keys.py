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
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError
from joserfc.jwk import ECKey, KeySet, RSAKey

from tokens.models import Client, SigningKey

CACHE_SECONDS = 60
ALGORITHMS = ("ES256", "RS256")
MAX_ACCESS_TOKEN_LIFETIME = 86_400  # the most Client.access_token_lifetime may be
RELOAD_FOR_UNKNOWN_KID_EVERY = 5  # seconds; bounds what random kids can cost


@dataclass(frozen=True)
class _Keys:
    signing: dict[str, tuple[str, ECKey | RSAKey]]  # algorithm -> (kid, private key)
    verifying: KeySet
    jwks: dict
    loaded: float
    kids: frozenset[str] = frozenset()


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


def _load(previous: _Keys | None) -> _Keys:
    """The keys as the database has them now. A key's material never changes under its kid
    (the RFC 7638 thumbprint), so what ``previous`` already imported is kept: importing an
    RSA private key costs ~40 ms (cryptography checks it), a stall for every request queued
    behind the reload, once a minute."""
    # The rotation job deletes a retired key once nothing it signed can still be valid.
    rows = list(SigningKey.objects.order_by("created"))
    imported = {kid: key for kid, key in previous.signing.values()} if previous else {}
    signing = {}
    for row in rows:
        if row.state == SigningKey.State.ACTIVE:
            key = imported.get(row.kid)
            if key is None:
                key_class = ECKey if row.algorithm == "ES256" else RSAKey
                key = key_class.import_key(row.private_jwk)
            signing[row.algorithm] = (row.kid, key)
    kids = frozenset(row.kid for row in rows)
    public = [row.public_jwk for row in rows]
    if previous is not None and previous.kids == kids:
        verifying = previous.verifying
    else:
        verifying = KeySet.import_key_set({"keys": public}) if public else KeySet([])
    return _Keys(
        signing=signing,
        verifying=verifying,
        jwks={"keys": public},
        loaded=time.monotonic(),
        kids=kids,
    )


def _keys() -> _Keys:
    global _cached
    keys = _cached
    if keys is None or time.monotonic() - keys.loaded > CACHE_SECONDS:
        with _lock:
            keys = _cached  # another thread may have reloaded while this one waited
            if keys is None or time.monotonic() - keys.loaded > CACHE_SECONDS:
                keys = _cached = _load(keys)
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


def decode(value: str, algorithms: list[str]):
    """Verify a JWT against the published keys. A ``kid`` this process has not seen yet (a key
    another process has just created) triggers one reload, at most every few seconds, so random
    kids cannot make every request hit the database."""
    global _cached
    try:
        return jwt.decode(value, _keys().verifying, algorithms=algorithms)
    except InvalidKeyIdError:
        keys = _keys()
        if time.monotonic() - keys.loaded <= RELOAD_FOR_UNKNOWN_KID_EVERY:
            raise
        with _lock:
            keys = _cached = _load(_cached)
        return jwt.decode(value, keys.verifying, algorithms=algorithms)


def is_published(kid: object) -> bool:
    """True while the key ``kid`` still verifies (it has not been deleted)."""
    return kid in _keys().kids


def jwks() -> dict:
    """The public JWK Set: next, active and retired-but-still-verifying keys."""
    return _keys().jwks


@dataclass(frozen=True)
class RotationReport:
    published: list[str]
    promoted: list[str]
    retired: list[str]
    deleted: list[str]


def longest_token_lifetime() -> int:
    """Seconds the longest-lived token we sign can stay valid: a retired key must outlive it."""
    longest_access = Client.objects.aggregate(longest=Max("access_token_lifetime"))["longest"] or 0
    # Today's client settings are not enough: a lifetime lowered since a token was signed must not
    # shorten how long its key stays published. Bound it by the most any token may live.
    return max(
        longest_access,
        MAX_ACCESS_TOKEN_LIFETIME,
        settings.ID_TOKEN_LIFETIME,
        settings.LOGOUT_TOKEN_LIFETIME,
    )


def rotate(*, now=None, force: bool = False) -> RotationReport:
    """One step of the key life cycle, for every algorithm with an active key. Idempotent.

    * publish a ``next`` key if there is none (it verifies nothing yet; caches pick it up);
    * promote it to ``active`` once it has been published for SIGNING_KEY_PUBLISH_AHEAD and the
      active key is older than SIGNING_KEY_ROTATE_AFTER (``force`` skips both waits: for a
      compromised key, accepting that caches may miss the new key for a few minutes);
    * delete a retired key once every token it signed has expired.
    """
    now = now or timezone.now()
    report = RotationReport([], [], [], [])
    for algorithm in SigningKey.objects.filter(state=SigningKey.State.ACTIVE).values_list(
        "algorithm", flat=True
    ):
        with transaction.atomic():
            active = SigningKey.objects.select_for_update().get(
                algorithm=algorithm, state=SigningKey.State.ACTIVE
            )
            upcoming = SigningKey.objects.filter(
                algorithm=algorithm, state=SigningKey.State.NEXT
            ).first()
            if upcoming is None:
                upcoming = generate(algorithm)
                report.published.append(upcoming.kid)
            published_for = (now - upcoming.created).total_seconds()
            active_for = (now - (active.activated_at or active.created)).total_seconds()
            due = (
                published_for >= settings.SIGNING_KEY_PUBLISH_AHEAD
                and active_for >= settings.SIGNING_KEY_ROTATE_AFTER
            )
            if force or due:
                SigningKey.objects.filter(pk=active.pk).update(
                    state=SigningKey.State.RETIRED, retired_at=now
                )
                SigningKey.objects.filter(pk=upcoming.pk).update(
                    state=SigningKey.State.ACTIVE, activated_at=now
                )
                report.retired.append(active.kid)
                report.promoted.append(upcoming.kid)
                report.published.append(generate(algorithm).kid)
    cutoff = now - timedelta(seconds=longest_token_lifetime() + 600)
    expired = SigningKey.objects.filter(state=SigningKey.State.RETIRED, retired_at__lt=cutoff)
    report.deleted.extend(expired.values_list("kid", flat=True))
    expired.delete()
    forget()
    return report
