"""Accepting our access tokens in resource servers (RFC 6750): Authlib's ResourceProtector with
an RFC 9068 validator, a DRF authentication class, a DRF permission for scopes, and a decorator
for plain Django views. Userinfo (tokens/oidc_views.py) is one of these resource servers.

By default tokens are checked against this server's own keys, and also against the deny list,
the browser session, the client and the person, so a revocation is felt at once. A resource
server in another deployment sets ``RESOURCE_SERVER_JWKS_URL`` and checks signatures offline
against the published JWKS (revocation then takes effect when the token expires, or use the
introspection endpoint). The claims are checked by ``tokens.access_tokens.verify`` either way,
the same check introspection makes.
"""

from __future__ import annotations

import functools
import http.client
import json
import logging
import threading
import time
import urllib.request
from urllib.parse import urlsplit

from authlib.integrations.django_oauth2 import ResourceProtector
from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import MissingAuthorizationError, UnsupportedTokenTypeError
from authlib.oauth2.rfc6750 import InsufficientScopeError, InvalidTokenError
from authlib.oauth2.rfc9068 import JWTBearerTokenValidator
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.http import HttpRequest, JsonResponse
from joserfc.errors import ClaimError, JoseError
from joserfc.jwk import KeySet
from rest_framework import exceptions, permissions
from rest_framework.authentication import BaseAuthentication

from accounts.models import User
from tokens import access_tokens, dpop

logger = logging.getLogger(__name__)

REALM = "api"
DPOP_ALGS = " ".join(dpop.ALGORITHMS)  # RFC 9449 §7.1: the algs a DPoP challenge names
JWKS_MAX_AGE = 300  # seconds a fetched JWKS is used before it is fetched again
JWKS_RETRY_AFTER = 30  # after a failed fetch, seconds before the next try (stale keys meanwhile)
JWKS_MAX_BYTES = 1_048_576
JWKS_TIMEOUT = 5  # seconds to connect, and between bytes


class MissingScopeError(InsufficientScopeError):
    """RFC 6750 §3.1 insufficient_scope, naming the scope the resource needs."""

    def __init__(self, scope: str):
        super().__init__("The access token lacks a required scope.")
        self.scope = scope


class KeysUnavailableError(OAuth2Error):
    """The JWKS could not be fetched and no earlier copy is at hand: the token may well be good,
    so this is the resource server's failure (503, try again), not the client's (401)."""

    error = "temporarily_unavailable"
    description = "The keys to check the access token cannot be fetched right now."
    status_code = 503


class InvalidDpopProofError(OAuth2Error):
    """RFC 9449 §7.1: the request's DPoP proof is missing or wrong (401, a DPoP challenge)."""

    error = "invalid_dpop_proof"
    status_code = 401


class UseDpopNonceError(InvalidDpopProofError):
    """RFC 9449 §9: a fresh server nonce is required; the answer carries one."""

    error = "use_dpop_nonce"


class ReplayCacheUnavailableError(OAuth2Error):
    error = "temporarily_unavailable"
    description = "DPoP proofs cannot be checked right now."
    status_code = 503


def _without_a_token(error: OAuth2Error) -> bool:
    # No Authorization header, or not a Bearer one: RFC 6750 §3.1 wants no error code then.
    return isinstance(error, MissingAuthorizationError | UnsupportedTokenTypeError)


def challenge(error: OAuth2Error | None = None) -> str:
    """The ``WWW-Authenticate`` value for ``error`` (RFC 6750 §3, RFC 9449 §7.1). Without a
    token both schemes are offered; an error about a DPoP request (or a DPoP-bound token sent
    as Bearer, §7.2) is a DPoP challenge with the algorithms we accept."""
    if error is None or _without_a_token(error):
        return f'Bearer realm="{REALM}", DPoP realm="{REALM}", algs="{DPOP_ALGS}"'
    dpop_scheme = getattr(error, "dpop_scheme", False)
    parts = [f'{"DPoP" if dpop_scheme else "Bearer"} realm="{REALM}"', f'error="{error.error}"']
    if error.description:
        parts.append(f'error_description="{error.description}"')
    if getattr(error, "scope", ""):
        parts.append(f'scope="{error.scope}"')
    if dpop_scheme:
        parts.append(f'algs="{DPOP_ALGS}"')
    return ", ".join(parts)


def error_response(error: OAuth2Error) -> JsonResponse:
    """RFC 6750 §3.1: 401 with a Bearer (or DPoP) challenge, 403 for a missing scope, never
    cached; 503 with ``Retry-After`` when the keys or the replay cache cannot be had."""
    if _without_a_token(error):
        body, status = {"error": "invalid_request"}, 401
    else:
        body, status = {"error": error.error}, error.status_code
        if error.description:
            body["error_description"] = error.description
    response = JsonResponse(body, status=status)
    if status == 503:
        response["Retry-After"] = str(JWKS_RETRY_AFTER)
    else:
        response["WWW-Authenticate"] = challenge(error)
    if isinstance(error, UseDpopNonceError) or (
        settings.DPOP_NONCE and getattr(error, "dpop_scheme", False)
    ):
        response["DPoP-Nonce"] = dpop.current_nonce()  # RFC 9449 §9
    response["Cache-Control"] = "no-store"
    return response


# --- the JWKS of a remote authorization server ------------------------------------------------
_jwks_lock = threading.Lock()
_jwks: tuple[str, float, KeySet] | None = None  # (URL, fetched at, keys)
_jwks_failed_at: float | None = None


def forget_remote_keys() -> None:
    global _jwks, _jwks_failed_at
    _jwks = _jwks_failed_at = None


def _fetch(url: str) -> KeySet:
    with urllib.request.urlopen(url, timeout=JWKS_TIMEOUT) as response:  # noqa: S310 - the configured URL
        data = response.read(JWKS_MAX_BYTES + 1)
    if len(data) > JWKS_MAX_BYTES:
        raise ValueError("The JWKS is too large.")
    return KeySet.import_key_set(json.loads(data))


def remote_keys(url: str) -> KeySet:
    """The JWKS at ``url``, fetched at most every JWKS_MAX_AGE seconds. When a fetch fails
    (refused, timed out, an HTTP error, not a JWKS) the keys fetched before keep serving and the
    next try waits JWKS_RETRY_AFTER seconds; with no keys at all, KeysUnavailableError."""
    global _jwks, _jwks_failed_at
    cached = _jwks
    if cached is not None and cached[0] == url and time.monotonic() - cached[1] <= JWKS_MAX_AGE:
        return cached[2]
    with _jwks_lock:
        cached, now = _jwks, time.monotonic()
        if cached is not None and cached[0] != url:
            cached = _jwks = _jwks_failed_at = None  # the setting changed
        if cached is not None and now - cached[1] <= JWKS_MAX_AGE:
            return cached[2]  # another thread fetched them while this one waited
        if _jwks_failed_at is None or now - _jwks_failed_at >= JWKS_RETRY_AFTER:
            try:
                _jwks = (url, time.monotonic(), _fetch(url))
                _jwks_failed_at = None
                return _jwks[2]
            except (OSError, http.client.HTTPException, ValueError, TypeError, KeyError,
                    AttributeError, JoseError) as error:  # fmt: skip
                # OSError: refused, unreachable, timed out, HTTP errors (URLError, HTTPError);
                # ValueError: not JSON; the rest: JSON that is not a key set.
                _jwks_failed_at = time.monotonic()
                logger.warning(
                    "JWKS fetch from %s failed: %s: %s", url, type(error).__name__, error
                )
        if cached is not None:
            return cached[2]
        raise KeysUnavailableError()


# --- the validator and the protector ---------------------------------------------------------
class AccessTokenValidator(JWTBearerTokenValidator):
    """Authlib's RFC 9068 §4 validator, with the claims checked by ``access_tokens.verify`` and,
    against our own keys, revocation checked too. The issuer and audience are read from settings
    on each call (tests change them)."""

    def __init__(self):
        super().__init__(issuer=None, resource_server=None, realm=REALM)

    def get_jwks(self) -> KeySet | None:
        url = settings.RESOURCE_SERVER_JWKS_URL
        return remote_keys(url) if url else None  # None: this server's own keys

    def authenticate_token(self, token_string: str) -> dict:
        key_set = self.get_jwks()  # KeysUnavailableError: 503, whatever the token
        try:
            return access_tokens.verify(
                token_string, key_set, audience=settings.ACCESS_TOKEN_AUDIENCE
            )
        except ClaimError as error:
            if error.claim == "aud":
                raise InvalidTokenError(
                    "The access token is for another audience.", realm=REALM
                ) from None
            raise InvalidTokenError(
                "The access token is invalid or has expired.", realm=REALM
            ) from None
        except JoseError:
            raise InvalidTokenError(
                "The access token is invalid or has expired.", realm=REALM
            ) from None

    def validate_token(self, token: dict, scopes, request, **kwargs) -> None:
        if access_tokens.bound_jkt(token) is not None:
            # RFC 9449 §7.2: a DPoP-bound token is worthless without its proof; as Bearer it
            # would be a bearer token again.
            error = InvalidTokenError("This access token is DPoP-bound: use DPoP.", realm=REALM)
            error.dpop_scheme = True
            raise error
        self.validate_live_and_scoped(token, scopes)

    def validate_live_and_scoped(self, token: dict, scopes) -> None:
        if not settings.RESOURCE_SERVER_JWKS_URL and not access_tokens.access_token_is_live(token):
            raise InvalidTokenError("The access token has been revoked.", realm=REALM)
        if self.scope_insufficient(token.get("scope"), scopes):
            raise MissingScopeError(" ".join(scopes))


class DpopAccessTokenValidator(AccessTokenValidator):
    """``Authorization: DPoP <token>`` (RFC 9449 §7): a DPoP-bound access token with a proof
    for this very request, signed by the token's key (§4.3 steps 1-12 in tokens/dpop.py, and
    the ``cnf.jkt`` match here). Every error it raises answers with a DPoP challenge."""

    TOKEN_TYPE = "dpop"

    def authenticate_token(self, token_string: str) -> dict:
        return _as_dpop(super().authenticate_token, token_string)

    def validate_token(self, token: dict, scopes, request, **kwargs) -> None:
        _as_dpop(self._validate, token, scopes, request)

    def _validate(self, token: dict, scopes, request) -> None:
        jkt = access_tokens.bound_jkt(token)
        if jkt is None:
            raise InvalidTokenError("This access token is not DPoP-bound: use Bearer.", realm=REALM)
        token_string = request.headers["Authorization"].split(None, 1)[1]
        try:
            proof = dpop.check_proof(
                request.headers.get("DPoP"),
                method=request.method,
                url=(settings.RESOURCE_SERVER_URL or settings.ISSUER) + urlsplit(request.uri).path,
                access_token=token_string,
            )
        except dpop.NonceRequired as error:
            raise UseDpopNonceError(error.description) from None
        except dpop.ProofError as error:
            raise InvalidDpopProofError(error.description) from None
        except dpop.ReplayCacheUnavailable:
            raise ReplayCacheUnavailableError() from None
        if proof.jkt != jkt:  # public values, no secret to time
            raise InvalidDpopProofError("The DPoP proof is signed by another key than the token's.")
        self.validate_live_and_scoped(token, scopes)


def _as_dpop(call, *args):
    try:
        return call(*args)
    except OAuth2Error as error:
        error.dpop_scheme = True
        raise


protector = ResourceProtector()
protector.register_token_validator(AccessTokenValidator())
protector.register_token_validator(DpopAccessTokenValidator())


def verify(request: HttpRequest, required_scopes: tuple[str, ...] = ()) -> dict:
    """The claims of the request's bearer token, or raise the OAuth2Error that says why not
    (answer it with ``error_response``). Every scope in ``required_scopes`` is needed."""
    # Authlib reads a list of scope strings as alternatives; one string needs all its scopes.
    return protector.acquire_token(request, " ".join(required_scopes) or None)


def token_user(claims: dict):
    """The person a token speaks for, or AnonymousUser for a client acting for itself."""
    subject = claims.get("sub")
    if subject == claims.get("client_id") or not str(subject).isdigit():
        return AnonymousUser()
    return User.objects.filter(pk=int(subject), is_active=True).first() or AnonymousUser()


def require_token(*scopes: str):
    """Decorator for plain Django views: ``@require_token("orders.read")``. Sets
    ``request.token`` (the claims) and ``request.user``; answers 401/403 per RFC 6750."""

    def decorate(view):
        @functools.wraps(view)
        def wrapped(request, *args, **kwargs):
            try:
                claims = verify(request, scopes)
            except OAuth2Error as error:
                return error_response(error)
            request.token = claims
            request.user = token_user(claims)
            return view(request, *args, **kwargs)

        return wrapped

    return decorate


class KeysUnavailable(exceptions.APIException):
    status_code = 503
    default_detail = KeysUnavailableError.description
    default_code = KeysUnavailableError.error
    wait = JWKS_RETRY_AFTER  # DRF sends it as Retry-After


class BearerTokenAuthentication(BaseAuthentication):
    """DRF: ``authentication_classes = [BearerTokenAuthentication]``; ``request.auth`` is the
    token's claims. Combine with :class:`HasScope` and a view's ``required_scopes``."""

    def authenticate(self, request):
        try:
            claims = verify(request._request)
        except OAuth2Error as error:
            if _without_a_token(error):
                return None  # not ours: let other authentication classes try
            if isinstance(error, KeysUnavailableError | ReplayCacheUnavailableError):
                raise KeysUnavailable(error.description) from None
            request._request.oauth_error = error  # for authenticate_header
            raise exceptions.AuthenticationFailed(error.description) from None
        return token_user(claims), claims

    def authenticate_header(self, request) -> str:
        error = getattr(request._request, "oauth_error", None)
        if error is None:
            has_token = (
                request.META.get("HTTP_AUTHORIZATION", "").lower().startswith(("bearer ", "dpop "))
            )
            error = InvalidTokenError() if has_token else None
        return challenge(error)


class HasScope(permissions.BasePermission):
    """DRF: every scope in the view's ``required_scopes`` must be in the token."""

    message = "The access token lacks a required scope."

    def has_permission(self, request, view) -> bool:
        claims = request.auth if isinstance(request.auth, dict) else None
        if claims is None:
            return False
        granted = set(claims.get("scope", "").split())
        return all(scope in granted for scope in getattr(view, "required_scopes", ()))
