"""Content-Security-Policy for pages whose form submission ends on a client's redirect URI.

Browsers hold every redirect that follows a form submission to CSP ``form-action``, so a page
that may send a person back to a client (the consent page, the sign-in page continuing an
authorization request) adds that client's origin to ``'self'``, and nothing more.
"""

import re
from urllib.parse import parse_qs, urlsplit

from django.conf import settings
from django.urls import reverse

from tokens import clients

_HOST = re.compile(r"[A-Za-z0-9.-]+(:[0-9]{1,5})?")


def redirect_origin(redirect_uri: str) -> str:
    parts = urlsplit(redirect_uri)
    return f"{parts.scheme}://{parts.netloc}" if parts.netloc else f"{parts.scheme}:"


def form_action_policy(origin: str) -> str:
    return settings.CONTENT_SECURITY_POLICY.replace(
        "form-action 'self'", f"form-action 'self' {origin}"
    )


def https_origin(uri: str | None) -> str | None:
    """The origin of an https URI a page may show (a client's logo), or None: nothing but a
    plain host and port, so the value cannot smuggle anything into a policy."""
    parts = urlsplit(uri or "")
    if parts.scheme != "https" or not _HOST.fullmatch(parts.netloc or "") or "@" in uri:
        return None
    return f"https://{parts.netloc}"


def with_image_origin(policy: str, origin: str) -> str:
    """``policy`` with ``origin`` added to img-src, and nothing else changed."""
    return policy.replace("img-src 'self' data:", f"img-src 'self' data: {origin}")


def authorization_redirect_origin(next_url: str | None) -> str | None:
    """The client origin a sign-in continuing ``next_url`` may end on: only for an authorization
    request of an active client naming one of its registered redirect URIs."""
    parts = urlsplit(next_url or "")
    if parts.path != reverse("tokens:authorize"):
        return None
    params = parse_qs(parts.query)
    client = clients.active_client((params.get("client_id") or [None])[0])
    if client is None:
        return None
    redirect_uri = (params.get("redirect_uri") or [None])[0] or client.get_default_redirect_uri()
    if not redirect_uri or not client.check_redirect_uri(redirect_uri):
        return None
    return redirect_origin(redirect_uri)
