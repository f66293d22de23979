"""A DPoP client for the tests (RFC 9449 §4.2): a key pair and the proofs it signs, built with
joserfc from the spec's field list, and its key's RFC 7638 thumbprint computed by hand, so the
tests hold the server's validator (tokens/dpop.py) to the RFC rather than to itself."""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid

from joserfc import jws
from joserfc.jwk import ECKey

ISSUER = "https://auth.example.test"  # the Makefile's test ISSUER
TOKEN_URL = f"{ISSUER}/token"
USERINFO_URL = f"{ISSUER}/userinfo"
DROP = object()  # a header or claim to leave out


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims_of(jwt_value: str) -> dict:
    """A JWT's payload, read without any of the server's code."""
    payload = jwt_value.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


class Holder:
    """A DPoP client: a key pair and the proofs it signs for each request (RFC 9449 §4.2)."""

    def __init__(self, key=None, alg: str = "ES256"):
        self.key = key or ECKey.generate_key("P-256", auto_kid=False)
        self.alg = alg

    @property
    def public_jwk(self) -> dict:
        return self.key.as_dict(private=False)

    @property
    def thumbprint(self) -> str:
        """RFC 7638 §3: the required members, lexicographic order, no whitespace, SHA-256."""
        jwk = self.public_jwk
        required = {
            "EC": ("crv", "kty", "x", "y"),
            "RSA": ("e", "kty", "n"),
            "OKP": ("crv", "kty", "x"),
        }
        members = {name: jwk[name] for name in required[jwk["kty"]]}
        canonical = json.dumps(members, separators=(",", ":"), sort_keys=True)
        return b64(hashlib.sha256(canonical.encode()).digest())

    def proof(
        self,
        htm: str = "POST",
        htu: str = TOKEN_URL,
        *,
        access_token: str | None = None,
        nonce: str | None = None,
        header: dict | None = None,
        claims: dict | None = None,
        signer=None,
    ) -> str:
        protected = {"typ": "dpop+jwt", "alg": self.alg, "jwk": self.public_jwk, **(header or {})}
        payload = {"jti": str(uuid.uuid4()), "htm": htm, "htu": htu, "iat": int(time.time())}
        if access_token is not None:
            payload["ath"] = b64(hashlib.sha256(access_token.encode()).digest())
        if nonce is not None:
            payload["nonce"] = nonce
        payload.update(claims or {})
        protected = {k: v for k, v in protected.items() if v is not DROP}
        payload = {k: v for k, v in payload.items() if v is not DROP}
        return jws.serialize_compact(
            protected, json.dumps(payload), signer or self.key, algorithms=[protected["alg"]]
        )


def unsigned(protected: dict, payload: dict) -> str:
    """A JWS with alg none (RFC 7518 §3.6), which joserfc rightly refuses to make."""
    encode = lambda part: b64(json.dumps(part).encode())  # noqa: E731
    return f"{encode(protected)}.{encode(payload)}."
