"""OpenID Connect glue: ID tokens through Authlib's OpenIDCode, the claims each scope releases,
and reading ID tokens that come back to us as hints."""

from __future__ import annotations

import time
from dataclasses import dataclass

from authlib.oauth2.rfc6749.errors import InvalidRequestError
from authlib.oidc.core import grants as oidc_grants
from authlib.oidc.core.grants.util import validate_nonce
from django.conf import settings
from joserfc import jwt
from joserfc.errors import JoseError

from tokens import keys
from tokens.models import AuthorizationCode

ID_TOKEN_ALGORITHMS = ["RS256", "ES256"]

# OIDC Core §5.4: the claims each scope asks for.
SCOPE_CLAIMS = {
    "profile": ("name", "given_name", "family_name", "preferred_username"),
    "email": ("email", "email_verified"),
}


def user_claims(user, scopes) -> dict:
    """The claims about ``user`` that ``scopes`` release; ``sub`` always (OIDC Core §5.3.2)."""
    scopes = set(scopes)
    claims: dict = {"sub": str(user.pk)}
    if "profile" in scopes:
        claims.update(
            name=user.get_full_name() or user.get_username(),
            given_name=user.first_name,
            family_name=user.last_name,
            preferred_username=user.get_username(),
        )
        claims = {k: v for k, v in claims.items() if v != ""}
    if "email" in scopes and user.email:
        claims.update(email=user.email, email_verified=user.email_verified)
    return claims


class OpenIDCode(oidc_grants.OpenIDCode):
    """ID tokens for the code flow (OIDC Core §3.1.3.6): iss sub aud exp iat auth_time nonce
    at_hash azp sid acr amr, signed with the client's id_token_signed_response_alg."""

    def __call__(self, grant) -> None:
        # prompt, max_age and the hints are handled by the authorization view itself.
        grant.register_hook("after_create_token_response", self.process_token)
        grant.register_hook("after_validate_authorization_request_payload", self.validate_nonce)

    def validate_nonce(self, grant, redirect_uri) -> None:
        if "openid" in (grant.request.payload.scope or "").split():
            validate_nonce(grant.request, self.exists_nonce, self.require_nonce)

    def exists_nonce(self, nonce: str, request) -> bool:
        # A nonce seen before from this client is a replayed authentication request.
        return AuthorizationCode.objects.filter(
            client__client_id=request.payload.client_id, nonce=nonce
        ).exists()

    def get_client_algorithm(self, client) -> str:
        return client.id_token_signed_response_alg

    def resolve_client_private_key(self, client):
        return keys.signing_key(client.id_token_signed_response_alg)[1]

    def get_encode_header(self, client) -> dict:
        kid, _key = keys.signing_key(client.id_token_signed_response_alg)
        return {"alg": client.id_token_signed_response_alg, "kid": kid, "typ": "JWT"}

    def get_client_claims(self, client) -> dict:
        now = int(time.time())
        return {
            "iss": settings.ISSUER,
            "aud": client.client_id,
            "azp": client.client_id,
            "iat": now,
            "exp": now + settings.ID_TOKEN_LIFETIME,
        }

    def get_authorization_code_claims(self, authorization_code) -> dict:
        claims = super().get_authorization_code_claims(authorization_code)
        if authorization_code.sid:
            claims["sid"] = authorization_code.sid
        return claims

    def generate_user_info(self, user, scope: str) -> dict:
        return user_claims(user, scope.split())


@dataclass(frozen=True)
class OidcParameters:
    """What an OpenID Connect authentication request adds (OIDC Core §3.1.2.1)."""

    prompts: frozenset[str]
    max_age: int | None
    login_hint: str
    hinted_subject: str | None


PROMPTS = {"none", "login", "consent", "select_account"}


def read_oidc_parameters(params, redirect_uri: str | None) -> OidcParameters:
    """prompt, max_age, login_hint and id_token_hint of an authentication request, checked the
    same way at /authorize and at the pushed authorization request endpoint (RFC 9126 §2.1).
    Raises invalid_request, addressed to ``redirect_uri``."""
    state = params.get("state")

    def invalid(description: str) -> InvalidRequestError:
        return InvalidRequestError(description, redirect_uri=redirect_uri, state=state)

    prompts = frozenset((params.get("prompt") or "").split())
    if prompts - PROMPTS or ("none" in prompts and len(prompts) > 1):
        raise invalid(
            "Invalid 'prompt': 'none' stands alone; others are login, consent, select_account."
        )
    max_age = None
    if "max_age" in params:
        raw = params["max_age"]
        if not raw.isascii() or not raw.isdigit() or len(raw) > 10:
            raise invalid("'max_age' must be a whole number of seconds.")
        max_age = int(raw)
    hinted_subject = None
    if params.get("id_token_hint"):
        claims = read_id_token(params["id_token_hint"])
        if claims is None:
            raise invalid("'id_token_hint' is not an ID token from this server.")
        hinted_subject = str(claims["sub"])
    return OidcParameters(prompts, max_age, (params.get("login_hint") or "")[:254], hinted_subject)


def signed_userinfo(claims: dict, client) -> str:
    """OIDC Core §5.3.2: the UserInfo claims as a JWT signed with our key and the client's
    registered userinfo_signed_response_alg, carrying iss and aud (the client)."""
    algorithm = client.userinfo_signed_response_alg
    kid, key = keys.signing_key(algorithm)
    body = {**claims, "iss": settings.ISSUER, "aud": client.client_id, "iat": int(time.time())}
    return jwt.encode({"alg": algorithm, "kid": kid, "typ": "JWT"}, body, key)


class OpenIDRefresh(OpenIDCode):
    """A new ID token with every refresh of a grant that had ``openid``, for clients with
    ``id_token_on_refresh`` (OIDC Core §12.2). Its claims are those of the original
    authentication, read from the refresh token (which carries them down the family from the
    code): the same iss, sub, aud, azp, auth_time, acr, amr and sid; a new iat, exp and at_hash
    for the new access token; no nonce ("it SHOULD NOT have a nonce Claim Value")."""

    def __call__(self, grant) -> None:
        grant.register_hook("after_create_token_response", self.process_token)

    def process_token(self, grant, response):
        _, token, _ = response
        request = grant.request
        if not request.client.id_token_on_refresh or "openid" not in token.get("scope", "").split():
            return token
        # request.user has what user_claims reads (tokens/token_store.PERSON_COLUMNS).
        return super().process_token(grant, response)

    def get_compatible_claims(self, request) -> dict:
        claims = super().get_compatible_claims(request)
        # The refresh token stands for the code of the original authentication.
        claims.update(self.get_authorization_code_claims(request.refresh_token))
        return claims


def read_id_token(value: str | None) -> dict | None:
    """Claims of an ID token this server issued (signature and issuer checked; expiry NOT
    checked: OIDC Core §3.1.2.1 and RP-Initiated Logout §2 accept expired ID tokens as hints)."""
    if not value or len(value) > 8_192:
        return None
    try:
        token = keys.decode(value, ID_TOKEN_ALGORITHMS)
    except (JoseError, ValueError, TypeError, KeyError):
        return None
    if token.header.get("typ") not in (None, "JWT"):  # not an access or logout token
        return None
    claims = token.claims
    if claims.get("iss") != settings.ISSUER or not claims.get("sub") or not claims.get("aud"):
        return None
    return claims
