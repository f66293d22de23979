"""Sealing a token response for the refresh retry window (tokens/refresh_tokens.py).

The response that delivered a refresh token's successor is kept, encrypted, on the successor's
row, so that a retry of the rotated token within its client's window gets the very same answer.
AES-256-GCM with a key derived by HKDF-SHA256 from ``SECRET_KEY`` (the input keying material),
the rotated token's own value (the salt) and the purpose label ``INFO``. The rotated token's
value is never stored (only its SHA-256 is), so the database and ``SECRET_KEY`` together still
cannot open an answer: only whoever presents that token can, which is exactly who may have it.
The successor's digest is the associated data, so an answer cannot be moved to another row.
Each key seals one answer (one successor per token), under a random 96-bit nonce.
"""

from __future__ import annotations

import json
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings

INFO = b"authserver tokens.refresh-retry-answer v1"
NONCE_BYTES = 12


def _key(secret_key: str, parent_value: str) -> AESGCM:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=parent_value.encode(), info=INFO)
    return AESGCM(hkdf.derive(secret_key.encode()))


def seal(answer: dict, *, parent_value: str, successor_digest: str) -> bytes:
    """``answer`` (a token response body) encrypted for whoever presents ``parent_value``."""
    nonce = os.urandom(NONCE_BYTES)
    plain = json.dumps(answer, separators=(",", ":")).encode()
    sealed = _key(settings.SECRET_KEY, parent_value).encrypt(
        nonce, plain, successor_digest.encode()
    )
    return nonce + sealed


def unseal(sealed: bytes, *, parent_value: str, successor_digest: str) -> dict | None:
    """The answer sealed for ``parent_value``, or None if it does not open (another token, a
    row it was not sealed for, a ``SECRET_KEY`` rotated away without a fallback)."""
    sealed = bytes(sealed)
    nonce, body = sealed[:NONCE_BYTES], sealed[NONCE_BYTES:]
    for secret_key in (settings.SECRET_KEY, *settings.SECRET_KEY_FALLBACKS):
        try:
            plain = _key(secret_key, parent_value).decrypt(nonce, body, successor_digest.encode())
        except InvalidTag:
            continue
        return json.loads(plain)
    return None
