"""Token exchange (RFC 8693): a confidential client trades a token it holds for a person (the
subject token) for an access token aimed at another audience, for itself (impersonation) or
naming who acts (delegation, with an actor token and the ``act`` claim, §4.1).

What a client may get is its policy (``Client.token_exchange_audiences`` and
``token_exchange_scopes``, set by an operator; empty: no exchange): the audiences asked for
(``audience`` and RFC 8707 ``resource``, all of the policy's when none is asked) must each be
in it, else ``invalid_target``; the scope must be within both the policy and the subject token's
scope, else ``invalid_scope`` (no privilege escalation). Subject and actor tokens are ours:
access tokens pass the one claim check (tokens/access_tokens.verify) and the liveness check
(deny list, session, person, client), so a revoked one exchanges for nothing; ID tokens pass
signature, issuer and expiry, and must have been issued to the requesting client. A bad token
or an unacceptable one is ``invalid_request`` (§2.2.2). Every exchange writes a security event.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from authlib.oauth2.rfc6749.errors import InvalidRequestError, InvalidScopeError, OAuth2Error
from django.http import HttpRequest
from django.utils import timezone
from joserfc.errors import JoseError

from accounts.models import SecurityEvent, User, UserSession
from accounts.services import record_event
from tokens import access_tokens
from tokens.models import Client
from tokens.oauth.oidc import read_id_token

ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
ID_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:id_token"
SUBJECT_TOKEN_TYPES = (ACCESS_TOKEN_TYPE, ID_TOKEN_TYPE)
# An ID token says who the person is, not what they allowed: exchanged, it buys at most this.
ID_TOKEN_SCOPE = "openid"


class InvalidTargetError(OAuth2Error):
    """RFC 8693 §2.2.2 / RFC 8707 §2: the audience or resource asked for is not acceptable."""

    error = "invalid_target"


@dataclass(frozen=True)
class Party:
    """A verified subject or actor token: whose it is, and what it carries."""

    sub: str
    claims: dict
    scope: set[str]
    client_id: str  # the client it was issued to

    def identity(self) -> dict:
        """Who this party is, as an ``act`` claim names it (RFC 8693 §4.1)."""
        return {"sub": self.sub, "client_id": self.client_id}


def allows_exchange(client: Client) -> bool:
    """Token exchange is the operator's decision: a confidential client with the grant type
    ticked and at least one audience in its policy."""
    return (
        not client.is_public
        and Client.GrantType.TOKEN_EXCHANGE in client.grant_types
        and bool(client.token_exchange_audiences)
    )


def read_party(value: str, token_type: str, client: Client, *, role: str) -> Party:
    """The verified ``role`` ("subject" or "actor") token, or invalid_request (§2.2.2)."""
    if token_type == ACCESS_TOKEN_TYPE:
        try:
            claims = access_tokens.verify(value)
        except JoseError:
            raise InvalidRequestError(f"The {role} token is not a valid access token.") from None
        if not access_tokens.access_token_is_live(claims):
            raise InvalidRequestError(f"The {role} token has been revoked.")
        scope = set(claims.get("scope", "").split())
        return Party(str(claims["sub"]), claims, scope, claims["client_id"])
    if token_type == ID_TOKEN_TYPE:
        claims = read_id_token(value)
        if claims is None or not isinstance(claims.get("exp"), int) or claims["exp"] <= time.time():
            raise InvalidRequestError(f"The {role} token is not a valid, unexpired ID token.")
        audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        if client.client_id not in audiences:
            # OIDC Core §2: an ID token is for its audience; another client's proves nothing here.
            raise InvalidRequestError(f"The {role} token was issued to another client.")
        sid = claims.get("sid")
        if sid and not UserSession.objects.active(timezone.now()).filter(sid=sid).exists():
            raise InvalidRequestError(f"The {role} token's session has ended.")
        return Party(str(claims["sub"]), claims, {ID_TOKEN_SCOPE}, client.client_id)
    raise InvalidRequestError(f"Unsupported {role}_token_type.")


def subject_person(subject: Party) -> User:
    """The person the subject token is about: exchange is for tokens that name one."""
    person = None
    if subject.sub.isdigit() and subject.sub != subject.client_id:
        person = User.objects.filter(pk=int(subject.sub), is_active=True).first()
    if person is None:
        raise InvalidRequestError("The subject token names no active person.")
    return person


def check_may_act(subject: Party, actor: Party | None, client: Client) -> None:
    """RFC 8693 §4.4: a subject token's ``may_act`` names who may act for the subject; whoever
    acts (the actor token's party, else the requesting client) must match every claim it names."""
    may_act = subject.claims.get("may_act")
    if may_act is None:
        return
    acting = actor.identity() if actor else {"sub": client.client_id, "client_id": client.client_id}
    if not isinstance(may_act, dict) or not may_act:
        raise InvalidRequestError("The subject token's may_act is malformed.")
    if any(acting.get(name) != value for name, value in may_act.items()):
        raise InvalidRequestError("The subject token does not allow this party to act for it.")


def target_audiences(client: Client, audiences: list[str], resources: list[str]) -> list[str]:
    """The ``aud`` of the new token: what was asked for (§2.1 ``audience``, RFC 8707
    ``resource``), each in the client's policy; all of the policy's when nothing was asked."""
    policy = client.token_exchange_audiences
    asked = list(dict.fromkeys([*audiences, *resources]))
    if not asked:
        return list(policy)
    refused = [target for target in asked if target not in policy]
    if refused:
        raise InvalidTargetError("This client may not get tokens for the audience asked for.")
    return asked


def granted_scope(client: Client, subject: Party, requested: str | None) -> str:
    """Within the subject token's scope and the client's policy; never wider (no escalation)."""
    allowed = subject.scope & set(client.token_exchange_scopes)
    if requested is None or requested == "":
        return " ".join(sorted(allowed))
    asked = requested.split()
    if not set(asked) <= allowed:
        raise InvalidScopeError("The scope asked for exceeds the subject token's or this policy.")
    return " ".join(dict.fromkeys(asked))


def lifetime(client: Client, subject: Party) -> int:
    """Seconds the new token lives: the client's access-token lifetime, never past the subject
    token's ``exp``, so exchanging (again and again) never extends what a token can do."""
    left = int(subject.claims["exp"] - time.time())
    return max(1, min(client.access_token_lifetime, left))


def act_claim(subject: Party, actor: Party | None) -> dict | None:
    """RFC 8693 §4.1: the current actor outermost, prior actors (the subject token's own
    ``act``) nested inside. Without an actor (impersonation) the prior chain is kept as is."""
    prior = subject.claims.get("act")
    if actor is None:
        return prior if isinstance(prior, dict) else None
    current = actor.identity()
    if isinstance(prior, dict):
        current["act"] = prior
    return current


def record_exchange(
    *,
    request: HttpRequest,
    client: Client,
    person: User,
    subject: Party,
    actor: Party | None,
    issued_jti: str,
    audience: list[str],
    scope: str,
    sid: str,
) -> None:
    record_event(
        SecurityEvent.Kind.TOKEN_EXCHANGED,
        request=request,
        user=person,
        actor=SecurityEvent.Actor.SYSTEM,
        sid=sid,
        client_id=client.client_id,
        mode="delegation" if actor else "impersonation",
        subject_client_id=subject.client_id,
        actor_sub=actor.sub if actor else "",
        audience=audience,
        scope=scope,
        jti=issued_jti,
    )
