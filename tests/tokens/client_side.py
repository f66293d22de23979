"""What a relying party holds to use private_key_jwt and request objects: its own key pair(s),
the assertions and request objects it signs, and a real loopback HTTP server publishing its
JWK Set (jwks_uri) and request objects (request_uri), whose content the test can change."""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from joserfc import jwt
from joserfc.jwk import ECKey, OKPKey, RSAKey

ISSUER = "https://auth.example.test"  # the test issuer (Makefile TEST_ENV)
TOKEN_ENDPOINT = ISSUER + "/token"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def new_key(alg: str = "RS256", kid: str | None = None):
    if alg in ("RS256", "PS256"):
        key = RSAKey.generate_key(2048, private=True)
    elif alg == "ES256":
        key = ECKey.generate_key("P-256", private=True)
    else:
        key = OKPKey.generate_key("Ed25519", private=True)
    key_dict = {**key.as_dict(private=True), "kid": kid or secrets.token_hex(4)}
    return type(key).import_key(key_dict)


def public_jwks(*keys) -> dict:
    return {"keys": [{**key.as_dict(private=False), "kid": key.kid} for key in keys]}


def sign(claims: dict, key, alg: str = "RS256", **header) -> str:
    kid = {"kid": key.kid} if key.kid else {}
    return jwt.encode({"alg": alg, **kid, **header}, claims, key, algorithms=[alg])


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def unsigned(claims: dict) -> str:
    """An unsecured JWT (RFC 7519 §6: alg none, empty signature)."""
    return f"{_b64({'alg': 'none'})}.{_b64(claims)}."


def assertion_claims(client_id: str, *, aud: str = TOKEN_ENDPOINT, lifetime: int = 60, **extra):
    now = int(time.time())
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": aud,
        "jti": secrets.token_urlsafe(16),
        "iat": now,
        "exp": now + lifetime,
    }
    claims.update(extra)
    return {k: v for k, v in claims.items() if v is not None}


def assertion(client_id: str, key, alg: str = "RS256", **claims) -> str:
    """An RFC 7523 §3 client assertion for ``client_id``, signed with ``key``."""
    return sign(assertion_claims(client_id, **claims), key, alg)


def assertion_form(client_id: str, key, alg: str = "RS256", **claims) -> dict:
    return {
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion(client_id, key, alg, **claims),
    }


class KeyHost:
    """A relying party's web server on loopback: ``documents[path] = (content_type, body)``;
    ``hits[path]`` counts the GETs, so a test sees when the server fetched (or did not)."""

    def __init__(self) -> None:
        self.documents: dict[str, tuple[str, bytes]] = {}
        self.hits: dict[str, int] = {}
        host = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                host.hits[self.path] = host.hits.get(self.path, 0) + 1
                content_type, body = host.documents.get(self.path, ("text/plain", b""))
                self.send_response(200 if self.path in host.documents else 404)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{path}"

    def publish_jwks(self, *keys, path: str = "/jwks") -> str:
        self.documents[path] = ("application/json", json.dumps(public_jwks(*keys)).encode())
        return self.url(path)

    def publish(self, path: str, body: str, content_type: str = "application/oauth-authz-req+jwt"):
        self.documents[path] = (content_type, body.encode())
        return self.url(path)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
