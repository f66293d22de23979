"""Required parameters of the protocol endpoints, and the error for one that is missing.

RFC 6749 §5.2 (and §4.1.2.1 for the authorization endpoint): invalid_request, "The request is
missing a required parameter". §3.1 / §3.2: a parameter sent without a value is treated as if
it were omitted. Authlib answers a missing ``grant_type`` with unsupported_grant_type, a missing
``response_type`` with unsupported_response_type, an empty ``code``, ``refresh_token`` or
``token`` as if it were a wrong one, and looks for the others only after authenticating the
client; these checks run first, so a malformed request gets the same answer whoever sends it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from authlib.oauth2.rfc6749.errors import InvalidRequestError

from tokens.models import TOKEN_EXCHANGE_GRANT

# RFC 6749 §4.1.3 and §6 (§4.4.2, client_credentials, needs nothing beyond grant_type).
TOKEN_REQUEST = {
    "authorization_code": ("code",),
    "refresh_token": ("refresh_token",),
    "urn:ietf:params:oauth:grant-type:device_code": ("device_code",),  # RFC 8628 §3.4
    # RFC 8693 §2.1
    TOKEN_EXCHANGE_GRANT: ("subject_token", "subject_token_type"),
}
# RFC 7009 §2.1 (revocation) and RFC 7662 §2.1 (introspection).
TOKEN_OPERATION = ("token",)


def missing(form: Mapping[str, str], names: Iterable[str]) -> InvalidRequestError | None:
    """invalid_request naming the first of ``names`` that ``form`` lacks (or holds empty)."""
    for name in names:
        if not form.get(name):
            return InvalidRequestError(f"Missing '{name}' in request.")
    return None


def token_request_problem(form: Mapping[str, str]) -> InvalidRequestError | None:
    """What a token request (RFC 6749 §3.2) lacks: grant_type, then its grant's parameters."""
    if problem := missing(form, ("grant_type",)):
        return problem
    return missing(form, TOKEN_REQUEST.get(form["grant_type"], ()))


def openid_redirect_uri_problem(params: Mapping[str, str]) -> str | None:
    """OIDC Core §3.1.2.1: redirect_uri is REQUIRED in an authentication request (RFC 6749
    §3.1.2.3 lets a plain OAuth request omit it when one URI is registered)."""
    if "openid" in (params.get("scope") or "").split() and not params.get("redirect_uri"):
        return "The redirect_uri parameter is missing; OpenID Connect requires it."
    return None
