"""The provider's metadata: OpenID Connect Discovery 1.0 §3 and RFC 8414 §2. Served by the
discovery view and handed to Authlib's registration endpoints (RFC 7591/7592), which check
requested client metadata against it."""

from __future__ import annotations

from django.conf import settings
from django.urls import reverse

from accounts import assurance
from tokens import dpop, scopes
from tokens.models import CLIENT_SIGNING_ALGORITHMS, Client
from tokens.oauth.oidc import ID_TOKEN_ALGORITHMS, SCOPE_CLAIMS

AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none", "private_key_jwt"]
INTROSPECTION_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt"]
SIGNING_ALGORITHMS = list(CLIENT_SIGNING_ALGORITHMS)
USERINFO_ALGORITHMS = ["RS256", "ES256"]  # what tokens/keys.py signs with


def _url(name: str) -> str:
    return settings.ISSUER + reverse(name)


def provider_metadata() -> dict:
    """Everything advertised here works; nothing that does not work is advertised."""
    return {
        "issuer": settings.ISSUER,
        "authorization_endpoint": _url("tokens:authorize"),
        "token_endpoint": _url("tokens:token"),
        "userinfo_endpoint": _url("tokens:userinfo"),
        "jwks_uri": _url("tokens:jwks"),
        "registration_endpoint": _url("tokens:register"),
        "end_session_endpoint": _url("tokens:end_session"),
        "introspection_endpoint": _url("tokens:introspect"),
        "revocation_endpoint": _url("tokens:revoke"),
        "pushed_authorization_request_endpoint": _url("tokens:par"),
        "require_pushed_authorization_requests": settings.REQUIRE_PUSHED_AUTHORIZATION_REQUESTS,
        "device_authorization_endpoint": _url("tokens:device_authorization"),
        "scopes_supported": scopes.offered(),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": list(Client.GrantType.values),
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ID_TOKEN_ALGORITHMS,
        "token_endpoint_auth_methods_supported": AUTH_METHODS,
        "token_endpoint_auth_signing_alg_values_supported": SIGNING_ALGORITHMS,
        "introspection_endpoint_auth_methods_supported": INTROSPECTION_AUTH_METHODS,
        "introspection_endpoint_auth_signing_alg_values_supported": SIGNING_ALGORITHMS,
        "revocation_endpoint_auth_methods_supported": AUTH_METHODS,
        "revocation_endpoint_auth_signing_alg_values_supported": SIGNING_ALGORITHMS,
        "code_challenge_methods_supported": ["S256"],
        "dpop_signing_alg_values_supported": dpop.ALGORITHMS,  # RFC 9449 §5.1
        "claims_supported": sorted(
            {
                "sub",
                "iss",
                "aud",
                "exp",
                "iat",
                "auth_time",
                "nonce",
                "acr",
                "amr",
                "azp",
                "sid",
                "at_hash",
            }
            | {claim for claims in SCOPE_CLAIMS.values() for claim in claims}
        ),
        "acr_values_supported": list(assurance.LEVELS),
        "prompt_values_supported": ["none", "login", "consent", "select_account"],
        "claims_parameter_supported": False,
        # OIDC Core §6 / RFC 9101: request objects by value and from a pre-registered https
        # request_uri (OpenID Registration §2); PAR's request_uri is the pushed one's URN.
        "request_parameter_supported": True,
        "request_uri_parameter_supported": True,
        "require_request_uri_registration": True,
        "request_object_signing_alg_values_supported": [*SIGNING_ALGORITHMS, "none"],
        # OIDC Core §5.3.2: for clients that registered userinfo_signed_response_alg.
        "userinfo_signing_alg_values_supported": USERINFO_ALGORITHMS,
        "authorization_response_iss_parameter_supported": True,
        "backchannel_logout_supported": True,
        "backchannel_logout_session_supported": True,
        "frontchannel_logout_supported": False,
    }
