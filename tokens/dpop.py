"""DPoP proofs (RFC 9449): checking one, the key thumbprint it binds tokens to, server nonces.

A proof is a JWS the client signs for one request with a key it holds; its public key rides in
the ``jwk`` header. ``check_proof`` is the whole of RFC 9449 §4.3 except the last step (does the
key match the token's ``cnf.jkt``, the code's ``dpop_jkt``, the refresh token's binding), which
the callers make with ``Proof.jkt``: tokens/oauth/grants.py at the token endpoint,
tokens/oauth/resource.py at resource servers. Nothing here runs for a request without a ``DPoP``
header.

Single use (§11.1): a proof's ``jti`` is added to the shared cache (Redis in production, so every
worker and host sees it) for as long as its ``iat`` can pass; if the cache cannot be reached the
proof is refused (``ReplayCacheUnavailable``), never accepted unchecked. Nonces (§8, §9), when
``DPOP_NONCE`` is on, are an HMAC of the current time window under SECRET_KEY: nothing stored,
valid on every host, rotating every ``DPOP_NONCE_LIFETIME`` seconds (the previous window's
nonce is still accepted, so a client that just got one is never turned away).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import math
import re
import time
import weakref
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from django.conf import settings
from django.core.cache import cache, caches
from django.core.cache.backends.redis import RedisCache
from django.utils.encoding import escape_uri_path
from joserfc import jws
from joserfc.errors import JoseError, UnsupportedAlgorithmError
from joserfc.jwk import JWKRegistry

# §4.2: asymmetric algorithms only, never "none" or a MAC. What discovery advertises (§5.1).
ALGORITHMS = ["ES256", "ES384", "PS256", "RS256", "EdDSA", "Ed25519"]
TYPE = "dpop+jwt"
MAX_LENGTH = 4_096  # a proof with an RSA-4096 jwk is ~1.5 KB
PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
KEY_TYPES = frozenset({"EC", "RSA", "OKP"})
_ALLOWED = frozenset(ALGORITHMS)


class _ProofRegistry(jws.JWSRegistry):
    max_header_length = 2_048  # joserfc's 512 is too small for a jwk holding an RSA key
    max_payload_length = 2_048

    def get_alg(self, name: str):
        # joserfc warns on every use of "EdDSA" (RFC 9864 names Ed25519 instead); clients send
        # "EdDSA" for Ed25519 keys today, and a warning per request is a cost, not a check.
        if name not in _ALLOWED:
            raise UnsupportedAlgorithmError(f"Algorithm {name!r} is not allowed")
        return self.algorithms[name]


_REGISTRY = _ProofRegistry(algorithms=ALGORITHMS)


@dataclass(frozen=True)
class Proof:
    """A checked proof: ``jkt`` is the RFC 7638 SHA-256 thumbprint of its key (base64url)."""

    jkt: str


class ProofError(Exception):
    """The proof is refused: ``error`` is ``invalid_dpop_proof`` (§5, §7.1) or, when a nonce is
    required and this one is missing or stale, ``use_dpop_nonce`` (§8, §9)."""

    error = "invalid_dpop_proof"

    def __init__(self, description: str):
        super().__init__(description)
        self.description = description


class NonceRequired(ProofError):
    error = "use_dpop_nonce"


class ReplayCacheUnavailable(Exception):
    """The shared cache that remembers used proofs cannot be reached: refuse, try again later."""


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def access_token_hash(token: str) -> str:
    """§4.2 ``ath``: base64url of the SHA-256 of the access token's ASCII value."""
    return b64url(hashlib.sha256(token.encode()).digest())


def endpoint_url(path: str) -> str:
    """The absolute URL a proof's ``htu`` must name for a request to ``path`` (Django's
    ``request.path``): built on ISSUER like every endpoint URL we publish
    (tokens/oauth/metadata.py), never on the Host header, which a proxy may rewrite."""
    return settings.ISSUER + escape_uri_path(path)


# --- nonces (§8, §9) -----------------------------------------------------------------------
def _nonce_for(window: int) -> str:
    mac = hmac.new(settings.SECRET_KEY.encode(), f"dpop-nonce:{window}".encode(), hashlib.sha256)
    return b64url(mac.digest()[:18])


def current_nonce(now: float | None = None) -> str:
    """The nonce to hand out now (in a ``DPoP-Nonce`` header)."""
    return _nonce_for(int((now or time.time()) // settings.DPOP_NONCE_LIFETIME))


def _nonce_is_fresh(value: object, now: float) -> bool:
    if not isinstance(value, str) or len(value) > 64:
        return False
    window = int(now // settings.DPOP_NONCE_LIFETIME)
    given = value.encode()
    # Both compared, so the answer takes as long whichever window matched.
    current = hmac.compare_digest(given, _nonce_for(window).encode())
    previous = hmac.compare_digest(given, _nonce_for(window - 1).encode())
    return current or previous


# --- htu (§4.3 step 9: RFC 3986 §6.2.2 and §6.2.3 normalisation) --------------------------
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_PERCENT = re.compile(r"%[0-9A-Fa-f]{2}")
_DEFAULT_PORTS = {"https": 443, "http": 80}


def _percent(match: re.Match) -> str:
    char = unquote(match.group())
    return char if char in _UNRESERVED else match.group().upper()


def _without_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4."""
    output: list[str] = []
    for segment in path.split("/")[1:]:
        if segment == "..":
            if output:
                output.pop()
        elif segment != ".":
            output.append(segment)
    if path.endswith(("/.", "/..")):
        output.append("")
    return "/" + "/".join(output)


def normalised_url(url: str) -> str | None:
    """``url`` without query and fragment (§4.3), its case, percent-encoding, default port,
    empty path and dot segments normalised; None if it is not an absolute http(s) URL."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = parts.hostname
    if scheme not in _DEFAULT_PORTS or not host or "@" in parts.netloc:
        return None
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port in (None, _DEFAULT_PORTS[scheme]) else f"{host}:{port}"
    path = _PERCENT.sub(_percent, parts.path) or "/"
    if "/." in path:
        path = _without_dot_segments(path)
    return f"{scheme}://{netloc}{path}"


@functools.lru_cache(maxsize=64)
def _expected(url: str) -> str | None:
    return normalised_url(url)


def _htu_matches(htu: object, url: str) -> bool:
    if not isinstance(htu, str) or len(htu) > 2_048:
        return False
    if htu == url:
        return True  # what every client sends; no parsing needed
    expected = _expected(url)
    return expected is not None and normalised_url(htu) == expected


# --- the proof (§4.3) ----------------------------------------------------------------------
def _public_key(header: dict):
    """The ``jwk`` header as a key, and its thumbprint (§4.3 step 7)."""
    jwk = header.get("jwk")
    if not isinstance(jwk, dict) or jwk.get("kty") not in KEY_TYPES:
        raise ProofError("The proof's jwk header must be an EC, RSA or OKP public key.")
    if PRIVATE_MEMBERS & jwk.keys():
        raise ProofError("The proof's jwk header must not contain a private key.")
    members = tuple(sorted((k, v) for k, v in jwk.items() if isinstance(v, str)))
    if len(members) != len(jwk):
        raise ProofError("The proof's jwk header is not a usable public key.")
    try:
        return _imported(members)
    except (JoseError, ValueError, TypeError, KeyError):
        raise ProofError("The proof's jwk header is not a usable public key.") from None


@functools.lru_cache(maxsize=512)
def _imported(members: tuple[tuple[str, str], ...]):
    """A client signs many proofs with one key: importing it (and its thumbprint) once per
    process halves the cost of a proof. Keyed by every member, so nothing is confused."""
    key = JWKRegistry.import_key(dict(members))
    return key, key.thumbprint()


def _claims(obj) -> dict:
    try:
        claims = json.loads(obj.payload)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ProofError("The proof's payload is not JSON.") from None
    if not isinstance(claims, dict):
        raise ProofError("The proof's payload is not a JSON object.")
    for name in ("jti", "htm", "htu"):
        value = claims.get(name)
        if not isinstance(value, str) or not value or len(value) > 2_048:
            raise ProofError(f"The proof's '{name}' claim is missing or not a string.")
    return claims


def _iat_problem(iat: object, now: float) -> str | None:
    numeric = isinstance(iat, int | float) and not isinstance(iat, bool) and math.isfinite(iat)
    if not numeric:
        return "The proof's 'iat' claim is missing or not a number."
    if abs(now - iat) > settings.DPOP_IAT_WINDOW:
        return "The proof's 'iat' is too far from the server's clock."
    return None


def check_proof(
    value: str | None, *, method: str, url: str, access_token: str | None = None
) -> Proof:
    """Check a ``DPoP`` header for one request (RFC 9449 §4.3 steps 1-12, and §11.1 single use)
    and return what it proves, or raise ProofError / ReplayCacheUnavailable.

    ``url`` is the endpoint's absolute URL (``endpoint_url``); ``access_token`` the token the
    request presents, whose hash the proof must carry (``ath``, §4.3 step 12, §7).
    """
    if not value:
        raise ProofError("The DPoP header is empty.")
    if "," in value:
        # §4.3 step 1. Servers join repeated headers with commas (RFC 9110 §5.3), which a
        # compact JWS never holds.
        raise ProofError("Send exactly one DPoP header.")
    if len(value) > MAX_LENGTH:
        raise ProofError("The DPoP proof is too long.")
    try:
        obj = jws.extract_compact(value.encode(), registry=_REGISTRY)
        header = obj.headers()
    except (JoseError, ValueError, TypeError, KeyError, UnicodeError):
        raise ProofError("The DPoP header is not a JWS.") from None
    if header.get("typ") != TYPE:  # step 4
        raise ProofError("The proof's typ header must be dpop+jwt.")
    if header.get("alg") not in _ALLOWED:  # step 5
        raise ProofError(f"The proof's alg must be one of {' '.join(ALGORITHMS)}.")
    key, jkt = _public_key(header)  # step 7
    claims = _claims(obj)  # step 3
    if claims["htm"] != method:  # step 8
        raise ProofError("The proof's htm is not this request's method.")
    if not _htu_matches(claims["htu"], url):  # step 9
        raise ProofError("The proof's htu is not this endpoint's URL.")
    now = time.time()
    if problem := _iat_problem(claims.get("iat"), now):  # step 11
        raise ProofError(problem)
    if access_token is not None:  # step 12
        ath = claims.get("ath")
        if not isinstance(ath, str) or not hmac.compare_digest(
            ath.encode(), access_token_hash(access_token).encode()
        ):
            raise ProofError("The proof's ath is not the hash of this access token.")
    try:  # step 6
        valid = jws.validate_compact(obj, key, registry=_REGISTRY)
    except (JoseError, ValueError, TypeError):
        valid = False
    if not valid:
        raise ProofError("The proof's signature does not verify with its jwk.")
    if settings.DPOP_NONCE and not _nonce_is_fresh(claims.get("nonce"), now):  # step 10
        raise NonceRequired("The authorization server requires a fresh DPoP nonce.")
    _use_once(jkt, claims["jti"])
    return Proof(jkt=jkt)


def _use_once(jkt: str, jti: str) -> None:
    """§11.1: a proof is accepted once. Remembered for the whole span its iat can pass."""
    key = "dpop.jti:" + hashlib.sha256(f"{jkt}:{jti}".encode()).hexdigest()
    timeout = 2 * settings.DPOP_IAT_WINDOW + 1
    try:
        fresh = _add(key, timeout)
    except Exception as error:  # Redis down: refuse rather than accept a replay unseen
        raise ReplayCacheUnavailable() from error
    if not fresh:
        raise ProofError("This DPoP proof has been used already.")


# Django's Redis cache client (one per thread's cache backend) -> the redis.Redis kept for it.
_redis_clients: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _add(key: str, timeout: int) -> bool:
    """``cache.add`` (SET NX EX on Redis, under the cache's own key prefix and version). On
    Redis through one kept ``redis.Redis``: Django's backend builds a new one for every call,
    which cost half of a proof's CPU here. Its connection pool is the cache's own."""
    backend = caches["default"]
    if not isinstance(backend, RedisCache):
        return cache.add(key, 1, timeout=timeout)
    owner = backend._cache
    client = _redis_clients.get(owner)
    if client is None:
        client = _redis_clients[owner] = owner.get_client(write=True)
    return bool(client.set(backend.make_and_validate_key(key), 1, nx=True, ex=timeout))
