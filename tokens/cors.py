"""CORS for clients that run in a browser (public SPAs) and call the token, revocation and
userinfo endpoints from their own origin.

An origin is trusted when it is the origin of a registered redirect URI of an active client
(what Keycloak calls web origins, by default). The token and revocation endpoints answer with
``Access-Control-Allow-Origin`` only when the client named in the request owns that origin.
Requests without an ``Origin`` header (servers, curl) pay nothing.
"""

from __future__ import annotations

from contextlib import suppress
from urllib.parse import urlsplit

from authlib.oauth2.rfc6749.util import extract_basic_authorization
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse

from tokens import client_cache, clients
from tokens.models import Client

CACHE_KEY = client_cache.CORS_ORIGINS_KEY  # dropped with the clients' copies


def origin_of(uri: str) -> str | None:
    parts = urlsplit(uri)
    return (
        f"{parts.scheme}://{parts.netloc}"
        if parts.scheme in ("https", "http") and parts.netloc
        else None
    )


def client_origins(client: Client) -> set[str]:
    return {origin for uri in client.redirect_uris if (origin := origin_of(uri))}


def known_origins() -> set[str]:
    try:
        origins = cache.get(CACHE_KEY)
    except Exception:  # the cache is down: the database answers
        origins = None
    if origins is None:
        origins = set()
        for uris in Client.objects.filter(is_active=True).values_list("redirect_uris", flat=True):
            origins |= {origin for uri in uris if (origin := origin_of(uri))}
        with suppress(Exception):  # an uncached answer is still right
            cache.set(CACHE_KEY, origins, 60)
    return origins


def preflight(request: HttpRequest, methods: str) -> HttpResponse:
    response = HttpResponse(status=204)
    origin = request.headers.get("Origin")
    if origin and origin in known_origins():
        response["Access-Control-Allow-Origin"] = origin
        response["Access-Control-Allow-Methods"] = methods
        response["Access-Control-Allow-Headers"] = "Authorization, Content-Type, DPoP"
        response["Access-Control-Max-Age"] = "600"
    response["Vary"] = "Origin"
    return response


def allow_client_origin(request: HttpRequest, response: HttpResponse) -> HttpResponse:
    """Let the browser hand this answer to the client's page, if the page is the client's."""
    origin = request.META.get("HTTP_ORIGIN")  # (request.headers would copy every header first)
    if not origin:
        return response
    try:
        client_id = request.POST.get("client_id") or extract_basic_authorization(request.headers)[0]
    except ValueError:  # an undecodable Basic header was already answered as invalid_client
        return response
    client = clients.active_client(client_id)
    if client is not None and origin in client_origins(client):
        response["Access-Control-Allow-Origin"] = origin
        if response.has_header("DPoP-Nonce"):  # RFC 9449 §8: the page must be able to read it
            response["Access-Control-Expose-Headers"] = "DPoP-Nonce"
    response["Vary"] = "Origin"
    return response
