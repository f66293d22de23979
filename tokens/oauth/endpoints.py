"""Introspection (RFC 7662) and revocation (RFC 7009) on our two kinds of token."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749.errors import InvalidRequestError
from authlib.oauth2.rfc7009 import RevocationEndpoint as BaseRevocationEndpoint
from authlib.oauth2.rfc7662 import IntrospectionEndpoint as BaseIntrospectionEndpoint
from authlib.oidc.rpinitiated import EndSessionEndpoint as BaseEndSessionEndpoint

from accounts.models import SecurityEvent
from tokens import access_tokens, keys, refresh_tokens, revocation
from tokens.models import RefreshToken, token_digest
from tokens.oauth import required
from tokens.oauth.oidc import ID_TOKEN_ALGORITHMS, read_id_token


@dataclass
class AccessTokenRecord:
    """A verified JWT access token, shaped the way Authlib's endpoints expect a token."""

    claims: dict

    def check_client(self, client) -> bool:
        return self.claims.get("client_id") == client.client_id

    def is_expired(self) -> bool:
        return False  # access_tokens.read() returns only unexpired tokens

    def is_revoked(self) -> bool:
        return not access_tokens.access_token_is_live(self.claims)


def find_token(value: str, hint: str | None):
    """RFC 7009 §2.1 / RFC 7662 §2.1: the hint is only a hint; look in both places."""
    if not value or len(value) > 8_192:
        return None
    looks_like_jwt = value.count(".") == 2
    if hint == "refresh_token" or not looks_like_jwt:
        row = (
            RefreshToken.objects.select_related("client", "user")
            .filter(token_digest=token_digest(value))
            .first()
        )
        if row is not None or not looks_like_jwt:
            return row
    claims = access_tokens.read(value)
    return AccessTokenRecord(claims) if claims else None


class UnsupportedTokenTypeError(OAuth2Error):
    """RFC 7009 §2.2.1: an RFC 6749 §5.2 error, so 400 (Authlib answers 401 for this one)."""

    error = "unsupported_token_type"
    status_code = 400


class CheckedParameters:
    def create_endpoint_response(self, request):
        # RFC 7009 §2.1 / RFC 7662 §2.1: token is REQUIRED; checked before the client is
        # authenticated (tokens/oauth/required.py), and an empty one is a missing one.
        if problem := required.missing(request.form, required.TOKEN_OPERATION):
            raise problem
        return super().create_endpoint_response(request)

    def check_params(self, request, client) -> None:
        if problem := required.missing(request.form, required.TOKEN_OPERATION):
            raise problem
        hint = request.form.get("token_type_hint")
        if hint and hint not in self.SUPPORTED_TOKEN_TYPES:
            raise UnsupportedTokenTypeError()


class IntrospectionEndpoint(CheckedParameters, BaseIntrospectionEndpoint):
    # Resource servers are confidential clients; public clients cannot introspect.
    CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt"]

    def query_token(self, token_string, token_type_hint):
        return find_token(token_string, token_type_hint)

    def check_permission(self, token, client, request) -> bool:
        # Any confidential client (a resource server) may check an access token; a refresh
        # token concerns only the client it was issued to.
        if isinstance(token, RefreshToken):
            return token.check_client(client)
        return not client.is_public

    def introspect_token(self, token) -> dict:
        if isinstance(token, AccessTokenRecord):
            claims = token.claims
            fields = (
                "scope",
                "client_id",
                "sub",
                "aud",
                "iss",
                "exp",
                "iat",
                "jti",
                "sid",
                "auth_time",
                "act",  # RFC 8693 §4.1: who acts for the subject (token exchange)
                "acr",
                "amr",
            )
            introspected = {
                "active": True,
                "token_type": "Bearer",
                **{k: claims[k] for k in fields if k in claims},
            }
            if jkt := access_tokens.bound_jkt(claims):
                # RFC 9449 §6.2: the resource server checks the proof's key against cnf.jkt.
                introspected["token_type"] = "DPoP"
                introspected["cnf"] = {"jkt": jkt}
            return introspected
        if not refresh_tokens.refresh_token_is_live(token):
            return {"active": False}
        return {
            "active": True,
            "token_type": "refresh_token",
            "scope": token.scope,
            "client_id": token.client.client_id,
            "sub": str(token.user_id),
            "username": token.user.get_username(),
            "exp": int(token.expires.timestamp()),
            "iat": int(token.created.timestamp()),
        }


class RevocationEndpoint(CheckedParameters, BaseRevocationEndpoint):
    CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none", "private_key_jwt"]

    def query_token(self, token_string, token_type_hint):
        return find_token(token_string, token_type_hint)

    def revoke_token(self, token, request) -> None:
        if isinstance(token, AccessTokenRecord):
            claims = token.claims
            expires = datetime.fromtimestamp(claims["exp"], UTC)
            revocation.deny_access_tokens([(claims["jti"], expires)])
            return
        # RFC 7009 §2.1: revoking a refresh token may revoke its grant; we revoke the family.
        revocation.revoke_family(
            token.family,
            reason=RefreshToken.Reason.REVOKED,
            actor=SecurityEvent.Actor.CLIENT,
        )


class EndSessionEndpoint(BaseEndSessionEndpoint):
    """OpenID Connect RP-Initiated Logout 1.0, on Authlib's endpoint."""

    def get_server_jwks(self):
        return keys.verification_keys()

    def get_algorithms(self) -> list[str]:
        return list(ID_TOKEN_ALGORITHMS)

    def _validate_id_token_hint(self, id_token_hint: str) -> dict:
        # Only ID tokens we issued (signature, issuer, typ); expired ones are fine (§2).
        claims = read_id_token(id_token_hint)
        if claims is None:
            raise InvalidRequestError("'id_token_hint' is not an ID token from this server.")
        return claims

    def is_post_logout_redirect_uri_legitimate(
        self, request, post_logout_redirect_uri, client, logout_hint
    ) -> bool:
        # §2: with client_id, an exactly registered URI (already checked by the caller) is fine.
        return client is not None

    def end_session(self, end_session_request) -> None:
        revocation.sign_out(end_session_request.request.django_request)
