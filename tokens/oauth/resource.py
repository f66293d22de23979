"""Accepting our access tokens in resource servers (RFC 6750): a DRF authentication class,
a DRF permission for scopes, and a decorator for plain Django views.

By default tokens are checked against this server's own keys, and also against the deny list,
the browser session, the client and the person, so a revocation is felt at once. A resource
server in another deployment sets ``RESOURCE_SERVER_JWKS_URL`` and checks signatures offline
against the published JWKS (revocation then takes effect when the token expires, or use the
introspection endpoint).
"""

from __future__ import annotations

import functools
import json
import threading
import time
import urllib.request
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.http import HttpRequest, JsonResponse
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from rest_framework import exceptions, permissions
from rest_framework.authentication import BaseAuthentication

from accounts.models import User
from tokens import access_tokens


@dataclass
class TokenError(Exception):
    """An RFC 6750 §3.1 error: ``status`` and what goes in WWW-Authenticate."""

    error: str | None
    description: str = ""
    status: int = 401
    scope: str = ""

    def www_authenticate(self) -> str:
        parts = ['Bearer realm="api"']
        if self.error:
            parts.append(f'error="{self.error}"')
        if self.description:
            parts.append(f'error_description="{self.description}"')
        if self.scope:
            parts.append(f'scope="{self.scope}"')
        return ", ".join(parts)


def bearer_token(request: HttpRequest) -> str | None:
    scheme, _, value = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return value.strip() or None


_jwks_lock = threading.Lock()
_jwks: tuple[float, KeySet] | None = None


def _remote_keys(url: str) -> KeySet:
    global _jwks
    cached = _jwks
    if cached is None or time.monotonic() - cached[0] > 300:
        with _jwks_lock:
            with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - configured https URL
                key_set = KeySet.import_key_set(json.load(response))
            cached = _jwks = (time.monotonic(), key_set)
    return cached[1]


def _read_remote(value: str, url: str) -> dict | None:
    try:
        token = jwt.decode(value, _remote_keys(url), algorithms=access_tokens.ALGORITHMS)
    except (JoseError, ValueError, TypeError, KeyError):
        return None
    claims = token.claims
    if token.header.get("typ") not in ("at+jwt", "application/at+jwt"):
        return None
    if claims.get("iss") != settings.ISSUER or not isinstance(claims.get("exp"), int | float):
        return None
    return claims if claims["exp"] > time.time() else None


def verify(request: HttpRequest, required_scopes: tuple[str, ...] = ()) -> dict:
    """The claims of the request's bearer token, or raise TokenError (RFC 6750 §3.1)."""
    value = bearer_token(request)
    if value is None:
        raise TokenError(None, status=401)  # §3.1: no error code when no token was sent
    jwks_url = getattr(settings, "RESOURCE_SERVER_JWKS_URL", "")
    claims = _read_remote(value, jwks_url) if jwks_url else access_tokens.read(value)
    if claims is None:
        raise TokenError("invalid_token", "The access token is invalid or has expired.")
    audience = claims.get("aud")
    audiences = audience if isinstance(audience, list) else [audience]
    if settings.ACCESS_TOKEN_AUDIENCE not in audiences:
        raise TokenError("invalid_token", "The access token is for another audience.")
    if not jwks_url and not access_tokens.access_token_is_live(claims):
        raise TokenError("invalid_token", "The access token has been revoked.")
    granted = set(claims.get("scope", "").split())
    missing = [scope for scope in required_scopes if scope not in granted]
    if missing:
        raise TokenError(
            "insufficient_scope",
            "The access token lacks a required scope.",
            403,
            " ".join(required_scopes),
        )
    return claims


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
            except TokenError as error:
                body = {"error": error.error or "invalid_request"}
                if error.description:
                    body["error_description"] = error.description
                response = JsonResponse(body, status=error.status)
                response["WWW-Authenticate"] = error.www_authenticate()
                response["Cache-Control"] = "no-store"
                return response
            request.token = claims
            request.user = token_user(claims)
            return view(request, *args, **kwargs)

        return wrapped

    return decorate


class BearerTokenAuthentication(BaseAuthentication):
    """DRF: ``authentication_classes = [BearerTokenAuthentication]``; ``request.auth`` is the
    token's claims. Combine with :class:`HasScope` and a view's ``required_scopes``."""

    def authenticate(self, request):
        if bearer_token(request) is None:
            return None  # not ours: let other authentication classes try
        try:
            claims = verify(request)
        except TokenError as error:
            raise exceptions.AuthenticationFailed(error.description) from None
        return token_user(claims), claims

    def authenticate_header(self, request) -> str:
        return (
            'Bearer realm="api", error="invalid_token"'
            if bearer_token(request)
            else 'Bearer realm="api"'
        )


class HasScope(permissions.BasePermission):
    """DRF: every scope in the view's ``required_scopes`` must be in the token."""

    message = "The access token lacks a required scope."

    def has_permission(self, request, view) -> bool:
        claims = request.auth if isinstance(request.auth, dict) else None
        if claims is None:
            return False
        granted = set(claims.get("scope", "").split())
        return all(scope in granted for scope in getattr(view, "required_scopes", ()))
