"""A client's own public keys, and the JWTs it signs with them: client assertions for
``private_key_jwt`` (RFC 7523 §2.2 and §3, OIDC Core §9) and request objects (OIDC Core §6).

The keys are the client's registered ``jwks``, or the JWK Set at its ``jwks_uri``, fetched
through the SSRF guard of tokens/outbound.py and kept in the shared cache for
CLIENT_JWKS_CACHE_SECONDS. A ``kid`` the cached set lacks (the client rotated its key, OIDC
Core §10.1.1) fetches the set again, at most once per CLIENT_JWKS_REFETCH_SECONDS per client,
so a stream of made-up kids cannot turn this server into a fetcher of the client's URL.

Nothing here runs for a client that authenticates with a secret.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time

from django.conf import settings
from django.core.cache import cache
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet

from tokens import outbound
from tokens.models import (
    CLIENT_SIGNING_ALGORITHMS,
    FAPI2_SIGNING_ALGORITHMS,
    Client,
    public_jwks_problem,
)

logger = logging.getLogger(__name__)


class KeysUnavailable(Exception):
    """The client's keys could not be had: no keys registered, or its jwks_uri failed."""


class ReplayCheckUnavailable(Exception):
    """The shared cache that remembers used assertion ids is down: nothing is accepted."""


def _cache_key(client: Client) -> str:
    # The URI is part of the key: a client that registers another jwks_uri never gets the old set.
    digest = hashlib.sha256(client.jwks_uri.encode()).hexdigest()[:16]
    return f"tokens.client-jwks:{client.client_id}:{digest}"


def _fetch(client: Client) -> dict:
    try:
        body = outbound.fetch(
            client.jwks_uri,
            accept="application/json, application/jwk-set+json",
            max_bytes=settings.CLIENT_FETCH_MAX_BYTES,
            timeout=settings.CLIENT_FETCH_TIMEOUT,
            allow_private=settings.CLIENT_FETCH_ALLOW_PRIVATE_NETWORKS,
        )
        jwks = json.loads(body)
    except outbound.FetchFailed as error:
        logger.warning("Could not fetch the JWKS of client %s: %s", client.client_id, error)
        raise KeysUnavailable("The client's jwks_uri could not be fetched.") from None
    except (ValueError, UnicodeDecodeError):
        raise KeysUnavailable("The client's jwks_uri did not answer with JSON.") from None
    if problem := public_jwks_problem(jwks):
        raise KeysUnavailable(f"The client's jwks_uri holds no usable JWK Set: {problem}")
    try:
        cache.set(_cache_key(client), jwks, settings.CLIENT_JWKS_CACHE_SECONDS)
    except Exception:
        logger.warning("Could not cache the JWKS of client %s", client.client_id)
    return jwks


def key_set(client: Client, *, refetch: bool = False) -> KeySet:
    """The client's public keys. ``refetch``: the cached set lacked a kid; fetch again unless
    that was done for this client within CLIENT_JWKS_REFETCH_SECONDS."""
    if client.jwks:
        return _import(client.jwks)
    if not client.jwks_uri:
        raise KeysUnavailable("The client has registered no keys.")
    jwks = None
    if refetch:
        try:
            allowed = cache.add(
                f"{_cache_key(client)}:refetched", 1, settings.CLIENT_JWKS_REFETCH_SECONDS
            )
        except Exception:
            allowed = True  # with the cache down every lookup fetches anyway
        if not allowed:
            raise KeysUnavailable("No key with this kid; the client's keys were just fetched.")
    else:
        try:
            jwks = cache.get(_cache_key(client))
        except Exception:
            jwks = None
    return _import(jwks if jwks is not None else _fetch(client))


def _import(jwks: dict) -> KeySet:
    try:
        return KeySet.import_key_set(jwks)
    except (JoseError, ValueError, TypeError, KeyError):
        # Checked when registered or fetched; a row written around the checks is still no 500.
        raise KeysUnavailable("The client's registered keys are not a usable JWK Set.") from None


def decode(client: Client, value: str, algorithms: list[str]) -> jwt.Token:
    """Verify a JWT the client signed with one of its keys; JoseError or KeysUnavailable."""
    keys = key_set(client)
    try:
        return jwt.decode(value, keys, algorithms=algorithms)
    except InvalidKeyIdError:
        if not client.jwks_uri:
            raise
    return jwt.decode(value, key_set(client, refetch=True), algorithms=algorithms)


def allowed_algorithms(client: Client, registered: str) -> list[str]:
    """What the client may sign with: the one algorithm it registered, or any we accept; for a
    fapi2 client only those FAPI 2.0 §5.4 allows (no RS256)."""
    algorithms = [registered] if registered else list(CLIENT_SIGNING_ALGORITHMS)
    if client.fapi2:
        return [alg for alg in algorithms if alg in FAPI2_SIGNING_ALGORITHMS]
    return algorithms


def remember_assertion_id(client_id: str, jti: str, expires_at: float) -> bool:
    """RFC 7523 §3 item 7: True the first time this client uses ``jti``, False on a replay.

    Kept in the shared cache (Redis, seen by every worker and host) until the assertion has
    expired. If the cache is down, ReplayCheckUnavailable: a replay check that cannot check
    must refuse (fail closed), so the client gets a temporary error and retries.
    """
    digest = hashlib.sha256(jti.encode()).hexdigest()
    seconds = max(1, int(expires_at - time.time()) + settings.CLIENT_ASSERTION_LEEWAY)
    try:
        return bool(cache.add(f"tokens.assertion-jti:{client_id}:{digest}", 1, seconds))
    except Exception:
        logger.error("The shared cache is down: client assertions are refused until it is back")
        raise ReplayCheckUnavailable() from None
