"""Request objects: the authorization request as a JWT, by value (``request``) or by reference
(``request_uri``): OIDC Core §6 and RFC 9101 (JAR).

``resolve`` turns an authorization request carrying one into the effective parameters; the
authorize view calls it in one place and goes on as for any request. Authlib's
``JWTAuthenticationRequest`` is not used: it has no SSRF-guarded fetch, no refetch of a
rotated client key, and answers every error without the client's redirect URI.

* The object is signed with one of the client's keys (its ``jwks`` or ``jwks_uri``, see
  tokens/client_keys.py) with its registered ``request_object_signing_alg``, or with any
  algorithm we accept when it registered none; unsigned (``alg: none``) only when it
  registered ``none`` or nothing (OpenID Registration §2: "The default, if omitted, is that any
  algorithm supported by the OP and the RP MAY be used"). An unsigned object is trusted no more
  than the query it replaces: every parameter is checked as if it had come in the query.
* ``iss`` (the client_id), ``aud`` (our issuer) and ``exp``/``nbf`` are checked when present;
  a ``client_id`` or ``response_type`` in the object must equal the query's.
* Parameters: an OpenID request keeps the query's parameters the object does not carry (OIDC
  Core §6.3.3: the object's take precedence); a plain OAuth request uses only the object's
  (RFC 9101 §5). ``request_uri`` must be one of the client's registered ``request_uris``
  (exact, fragment aside: OpenID Registration §2), fetched through tokens/outbound.py.
* ``urn:ietf:params:oauth:request_uri:...`` is the reference a pushed authorization request
  (RFC 9126) hands out; it is not a URL to fetch and is refused here until PAR is wired in.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping

from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749.errors import InvalidClientError, InvalidRequestError
from authlib.oauth2.rfc9101.errors import InvalidRequestObjectError, InvalidRequestUriError
from django.conf import settings
from joserfc import jws
from joserfc.errors import JoseError

from tokens import client_keys, outbound
from tokens.models import Client

PAR_URN_PREFIX = "urn:ietf:params:oauth:request_uri:"
# Claims of the JWT itself, not authorization request parameters.
JWT_CLAIMS = ("iss", "aud", "exp", "iat", "nbf", "jti")


def carries_request_object(params: Mapping[str, str]) -> bool:
    return "request" in params or "request_uri" in params


def resolve(params: Mapping[str, str], client: Client | None) -> dict[str, str]:
    """The effective parameters of an authorization request that carries a request object, or
    an OAuth2Error. The error names the client's redirect URI (and state) only when the query's
    redirect URI is registered for it: otherwise it is for an error page, never a redirect."""
    if client is None:
        raise InvalidClientError(description="Unknown client_id.")
    verified: dict = {}
    try:
        return _resolve(params, client, verified)
    except OAuth2Error as error:
        error.redirect_uri = _safe_redirect_uri(params, client, verified)
        error.state = verified.get("state") or params.get("state")
        raise


def _resolve(params: Mapping[str, str], client: Client, verified: dict) -> dict[str, str]:
    if "request" in params and "request_uri" in params:
        raise InvalidRequestError("Send request or request_uri, not both (RFC 9101 5).")
    value = params["request"] if "request" in params else _fetch(params["request_uri"], client)
    claims = _verified_claims(value, client)
    verified.update(
        {
            name: claims[name]
            for name in ("redirect_uri", "state")
            if isinstance(claims.get(name), str)
        }
    )
    for name in ("request", "request_uri"):
        if name in claims:
            raise InvalidRequestObjectError(f"A request object must not hold {name} (RFC 9101 4).")
    # RFC 9101 §5: client_id is always in the query; response_type may be only in the object
    # (a plain OAuth request, as RFC 9126 §3 pushes one), and must agree when in both.
    for name in ("client_id", "response_type"):
        if name in claims and (name == "client_id" or name in params):
            if claims[name] != params.get(name):
                raise InvalidRequestError(f"{name} in the request object differs from the query's.")
    _check_jwt_claims(claims, client)
    carried = {name: _text(value) for name, value in claims.items() if name not in JWT_CLAIMS}
    openid = "openid" in (params.get("scope") or "").split()
    if openid:
        if not params.get("response_type"):
            # OIDC Core §6.1: response_type and client_id stay in the query.
            raise InvalidRequestError("response_type must be in the query too (OIDC Core 6.1).")
        kept = {k: v for k, v in params.items() if k not in ("request", "request_uri")}
        return {**kept, **carried}
    return {**carried, "client_id": client.client_id}


def _fetch(request_uri: str, client: Client) -> str:
    if request_uri.startswith(PAR_URN_PREFIX):
        raise InvalidRequestUriError("Pushed authorization requests are not supported here.")
    wanted = request_uri.partition("#")[0]
    if not any(wanted == registered.partition("#")[0] for registered in client.request_uris):
        # OIDC Core §6.2 / require_request_uri_registration: only pre-registered URLs are fetched.
        raise InvalidRequestUriError("This request_uri is not registered for the client.")
    try:
        body = outbound.fetch(
            wanted,
            accept="application/oauth-authz-req+jwt, application/jwt, application/jose",
            max_bytes=settings.CLIENT_FETCH_MAX_BYTES,
            timeout=settings.CLIENT_FETCH_TIMEOUT,
            allow_private=settings.CLIENT_FETCH_ALLOW_PRIVATE_NETWORKS,
        )
        return body.decode("ascii").strip()
    except (outbound.FetchFailed, UnicodeDecodeError):
        raise InvalidRequestUriError("The request_uri could not be fetched.") from None


def _verified_claims(value: str, client: Client) -> dict:
    try:
        header = jws.extract_compact(value.encode()).headers()
    except (JoseError, ValueError, UnicodeEncodeError):
        raise InvalidRequestObjectError("The request object is not a JWT.") from None
    registered = client.request_object_signing_alg
    if header.get("alg") == "none":
        if client.fapi2:
            raise InvalidRequestObjectError("Request objects of this client must be signed.")
        if registered not in ("", "none"):
            raise InvalidRequestObjectError(f"Request objects must be signed with {registered}.")
        return _unsigned_claims(value)
    if registered == "none":
        raise InvalidRequestObjectError("This client registered unsigned request objects.")
    try:
        token = client_keys.decode(
            client, value, client_keys.allowed_algorithms(client, registered)
        )
    except client_keys.KeysUnavailable as error:
        raise InvalidRequestObjectError(str(error)) from None
    except JoseError:
        raise InvalidRequestObjectError(
            "The request object's signature does not verify with the client's keys."
        ) from None
    return token.claims


def _unsigned_claims(value: str) -> dict:
    """RFC 7519 §6: an unsecured JWT has an empty signature."""
    parts = value.split(".")
    if len(parts) != 3 or parts[2]:
        raise InvalidRequestObjectError("An unsigned request object has an empty signature.")
    try:
        claims = json.loads(jws.extract_compact(value.encode()).payload)
    except (JoseError, ValueError):
        raise InvalidRequestObjectError("The request object's payload is not JSON.") from None
    if not isinstance(claims, dict):
        raise InvalidRequestObjectError("The request object's payload is not an object.")
    return claims


def _check_jwt_claims(claims: dict, client: Client) -> None:
    now, leeway = time.time(), settings.CLIENT_ASSERTION_LEEWAY
    if "iss" in claims and claims["iss"] != client.client_id:
        raise InvalidRequestObjectError("iss must be the client_id (RFC 9101 4).")
    if "aud" in claims:
        audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        if settings.ISSUER not in audiences:
            raise InvalidRequestObjectError("aud must be this server's issuer (RFC 9101 4).")
    for name in ("exp", "nbf"):
        if name in claims and not isinstance(claims[name], int | float):
            raise InvalidRequestObjectError(f"{name} must be a number.")
    if "exp" in claims and claims["exp"] < now - leeway:
        raise InvalidRequestObjectError("The request object has expired.")
    if "nbf" in claims and claims["nbf"] > now + leeway:
        raise InvalidRequestObjectError("The request object is not valid yet.")


def _text(value) -> str:
    """A parameter's value as the query would carry it (the claims parameter is JSON)."""
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)  # max_age
    return json.dumps(value)


def _safe_redirect_uri(params: Mapping[str, str], client: Client, verified: dict) -> str | None:
    """Where an error may go (RFC 6749 §4.1.2.1): a registered redirect URI from the object once
    its signature checked out (an unsigned one is as good as the query), else the query's, else
    the client's only one; never a URI that is not registered."""
    for requested in (verified.get("redirect_uri"), params.get("redirect_uri")):
        if requested:
            return requested if client.check_redirect_uri(requested) else None
    return client.get_default_redirect_uri()
