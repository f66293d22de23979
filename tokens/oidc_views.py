"""OpenID Connect endpoints: discovery, userinfo, RP-initiated logout."""

from __future__ import annotations

import functools
import json

from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6750 import InvalidTokenError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts.sessions import SID_KEY
from tokens import clients, cors
from tokens.csp import form_action_policy, redirect_origin
from tokens.oauth import resource
from tokens.oauth.metadata import provider_metadata
from tokens.oauth.oidc import signed_userinfo, user_claims
from tokens.oauth.server import get_server


@require_GET
def discovery(request: HttpRequest) -> JsonResponse:
    """OpenID Connect Discovery 1.0 §4 and RFC 8414 §3 serve the same document."""
    response = JsonResponse(provider_metadata())
    response["Cache-Control"] = "public, max-age=300"
    response["Access-Control-Allow-Origin"] = "*"
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
    except OAuth2Error as error:
        return resource.error_response(error)
    user = resource.token_user(claims)
    if not user.is_authenticated:
        return resource.error_response(InvalidTokenError("The token does not speak for a person."))
    released = user_claims(user, claims.get("scope", "").split())
    client = clients.active_client(claims.get("client_id"))
    if client is not None and client.userinfo_signed_response_alg:
        # OIDC Core §5.3.2: the client registered a signed response.
        response = HttpResponse(signed_userinfo(released, client), content_type="application/jwt")
    else:
        response = JsonResponse(released)
    response["Access-Control-Allow-Origin"] = "*"  # a bearer token, never a cookie, grants this
    return response


def _validated_logout(view):
    """RP-Initiated Logout 1.0 §2-§3 for both steps: Authlib validates the request (id_token_hint,
    client_id, post_logout_redirect_uri, state) and the view gets it; a bad one gets an error
    page, never a redirect."""

    @functools.wraps(view)
    def wrapper(request: HttpRequest) -> HttpResponse:
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
        return view(request, server, logout)

    return wrapper


@csrf_exempt  # relying parties may POST here from their own origin (RP-Initiated Logout §2)
@never_cache
@require_http_methods(["GET", "POST"])
@_validated_logout
def end_session(request: HttpRequest, server, logout) -> HttpResponse:
    """RP-Initiated Logout 1.0. A request tied to this browser's session (a valid id_token_hint
    for it) signs out at once; anything else asks the person first."""
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
@_validated_logout
def end_session_confirmed(request: HttpRequest, server, logout) -> HttpResponse:
    """The confirmation page's answer; CSRF-protected, unlike the RP-facing endpoint."""
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
