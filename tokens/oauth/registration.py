"""Dynamic client registration (RFC 7591) and management (RFC 7592) on Authlib's endpoints.

Closed by default: registering needs an initial access token (admin, or
``manage.py create_initial_access_token``) unless OPEN_REGISTRATION is on. Each registration
gets a registration access token for its own record, stored as a digest. RFC 7592 §3 lets the
server rotate it; REGISTRATION_TOKEN_ROTATION says when: ``on_update`` (PUT, the default),
``never``, or ``on_every_use``. Never on a read by default: a client that reads twice in
parallel, or loses one response, would be locked out of its own registration for good.
After a rotation the replaced token keeps working for REGISTRATION_TOKEN_OVERLAP seconds, and a
request made with it gets a fresh token whatever the method: the server keeps only digests, so
it cannot hand back the token whose response was lost.
"""

from __future__ import annotations

import secrets
import time
from datetime import timedelta
from urllib.parse import urlsplit

from authlib.consts import default_json_headers
from authlib.oauth2 import OAuth2Error
from authlib.oauth2.base import invalid_error_characters
from authlib.oauth2.claims import BaseClaims
from authlib.oauth2.rfc7591 import ClientMetadataClaims, ClientRegistrationEndpoint
from authlib.oauth2.rfc7591.errors import InvalidClientMetadataError, InvalidRedirectURIError
from authlib.oauth2.rfc7592 import ClientConfigurationEndpoint
from authlib.oidc.registration import ClientMetadataClaims as OidcClientMetadataClaims
from authlib.oidc.rpinitiated import ClientMetadataClaims as LogoutClientMetadataClaims
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from accounts import assurance
from tokens import clients, revocation, scopes
from tokens.models import Client, redirect_uri_problem, token_digest
from tokens.oauth.metadata import provider_metadata


class RegistrationClaims(ClientMetadataClaims):
    def validate_redirect_uris(self):
        pass  # judged by check_metadata() with the model's rules (RFC 8252 §7.1 schemes too)


class BackchannelLogoutClaims(BaseClaims):
    """OpenID Connect Back-Channel Logout 1.0 §2.2."""

    REGISTERED_CLAIMS = ["backchannel_logout_uri", "backchannel_logout_session_required"]


class PushedAuthorizationClaims(BaseClaims):
    """RFC 9126 §6."""

    REGISTERED_CLAIMS = ["require_pushed_authorization_requests"]


class DpopClaims(BaseClaims):
    """RFC 9449 §5.2."""

    REGISTERED_CLAIMS = ["dpop_bound_access_tokens"]


CLAIMS = [
    RegistrationClaims,
    OidcClientMetadataClaims,
    LogoutClientMetadataClaims,
    BackchannelLogoutClaims,
    PushedAuthorizationClaims,
    DpopClaims,
]
STRINGS = (
    "client_name", "scope", "token_endpoint_auth_method", "client_uri", "logo_uri", "tos_uri",
    "policy_uri", "jwks_uri", "software_id", "software_version", "id_token_signed_response_alg",
    "subject_type", "application_type", "backchannel_logout_uri", "initiate_login_uri",
    "token_endpoint_auth_signing_alg", "request_object_signing_alg", "userinfo_signed_response_alg",
)  # fmt: skip
STRING_LISTS = (
    "redirect_uris", "post_logout_redirect_uris", "grant_types", "response_types", "contacts",
    "request_uris", "default_acr_values",
)  # fmt: skip


def error_text(text: str) -> str:
    """RFC 6749 §5.2: error_description is %x20-21 / %x23-5B / %x5D-7E only."""
    bad = set(invalid_error_characters(text))
    return "".join("?" if ch in bad else ch for ch in text)


def check_metadata(data: dict) -> None:
    """What Authlib's claims classes assume before they look: JSON types, and redirect URIs
    judged by this server's rules (RFC 7591 §3.2.2 invalid_redirect_uri)."""
    for name in STRINGS:
        if data.get(name) is not None and not isinstance(data[name], str):
            raise InvalidClientMetadataError(f"{name} must be a string.")
    for name in STRING_LISTS:
        value = data.get(name)
        if value is not None and not (
            isinstance(value, list) and all(isinstance(item, str) for item in value)
        ):
            raise InvalidClientMetadataError(f"{name} must be an array of strings.")
    if isinstance(data.get("scope"), str) and (
        unknown := scopes.unknown_scopes(data["scope"].split())
    ):
        # Before Authlib's own check, which does not say which scope it is.
        raise InvalidClientMetadataError(error_text(str(scopes.UnknownScopes(unknown))[:300]))
    if "jwks" in data and not isinstance(data["jwks"], dict):  # Authlib's check assumes one
        raise InvalidClientMetadataError("jwks must be a JWK Set: an object with a keys array.")
    for name in (
        "backchannel_logout_session_required",
        "require_pushed_authorization_requests",
        "dpop_bound_access_tokens",
    ):
        flag = data.get(name)
        if flag is not None and not isinstance(flag, bool):
            raise InvalidClientMetadataError(f"{name} must be a boolean.")
    problems = [
        f"{uri}: {problem}"
        for uri in data.get("redirect_uris") or []
        if (
            problem := redirect_uri_problem(uri)
            or ("has user info" if "@" in urlsplit(uri).netloc else None)
        )
    ]
    if problems:
        raise InvalidRedirectURIError(error_text("; ".join(problems)))


# OIDC registration metadata this server cannot honour; accepting it silently would mislead.
UNSUPPORTED = (
    "id_token_encrypted_response_alg", "id_token_encrypted_response_enc",
    "userinfo_encrypted_response_alg", "userinfo_encrypted_response_enc",
    "request_object_encryption_alg", "request_object_encryption_enc", "sector_identifier_uri",
    "frontchannel_logout_uri",
)  # fmt: skip
# Registered as Client fields, described back as they are (empty means not registered).
KEY_FIELDS = (
    "jwks_uri", "token_endpoint_auth_signing_alg", "request_object_signing_alg",
    "userinfo_signed_response_alg",
)  # fmt: skip
KEPT_AS_IS = (
    "client_uri",
    "logo_uri",
    "tos_uri",
    "policy_uri",
    "contacts",
    "software_id",
    "software_version",
)


def client_fields(metadata: dict) -> dict:
    """Registered metadata as Client fields, or InvalidClientMetadataError (RFC 7591 §3.2.2)."""
    unsupported = [name for name in UNSUPPORTED if metadata.get(name)]
    if unsupported:
        raise InvalidClientMetadataError(f"Not supported here: {', '.join(unsupported)}.")
    method = metadata.get("token_endpoint_auth_method", "client_secret_basic")
    if method not in Client.AuthMethod.values:
        raise InvalidClientMetadataError(f"token_endpoint_auth_method {method!r} is not supported.")
    grant_types = metadata.get("grant_types") or ["authorization_code"]
    if Client.GrantType.TOKEN_EXCHANGE in grant_types:
        # RFC 8693 has no registration metadata for its policy: an operator grants it.
        raise InvalidClientMetadataError("Token exchange is granted by an operator.")
    response_types = metadata.get("response_types")
    if response_types is None:  # RFC 7591 §2: omitted means "code"; [] means none
        response_types = ["code"] if "authorization_code" in grant_types else []
    # RFC 7591 §2.1: grant types and response types must agree.
    if set(response_types) - {"code"}:
        raise InvalidClientMetadataError("Only the 'code' response type is supported.")
    if ("code" in response_types) != ("authorization_code" in grant_types):
        raise InvalidClientMetadataError("'code' and 'authorization_code' go together.")
    if metadata.get("subject_type", "public") != "public":
        raise InvalidClientMetadataError("Only the 'public' subject type is supported.")
    try:
        # RFC 7591 §2: omitted means the server's default, here what the grant types can use.
        allowed_scopes = scopes.client_scopes(grant_types, metadata.get("scope"))
    except scopes.UnknownScopes as error:
        raise InvalidClientMetadataError(error_text(str(error)[:300])) from None
    fields = {
        "name": (metadata.get("client_name") or "Unnamed client")[:100],
        "client_type": Client.Type.PUBLIC if method == "none" else Client.Type.CONFIDENTIAL,
        "token_endpoint_auth_method": method,
        "redirect_uris": metadata.get("redirect_uris") or [],
        "post_logout_redirect_uris": metadata.get("post_logout_redirect_uris") or [],
        "grant_types": grant_types,
        "allowed_scopes": allowed_scopes,
        "id_token_signed_response_alg": metadata.get("id_token_signed_response_alg") or "RS256",
        "backchannel_logout_uri": metadata.get("backchannel_logout_uri") or "",
        "backchannel_logout_session_required": metadata.get(
            "backchannel_logout_session_required", True
        )
        is not False,
        "require_pushed_authorization_requests": metadata.get(
            "require_pushed_authorization_requests"
        )
        is True,
        "dpop_bound_access_tokens": metadata.get("dpop_bound_access_tokens") is True,
        # Registered clients always ask for consent: nobody vouched for them.
        "consent": Client.Consent.REMEMBER,
        "metadata": {name: metadata[name] for name in KEPT_AS_IS if name in metadata},
        # RFC 7591 §2 / OpenID Registration §2: the client's keys and what it signs with; the
        # model checks them (public keys only, one of jwks and jwks_uri, https URLs).
        "jwks": metadata.get("jwks") or {},
        "request_uris": metadata.get("request_uris") or [],
        **{name: metadata.get(name) or "" for name in KEY_FIELDS},
    }
    acr_values = metadata.get("default_acr_values") or []
    if set(acr_values) - set(assurance.LEVELS):
        raise InvalidClientMetadataError(
            f"default_acr_values may hold only {', '.join(assurance.LEVELS)}."
        )
    fields["default_acr_values"] = acr_values
    if method == Client.AuthMethod.PRIVATE_KEY_JWT and not (fields["jwks"] or fields["jwks_uri"]):
        raise InvalidClientMetadataError("private_key_jwt needs jwks or jwks_uri.")
    if fields["id_token_signed_response_alg"] not in ("RS256", "ES256"):
        raise InvalidClientMetadataError("id_token_signed_response_alg must be RS256 or ES256.")
    return fields


def apply(client: Client, fields: dict) -> Client:
    for name, value in fields.items():
        setattr(client, name, value)
    try:
        client.full_clean(exclude=["client_id", "secret_digest", "registration_token_digest"])
    except ValidationError as error:
        problems = error.message_dict
        description = error_text("; ".join(f"{k}: {' '.join(v)}" for k, v in problems.items()))
        if set(problems) <= {"redirect_uris", "post_logout_redirect_uris"}:
            raise InvalidRedirectURIError(description) from None
        raise InvalidClientMetadataError(description) from None
    return client


def describe(client: Client) -> dict:
    """The client's registered metadata (RFC 7591 §3.2.1 / RFC 7592 §3)."""
    body = {
        "client_id": client.client_id,
        "client_id_issued_at": int(client.created.timestamp()),
        "client_name": client.name,
        "token_endpoint_auth_method": client.token_endpoint_auth_method,
        "redirect_uris": client.redirect_uris,
        "post_logout_redirect_uris": client.post_logout_redirect_uris,
        "grant_types": client.grant_types,
        "response_types": ["code"]
        if Client.GrantType.AUTHORIZATION_CODE in client.grant_types
        else [],
        "scope": " ".join(client.allowed_scopes),
        "id_token_signed_response_alg": client.id_token_signed_response_alg,
        "subject_type": "public",
        "require_pushed_authorization_requests": client.require_pushed_authorization_requests,
        "dpop_bound_access_tokens": client.dpop_bound_access_tokens,
        **client.metadata,
    }
    if client.default_acr_values:
        body["default_acr_values"] = client.default_acr_values
    if client.jwks:
        body["jwks"] = client.jwks
    if client.request_uris:
        body["request_uris"] = client.request_uris
    body.update({name: getattr(client, name) for name in KEY_FIELDS if getattr(client, name)})
    if client.backchannel_logout_uri:
        body["backchannel_logout_uri"] = client.backchannel_logout_uri
        body["backchannel_logout_session_required"] = client.backchannel_logout_session_required
    if client.secret_digest:
        body["client_secret_expires_at"] = 0
    return body


def rotate_registration_token(client: Client) -> str:
    """A new registration access token for ``client``, returned once and stored as a digest.

    The token it replaces stays valid for REGISTRATION_TOKEN_OVERLAP seconds; the one before
    that stops at once. Row-locked, so concurrent rotations each move the latest token aside.
    """
    token = secrets.token_urlsafe(32)
    with transaction.atomic():
        replaced = (
            Client.objects.select_for_update()
            .filter(pk=client.pk)
            .values_list("registration_token_digest", flat=True)
            .first()
        )
        overlap = timedelta(seconds=settings.REGISTRATION_TOKEN_OVERLAP)
        Client.objects.filter(pk=client.pk).update(
            registration_token_digest=token_digest(token),
            registration_token_previous_digest=replaced or "",
            registration_token_previous_expires=timezone.now() + overlap if replaced else None,
        )
    return token


def registration_info(client: Client, token: str) -> dict:
    """RFC 7592 §3: the registration access token and the record's URL."""
    return {
        "registration_access_token": token,
        "registration_client_uri": settings.ISSUER
        + reverse("tokens:client_configuration", args=[client.client_id]),
    }


def rotates(request, state: str) -> bool:
    """RFC 7592 §3: whether this request to the configuration endpoint gets a new token."""
    if state == "previous":
        return True  # the client lost the response that carried the current token
    mode = settings.REGISTRATION_TOKEN_ROTATION
    if mode == "on_every_use":
        return True
    return mode == "on_update" and request.method == "PUT"


UPDATABLE_FIELDS = [
    field.name
    for field in Client._meta.concrete_fields
    if not field.primary_key and not field.name.startswith("registration_token")
]


class InvalidTokenError(OAuth2Error):
    """RFC 7591 §3 / RFC 6750 §3.1: a missing or bad initial or registration access token."""

    error = "invalid_token"
    status_code = 401

    def get_headers(self):
        return [
            *super().get_headers(),
            ("WWW-Authenticate", 'Bearer realm="registration", error="invalid_token"'),
        ]


def _bearer(request) -> str | None:
    scheme, _, value = (request.headers.get("Authorization") or "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


class RegistrationEndpoint(ClientRegistrationEndpoint):
    def __init__(self, server=None):
        super().__init__(server, claims_classes=CLAIMS)

    def authenticate_token(self, request):
        value = _bearer(request)
        if value is not None:
            token = clients.use_initial_access_token(value)  # a bad token is refused, even if open
        else:
            token = "open" if settings.OPEN_REGISTRATION else None
        if token is None:
            raise InvalidTokenError("Registration needs a valid initial access token.")
        return token

    def get_server_metadata(self) -> dict:
        return provider_metadata()

    def extract_client_metadata(self, request):
        check_metadata(request.payload.data)
        return super().extract_client_metadata(request)

    def create_registration_response(self, request):
        with transaction.atomic():  # a refused registration does not spend the token's use
            self.authenticate_token(request)
            metadata = self.extract_client_metadata(request)
            client = apply(Client(client_id=clients.new_client_id()), client_fields(metadata))
            secret = client.set_new_secret()
            client.save()
        body = {**describe(client), **registration_info(client, rotate_registration_token(client))}
        if secret:
            body["client_secret"] = secret
        body["client_id_issued_at"] = int(time.time())
        return 201, body, default_json_headers


class ConfigurationEndpoint(ClientConfigurationEndpoint):
    def __init__(self, server=None):
        super().__init__(server, claims_classes=CLAIMS)

    def authenticate_token(self, request):
        value, client_id = _bearer(request), request.client_id_in_path
        client = state = None
        # (PostgreSQL text cannot hold NUL; no client id is longer than 64.)
        if value is not None and client_id and len(client_id) <= 64 and "\x00" not in client_id:
            client = Client.objects.filter(client_id=client_id, is_active=True).first()
        if client is not None:
            state = client.registration_token_state(value)
        if state is None:
            # RFC 6750 §3.1: not valid for this record; do not say whether it exists.
            raise InvalidTokenError("A valid registration access token is needed.")
        return _RegistrationToken(client, value, state)

    def authenticate_client(self, request):
        client = request.credential.client
        if client.client_id != request.client_id_in_path:
            # RFC 6750 §3.1: not valid for this record; do not say whether it exists.
            raise InvalidTokenError("A valid registration access token is needed.")
        return client

    def extract_client_metadata(self, request):
        check_metadata(request.payload.data)
        return super().extract_client_metadata(request)

    def create_read_client_response(self, client, request):
        status, body, headers = super().create_read_client_response(client, request)
        if secret := getattr(request, "new_client_secret", None):
            body["client_secret"] = secret
        return status, body, headers

    def check_permission(self, client, request) -> bool:
        return True

    def revoke_access_token(self, request, token) -> None:
        pass  # only ever called with a token whose client is gone

    def get_server_metadata(self) -> dict:
        return provider_metadata()

    def introspect_client(self, client) -> dict:
        return describe(client)

    def generate_client_registration_info(self, client, request) -> dict:
        credential = request.credential
        if rotates(request, credential.state):
            return registration_info(client, rotate_registration_token(client))
        return registration_info(client, credential.value)  # RFC 7592 §3: still required

    def update_client(self, client, client_metadata, request) -> Client:
        # RFC 7592 §2.2: the request replaces the registration as a whole.
        had_secret, consent = bool(client.secret_digest), client.consent
        fields = client_fields(client_metadata)
        if consent == Client.Consent.ASK:
            fields["consent"] = consent  # an operator's stricter choice stands
        client = apply(client, fields)
        needs_secret = not (client.is_public or client.uses_keys)
        if needs_secret != had_secret:
            # Public or private_key_jwt: no secret kept; back to a secret method: a fresh one.
            request.new_client_secret = client.set_new_secret()
        # Not the registration token fields: a concurrent rotation may have moved them since
        # this row was read, and rotate_registration_token() alone writes them.
        client.save(update_fields=UPDATABLE_FIELDS)
        return client

    def delete_client(self, client, request) -> None:
        revocation.deactivate_client(client)
        client.delete()


class _RegistrationToken:
    """The registration access token a request presented: its client, its value, and whether it
    is the current one or the one replaced by the last rotation ("previous")."""

    def __init__(self, client: Client, value: str, state: str):
        self.client, self.value, self.state = client, value, state

    def check_client(self, client: Client) -> bool:
        return self.client.pk == client.pk
