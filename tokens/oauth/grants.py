"""Authlib's grants, bound to our models and services. Short on purpose: rules live in
tokens/codes.py and tokens/refresh_tokens.py."""

from __future__ import annotations

import hmac
import logging
import re
import secrets
from datetime import UTC, datetime

from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import grants
from authlib.oauth2.rfc6749.errors import (
    AccessDeniedError,
    InvalidGrantError,
    InvalidRequestError,
    InvalidScopeError,
    UnauthorizedClientError,
)
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc8628 import DeviceCodeGrant as BaseDeviceCodeGrant
from authlib.oauth2.rfc8628.errors import (
    AuthorizationPendingError,
    ExpiredTokenError,
    SlowDownError,
)

from accounts import assurance
from accounts.sessions import AMR_KEY, AUTH_TIME_KEY, SID_KEY
from authserver.metrics import tokens_issued
from tokens import access_tokens, codes, device_codes, dpop, refresh_tokens
from tokens.models import TOKEN_EXCHANGE_GRANT
from tokens.oauth import exchange
from tokens.oauth.registration import error_text

logger = logging.getLogger(__name__)

SECRET_METHODS = ["client_secret_basic", "client_secret_post"]
JKT = re.compile(r"[A-Za-z0-9_-]{43}")  # base64url of a SHA-256 (RFC 7638)


class InvalidDpopProofError(OAuth2Error):
    """RFC 9449 §5: the token request's DPoP proof is wrong, or missing where it is required."""

    error = "invalid_dpop_proof"


class UseDpopNonceError(InvalidDpopProofError):
    """RFC 9449 §8: a fresh server nonce is required; the answer carries the one to use."""

    error = "use_dpop_nonce"

    def get_headers(self):
        return [*super().get_headers(), ("DPoP-Nonce", dpop.current_nonce())]


class DpopUnavailableError(OAuth2Error):
    """The replay cache cannot be reached: no proof is accepted unchecked (fail closed)."""

    error = "temporarily_unavailable"
    description = "DPoP proofs cannot be checked right now; try again."
    status_code = 503

    def get_headers(self):
        return [*super().get_headers(), ("Retry-After", "5")]


def check_dpop_proof(request):
    """RFC 9449 §4.3 at the token endpoint: the request's checked proof, or None without a
    ``DPoP`` header (no other work then). Run once the client is authenticated, so missing
    parameters and bad credentials are answered first, and junk costs no cache write."""
    value = request.django_request.META.get("HTTP_DPOP")
    if value is None:
        return None
    try:
        return dpop.check_proof(
            value,
            method=request.django_request.method,
            url=dpop.endpoint_url(request.django_request.path),
        )
    except dpop.NonceRequired as error:
        raise UseDpopNonceError(error.description) from None
    except dpop.ProofError as error:
        raise InvalidDpopProofError(error.description) from None
    except dpop.ReplayCacheUnavailable:
        logger.error("DPoP proof refused: the replay cache cannot be reached")
        raise DpopUnavailableError() from None


def dpop_proof(request):
    """The checked DPoP proof of this token request, or None."""
    return request.dpop


def requested_jkt(request) -> str:
    """RFC 9449 §10: the DPoP key the authorization request asked its code to be bound to.
    The one place that reads it: a pushed authorization request (RFC 9126, §10.1) that carried
    a DPoP header would supply its proof's thumbprint here."""
    return request.payload.data.get("dpop_jkt") or ""


def same_key(jkt: str, proof) -> bool:
    return proof is not None and hmac.compare_digest(jkt.encode(), proof.jkt.encode())


# private_key_jwt last: tried only when no secret method authenticated the request, and it
# returns at once without a client_assertion, so secret-based clients pay nothing for it.
KEY_METHODS = ["private_key_jwt"]


class IssuesTokens:
    """Token issuing shared by every grant: a JWT access token (RFC 9068) and, where the grant
    allows one, an opaque refresh token. What to bind them to comes from ``token_context``."""

    def token_context(self) -> tuple[str, int | None]:
        """(sid, auth_time) of the browser session behind this grant; none by default."""
        return "", None

    def assurance_context(self) -> tuple[str, list[str]]:
        """(acr, amr) of the sign-in behind this grant (RFC 9068 §2.2.1); none by default."""
        return "", []

    def generate_token(
        self, user=None, scope=None, grant_type=None, expires_in=None, include_refresh_token=True
    ):
        sid, auth_time = self.token_context()
        proof = dpop_proof(self.request)
        acr, amr = self.assurance_context()
        access = access_tokens.issue(
            client=self.request.client,
            user=user,
            scope=scope or "",
            sid=sid,
            auth_time=auth_time,
            jkt=proof.jkt if proof is not None else "",
            acr=acr,
            amr=amr,
        )
        self.request.issued_access = access
        tokens_issued(self.GRANT_TYPE).inc()
        token = {
            # RFC 9449 §5: a DPoP-bound token says so.
            "token_type": "DPoP" if proof is not None else "Bearer",
            "access_token": access.value,
            "expires_in": access.expires_in,
        }
        if scope:
            token["scope"] = scope
        if include_refresh_token:
            token["refresh_token"] = secrets.token_urlsafe(32)
        return token

    def authenticate_token_endpoint_client(self):
        client = super().authenticate_token_endpoint_client()
        self.request.dpop = check_dpop_proof(self.request)
        if client.sender_constrained and self.request.dpop is None:
            # RFC 9449 §5.2: such a client's token requests without a DPoP header are refused,
            # before any code or refresh token is looked at (none is used up).
            raise InvalidDpopProofError("This client must send a DPoP proof with every request.")
        return client

    def validate_requested_scope(self):
        check_requested_scope(self.request, self.server.scopes_supported)


def check_requested_scope(request, scopes_supported) -> None:
    """RFC 6749 §3.3: every requested scope must exist and be allowed to this client."""
    requested = (request.payload.scope or "").split()
    client = request.client
    allowed = set(client.allowed_scopes) if client else set()
    unknown = [
        scope for scope in requested if scope not in scopes_supported or scope not in allowed
    ]
    if unknown:
        # RFC 6749 §5.2: invalid_scope also for a malformed scope; its echo is cleaned to the
        # error_description character set, or Authlib could not build the error at all.
        named = error_text(" ".join(unknown)[:200])
        raise InvalidScopeError(f"Scope not allowed for this client: {named}")


class AuthorizationCodeGrant(IssuesTokens, grants.AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = [*SECRET_METHODS, "none", *KEY_METHODS]

    def save_authorization_code(self, code: str, request) -> None:
        session = request.django_request.session
        auth_time = session.get(AUTH_TIME_KEY)
        data = request.payload.data
        amr = session.get(AMR_KEY, [])
        wanted = assurance.requested(
            data.get("acr_values"),
            data.get("claims"),
            default_acr_values=request.client.default_acr_values,
            required_acr=request.client.required_acr,
        )
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
            dpop_jkt=requested_jkt(request),
            amr=amr,
            acr=wanted.chosen(amr) or "",
        )

    def validate_authorization_request(self):
        redirect_uri = super().validate_authorization_request()
        jkt = requested_jkt(self.request)
        if jkt and not JKT.fullmatch(jkt):
            raise InvalidRequestError(
                "'dpop_jkt' must be a base64url SHA-256 JWK thumbprint (RFC 9449, section 10).",
                state=self.request.payload.state,
                redirect_uri=redirect_uri,
            )
        return redirect_uri

    def query_authorization_code(self, code: str, client):
        row = codes.find_code_for_exchange(code, client, request=self.request.django_request)
        if row is not None and row.redirect_uri and not self.request.payload.redirect_uri:
            # RFC 6749 §4.1.3: REQUIRED when the authorization request had one. Absent is a
            # missing parameter (§5.2 invalid_request); Authlib would call it a wrong one.
            raise InvalidRequestError("Missing 'redirect_uri' in request.")
        if (
            row is not None
            and row.dpop_jkt
            and not same_key(row.dpop_jkt, dpop_proof(self.request))
        ):
            # RFC 9449 §10: the proof's key must be the one the authorization request named.
            # The code is not used up: its rightful holder may still redeem it.
            raise InvalidGrantError("The DPoP proof's key is not the one named by 'dpop_jkt'.")
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

    def assurance_context(self):
        code = self.request.authorization_code
        return code.acr, code.amr


class RefreshTokenGrant(IssuesTokens, grants.RefreshTokenGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = [*SECRET_METHODS, "none", *KEY_METHODS]
    INCLUDE_NEW_REFRESH_TOKEN = True  # rotation on every use

    def authenticate_refresh_token(self, refresh_token: str):
        request, scope = self.request, self.request.payload.scope
        found = refresh_tokens.find_refresh_token(
            refresh_token, request.client, scope=scope, request=request.django_request
        )
        if isinstance(found, refresh_tokens.Resent):
            # A retry within the window: the same answer again, to the key holder only.
            self._check_binding(found.row)
            request.resent = found.answer
            return found.row
        if found is None:
            return None
        self._check_binding(found)
        # Not used up yet: that happens with its successor's INSERT, in one statement, once the
        # whole answer is made (create_token_response), so a request that fails burns nothing.
        return found

    def _check_binding(self, row) -> None:
        """RFC 9449 §5: a public client's refresh token is bound to its DPoP key, and every use
        (a retry too) needs a proof with that key. Checked before the token is used up."""
        if row.dpop_jkt and not same_key(row.dpop_jkt, dpop_proof(self.request)):
            raise InvalidGrantError("The refresh token is bound to another DPoP key.")

    def save_token(self, token) -> None:
        pass  # once the answer is final, in create_token_response

    def create_token_response(self):
        request = self.request
        if request.resent is not None:
            return 200, request.resent, self.TOKEN_RESPONSE_HEADER
        # Authlib's response, with its hooks (an ID token) run: the whole answer, which the
        # successor's row keeps (sealed) for a retry. One statement rotates the token and
        # writes the successor.
        status, token, headers = super().create_token_response()
        if self.server.save_token(token, request) is None:
            # A concurrent refresh with this token won (and has committed): within the retry
            # window this request gets the winner's answer; otherwise it loses. What it made
            # (signed, never sent) is dropped.
            value = request.form.get("refresh_token") or ""
            row, scope = request.refresh_token, request.payload.scope
            resent = refresh_tokens.resend(value, row, request.client, scope=scope)
            if resent is None:
                raise InvalidGrantError()
            return 200, resent, self.TOKEN_RESPONSE_HEADER
        return status, token, headers

    def authenticate_user(self, refresh_token):
        return refresh_token.user

    def revoke_old_credential(self, refresh_token) -> None:
        pass  # rotated with its successor's INSERT (save_token), atomically

    def token_context(self):
        row = self.request.refresh_token
        return row.sid, int(row.auth_time.timestamp()) if row.auth_time else None

    def assurance_context(self):
        row = self.request.refresh_token
        return row.acr, row.amr.split()


class ClientCredentialsGrant(IssuesTokens, grants.ClientCredentialsGrant):
    """Tokens for the client itself: a signed JWT, no row written (RFC 6749 §4.4)."""

    TOKEN_ENDPOINT_AUTH_METHODS = [*SECRET_METHODS, *KEY_METHODS]


class DeviceCodeGrant(IssuesTokens, BaseDeviceCodeGrant):
    """RFC 8628 §3.4-§3.5: the device polls with its device code; one poll collects the token."""

    TOKEN_ENDPOINT_AUTH_METHODS = [*SECRET_METHODS, "none", *KEY_METHODS]

    def validate_token_request(self):
        # device_code is checked before the client is authenticated (tokens/oauth/required.py).
        client = self.authenticate_token_endpoint_client()
        if not client.check_grant_type(self.GRANT_TYPE):
            raise UnauthorizedClientError("This client may not use the device code grant.")
        try:
            row = device_codes.poll(self.request.payload.data["device_code"], client)
        except device_codes.Pending as pending:
            raise SlowDownError() if pending.slow_down else AuthorizationPendingError() from None
        except device_codes.Denied:
            raise AccessDeniedError() from None
        except device_codes.Expired:
            raise ExpiredTokenError() from None
        if row is None or not row.user.is_active:
            raise InvalidGrantError("The device code is invalid, or its token was issued.")
        self.request.user = row.user
        self.request.client = client
        self.request.credential = row

    def token_context(self):
        row = self.request.credential
        return row.sid, int(row.auth_time.timestamp()) if row.auth_time else None

    def assurance_context(self):
        row = self.request.credential
        return row.acr, row.amr.split()


class TokenExchangeGrant(grants.BaseGrant, grants.TokenEndpointMixin):
    """RFC 8693 token exchange, for confidential clients that an operator allowed (Authlib has
    no grant for it). The rules are in tokens/oauth/exchange.py; no row is written but the
    security event, and no refresh token is issued (§2.2.1: OPTIONAL)."""

    GRANT_TYPE = TOKEN_EXCHANGE_GRANT
    TOKEN_ENDPOINT_AUTH_METHODS = [*SECRET_METHODS, *KEY_METHODS]

    def validate_token_request(self) -> None:
        client = self.authenticate_token_endpoint_client()
        if not exchange.allows_exchange(client):
            raise UnauthorizedClientError("This client may not exchange tokens.")
        self.request.client = client
        form = self.request.form
        requested = form.get("requested_token_type")
        if requested and requested != exchange.ACCESS_TOKEN_TYPE:
            # §2.2.2: a token type the server cannot issue is invalid_request.
            raise InvalidRequestError("Only access tokens are issued ('requested_token_type').")
        actor_value, actor_type = form.get("actor_token"), form.get("actor_token_type")
        if bool(actor_value) != bool(actor_type):
            raise InvalidRequestError("'actor_token' and 'actor_token_type' go together.")
        subject = exchange.read_party(
            form["subject_token"], form["subject_token_type"], client, role="subject"
        )
        actor = (
            exchange.read_party(actor_value, actor_type, client, role="actor")
            if actor_value
            else None
        )
        self.request.user = exchange.subject_person(subject)
        exchange.check_may_act(subject, actor, client)
        audience = exchange.target_audiences(
            client, form.getlist("audience"), form.getlist("resource")
        )
        scope = exchange.granted_scope(client, subject, self.request.payload.scope)
        self.exchange = (subject, actor, audience, scope)

    def create_token_response(self):
        subject, actor, audience, scope = self.exchange
        client, person = self.request.client, self.request.user
        claims: dict = {"aud": audience[0] if len(audience) == 1 else audience}
        if act := exchange.act_claim(subject, actor):
            claims["act"] = act
        # The subject's browser session, if any: ending it ends the exchanged token too.
        sid = subject.claims.get("sid") or ""
        access = access_tokens.issue(
            client=client,
            user=person,
            scope=scope,
            sid=sid,
            auth_time=subject.claims.get("auth_time"),
            extra_claims=claims,
            lifetime=exchange.lifetime(client, subject),
        )
        tokens_issued("token_exchange").inc()
        exchange.record_exchange(
            request=self.request.django_request,
            client=client,
            person=person,
            subject=subject,
            actor=actor,
            issued_jti=access.jti,
            audience=audience,
            scope=scope,
            sid=sid,
        )
        token = {
            "access_token": access.value,
            "issued_token_type": exchange.ACCESS_TOKEN_TYPE,
            "token_type": "Bearer",
            "expires_in": access.expires_in,
        }
        if scope:
            token["scope"] = scope
        return 200, token, self.TOKEN_RESPONSE_HEADER


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
        if not challenge and grant.request.client.fapi2:
            # FAPI 2.0 §5.3.2.1: PKCE with S256 for every request.
            raise InvalidRequestError("This client must send a PKCE 'code_challenge' (S256).")
        super().validate_code_challenge(grant, redirect_uri)
