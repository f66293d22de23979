"""How strongly a person signed in: the methods used (``amr``, RFC 8176) and the level they reach
(``acr``, OIDC Core §2), with the small vocabulary of levels this server offers.

Levels, weakest first; each one includes the ones before it:

* ``pwd``: something the person knows was checked (a password);
* ``mfa``: two independent factors: a password and a one-time code (TOTP or recovery code), a
  password and a passkey, or a passkey with user verification (the key and a PIN/biometric);
* ``phr``: phishing-resistant: a passkey (WebAuthn) was used, which the browser binds to this
  origin, so a look-alike site cannot relay it. Every passkey sign-in here also reaches ``mfa``
  (a passkey alone, without user verification, is only ever a second factor).

Methods (RFC 8176 §2): ``pwd`` password, ``otp`` TOTP (RFC 6238) or a one-time recovery code,
``hwk`` a device-bound passkey, ``swk`` a synced passkey (its key leaves the device: WebAuthn's
backup flags), ``mfa`` more than one factor. A passkey whose authenticator verified the person
(WebAuthn ``uv``: a PIN or a biometric, which one it does not say, so no ``pin``/``fpt`` is
claimed) is two factors on its own: ``hwk mfa``.

Pure functions on lists and strings: no models, no requests; the accounts and tokens apps both
use them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

PWD, MFA, PHR = "pwd", "mfa", "phr"
LEVELS = (PWD, MFA, PHR)  # acr_values_supported, weakest first
_PASSKEY_METHODS = {"hwk", "swk"}


def level(amr: list[str] | tuple[str, ...]) -> str | None:
    """The strongest level ``amr`` reaches, or None when nobody signed in."""
    methods = set(amr)
    if methods & _PASSKEY_METHODS:
        return PHR
    if "mfa" in methods:
        return MFA
    return PWD if methods else None


def satisfies(amr, acr: str) -> bool:
    """Does a sign-in with ``amr`` meet the level ``acr``?"""
    reached = level(amr)
    return reached is not None and acr in LEVELS and LEVELS.index(reached) >= LEVELS.index(acr)


def combine(amr, *added: str) -> list[str]:
    """``amr`` with ``added`` methods, and ``mfa`` once two kinds of factor are present."""
    methods = list(dict.fromkeys([*amr, *added]))
    knowledge = "pwd" in methods
    possession = "otp" in methods or bool(_PASSKEY_METHODS & set(methods))
    if knowledge and possession:
        methods = [m for m in methods if m != "mfa"] + ["mfa"]
    return methods


@dataclass(frozen=True)
class AcrRequest:
    """What a client asked for: levels in order of preference (only ones we know), and whether
    they are essential (OIDC Core §5.5.1.1) rather than voluntary (§3.1.2.1 ``acr_values``)."""

    values: tuple[str, ...]
    essential: bool = False

    def met_by(self, amr) -> bool:
        return not self.values or any(satisfies(amr, acr) for acr in self.values)

    def chosen(self, amr) -> str | None:
        """The ``acr`` to tell the client: the first requested level this sign-in meets, else
        the best it reached (OIDC Core §2: the level "the authentication performed satisfied")."""
        for acr in self.values:
            if satisfies(amr, acr):
                return acr
        return level(amr)


def requested(
    acr_values: str | None,
    claims: str | None,
    *,
    default_acr_values: list[str] | None = None,
    required_acr: str = "",
) -> AcrRequest:
    """Read a request's levels: an essential ``acr`` in the ``claims`` parameter (OIDC Core
    §5.5.1.1), else ``acr_values`` (§3.1.2.1), else the client's ``default_acr_values`` (OIDC
    Registration §2). A client that requires a level (``required_acr``) makes it essential and
    never gets less, whatever the request says."""
    values, essential = _essential_acr(claims)
    if not values:
        values = tuple((acr_values or "").split()) or tuple(default_acr_values or ())
    known = tuple(dict.fromkeys(acr for acr in values if acr in LEVELS))
    if required_acr in LEVELS:
        floor = LEVELS.index(required_acr)
        known = tuple(acr for acr in known if LEVELS.index(acr) >= floor) or (required_acr,)
        essential = True
    return AcrRequest(known, essential and bool(known))


def _essential_acr(claims: str | None) -> tuple[tuple[str, ...], bool]:
    """The ``id_token.acr`` member of the ``claims`` parameter, if it is essential. Only this
    member is read: the rest of the parameter is not supported (and not advertised)."""
    if not claims or len(claims) > 4_096:
        return (), False
    try:
        acr = json.loads(claims)["id_token"]["acr"]
    except (ValueError, KeyError, TypeError):
        return (), False
    if not isinstance(acr, dict) or acr.get("essential") is not True:
        return (), False
    values = acr.get("values") or ([acr["value"]] if "value" in acr else [])
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        return (), False
    return tuple(values), True
