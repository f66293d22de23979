"""OpenID Connect endpoints: discovery, userinfo, RP-initiated logout."""

from __future__ import annotations

import json

from authlib.oauth2 import OAuth2Error
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts.sessions import SID_KEY
from tokens import cors, scopes
from tokens.csp import form_action_policy, redirect_origin
from tokens.models import Client
from tokens.oauth import resource
from tokens.oauth.oidc import ID_TOKEN_ALGORITHMS, SCOPE_CLAIMS, user_claims
from tokens.oauth.server import get_server

AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]


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
        "scopes_supported": scopes.offered(),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": list(Client.GrantType.values),
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ID_TOKEN_ALGORITHMS,
        "token_endpoint_auth_methods_supported": AUTH_METHODS,
        "introspection_endpoint_auth_methods_supported": AUTH_METHODS[:2],
        "revocation_endpoint_auth_methods_supported": AUTH_METHODS,
        "code_challenge_methods_supported": ["S256"],
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
        "prompt_values_supported": ["none", "login", "consent", "select_account"],
        "claims_parameter_supported": False,
        "request_parameter_supported": False,
        "request_uri_parameter_supported": False,
        "authorization_response_iss_parameter_supported": True,
        "backchannel_logout_supported": True,
        "backchannel_logout_session_supported": True,
        "frontchannel_logout_supported": False,
    }


@require_GET
def discovery(request: HttpRequest) -> JsonResponse:
    """OpenID Connect Discovery 1.0 §4 and RFC 8414 §3 serve the same document."""
    response = JsonResponse(provider_metadata())
    response["Cache-Control"] = "public, max-age=300"
    response["Access-Control-Allow-Origin"] = "*"
    return response


def _bearer_error(error: resource.TokenError) -> JsonResponse:
    body = {"error": error.error or "invalid_request"}
    if error.description:
        body["error_description"] = error.description
    response = JsonResponse(body, status=error.status)
    response["WWW-Authenticate"] = error.www_authenticate()
    response["Cache-Control"] = "no-store"
    return response


@csrf_exempt  # a bearer token, not a cookie, authenticates this request
@never_cache
@require_http_methods(["GET", "POST", "OPTIONS"])
def userinfo(request: HttpRequest) -> HttpResponse:
    """OIDC Core §5.3: the claims the token's scopes allow. RFC 6750 errors."""
    if request.method == "OPTIONS":
        return cors.preflight(request, "GET, POST")
    try:
        claims = resource.verify(request, ("openid",))
    except resource.TokenError as error:
        return _bearer_error(error)
    user = resource.token_user(claims)
    if not user.is_authenticated:
        return _bearer_error(
            resource.TokenError("invalid_token", "The token does not speak for a person.")
        )
    response = JsonResponse(user_claims(user, claims.get("scope", "").split()))
    response["Access-Control-Allow-Origin"] = "*"  # a bearer token, never a cookie, grants this
    return response


@csrf_exempt  # relying parties may POST here from their own origin (RP-Initiated Logout §2)
@never_cache
@require_http_methods(["GET", "POST"])
def end_session(request: HttpRequest) -> HttpResponse:
    """RP-Initiated Logout 1.0. A request tied to this browser's session (a valid id_token_hint
    for it) signs out at once; anything else asks the person first."""
    server = get_server()
    try:
        logout = server.validate_endpoint_request("end_session", request)
    except OAuth2Error as error:
        return render(
            request,
            "tokens/logout_error.html",
            {"description": error.get_error_description()},
            status=400,
        )
    if request.user.is_authenticated and not _tied_to_this_session(request, logout.id_token_claims):
        response = render(
            request,
            "tokens/logout_confirm.html",
            {"client": logout.client, "parameters": _logout_parameters(request)},
        )
        if (
            logout.redirect_uri
        ):  # the confirmed sign-out redirects there: CSP form-action must allow it
            response["Content-Security-Policy"] = form_action_policy(
                redirect_origin(logout.redirect_uri)
            )
        return response
    return _finish_logout(request, server, logout)


@require_POST
def end_session_confirmed(request: HttpRequest) -> HttpResponse:
    """The confirmation page's answer; CSRF-protected, unlike the RP-facing endpoint."""
    server = get_server()
    try:
        logout = server.validate_endpoint_request("end_session", request)
    except OAuth2Error as error:
        return render(
            request,
            "tokens/logout_error.html",
            {"description": error.get_error_description()},
            status=400,
        )
    return _finish_logout(request, server, logout)


def _tied_to_this_session(request: HttpRequest, claims: dict | None) -> bool:
    if not claims:
        return False
    sid = claims.get("sid")
    if sid:
        return sid == request.session.get(SID_KEY)
    return str(claims.get("sub")) == str(request.user.pk)


def _logout_parameters(request: HttpRequest) -> list[tuple[str, str]]:
    names = (
        "id_token_hint",
        "client_id",
        "post_logout_redirect_uri",
        "state",
        "logout_hint",
        "ui_locales",
    )
    data = request.POST if request.method == "POST" else request.GET
    return [(name, data[name]) for name in names if data.get(name)]


def _finish_logout(request: HttpRequest, server, logout) -> HttpResponse:
    if request.user.is_authenticated:
        response = server.create_endpoint_response("end_session", logout)
    else:
        response = None  # nobody to sign out; still honour a valid redirect
        if logout.redirect_uri:
            response = HttpResponse(status=302)
            response["Location"] = logout.redirect_uri
    return response or render(request, "accounts/logged_out.html")


def _json_problem(request: HttpRequest) -> JsonResponse | None:
    """RFC 7591 §3.1: a JSON object in the body; anything else is invalid_client_metadata."""
    if request.content_type != "application/json":
        return _registration_error("invalid_client_metadata", "The body must be application/json.")
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > 65_536 or len(request.body) > 65_536:
        return _registration_error("invalid_client_metadata", "The registration is too large.")
    try:
        data = json.loads(request.body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: [[[[...]]]]
        return _registration_error("invalid_client_metadata", "The body is not valid JSON.")
    if not isinstance(data, dict):
        return _registration_error("invalid_client_metadata", "The body must be a JSON object.")
    return None


def _registration_error(error: str, description: str, status: int = 400) -> JsonResponse:
    response = JsonResponse({"error": error, "error_description": description}, status=status)
    response["Cache-Control"] = "no-store"
    return response


@csrf_exempt  # authenticated by an initial access token, not a cookie
@never_cache
def register(request: HttpRequest) -> HttpResponse:
    """RFC 7591 §3: POST the client's metadata, get its client_id (and secret) back."""
    if request.method != "POST":
        response = _registration_error("invalid_request", "Use POST.", status=405)
        response["Allow"] = "POST"
        return response
    if problem := _json_problem(request):
        return problem
    return get_server().create_endpoint_response("client_registration", request)


@csrf_exempt  # authenticated by the registration access token
@never_cache
def client_configuration(request: HttpRequest, client_id: str) -> HttpResponse:
    """RFC 7592: read (GET), replace (PUT) or delete (DELETE) one's own registration."""
    if request.method not in ("GET", "PUT", "DELETE"):
        response = _registration_error("invalid_request", "Use GET, PUT or DELETE.", status=405)
        response["Allow"] = "GET, PUT, DELETE"
        return response
    if request.method == "PUT" and (problem := _json_problem(request)):
        return problem
    return get_server().create_endpoint_response("client_configuration", request)
