"""Authlib's grants, bound to our models and services. Short on purpose: rules live in
tokens/codes.py and tokens/refresh_tokens.py."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

from authlib.oauth2.rfc6749 import grants
from authlib.oauth2.rfc6749.errors import InvalidRequestError, InvalidScopeError
from authlib.oauth2.rfc7636 import CodeChallenge

from accounts.sessions import AMR_KEY, AUTH_TIME_KEY, SID_KEY
from authserver.metrics import TOKENS_ISSUED
from tokens import access_tokens, codes, refresh_tokens
from tokens.oauth.registration import error_text

SECRET_METHODS = ["client_secret_basic", "client_secret_post"]
# private_key_jwt last: tried only when no secret method authenticated the request, and it
# returns at once without a client_assertion, so secret-based clients pay nothing for it.
KEY_METHODS = ["private_key_jwt"]


class IssuesTokens:
    """Token issuing shared by every grant: a JWT access token (RFC 9068) and, where the grant
    allows one, an opaque refresh token. What to bind them to comes from ``token_context``."""

    def token_context(self) -> tuple[str, int | None]:
        """(sid, auth_time) of the browser session behind this grant; none by default."""
        return "", None

    def generate_token(
        self, user=None, scope=None, grant_type=None, expires_in=None, include_refresh_token=True
    ):
        sid, auth_time = self.token_context()
        access = access_tokens.issue(
            client=self.request.client, user=user, scope=scope or "", sid=sid, auth_time=auth_time
        )
        self.request.issued_access = access
        TOKENS_ISSUED.labels(self.GRANT_TYPE).inc()
        token = {
            "token_type": "Bearer",
            "access_token": access.value,
            "expires_in": access.expires_in,
        }
        if scope:
            token["scope"] = scope
        if include_refresh_token:
            token["refresh_token"] = secrets.token_urlsafe(32)
        return token

    def validate_requested_scope(self):
        """RFC 6749 §3.3: every requested scope must exist and be allowed to this client."""
        requested = (self.request.payload.scope or "").split()
        client = self.request.client
        allowed = set(client.allowed_scopes) if client else set()
        unknown = [
            scope
            for scope in requested
            if scope not in self.server.scopes_supported or scope not in allowed
        ]
        if unknown:
            # RFC 6749 §5.2: invalid_scope also for a malformed scope; its echo is cleaned to
            # the error_description character set, or Authlib could not build the error at all.
            named = error_text(" ".join(unknown)[:200])
            raise InvalidScopeError(f"Scope not allowed for this client: {named}")


class AuthorizationCodeGrant(IssuesTokens, grants.AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = [*SECRET_METHODS, "none", *KEY_METHODS]

    def save_authorization_code(self, code: str, request) -> None:
        session = request.django_request.session
        auth_time = session.get(AUTH_TIME_KEY)
        data = request.payload.data
        codes.save_authorization_code(
            code,
            client=request.client,
            user=request.user,
            sid=session.get(SID_KEY, ""),
            auth_time=datetime.fromtimestamp(auth_time, UTC) if auth_time else None,
            redirect_uri=request.payload.redirect_uri or "",
            scope=request.scope or "",
            nonce=data.get("nonce") or "",
            code_challenge=data.get("code_challenge") or "",
            code_challenge_method=data.get("code_challenge_method") or "",
            amr=session.get(AMR_KEY, []),
        )

    def query_authorization_code(self, code: str, client):
        row = codes.find_code_for_exchange(code, client, request=self.request.django_request)
        if row is not None and row.redirect_uri and not self.request.payload.redirect_uri:
            # RFC 6749 §4.1.3: REQUIRED when the authorization request had one. Absent is a
            # missing parameter (§5.2 invalid_request); Authlib would call it a wrong one.
            raise InvalidRequestError("Missing 'redirect_uri' in request.")
        return row

    def delete_authorization_code(self, authorization_code) -> None:
        # Kept, marked used, so a second redemption is recognised as a replay.
        codes.mark_code_used(authorization_code, getattr(self.request, "issued_access", None))

    def authenticate_user(self, authorization_code):
        user = authorization_code.user
        return user if user.is_active else None

    def token_context(self):
        code = self.request.authorization_code
        return code.sid, code.get_auth_time()


class RefreshTokenGrant(IssuesTokens, grants.RefreshTokenGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = [*SECRET_METHODS, "none", *KEY_METHODS]
    INCLUDE_NEW_REFRESH_TOKEN = True  # rotation on every use

    def authenticate_refresh_token(self, refresh_token: str):
        row = refresh_tokens.find_refresh_token(
            refresh_token, self.request.client, request=self.request.django_request
        )
        if row is None:
            return None
        # Check the scope before using the token up: a request that would fail must not burn it.
        self._validate_token_scope(row)
        if not refresh_tokens.rotate(row):
            return None  # a concurrent refresh with this token won
        return row

    def authenticate_user(self, refresh_token):
        return refresh_token.user

    def revoke_old_credential(self, refresh_token) -> None:
        pass  # rotated already, atomically, in authenticate_refresh_token

    def token_context(self):
        row = self.request.refresh_token
        return row.sid, int(row.auth_time.timestamp()) if row.auth_time else None


class ClientCredentialsGrant(IssuesTokens, grants.ClientCredentialsGrant):
    """Tokens for the client itself: a signed JWT, no row written (RFC 6749 §4.4)."""

    TOKEN_ENDPOINT_AUTH_METHODS = [*SECRET_METHODS, *KEY_METHODS]


class S256CodeChallenge(CodeChallenge):
    """PKCE (RFC 7636) the way RFC 9700 §2.1.1 wants it: S256 only, and required of public clients."""

    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]
    DEFAULT_CODE_CHALLENGE_METHOD = "S256"

    def validate_code_challenge(self, grant, redirect_uri):
        data = grant.request.payload.data
        challenge, method = data.get("code_challenge"), data.get("code_challenge_method")
        if challenge and method != "S256":
            raise InvalidRequestError(
                "'code_challenge_method' must be 'S256'; 'plain' is not accepted."
            )
        if not challenge and grant.request.client.is_public:
            raise InvalidRequestError("Public clients must send a PKCE 'code_challenge' (S256).")
        super().validate_code_challenge(grant, redirect_uri)
