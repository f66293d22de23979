"""Resource servers accepting our tokens: RFC 6750 over DRF and plain Django views."""

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.test import Client as Browser

from tests.tokens.conftest import endpoint, exchange, get_code, token_request
from tokens import keys
from tokens.oauth import resource

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _resource_urls(settings):
    settings.ROOT_URLCONF = "tests.urls_resource"


@pytest.fixture
def user_token(logged_in_client, confidential) -> str:
    code, verifier = get_code(logged_in_client, confidential, scope="openid profile")
    return exchange(confidential, code, verifier).json()["access_token"]


def client_token_for(client, scope: str) -> str:
    """An access token the client got for itself (client credentials), with ``scope``."""
    body = token_request(client, {"grant_type": "client_credentials", "scope": scope}).json()
    return body["access_token"]


def call(path: str, token: str | None = None, scheme: str = "Bearer"):
    headers = {"HTTP_AUTHORIZATION": f"{scheme} {token}"} if token else {}
    return Browser().get(path, secure=True, **headers)


@pytest.mark.parametrize("path", ["/api/profile", "/plain/profile"])
def test_a_valid_token_with_the_scope_is_accepted(path, user_token, user):
    response = call(path, user_token)
    assert response.status_code == 200
    assert response.json()["user"] == user.username


@pytest.mark.parametrize("path", ["/api/profile", "/plain/profile"])
def test_no_token_is_401_with_a_bare_bearer_challenge(path):
    """RFC 6750 §3.1: no error code when the request had no token."""
    response = call(path)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert "error=" not in response["WWW-Authenticate"]


@pytest.mark.parametrize("path", ["/api/profile", "/plain/profile"])
def test_a_bad_token_is_401_invalid_token(path):
    response = call(path, "not-a-token")
    assert response.status_code == 401
    assert 'error="invalid_token"' in response["WWW-Authenticate"]


def test_a_token_without_the_scope_is_403_insufficient_scope(confidential):
    """RFC 6750 §3.1: insufficient_scope."""
    value = client_token_for(confidential, "email")
    response = call("/plain/profile", value)
    assert response.status_code == 403
    assert (
        'error="insufficient_scope"' in response["WWW-Authenticate"]
        and 'scope="profile"' in response["WWW-Authenticate"]
    )
    assert call("/api/profile", value).status_code == 403


def test_a_client_token_carries_no_person(confidential):
    value = client_token_for(confidential, "profile")
    response = call("/api/profile", value)
    assert response.status_code == 200
    assert response.json() == {"user": None, "client": confidential.client_id}


def test_a_revoked_token_is_refused_at_once(confidential, user_token):
    endpoint("/revoke", confidential, {"token": user_token})
    assert call("/plain/profile", user_token).status_code == 401
    assert call("/api/profile", user_token).status_code == 401


def test_a_token_for_another_audience_is_refused(settings, user_token):
    settings.ACCESS_TOKEN_AUDIENCE = "https://another-api.example"
    assert call("/plain/profile", user_token).status_code == 401


def test_the_token_must_come_as_a_bearer_header(user_token):
    assert call("/plain/profile", user_token, scheme="Token").status_code == 401
    assert (
        Browser().get(f"/plain/profile?access_token={user_token}", secure=True).status_code == 401
    )


@pytest.mark.django_db(transaction=True)
def test_a_remote_resource_server_checks_signatures_against_the_published_jwks(
    live_server, settings, confidential
):
    """Offline validation, as another deployment would do it: keys from the JWKS URL."""
    value = client_token_for(confidential, "profile")
    settings.RESOURCE_SERVER_JWKS_URL = f"{live_server.url}/.well-known/jwks.json"
    resource.forget_remote_keys()
    try:
        assert call("/plain/profile", value).status_code == 200
        assert call("/plain/profile", value[:-4] + "AAAA").status_code == 401
    finally:
        resource.forget_remote_keys()


# --- a remote JWKS that fails ----------------------------------------------------------------
class JwksServer:
    """A real HTTP server on the loopback that answers the JWKS URL as told."""

    def __init__(self):
        self.status, self.body, self.delay, self.requests = 200, b"", 0.0, 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests += 1
                time.sleep(server.delay)
                self.send_response(server.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(server.body)))
                self.end_headers()
                self.wfile.write(server.body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/.well-known/jwks.json"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def serve_our_keys(self):
        keys.signing_key()
        self.status, self.body = 200, json.dumps(keys.jwks()).encode()


@pytest.fixture
def jwks_server(settings):
    server = JwksServer()
    settings.RESOURCE_SERVER_JWKS_URL = server.url
    resource.forget_remote_keys()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()
    resource.forget_remote_keys()


@pytest.fixture
def client_token(confidential) -> str:
    return client_token_for(confidential, "openid profile")


def refused_url() -> str:
    with socket.socket() as probe:  # a port that was free a moment ago and has no listener
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/.well-known/jwks.json"


def assert_unavailable(response):
    """Not the client's fault: 503 with Retry-After, never a 500 or a 401 that sends it to
    fetch a new token for nothing."""
    assert response.status_code == 503, response.content
    assert int(response["Retry-After"]) > 0
    assert "Traceback" not in response.content.decode()


def test_a_jwks_url_that_refuses_connections_is_a_503(settings, client_token):
    settings.RESOURCE_SERVER_JWKS_URL = refused_url()
    resource.forget_remote_keys()
    try:
        plain = call("/plain/profile", client_token)
        assert_unavailable(plain)
        assert plain.json()["error"] == "temporarily_unavailable"
        assert plain["Cache-Control"] == "no-store"
        assert_unavailable(call("/api/profile", client_token))
    finally:
        resource.forget_remote_keys()


@pytest.mark.parametrize(
    "status, body",
    [
        (200, b"<html>not json</html>"),
        (200, b"[]"),
        (200, b'{"keys": "none"}'),
        (200, b'{"keys": [{"kty": "EC"}]}'),
        (500, b'{"error": "down"}'),
        (404, b""),
    ],
    ids=["not-json", "a-list", "keys-not-a-list", "a-broken-key", "http-500", "http-404"],
)
def test_a_jwks_url_that_answers_garbage_is_a_503(jwks_server, client_token, status, body):
    jwks_server.status, jwks_server.body = status, body
    assert_unavailable(call("/plain/profile", client_token))
    assert_unavailable(call("/api/profile", client_token))


def test_a_jwks_url_that_times_out_is_a_503(jwks_server, client_token, monkeypatch):
    monkeypatch.setattr(resource, "JWKS_TIMEOUT", 0.3)
    jwks_server.serve_our_keys()
    jwks_server.delay = 1.5
    started = time.monotonic()
    assert_unavailable(call("/plain/profile", client_token))
    assert time.monotonic() - started < 1.4


def test_userinfo_against_a_failing_jwks_is_a_503(jwks_server, client_token, settings):
    settings.ROOT_URLCONF = "authserver.urls"
    jwks_server.body = b"garbage"
    assert_unavailable(call("/userinfo", client_token))


def test_after_a_failed_fetch_requests_fail_fast_until_the_retry_time(jwks_server, client_token):
    jwks_server.body = b"garbage"
    assert_unavailable(call("/plain/profile", client_token))
    jwks_server.serve_our_keys()  # back, but the next try waits JWKS_RETRY_AFTER
    assert_unavailable(call("/plain/profile", client_token))
    assert jwks_server.requests == 1


def test_keys_fetched_before_keep_serving_while_the_jwks_url_fails(
    jwks_server, client_token, monkeypatch
):
    jwks_server.serve_our_keys()
    assert call("/plain/profile", client_token).status_code == 200
    monkeypatch.setattr(resource, "JWKS_MAX_AGE", 0)  # due for a refresh on every request
    jwks_server.status, jwks_server.body = 500, b""
    assert call("/plain/profile", client_token).status_code == 200
    assert call("/plain/profile", client_token[:-4] + "AAAA").status_code == 401
    assert jwks_server.requests == 2  # one refresh tried, then JWKS_RETRY_AFTER
