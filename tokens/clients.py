"""Clients: registering one (with its server-generated secret), rotating its secret, finding
the active client a request names (the hot path: process memory, then the shared cache, then
the database), and the initial access tokens that let someone register a client (RFC 7591 §3).

Who writes ``tokens_client``: this module (create, rotate the secret); tokens/admin.py (an
operator's form); tokens/oauth/registration.py (RFC 7591/7592 register, update, delete);
tokens/revocation.py (deactivation); ``seed_demo`` (the quick start's two clients). Every one
of those writes drops the cached copies (tokens/models.py calls tokens/client_cache.invalidate).
``tokens_initialaccesstoken``: this module; the janitor deletes the spent and expired ones.
"""

from __future__ import annotations

import logging
import secrets
from contextlib import suppress
from datetime import timedelta

from django.core.cache import cache
from django.db.models import F
from django.utils import timezone

from tokens import client_cache
from tokens.models import Client, InitialAccessToken, token_digest

logger = logging.getLogger(__name__)

_NO_CLIENT = "no-such-client"


def new_client_id() -> str:
    return secrets.token_urlsafe(18)


def create_client(
    *,
    name: str,
    redirect_uris: list[str] | None = None,
    public: bool = False,
    grant_types: list[str] | None = None,
    scopes: list[str] | None = None,
    **fields,
) -> tuple[Client, str | None]:
    """Register a client; return it and its secret (None for public clients), shown only now."""
    if grant_types is None:
        grant_types = ["authorization_code", "refresh_token"]
    client = Client(
        client_id=new_client_id(),
        name=name,
        client_type=Client.Type.PUBLIC if public else Client.Type.CONFIDENTIAL,
        token_endpoint_auth_method=fields.pop(
            "token_endpoint_auth_method",
            Client.AuthMethod.NONE if public else Client.AuthMethod.BASIC,
        ),
        redirect_uris=list(redirect_uris or []),
        grant_types=list(grant_types),
        allowed_scopes=list(
            scopes if scopes is not None else ["openid", "profile", "email", "offline_access"]
        ),
        **fields,
    )
    secret = client.set_new_secret()
    client.full_clean()
    client.save()
    return client, secret


def rotate_client_secret(client: Client) -> str:
    """A new secret for a confidential client; the old one stops working at once."""
    secret = client.set_new_secret()
    client.save(update_fields=["secret_digest", "updated"])
    return secret


_NO_CLIENT = "no-such-client"


def active_client(client_id: str | None) -> Client | None:
    """The active client with this id: from this process's memory (tokens/client_cache.py), else
    the shared cache, else the database. Every write to a client drops its copies everywhere
    (client_cache.invalidate, from the model), so a change takes effect on every host at once."""
    if not client_id or len(client_id) > 64 or "\x00" in client_id:
        return None  # PostgreSQL text cannot hold NUL; no client id has one
    local = client_cache.get(client_id)
    if local is not client_cache.UNKNOWN:
        return local
    seen = client_cache.generation()
    key = client_cache.shared_key(client_id)
    try:
        cached = cache.get(key)
    except Exception:
        cached = None
    if cached is not None:
        client = None if cached == _NO_CLIENT else cached
    else:
        client = Client.objects.filter(client_id=client_id, is_active=True).first()
        # Redis down: the breaker (authserver/breaker.py) says so once, not once per request.
        with suppress(Exception):
            cache.set(key, client or _NO_CLIENT, client_cache.SHARED_SECONDS)
    client_cache.put(client_id, client, seen)
    return client


def create_initial_access_token(*, note: str = "", days: int = 7, uses: int = 1) -> str:
    """A token that lets its holder register ``uses`` clients within ``days``; shown once."""
    value = secrets.token_urlsafe(32)
    InitialAccessToken.objects.create(
        token_digest=token_digest(value),
        note=note,
        expires=timezone.now() + timedelta(days=days),
        uses_left=uses,
    )
    return value


def use_initial_access_token(value: str):
    """Spend one use of an initial access token, atomically; None if unknown, expired or used up."""
    if not value or len(value) > 256:
        return None
    spent = InitialAccessToken.objects.live().filter(
        token_digest=token_digest(value), uses_left__gt=0
    )
    return "initial-access-token" if spent.update(uses_left=F("uses_left") - 1) else None
