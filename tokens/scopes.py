"""Which scopes a client may ask for: the one rule that dynamic registration (RFC 7591), Django
admin and the ``create_client`` command all follow.

A client registered without scopes gets what its grant types can use (RFC 7591 §2: "If omitted,
an authorization server MAY register a client with a default set of scopes"):

=====================  ================================================================
grant type             default scopes
=====================  ================================================================
authorization_code     ``openid profile email``: a person signs in and shares who they are
refresh_token          ``offline_access`` as well, with authorization_code: OIDC Core §11
                       is how a client asks, at /authorize, for a refresh token that
                       outlives the browser session; without the code grant nothing asks
device_code            ``openid profile email`` too (RFC 8628: a person signs the device
                       in), and ``offline_access`` with refresh_token, as for the code
client_credentials     nothing: there is no person, so the OpenID Connect scopes mean
                       nothing, and API scopes (EXTRA_SCOPES) are named, never implied,
                       so that no client reaches an API just by registering
=====================  ================================================================

Scopes a client names are checked against what the server offers, which is exactly what
discovery advertises as ``scopes_supported``.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.conf import settings

OPENID_CONNECT = ("openid", "profile", "email")
OFFLINE_ACCESS = "offline_access"
PERSON_GRANTS = {"authorization_code", "urn:ietf:params:oauth:grant-type:device_code"}


class UnknownScopes(ValueError):
    """Scopes the server does not offer (RFC 7591 §3.2.2: invalid_client_metadata)."""

    def __init__(self, scopes: list[str]):
        self.scopes = scopes
        super().__init__(f"Unknown scopes: {' '.join(scopes)}.")


def offered() -> list[str]:
    """Every scope this server offers: discovery's ``scopes_supported``."""
    return list(settings.OAUTH_SCOPES)


def default_scopes(grant_types: Iterable[str]) -> list[str]:
    """The scopes a client registered for ``grant_types`` gets when it names none."""
    grants = set(grant_types)
    scopes: list[str] = []
    if grants & PERSON_GRANTS:
        scopes += OPENID_CONNECT
        if "refresh_token" in grants:
            scopes.append(OFFLINE_ACCESS)
    return scopes


def unknown_scopes(scopes: Iterable[str]) -> list[str]:
    """The ones among ``scopes`` that the server does not offer, in the order given."""
    known = set(offered())
    return [scope for scope in dict.fromkeys(scopes) if scope not in known]


def client_scopes(grant_types: Iterable[str], requested: str | Iterable[str] | None) -> list[str]:
    """The scopes to register: ``requested`` (a space-separated string or a list), without
    repeats, when it names any; else the grant types' defaults. Raises UnknownScopes."""
    if isinstance(requested, str):
        requested = requested.split()
    names = list(dict.fromkeys(requested or ()))
    if not names:
        return default_scopes(grant_types)
    if unknown := unknown_scopes(names):
        raise UnknownScopes(unknown)
    return names
