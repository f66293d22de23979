"""Headers every response carries that Django's SecurityMiddleware does not set."""

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.urls import resolve


class SecurityHeadersMiddleware:
    """Add a strict Content-Security-Policy (frame-ancestors 'none' backs up X-Frame-Options).

    A view that needs a different policy (for example a form that posts to a client's origin)
    sets the header itself; it is left alone here.
    """

    def __init__(self, get_response):
        self.get_response = get_response
        self.policy = settings.CONTENT_SECURITY_POLICY

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        response.headers.setdefault("Content-Security-Policy", self.policy)
        response.headers.setdefault(
            "Permissions-Policy", "camera=(), microphone=(), geolocation=()"
        )
        return response


class ProtocolFastPath:
    """The machine-to-machine endpoints skip the middleware that serves browsers.

    Token, introspection, revocation, userinfo, JWKS and discovery use no session, cookie, CSRF
    token, message or HTML page, so sessions, CSRF, authentication, messages, static files,
    clickjacking and CSP headers are nothing but cost there (a fifth of the token endpoint's
    time). Request ids, metrics, health and SecurityMiddleware (HSTS, nosniff) still run, as do
    the views' own protections and Django's error handling (a failing view still gets the 503
    or 500 answer), and ALLOWED_HOSTS holds here as everywhere else.
    """

    PATHS = frozenset(
        {
            "/token",
            "/introspect",
            "/revoke",
            "/userinfo",
            "/.well-known/jwks.json",
            "/.well-known/openid-configuration",
            "/.well-known/oauth-authorization-server",
        }
    )

    def __init__(self, get_response):
        self.get_response = get_response
        self.matches: dict = {}  # these paths take no arguments: resolve each once

    def __call__(self, request: HttpRequest) -> HttpResponse:
        path = request.path_info
        if path not in self.PATHS:
            return self.get_response(request)
        request.get_host()  # DisallowedHost (400) for a Host not in ALLOWED_HOSTS, as CommonMiddleware does
        match = self.matches.get(path)
        if match is None:
            match = self.matches[path] = resolve(path)
        request.resolver_match = match
        return match.func(request)
