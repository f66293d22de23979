"""Headers every response carries that Django's SecurityMiddleware does not set."""

from django.conf import settings
from django.http import HttpRequest, HttpResponse


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
