"""Headers every response carries that Django's SecurityMiddleware does not set, and the
router that sends the protocol endpoints past the browser middleware."""

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse
from django.urls import ResolverMatch, resolve, reverse
from django.utils.module_loading import import_string


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


class ProtocolRouter:
    """Where the two middleware stacks part (settings: PROTOCOL_MIDDLEWARE, BROWSER_MIDDLEWARE).

    Every request has run PROTOCOL_MIDDLEWARE by the time it gets here. A request for one of
    PROTOCOL_URL_NAMES (token, introspection, revocation, userinfo, JWKS, discovery) goes
    straight to its view: those endpoints use no session, cookie, CSRF token, message or HTML
    page, so the browser middleware is nothing but cost there (a fifth of the token endpoint's
    time). Every other request continues through BROWSER_MIDDLEWARE and Django's own view
    handling. ALLOWED_HOSTS holds on both paths, and Django's error handling wraps both (a
    failing view still gets the 503 or 500 answer).

    Both lists are checked when the handler is built: a middleware in MIDDLEWARE that is in
    neither list stops start-up, so nothing added later skips the protocol endpoints, or runs
    on them, without someone having said so (tests/test_middleware.py runs every route).
    """

    PATH = "authserver.middleware.ProtocolRouter"
    # Django calls these hooks only from its own view handling, which the protocol path skips.
    VIEW_HOOKS = ("process_view", "process_exception", "process_template_response")

    def __init__(self, get_response):
        self.get_response = get_response
        check_middleware_lists()
        self.routes: dict | None = None  # path -> ResolverMatch, once the URLconf can be read

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if self.routes is None:
            self.routes = protocol_routes()
        match = self.routes.get(request.path_info)
        if match is None:
            return self.get_response(request)
        # DisallowedHost (400) for a Host not in ALLOWED_HOSTS, as CommonMiddleware does; kept
        # for the view (tokens/oauth/server.py), as get_host() checks the list again each call.
        request.checked_host = request.get_host()
        request.resolver_match = match
        response = match.func(request)
        if response is None:
            raise ValueError(f"The view {match.view_name} returned None instead of a response.")
        return response


def check_middleware_lists() -> None:
    """MIDDLEWARE must be PROTOCOL_MIDDLEWARE, the router, BROWSER_MIDDLEWARE, in that order."""
    protocol, browser = list(settings.PROTOCOL_MIDDLEWARE), list(settings.BROWSER_MIDDLEWARE)
    expected = [*protocol, ProtocolRouter.PATH, *browser]
    if list(settings.MIDDLEWARE) != expected:
        unclassified = [name for name in settings.MIDDLEWARE if name not in expected]
        raise ImproperlyConfigured(
            "MIDDLEWARE must be [*PROTOCOL_MIDDLEWARE, ProtocolRouter, *BROWSER_MIDDLEWARE]: add a "
            "middleware to one of those two lists, not to MIDDLEWARE."
            + (f" Not in either list: {', '.join(unclassified)}." if unclassified else "")
        )
    for name in protocol:
        hooks = [hook for hook in ProtocolRouter.VIEW_HOOKS if hasattr(import_string(name), hook)]
        if hooks:
            raise ImproperlyConfigured(
                f"{name} is in PROTOCOL_MIDDLEWARE but has {', '.join(hooks)}, which the "
                "protocol endpoints never call: put it in BROWSER_MIDDLEWARE, or drop the hook."
            )


def protocol_routes() -> dict[str, ResolverMatch]:
    """PROTOCOL_URL_NAMES resolved once, by path. These routes take no arguments, so a path
    names exactly one of them."""
    return {path: resolve(path) for path in (reverse(name) for name in settings.PROTOCOL_URL_NAMES)}
