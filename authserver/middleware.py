"""Headers every response carries that Django's SecurityMiddleware does not set."""

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.urls import resolve, reverse


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

    URL_NAMES = (
        "tokens:token",
        "tokens:introspect",
        "tokens:revoke",
        "tokens:userinfo",
        "tokens:jwks",
        "tokens:openid_configuration",
        "tokens:oauth_metadata",
    )

    def __init__(self, get_response):
        self.get_response = get_response
        self.routes: dict | None = None  # path -> ResolverMatch, once the URLconf can be read

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if self.routes is None:
            # These routes take no arguments: resolve each once, from the URLconf's own names.
            self.routes = {
                path: resolve(path) for path in (reverse(name) for name in self.URL_NAMES)
            }
        match = self.routes.get(request.path_info)
        if match is None:
            return self.get_response(request)
        request.get_host()  # DisallowedHost (400) for a Host not in ALLOWED_HOSTS, as CommonMiddleware does
        request.resolver_match = match
        return match.func(request)
