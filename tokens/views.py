"""OAuth 2.0 endpoints. Thin: parse, refuse what the RFCs refuse, hand the rest to Authlib."""

from __future__ import annotations

import base64
import functools
import logging
import time
from urllib.parse import urlencode, urlsplit

from authlib.common.urls import add_params_to_uri
from authlib.oauth2 import OAuth2Error
from authlib.oidc.core.errors import (
    ConsentRequiredError,
    InteractionRequiredError,
    LoginRequiredError,
)
from django.conf import settings
from django.core.exceptions import (
    BadRequest,
    RequestDataTooBig,
    SuspiciousOperation,
    TooManyFieldsSent,
)
from django.db import transaction
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse, QueryDict
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_http_methods

from accounts import assurance, factors
from accounts.sessions import AMR_KEY, AUTH_TIME_KEY
from tokens import clients, consent, cors, dpop, keys, pushed_requests
from tokens.csp import form_action_policy, https_origin, redirect_origin, with_image_origin
from tokens.oauth import request_objects, required
from tokens.oauth.oidc import OidcParameters, read_oidc_parameters
from tokens.oauth.pushed import PushedRequestRequiredError
from tokens.oauth.registration import error_text
from tokens.oauth.server import get_server

logger = logging.getLogger(__name__)

FORM = "application/x-www-form-urlencoded"
# RFC 8693 §2.1 and RFC 8707 §2: the target of a token request may be named several times.
REPEATABLE = frozenset({"audience", "resource"})


def no_store(view):
    """RFC 6749 §5.1: every answer of a protocol endpoint carries ``Cache-Control: no-store`` and
    ``Pragma: no-cache``. Django's never_cache says the same through patch_cache_control, whose
    parsing cost the token endpoint a tenth of its time."""

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        return _never_stored(view(request, *args, **kwargs))

    return wrapper


def _never_stored(response: HttpResponse) -> HttpResponse:
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    return response


def oauth_error(error: str, description: str, status: int = 400, **headers: str) -> JsonResponse:
    """An RFC 6749 §5.2 error body, never cached."""
    response = _never_stored(
        JsonResponse({"error": error, "error_description": description}, status=status)
    )
    for name, value in headers.items():
        response[name.replace("_", "-")] = value
    return response


def form_problem(request: HttpRequest) -> JsonResponse | None:
    """What RFC 6749 requires of a request to the token, introspection and revocation endpoints,
    checked before anything reads it. Every refusal is an RFC 6749 §5.2 error, never a 500."""
    if request.method != "POST":
        return oauth_error("invalid_request", "Use POST.", status=405, Allow="POST")
    if request.META.get("QUERY_STRING") and request.GET:  # (parsed only when there is one)
        # RFC 6749 §2.3.1 / §3.2: credentials and tokens go in the body, never in the URL.
        return oauth_error("invalid_request", "Send parameters in the request body, not the URL.")
    if request.content_type != FORM:
        return oauth_error("invalid_request", f"The body must be {FORM}.")
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return oauth_error("invalid_request", "Bad Content-Length.")
    if length > settings.OAUTH_MAX_BODY_BYTES:
        return oauth_error("invalid_request", "The request body is too large.")
    try:
        body = request.POST
    except (
        BadRequest,
        RequestDataTooBig,
        TooManyFieldsSent,
        SuspiciousOperation,
        UnicodeDecodeError,
    ):
        return oauth_error("invalid_request", "The request body could not be read.")
    for name, values in body.lists():
        # (error_text: RFC 6749 §5.2 allows only printable ASCII in descriptions.)
        if len(values) > 1 and name not in REPEATABLE:
            # RFC 6749 §3.2: parameters MUST NOT be included more than once.
            return oauth_error(
                "invalid_request", f"'{error_text(name[:40])}' was sent more than once."
            )
        if len(values[0]) > settings.OAUTH_MAX_PARAMETER_LENGTH or len(name) > 100:
            return oauth_error("invalid_request", f"'{error_text(name[:40])}' is too long.")
    return _basic_credentials_problem(request)


def _basic_credentials_problem(request: HttpRequest) -> JsonResponse | None:
    """Authlib reads a Basic header it cannot decode (bad base64, not UTF-8, no colon) with an
    exception; such a header is a failed client authentication (RFC 6749 §2.3.1, §5.2)."""
    header = request.META.get("HTTP_AUTHORIZATION", "")
    if " " not in header:
        return None  # Authlib reads no credentials from it
    parts = header.split(None, 1)  # as Authlib splits it
    if len(parts) == 2 and parts[0].lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(parts[1], validate=True).decode() if len(parts) == 2 else ""
    except ValueError:  # binascii.Error and UnicodeDecodeError are both ValueErrors
        decoded = ""
    if ":" not in decoded or "\x00" in decoded:
        return oauth_error(
            "invalid_client",
            "Malformed Basic credentials.",
            status=401,
            WWW_Authenticate='Basic error="invalid_client"',
        )
    return None


_SECRETS = (
    "client_secret", "client_assertion", "code", "code_verifier", "refresh_token", "token",
    "subject_token", "actor_token",
)  # fmt: skip


@csrf_exempt  # clients authenticate with credentials, not cookies
@no_store
@sensitive_post_parameters(*_SECRETS)
def token(request: HttpRequest) -> HttpResponse:
    if request.method == "OPTIONS":
        return cors.preflight(request, "POST")
    if problem := form_problem(request):
        return problem
    if request.POST.get("grant_type") in ("client_credentials", "refresh_token"):
        # client_credentials reads and writes no row; a refresh writes in one statement (the
        # rotation with its successor, tokens/token_store.py), atomic on its own, and what
        # else it may write (a replay revoking the family) has its own transaction. No
        # transaction to open: BEGIN and COMMIT are two round trips of the hot path.
        response = get_server().create_token_response(request)
    else:
        # One transaction: a code or refresh token is used up together with the tokens it
        # buys, or not at all.
        with transaction.atomic():
            response = get_server().create_token_response(request)
    if settings.DPOP_NONCE and "HTTP_DPOP" in request.META:
        response["DPoP-Nonce"] = dpop.current_nonce()  # RFC 9449 §8.2: the next one to use
    return cors.allow_client_origin(request, response)


@csrf_exempt
@no_store
@sensitive_post_parameters(*_SECRETS)
def introspect(request: HttpRequest) -> HttpResponse:
    if problem := form_problem(request):
        return problem
    return get_server().create_endpoint_response("introspection", request)


@csrf_exempt
@no_store
@sensitive_post_parameters(*_SECRETS)
def revoke(request: HttpRequest) -> HttpResponse:
    if request.method == "OPTIONS":
        return cors.preflight(request, "POST")
    if problem := form_problem(request):
        return problem
    with transaction.atomic():
        response = get_server().create_endpoint_response("revocation", request)
    return cors.allow_client_origin(request, response)


@csrf_exempt
@no_store
@sensitive_post_parameters(*_SECRETS)
def pushed_authorization_request(request: HttpRequest) -> HttpResponse:
    """RFC 9126 §2: the client pushes its authorization request, gets a request_uri for it."""
    if problem := form_problem(request):
        return problem
    return get_server().create_endpoint_response("pushed_authorization", request)


@csrf_exempt
@no_store
@sensitive_post_parameters(*_SECRETS)
def device_authorization(request: HttpRequest) -> HttpResponse:
    """RFC 8628 §3.1: a device asks to be signed in; it gets a device code and a user code."""
    if problem := form_problem(request):
        return problem
    return get_server().create_endpoint_response("device_authorization", request)


def jwks(request: HttpRequest) -> JsonResponse:
    keys.signing_key()  # a fresh install publishes its first key before anything asks
    response = JsonResponse(keys.jwks())
    response["Cache-Control"] = "public, max-age=300"
    response["Access-Control-Allow-Origin"] = "*"  # public keys, meant to be fetched by anyone
    return response


# --- the authorization endpoint ---------------------------------------------------------------
@csrf_exempt  # a relying party may POST the request itself; the consent form is checked below
@never_cache
@require_http_methods(["GET", "POST"])
def authorize(request: HttpRequest) -> HttpResponse:
    """RFC 6749 §4.1.1 and OIDC Core §3.1.2: validate, make sure the right person is signed in
    (recently enough), ask for consent when needed, answer the client."""
    if request.method == "POST" and not request.GET:
        return _posted_authorization_request(request)
    if pushed_requests.is_pushed_reference(request.GET.get("request_uri")):
        return _pushed_authorization_request(request)
    return _authorization_request(request)


def _posted_authorization_request(request: HttpRequest) -> HttpResponse:
    """OIDC Core §3.1.2.1: "Authorization Servers MUST support the use of the HTTP GET and POST
    methods", POST carrying the parameters form-serialized. Our consent form always posts to the
    request's own URL (parameters in the query), so a POST without a query is a relying party's
    request: it gets a 303 to the same request as a GET, which then runs exactly as one."""
    if request.content_type != "application/x-www-form-urlencoded":
        return _error_page(request, "A POSTed authorization request must be form-encoded.")
    params = request.POST.copy()
    for name in ("csrfmiddlewaretoken", "decision"):  # only ever meaningful on the consent form
        params.pop(name, None)
    response = HttpResponse(status=303)
    response["Location"] = f"{reverse('tokens:authorize')}?{params.urlencode()}"
    return response


def _pushed_authorization_request(request: HttpRequest) -> HttpResponse:
    """RFC 9126 §4: ``request_uri`` names what the client pushed, and only that counts (other
    query parameters are ignored). The pushed request stays row-locked while this pass runs, so
    one browser's double submit gets one answer; once the client has its answer, it is spent."""
    with transaction.atomic():
        try:
            claimed = pushed_requests.claim(
                request.GET["request_uri"],
                request.GET.get("client_id"),
                request.COOKIES.get(pushed_requests.BROWSER_COOKIE),
            )
        except pushed_requests.Refused as refusal:
            return _error_page(request, refusal.description)
        query = QueryDict(mutable=True)
        query.update(claimed.parameters(request.session.get(AUTH_TIME_KEY)))
        request.GET = query
        request.pushed_request = claimed  # read by OAuth2Request (tokens/oauth/server.py)
        response = _authorization_request(request)
        if _answers_the_client(response, claimed):
            pushed_requests.complete(claimed)
    pushed_requests.keep_browser_binding(response, claimed)
    return response


def _answers_the_client(response: HttpResponse, claimed: pushed_requests.Claimed) -> bool:
    client = claimed.row.client
    redirect_uri = claimed.row.parameters.get("redirect_uri") or client.get_default_redirect_uri()
    location = response.get("Location", "") if response.status_code in (302, 303) else ""
    return bool(redirect_uri) and location.startswith(redirect_uri)


@csrf_protect
def _authorization_request(request: HttpRequest) -> HttpResponse:
    if problem := _parameter_shape_problem(request.GET):
        return _error_page(request, problem)
    if request_objects.carries_request_object(request.GET):
        # OIDC Core §6 / RFC 9101: from here on the request is what its request object says.
        # (The consent form posts back to the original URL, which is resolved again.)
        client = clients.active_client(request.GET.get("client_id"))
        try:
            effective = request_objects.resolve(request.GET, client)
        except OAuth2Error as error:
            return _authorization_error(request, error)
        request.GET = QueryDict(mutable=True)
        request.GET.update(effective)
    if problem := _openid_redirect_problem(request.GET):
        return _error_page(request, problem)
    server = get_server()
    user = request.user if request.user.is_authenticated else None
    try:
        grant = server.get_consent_grant(request, end_user=user)
        oidc = _oidc_parameters(request, grant)
    except OAuth2Error as error:
        return _authorization_error(request, error)
    pushed = getattr(request, "pushed_request", None)
    if pushed is None and pushed_requests.required_for(grant.client):
        return _error_back(request, grant, PushedRequestRequiredError)

    if _needs_authentication(request, user, oidc):
        if "none" in oidc.prompts:
            return _error_back(request, grant, LoginRequiredError)
        return _redirect_to_sign_in(request, user, oidc)
    if stop := _step_up(request, grant, user, oidc):
        return stop

    client, scopes = grant.client, (grant.request.scope or "").split()
    if request.method == "POST":
        decision = request.POST.get("decision")
        if decision == "allow":
            consent.remember_consent(user, client, scopes)
            return _respond(request, grant, user)
        if decision == "deny":
            return _respond(request, grant, None)
    elif "consent" not in oidc.prompts and consent.has_consent(user, client, scopes):
        return _respond(request, grant, user)
    if "none" in oidc.prompts:
        return _error_back(request, grant, ConsentRequiredError)
    return _consent_page(request, grant, scopes)


def _oidc_parameters(request: HttpRequest, grant) -> OidcParameters:
    return read_oidc_parameters(request.GET, grant.redirect_uri)


def _needs_authentication(request: HttpRequest, user, oidc: OidcParameters) -> bool:
    if user is None or oidc.prompts & {"login", "select_account"}:
        return True
    if oidc.hinted_subject is not None and oidc.hinted_subject != str(user.pk):
        return True  # OIDC Core §3.1.2.1: the hinted person is not the one signed in
    if oidc.max_age is not None:
        auth_time = request.session.get(AUTH_TIME_KEY)
        return not auth_time or time.time() - auth_time > oidc.max_age
    return False


class UnmetAuthenticationRequirementsError(OAuth2Error):
    """OpenID Connect Core Error Code unmet_authentication_requirements 1.0: the essential
    sign-in strength (OIDC Core §5.5.1.1, or the client's own requirement) cannot be met."""

    error = "unmet_authentication_requirements"
    description = "This sign-in cannot reach the required authentication level."


def _step_up(request: HttpRequest, grant, user, oidc: OidcParameters) -> HttpResponse | None:
    """``acr_values``, an essential ``acr`` claim or the client's requirement ask for a stronger
    sign-in than this session's: ask for the missing factor (not a new sign-in). When the person
    has no such factor, an essential level is an error; a voluntary one gets the best reached."""
    client = grant.client
    wanted = assurance.requested(
        request.GET.get("acr_values"),
        request.GET.get("claims"),
        default_acr_values=client.default_acr_values,
        required_acr=client.required_acr,
    )
    if wanted.met_by(request.session.get(AMR_KEY, [])):
        return None  # (always, at no cost, for clients that ask for nothing)
    reachable = reachable_level(user, wanted)
    if reachable is None:
        if wanted.essential:
            return _error_back(request, grant, UnmetAuthenticationRequirementsError)
        return None
    if "none" in oidc.prompts:
        # OIDC Core §3.1.2.6: the request needs the person to do something.
        return _error_back(request, grant, InteractionRequiredError)
    return factor_step(reachable, request.get_full_path())


def reachable_level(user, wanted: assurance.AcrRequest) -> str | None:
    """The first level asked for that this person has the factors to reach, if any."""
    return next((acr for acr in wanted.values if factors.can_reach(user, acr)), None)


def factor_step(acr: str, next_url: str) -> HttpResponseRedirect:
    """Off to the sign-in's next factor, to reach ``acr``, then back to ``next_url``
    (here, and at /device: tokens/device_views.py)."""
    query = urlencode({"acr": acr, "next": next_url})
    return HttpResponseRedirect(f"{reverse('accounts:login_factor')}?{query}")


def _redirect_to_sign_in(request: HttpRequest, user, oidc: OidcParameters) -> HttpResponse:
    """Off to the sign-in page, coming back to this request once it is satisfied: without
    prompt=login, max_age and id_token_hint, which a fresh sign-in has just answered (keeping
    them would send the person round in circles)."""
    continuation = request.GET.copy()
    for name in ("max_age", "id_token_hint"):
        continuation.pop(name, None)
    remaining = oidc.prompts - {"login", "select_account"}
    if remaining:
        continuation["prompt"] = " ".join(sorted(remaining))
    else:
        continuation.pop("prompt", None)
    query = {"next": f"{request.path}?{continuation.urlencode()}"}
    if getattr(request, "pushed_request", None) is not None:
        # RFC 9126 §4: back to the same request_uri (the pushed request is immutable; what the
        # sign-in answers is dropped by pushed_requests.Claimed.parameters).
        query["next"] = request.get_full_path()
    if user is not None:
        query["reauth"] = "1"
    if oidc.login_hint:
        query["login_hint"] = oidc.login_hint
    return HttpResponseRedirect(f"{reverse('accounts:login')}?{urlencode(query)}")


def _error_back(request: HttpRequest, grant, error_class) -> HttpResponse:
    error = error_class(redirect_uri=grant.redirect_uri)
    error.state = request.GET.get("state")
    return _authorization_error(request, error)


def _parameter_shape_problem(params: QueryDict) -> str | None:
    for name, values in params.lists():
        if len(values) > 1:
            return f"The parameter '{name[:40]}' was sent more than once (RFC 6749 §3.1)."
        if len(values[0]) > settings.OAUTH_MAX_PARAMETER_LENGTH:
            return f"The parameter '{name[:40]}' is too long."
    return None


def _openid_redirect_problem(params: QueryDict) -> str | None:
    # Nowhere to send this error to, so an error page (OIDC Core §3.1.2.6, RFC 6749 §4.1.2.1).
    return required.openid_redirect_uri_problem(params)


def _respond(request: HttpRequest, grant, user) -> HttpResponse:
    """Send the person back to the client, with a code or with access_denied."""
    response = get_server().create_authorization_response(
        request=grant.request, grant_user=user, grant=grant
    )
    return _with_issuer(response)


def _with_issuer(response: HttpResponse) -> HttpResponse:
    # RFC 9207 §2: every authorization response, errors included, names its issuer (mix-up defence).
    if response.status_code in (301, 302, 303) and response.get("Location"):
        response["Location"] = add_params_to_uri(response["Location"], {"iss": settings.ISSUER})
    return response


def _authorization_error(request: HttpRequest, error: OAuth2Error) -> HttpResponse:
    if error.redirect_uri:
        # The client and its redirect URI checked out: the error goes back to the client.
        status, body, headers = error()
        response = HttpResponse(body, status=status)
        for name, value in headers:
            response[name] = value
        return _with_issuer(response)
    # RFC 6749 §4.1.2.1: unknown client or bad redirect URI: tell the person, never redirect.
    return _error_page(request, error.get_error_description() or error.error)


def _error_page(request: HttpRequest, description: str) -> HttpResponse:
    return render(request, "tokens/authorize_error.html", {"description": description}, status=400)


def _consent_page(request: HttpRequest, grant, scopes: list[str]) -> HttpResponse:
    described = [(scope, settings.OAUTH_SCOPES.get(scope, scope)) for scope in scopes]
    redirect = urlsplit(grant.redirect_uri)
    registered = grant.client.metadata
    # OpenID Registration §2: logo_uri, policy_uri and tos_uri are shown to the person; only
    # https ones (a link or image elsewhere could be anything).
    logo_origin = https_origin(registered.get("logo_uri"))
    links = {name: registered.get(name) for name in ("policy_uri", "tos_uri")}
    response = render(
        request,
        "tokens/consent.html",
        {
            "client": grant.client,
            "scopes": described,
            "redirect_host": redirect.netloc or redirect.scheme,
            "action": request.get_full_path(),
            "logo_uri": registered.get("logo_uri") if logo_origin else None,
            **{name: uri for name, uri in links.items() if https_origin(uri)},
        },
    )
    # The answer is a redirect to the client: the client's origin joins form-action here; the
    # logo's origin joins img-src, on this page only.
    policy = form_action_policy(redirect_origin(grant.redirect_uri))
    response["Content-Security-Policy"] = (
        with_image_origin(policy, logo_origin) if logo_origin else policy
    )
    return response
