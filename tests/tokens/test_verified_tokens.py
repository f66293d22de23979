"""Signatures checked once per token per process (tokens/access_tokens._Verified): the cache
holds only "our key signed these bytes", so revocation, expiry and key deletion still apply to
every use, at once."""

import time

import pytest

from tests.tokens.conftest import endpoint, exchange, get_code
from tokens import access_tokens, keys
from tokens.models import Client, SigningKey

pytestmark = pytest.mark.django_db


@pytest.fixture
def access_token(logged_in_client, confidential):
    access_tokens.verified.clear()
    code, verifier = get_code(logged_in_client, confidential, scope="openid profile")
    return exchange(confidential, code, verifier).json()["access_token"]


def introspect(client, token: str) -> dict:
    response = endpoint("/introspect", client, {"token": token})
    assert response.status_code == 200
    return response.json()


def test_a_token_introspected_before_is_inactive_at_once_once_revoked(confidential, access_token):
    """RFC 7009 §2.1 / RFC 7662 §2.2 with the signature already checked in this process."""
    assert introspect(confidential, access_token)["active"] is True
    assert len(access_tokens.verified.entries) == 1
    assert endpoint("/revoke", confidential, {"token": access_token}).status_code == 200
    assert introspect(confidential, access_token) == {"active": False}


def test_a_token_whose_client_is_deactivated_is_inactive_at_once(confidential, access_token):
    assert introspect(confidential, access_token)["active"] is True
    Client.objects.filter(pk=confidential.client.pk).update(is_active=False)
    resource = endpoint("/introspect", confidential, {"token": access_token})
    # The introspecting client is the deactivated one too: refused, or the token inactive.
    assert resource.status_code == 401 or resource.json() == {"active": False}


def test_a_token_verified_before_stops_verifying_once_its_key_is_deleted(access_token):
    assert access_tokens.read(access_token) is not None
    SigningKey.objects.filter(algorithm="ES256").delete()
    keys.forget()
    assert access_tokens.read(access_token) is None


def test_an_expired_token_is_refused_although_its_signature_was_checked(access_token, monkeypatch):
    claims = access_tokens.read(access_token)
    assert claims is not None
    monkeypatch.setattr(time, "time", lambda: claims["exp"] + 3_600)
    assert access_tokens.read(access_token) is None


def test_a_tampered_token_is_not_kept(access_token):
    header, payload, signature = access_token.split(".")
    forged = f"{header}.{payload}.{signature[:-4]}AAAA"
    assert access_tokens.read(forged) is None
    assert access_tokens.read(forged) is None
    assert len(access_tokens.verified.entries) == 0


def test_the_cache_is_bounded(monkeypatch, access_token):
    monkeypatch.setattr(access_tokens._Verified, "SIZE", 2)
    for n in range(5):
        access_tokens.verified.put(bytes([n]), "kid", "at+jwt", {})
    assert len(access_tokens.verified.entries) == 2
