"""Consent: whether a person must be asked before a client gets what it asks for, and
remembering the answer (the client's consent policy decides: ask / remember / skip).

Who writes ``tokens_consent``: this module; the janitor deletes expired consents.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from accounts.models import User
from tokens.models import Client, Consent


def has_consent(user: User, client: Client, scopes: list[str]) -> bool:
    """True if the person need not be asked: a first-party client, or a remembered answer."""
    if client.consent == Client.Consent.SKIP:
        return True
    if client.consent == Client.Consent.ASK:
        return False
    consent = Consent.objects.live().filter(user=user, client=client).first()
    return consent is not None and consent.covers(scopes)


def remember_consent(user: User, client: Client, scopes: list[str]) -> None:
    if client.consent != Client.Consent.REMEMBER:
        return
    expires = timezone.now() + timedelta(days=settings.CONSENT_LIFETIME_DAYS)
    consent, created = Consent.objects.get_or_create(
        user=user, client=client, defaults={"scopes": sorted(set(scopes)), "expires": expires}
    )
    if not created:
        # An expired consent starts afresh; a live one grows to the union of what was granted.
        previous = consent.scopes if consent.expires > timezone.now() else []
        consent.scopes = sorted(set(previous) | set(scopes))
        consent.expires = expires
        consent.save(update_fields=["scopes", "expires"])
