"""The one Authlib authorization server, built by a factory and kept by a cached accessor."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator, Mapping
from functools import cached_property, lru_cache

from authlib.common.security import is_secure_transport
from authlib.integrations.django_oauth2 import AuthorizationServer as DjangoAuthorizationServer
from authlib.integrations.django_oauth2.requests import DjangoOAuth2Payload, DjangoOAuth2Request
from authlib.oauth2.rfc6749.errors import InsecureTransportError, InvalidRequestError
from django.http import HttpResponse
from django.http.request import HttpHeaders

from tokens import clients, refresh_tokens, scopes
from tokens.models import Client, RefreshToken
from tokens.oauth import required
from tokens.oauth.client_auth import METHOD as PRIVATE_KEY_JWT
from tokens.oauth.client_auth import PrivateKeyJWT
from tokens.oauth.device import DeviceAuthorizationEndpoint
from tokens.oauth.endpoints import EndSessionEndpoint, IntrospectionEndpoint, RevocationEndpoint
from tokens.oauth.grants import (
    AuthorizationCodeGrant,
    ClientCredentialsGrant,
    DeviceCodeGrant,
    RefreshTokenGrant,
    S256CodeChallenge,
    TokenExchangeGrant,
    dpop_proof,
)
from tokens.oauth.oidc import OpenIDCode, OpenIDRefresh
from tokens.oauth.pushed import PushedAuthorizationEndpoint
from tokens.oauth.registration import ConfigurationEndpoint, RegistrationEndpoint


def unprintable_input(error: ValueError) -> InvalidRequestError:
    """The invalid_request Authlib meant to send, when the input it wanted to echo could not be."""
    if not str(error).startswith("Error description contains forbidden characters"):
        raise error
    return InvalidRequestError("A parameter holds characters that are not allowed.")


class PushedPayload(DjangoOAuth2Payload):
    """RFC 9126 §4: a pushed request's parameters are the pushed ones (put in the query by the
    authorization view), and nothing a form posts on the way (the consent form) may change them."""

    @property
    def data(self):
        return self._request.GET.dict()

    @property
    def datalist(self):
        return dict(self._request.GET.lists())


class FormPayload(DjangoOAuth2Payload):
    """Authlib's payload (the query's parameters and the form's, the form's winning), without
    parsing a query string that is not there: the token, introspection and revocation endpoints
    refuse one (tokens/views.py form_problem), and an empty QueryDict costs as much as a form."""

    @cached_property
    def data(self):
        if self._request.META.get("QUERY_STRING"):
            return super().data
        return self._request.POST.dict()

    @cached_property
    def datalist(self):
        if self._request.META.get("QUERY_STRING"):
            return super().datalist
        return defaultdict(list, self._request.POST.lists())


@lru_cache(maxsize=64)
def _meta_key(name: str) -> str:
    """Where WSGI puts header ``name`` in the environ (what Django's HttpHeaders undoes)."""
    key = name.upper().replace("-", "_")
    return key if key in HttpHeaders.UNPREFIXED_HEADERS else f"HTTP_{key}"


class _Headers(Mapping):
    """A request's headers, each looked up in its WSGI environ when asked for. Django's
    ``request.headers`` copies every header into a dict first, and the grants read one or two."""

    __slots__ = ("_meta",)

    def __init__(self, meta: dict) -> None:
        self._meta = meta

    def __getitem__(self, name: str) -> str:
        return self._meta[_meta_key(name)]

    def __iter__(self) -> Iterator[str]:
        return iter(HttpHeaders(self._meta))

    def __len__(self) -> int:
        return len(HttpHeaders(self._meta))

    def __bool__(self) -> bool:
        return True  # (Authlib writes ``headers or {}``: no need to count them)


@lru_cache(maxsize=64)
def _secure_origin(origin: str) -> bool:
    # Authlib's transport check reads the scheme and the host, and a host got here through
    # ALLOWED_HOSTS: one answer per origin (it parses the URL and the IP address otherwise).
    return is_secure_transport(origin)


class OAuth2Request(DjangoOAuth2Request):
    """Authlib's request, keeping the Django request (session, IP) at hand for the grants.

    Built without Authlib's __init__s (DjangoOAuth2Request's rebuilds the absolute URL and
    copies every header, OAuth2Request's parses the URL again: 38 µs against 7 µs here, of a
    ~450 µs client_credentials grant in process). The transport is checked as Authlib checks
    it, on the origin; ``uri`` and ``headers`` are read when something asks. The attributes are
    Authlib's own (tests/tokens/test_token_endpoint.py compares them with Authlib's request)."""

    def __init__(self, request):
        # get_host() checks ALLOWED_HOSTS; the protocol router has done so already.
        host = getattr(request, "checked_host", None) or request.get_host()
        origin = f"{request.scheme}://{host}"
        if not _secure_origin(origin):
            raise InsecureTransportError()
        self.method = request.method
        self.headers = _Headers(request.META)
        self._body = None
        pushed = getattr(request, "pushed_request", None) is not None
        self.payload = PushedPayload(request) if pushed else FormPayload(request)
        self.client = None
        self.auth_method = None
        self.user = None
        self.authorization_code = None
        self.refresh_token = None
        self.credential = None
        self._scope = None
        self._request = request
        self.django_request = request
        self.issued_access = None
        self.dpop = None  # the checked DPoP proof (RFC 9449), set by the token grants
        self.resent = None  # the answer to a retried refresh (tokens/refresh_tokens.py)

    @property
    def uri(self) -> str:
        return self._request.build_absolute_uri()


# Authlib's json_dumps (UTF-8 kept, no spaces), its encoder built once rather than per answer.
_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


class AuthorizationServer(DjangoAuthorizationServer):
    def handle_response(self, status_code, payload, headers) -> HttpResponse:
        """Authlib's answer, built with the charset given: HttpResponse otherwise reads
        DEFAULT_CHARSET and parses its own Content-Type back out, twice (a twentieth of a
        client_credentials grant). Authlib's headers set the Content-Type (JSON)."""
        if isinstance(payload, dict):
            payload = _JSON.encode(payload)
        if isinstance(payload, str):
            payload = payload.encode()
        response = HttpResponse(payload, status=status_code, charset="utf-8")
        for name, value in headers:
            response[name] = value
        return response

    def query_client(self, client_id: str) -> Client | None:
        return clients.active_client(client_id)

    def create_oauth2_request(self, request) -> OAuth2Request:
        return OAuth2Request(request)

    def get_token_grant(self, request):
        if problem := required.token_request_problem(request.form):
            raise problem  # answered in create_token_response (Authlib's catches only its own)
        return super().get_token_grant(request)

    def get_authorization_grant(self, request):
        if not request.payload.response_type:
            # RFC 6749 §4.1.2.1: invalid_request, sent back to the client only once its
            # redirect URI has checked out (Authlib would say unsupported_response_type).
            raise InvalidRequestError(
                "Missing 'response_type' in request.",
                redirect_uri=self._checked_redirect_uri(request),
            )
        return super().get_authorization_grant(request)

    def _checked_redirect_uri(self, request) -> str | None:
        """Where an authorization error may go: the request's redirect URI if registered for a
        known client, or the client's only one (RFC 6749 §4.1.2.1, §3.1.2.3); else nowhere."""
        client = self.query_client(request.payload.client_id)
        if client is None:
            return None
        requested = request.payload.redirect_uri
        if requested:
            return requested if client.check_redirect_uri(requested) else None
        return client.get_default_redirect_uri()

    def create_json_request(self, request):
        json_request = super().create_json_request(request)
        match = getattr(request, "resolver_match", None)
        json_request.client_id_in_path = match.kwargs.get("client_id") if match else None
        return json_request

    def save_token(self, token: dict, request):
        """Persist what must be: the refresh token's digest. Access tokens are self-contained.
        On a refresh, the token presented is rotated by the same statement: None if another
        request rotated it first (nothing was written)."""
        refresh_token = token.get("refresh_token")
        if not refresh_token:
            return token
        parent = request.refresh_token
        code = request.authorization_code
        if parent is not None:
            # RFC 6749 §6: a new refresh token has exactly the scope of the one it replaces.
            scope, sid, auth_time = parent.scope, parent.sid, parent.auth_time
            acr, amr = parent.acr, parent.amr
        elif code is not None:
            scope, sid, auth_time = code.scope, code.sid, code.auth_time
            acr, amr = code.acr, " ".join(code.amr)
        else:  # RFC 8628: the device authorization the person approved
            device = request.credential
            scope, sid, auth_time = device.scope, device.sid, device.auth_time
            acr, amr = device.acr, device.amr
        return refresh_tokens.store_refresh_token(
            refresh_token,
            client=request.client,
            user=request.user,
            scope=scope,
            sid=sid,
            auth_time=auth_time,
            acr=acr,
            amr=amr,
            access=request.issued_access,
            parent=parent,
            code=code,
            # RFC 9449 §5: bound to the DPoP key for public clients only; a confidential
            # client's refresh token is already bound to its credentials.
            dpop_jkt=proof.jkt
            if request.client.is_public and (proof := dpop_proof(request))
            else "",
            answer=token if parent is not None else None,
            parent_value=request.form.get("refresh_token") or "",
        )

    # Two of Authlib's errors escape the try that turns errors into responses: plain http (other
    # than loopback) refused while it builds its request, and an error it cannot build because
    # it would echo characters RFC 6749 §5.2 forbids in error_description (a crafted scope,
    # redirect_uri or response_type). Both get the RFC's JSON instead of a 500.
    def create_token_response(self, request=None):
        try:
            return super().create_token_response(request)
        except (InsecureTransportError, InvalidRequestError) as error:  # (the latter: required)
            return self.handle_response(*error())
        except ValueError as error:
            return self.handle_response(*unprintable_input(error)())

    def create_endpoint_response(self, name, request=None):
        try:
            return super().create_endpoint_response(name, request)
        except InsecureTransportError as error:
            return self.handle_response(*error())
        except ValueError as error:
            return self.handle_response(*unprintable_input(error)())

    def get_consent_grant(self, request=None, end_user=None):
        try:
            return super().get_consent_grant(request, end_user)
        except ValueError as error:
            raise unprintable_input(error) from None

    def create_authorization_response(self, request=None, grant_user=None, grant=None):
        try:
            return super().create_authorization_response(request, grant_user, grant)
        except ValueError as error:
            return self.handle_response(*unprintable_input(error)())

    def send_signal(self, name, *args, **kwargs) -> None:
        pass  # security events are written by our services, not through Authlib's signals


def build_server() -> AuthorizationServer:
    server = AuthorizationServer(Client, RefreshToken)
    server.scopes_supported = scopes.offered()
    # RFC 7523 §2.2 / OIDC Core §9: for every endpoint that authenticates clients through the
    # server (token, introspection, revocation, and any added later).
    server.register_client_auth_method(PRIVATE_KEY_JWT, PrivateKeyJWT())
    server.register_grant(
        AuthorizationCodeGrant, [S256CodeChallenge(required=True), OpenIDCode(require_nonce=False)]
    )
    server.register_grant(RefreshTokenGrant, [OpenIDRefresh()])
    server.register_grant(ClientCredentialsGrant)
    server.register_grant(DeviceCodeGrant)
    server.register_grant(TokenExchangeGrant)
    server.register_endpoint(IntrospectionEndpoint)
    server.register_endpoint(RevocationEndpoint)
    server.register_endpoint(EndSessionEndpoint)
    server.register_endpoint(RegistrationEndpoint)
    server.register_endpoint(ConfigurationEndpoint)
    server.register_endpoint(PushedAuthorizationEndpoint)
    server.register_endpoint(DeviceAuthorizationEndpoint)
    return server


@lru_cache(maxsize=1)
def get_server() -> AuthorizationServer:
    """Built on first use, after settings are final; tests call ``get_server.cache_clear()``."""
    return build_server()
