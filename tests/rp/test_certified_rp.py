"""Certified relying-party libraries against the server as production runs it (issue 11).

Two RP libraries, unmodified, each through the whole life of a client: discovery → dynamic
registration (RFC 7591, with an initial access token and WITHOUT ``scope``, as the libraries'
users register) → authorization code + PKCE, a real Chromium signing in and consenting →
token (ID token checked by the library) → refresh with ``offline_access`` → userinfo →
introspection → revocation → RP-initiated logout → back-channel logout delivered by the worker:

- Authlib's client (``OAuth2Session``, with ``CodeIDToken`` and ``UserInfo`` from authlib.oidc);
- openid-client v6 (panva's, OpenID-certified) under Node (tests/rp/openid_client_rp.mjs,
  installed by ``make test`` with ``npm ci --prefix tests/rp``).

The server is started the way docker/compose.yml starts it: python -m authserver.server
(granian, two workers), DEBUG off, static files collected and served by WhiteNoise, the test
PostgreSQL database, Redis for the cache, and a Celery worker (prefork) on the real broker. The
issuer is its real address, http://127.0.0.1:PORT, which DEBUG off allows only through
ALLOW_HTTP_ISSUER_ON_LOOPBACK. The relying party's own pages (callback, post-logout page,
back-channel endpoint) are a small HTTP server in this test on another loopback port, so the
back-channel POST is a real one (BACKCHANNEL_LOGOUT_ALLOW_PRIVATE_NETWORKS lets it reach
loopback). Cookies stay Secure with DEBUG off: the sign-in succeeding in Chromium over
http://127.0.0.1 is the proof that it keeps and sends them there (W3C Secure Contexts §3.1).
"""

from __future__ import annotations

import base64
import json
import os
import queue
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from authlib.common.security import generate_token
from authlib.common.urls import add_params_to_uri
from authlib.integrations.base_client import OAuthError
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc7523 import PrivateKeyJWT
from authlib.oidc import discovery, rpinitiated
from authlib.oidc.core import CodeIDToken, UserInfo
from django.db import connection
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey
from playwright.sync_api import Browser, Page, expect

from accounts.models import UserSession
from tests.e2e.conftest import DESKTOP_CHROME, browser  # noqa: F401 - the fixture, shared
from tests.factories import PASSWORD, UserFactory
from tokens.clients import create_initial_access_token
from tokens.models import BackchannelLogout, Client, RefreshToken

ROOT = Path(__file__).resolve().parents[2]
RP_DIR = Path(__file__).resolve().parent
NODE = shutil.which("node")
SCOPE = "openid profile email offline_access"
LEEWAY = 5
BACKCHANNEL_EVENT = "http://schemas.openid.net/event/backchannel-logout"

pytestmark = [pytest.mark.e2e, pytest.mark.real_hasher, pytest.mark.django_db(transaction=True)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- the relying party's own pages ------------------------------------------------------------
RP_PAGE = b"<!doctype html><title>Relying party</title><h1>Back at the relying party</h1>"


@dataclass
class RelyingPartySite:
    """http://127.0.0.1:PORT: /callback, /signed-out (pages the browser is sent to) and
    /backchannel (where the worker POSTs logout tokens, Back-Channel Logout 1.0 §2.5)."""

    origin: str
    pages: queue.Queue = field(default_factory=queue.Queue)
    logout_tokens: queue.Queue = field(default_factory=queue.Queue)
    public_jwks: dict = field(default_factory=dict)  # served at /jwks (private_key_jwt run)
    jwks_fetches: int = 0

    @property
    def redirect_uri(self) -> str:
        return f"{self.origin}/callback"

    @property
    def post_logout_redirect_uri(self) -> str:
        return f"{self.origin}/signed-out"

    @property
    def backchannel_logout_uri(self) -> str:
        return f"{self.origin}/backchannel"

    @property
    def jwks_uri(self) -> str:
        return f"{self.origin}/jwks"


@pytest.fixture
def rp_site() -> Iterator[RelyingPartySite]:
    port = free_port()
    site = RelyingPartySite(f"http://127.0.0.1:{port}")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path.startswith(("/callback", "/signed-out")):
                site.pages.put(site.origin + self.path)
                self._answer(200, RP_PAGE, "text/html; charset=utf-8")
            elif self.path == "/jwks" and site.public_jwks:
                site.jwks_fetches += 1
                self._answer(200, json.dumps(site.public_jwks).encode(), "application/json")
            else:
                self._answer(404, b"", "text/plain")

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
            if self.path == "/backchannel":
                site.logout_tokens.put((self.headers.get("Content-Type"), parse_qs(body)))
                self._answer(200, b"", "text/plain")  # §2.8: 200 OK, and no caching
            else:
                self._answer(404, b"", "text/plain")

        def _answer(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Cache-Control", "no-store")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield site
    server.shutdown()
    server.server_close()


# --- the server, as production starts it ------------------------------------------------------
@pytest.fixture(scope="module")
def collected_static() -> None:
    """DEBUG off serves hashed static names from the manifest, as the image does after its
    build-time collectstatic. STATIC_ROOT is not a setting of the environment, so this collects
    into the checkout's staticfiles/ (as make bench does): two suites run at once in one
    checkout would share it; separate checkouts never do."""
    result = subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"],
        cwd=ROOT, env=os.environ, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


@dataclass
class Production:
    issuer: str
    logs: Path

    def tail(self) -> str:
        return "\n".join(
            f"--- {log.name}\n" + log.read_text(errors="replace")[-4000:]
            for log in sorted(self.logs.glob("*.log"))
        )


def server_environment(issuer: str, tmp_path: Path) -> dict[str, str]:
    db = connection.settings_dict
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "SECRET_KEY")}
    return {
        **keep,
        "DEBUG": "false",
        "ISSUER": issuer,
        "ALLOW_HTTP_ISSUER_ON_LOOPBACK": "true",
        "ALLOWED_HOSTS": "127.0.0.1",
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
        "CACHE_URL": os.environ["CACHE_URL"],
        "CELERY_BROKER_URL": os.environ["CELERY_BROKER_URL"],
        "BACKCHANNEL_LOGOUT_ALLOW_PRIVATE_NETWORKS": "true",
        "CLIENT_FETCH_ALLOW_PRIVATE_NETWORKS": "true",  # the RP's jwks_uri is on loopback too
        "LOG_LEVEL": "INFO",
        # the web server's own variables (authserver/server.py)
        "WEB_BIND": issuer.removeprefix("http://"),
        "WEB_CONCURRENCY": "2",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
    }


def wait_for(what: str, ready, process: subprocess.Popen, logs: Production, seconds: float = 60):
    deadline = time.monotonic() + seconds
    while not ready():
        assert process.poll() is None, f"{what} exited\n{logs.tail()}"
        assert time.monotonic() < deadline, f"{what} did not start\n{logs.tail()}"
        time.sleep(0.1)


@pytest.fixture
def production(collected_static, tmp_path) -> Iterator[Production]:
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    env = server_environment(issuer, tmp_path)
    running = Production(issuer, tmp_path)
    processes: list[subprocess.Popen] = []
    try:
        with open(tmp_path / "worker.log", "wb") as log:
            worker = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "authserver", "worker", "--concurrency=1",
                 "--loglevel=INFO", "--without-gossip", "--without-mingle", "--without-heartbeat",
                 f"--hostname=rp-{port}@%h"],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        processes.append(worker)
        with open(tmp_path / "web.log", "wb") as log:
            web = subprocess.Popen(
                [sys.executable, "-m", "authserver.server"],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        processes.append(web)

        def answers() -> bool:
            try:
                return requests.get(f"{issuer}/health/live", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        wait_for("the web server", answers, web, running)
        wait_for(
            "the Celery worker",
            lambda: "ready." in (tmp_path / "worker.log").read_text(errors="replace"),
            worker,
            running,
        )
        yield running
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


# --- the person, in Chromium ------------------------------------------------------------------
# The browser fixture is tests/e2e/conftest.py's (imported above): one Chromium launch recipe.


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:  # noqa: F811 - the imported fixture
    context = browser.new_context(user_agent=DESKTOP_CHROME)
    context.set_default_timeout(15_000)
    yield context.new_page()
    context.close()


def lands_on(site: RelyingPartySite, page: Page, action, seconds: float = 15) -> str:
    """Do ``action``; return the relying-party URL the browser was sent to."""
    while not site.pages.empty():
        site.pages.get_nowait()
    action()
    try:
        url = site.pages.get(timeout=seconds)
    except queue.Empty:
        pytest.fail(f"the browser never reached the relying party; it is on {page.url}")
    page.wait_for_url(url)
    expect(page.get_by_role("heading", name="Back at the relying party")).to_be_visible()
    return url


def signs_in_and_consents(page: Page, site: RelyingPartySite, url: str, user, name: str) -> str:
    issuer = f"{urlsplit(url).scheme}://{urlsplit(url).netloc}"
    page.goto(url)
    expect(page).to_have_url(re.compile("^" + re.escape(f"{issuer}/login/?next=")))
    page.get_by_label("Username or email", exact=True).fill(user.username)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Sign in", exact=True).click()
    # Signed in over http://127.0.0.1 with DEBUG off: the Secure CSRF cookie went back with the
    # form, and the Secure session cookie is kept and sent with the next request.
    expect(page.get_by_role("heading", name=f"Allow {name} to use your account?")).to_be_visible()
    cookies = {c["name"]: c for c in page.context.cookies(issuer)}
    assert cookies["authserver_session"]["secure"] is True
    assert cookies["authserver_session"]["httpOnly"] is True
    assert cookies["csrftoken"]["secure"] is True
    expect(page.get_by_text("Stay connected when you are not using it")).to_be_visible()
    return lands_on(site, page, lambda: page.get_by_role("button", name="Allow").click())


def logs_out(page: Page, site: RelyingPartySite, url: str) -> str:
    return lands_on(site, page, lambda: page.goto(url))


# --- what both runs check on the server side --------------------------------------------------
def jwks(metadata: dict) -> KeySet:
    return KeySet.import_key_set(requests.get(metadata["jwks_uri"], timeout=10).json())


def logout_token_arrives(site: RelyingPartySite, metadata: dict, client_id: str, sid: str):
    """Back-Channel Logout 1.0: the worker POSTs a form with ``logout_token`` (§2.5), a JWT the
    RP validates as §2.6 says: signature, iss, aud, iat, jti, the event, sid, and no nonce."""
    try:
        content_type, form = site.logout_tokens.get(timeout=30)
    except queue.Empty:
        deliveries = list(BackchannelLogout.objects.values("status", "attempts", "last_error"))
        pytest.fail(f"no logout token reached the relying party; deliveries: {deliveries}")
    assert content_type == "application/x-www-form-urlencoded"
    [token] = form["logout_token"]
    decoded = jwt.decode(token, jwks(metadata))
    assert decoded.header["typ"] == "logout+jwt"
    claims = decoded.claims
    assert claims["iss"] == metadata["issuer"]
    assert claims["aud"] in (client_id, [client_id])
    assert abs(claims["iat"] - time.time()) < 60
    assert claims["jti"]
    assert claims["events"] == {BACKCHANNEL_EVENT: {}}
    assert claims["sid"] == sid
    assert "nonce" not in claims
    return claims


def registered_without_scope(client_id: str) -> Client:
    """What the server made of a registration that named no scope (issue 11, item 1)."""
    client = Client.objects.get(client_id=client_id)
    assert "offline_access" in client.allowed_scopes, (
        "a client registered for refresh_token without `scope` must get offline_access",
        client.allowed_scopes,
    )
    return client


# --- Authlib ----------------------------------------------------------------------------------
def test_authlib_client_discovery_registration_code_pkce_refresh_userinfo_introspection_revocation_and_logout(
    production, rp_site, page
):
    issuer = production.issuer
    user = UserFactory()
    initial_access_token = create_initial_access_token(note="Authlib RP run")

    # Discovery 1.0 §4, validated with Authlib's own metadata classes.
    answer = requests.get(f"{issuer}/.well-known/openid-configuration", timeout=10)
    # DEBUG off over plain http: HSTS stays configured, but is only ever sent over https
    # (RFC 6797 §7.2), so this loopback run is not pinned to a TLS it does not have.
    assert "Strict-Transport-Security" not in answer.headers
    metadata = answer.json()
    assert metadata["issuer"] == issuer  # §4.3: exactly the URL it was fetched from
    discovery.OpenIDProviderMetadata(metadata).validate(
        metadata_classes=[rpinitiated.OpenIDProviderMetadata]
    )
    assert metadata["backchannel_logout_supported"] is True

    # RFC 7591 §3.1. Authlib has no registration client: OAuth2Session sends the initial access
    # token as a Bearer token (§3: "an OAuth 2.0 access token") with the JSON metadata.
    with OAuth2Session(token={"access_token": initial_access_token, "token_type": "Bearer"}) as s:
        answer = s.post(
            metadata["registration_endpoint"],
            json={
                "client_name": "Authlib RP",
                "redirect_uris": [rp_site.redirect_uri],
                "post_logout_redirect_uris": [rp_site.post_logout_redirect_uri],
                "backchannel_logout_uri": rp_site.backchannel_logout_uri,
                "grant_types": ["authorization_code", "refresh_token"],
                "response_types": ["code"],
            },
            timeout=10,
        )
    assert answer.status_code == 201, answer.text
    registration = answer.json()
    assert registration["token_endpoint_auth_method"] == "client_secret_basic"  # §2 default
    registered_without_scope(registration["client_id"])

    oauth = OAuth2Session(
        registration["client_id"],
        registration["client_secret"],
        scope=SCOPE,
        redirect_uri=rp_site.redirect_uri,
        code_challenge_method="S256",
        default_timeout=10,
    )
    nonce, verifier = generate_token(24), generate_token(48)
    url, state = oauth.create_authorization_url(
        metadata["authorization_endpoint"], nonce=nonce, code_verifier=verifier, prompt="consent"
    )
    callback = signs_in_and_consents(page, rp_site, url, user, "Authlib RP")
    answer = parse_qs(urlsplit(callback).query)
    assert answer["iss"] == [issuer]  # RFC 9207 §2.4: the RP checks it before the code is used

    token = oauth.fetch_token(
        metadata["token_endpoint"],
        authorization_response=callback,
        state=state,
        code_verifier=verifier,
    )
    assert set(token["scope"].split()) == set(SCOPE.split())
    # OIDC Core §3.1.3.7, as Authlib's OpenIDMixin.parse_id_token does it.
    decoded = jwt.decode(
        token["id_token"],
        jwks(metadata),
        algorithms=metadata["id_token_signing_alg_values_supported"],
    )
    claims = CodeIDToken(
        decoded.claims,
        decoded.header,
        {"iss": {"essential": True, "value": issuer}, "aud": {"essential": True}},
        {
            "nonce": nonce,
            "client_id": registration["client_id"],
            "access_token": token["access_token"],
        },
    )
    claims.validate(leeway=LEEWAY)
    assert claims["sub"] == str(user.pk)
    session = UserSession.objects.active().get(user=user)
    assert claims["sid"] == session.sid

    # RFC 6749 §6 with offline_access (OIDC Core §11): rotated refresh token, new access token.
    first_refresh = token["refresh_token"]
    refreshed = oauth.refresh_token(metadata["token_endpoint"])
    assert refreshed["refresh_token"] != first_refresh
    assert refreshed["access_token"] != token["access_token"]

    userinfo = oauth.get(metadata["userinfo_endpoint"])
    assert userinfo.status_code == 200, userinfo.text
    info = UserInfo(userinfo.json())
    assert (info.sub, info.email, info.preferred_username) == (
        claims["sub"],
        user.email,
        user.username,
    )

    introspected = oauth.introspect_token(
        metadata["introspection_endpoint"], token=refreshed["access_token"]
    ).json()
    assert introspected["active"] is True
    assert (introspected["sub"], introspected["client_id"]) == (claims["sub"], oauth.client_id)
    assert "offline_access" in introspected["scope"].split()

    revoked = oauth.revoke_token(
        metadata["revocation_endpoint"],
        token=refreshed["refresh_token"],
        token_type_hint="refresh_token",
    )
    assert revoked.status_code == 200
    after = oauth.introspect_token(
        metadata["introspection_endpoint"], token=refreshed["refresh_token"]
    )
    assert after.json() == {"active": False}
    with pytest.raises(OAuthError) as refused:
        oauth.refresh_token(metadata["token_endpoint"])
    assert refused.value.error == "invalid_grant"

    # RP-Initiated Logout 1.0 §2, what Authlib's OpenIDMixin.create_logout_url builds.
    logout_state = generate_token(16)
    landed = logs_out(
        page,
        rp_site,
        add_params_to_uri(
            metadata["end_session_endpoint"],
            {
                "id_token_hint": token["id_token"],
                "post_logout_redirect_uri": rp_site.post_logout_redirect_uri,
                "state": logout_state,
            },
        ),
    )
    assert landed == f"{rp_site.post_logout_redirect_uri}?state={logout_state}"
    logout_token_arrives(rp_site, metadata, oauth.client_id, claims["sid"])
    session.refresh_from_db()
    assert session.revoked_at is not None
    gone = oauth.introspect_token(
        metadata["introspection_endpoint"], token=refreshed["access_token"]
    )
    assert gone.json() == {"active": False}


def test_authlib_client_with_private_key_jwt_from_its_jwks_uri(production, rp_site, page):
    """The same library on the other side of RFC 7523: Authlib's own ``PrivateKeyJWT`` signs
    the client assertions (its defaults: RS256, aud = the URL it posts to, a fresh jti, an
    hour's exp) for the code exchange, the refresh, introspection and revocation; the server
    fetches the client's keys from its registered jwks_uri (OIDC Core §9, §10.1.1)."""
    issuer = production.issuer
    user = UserFactory()
    metadata = requests.get(f"{issuer}/.well-known/openid-configuration", timeout=10).json()
    assert "private_key_jwt" in metadata["token_endpoint_auth_methods_supported"]
    assert "RS256" in metadata["token_endpoint_auth_signing_alg_values_supported"]
    private_key = RSAKey.generate_key(2048, private=True)
    rp_site.public_jwks = {"keys": [{**private_key.as_dict(private=False), "kid": "rp-1"}]}
    signing_key = RSAKey.import_key({**private_key.as_dict(private=True), "kid": "rp-1"})

    bearer = {
        "access_token": create_initial_access_token(note="Authlib RP, keys"),
        "token_type": "Bearer",
    }
    with OAuth2Session(token=bearer) as s:
        answer = s.post(
            metadata["registration_endpoint"],
            json={
                "client_name": "Authlib RP with keys",
                "redirect_uris": [rp_site.redirect_uri],
                "grant_types": ["authorization_code", "refresh_token"],
                "token_endpoint_auth_method": "private_key_jwt",
                "jwks_uri": rp_site.jwks_uri,
            },
            timeout=10,
        )
    assert answer.status_code == 201, answer.text
    registration = answer.json()
    assert "client_secret" not in registration

    oauth = OAuth2Session(
        registration["client_id"],
        signing_key,  # PrivateKeyJWT signs with the "secret" slot's key
        scope=SCOPE,
        redirect_uri=rp_site.redirect_uri,
        code_challenge_method="S256",
        token_endpoint_auth_method="private_key_jwt",
        revocation_endpoint_auth_method="private_key_jwt",  # else Authlib sends Basic there
        default_timeout=10,
    )
    oauth.register_client_auth_method(PrivateKeyJWT(headers={"kid": "rp-1"}))
    nonce, verifier = generate_token(24), generate_token(48)
    url, state = oauth.create_authorization_url(
        metadata["authorization_endpoint"], nonce=nonce, code_verifier=verifier, prompt="consent"
    )
    callback = signs_in_and_consents(page, rp_site, url, user, "Authlib RP with keys")
    token = oauth.fetch_token(
        metadata["token_endpoint"],
        authorization_response=callback,
        state=state,
        code_verifier=verifier,
    )
    decoded = jwt.decode(token["id_token"], jwks(metadata), algorithms=["RS256"])
    claims = CodeIDToken(
        decoded.claims,
        decoded.header,
        {"iss": {"essential": True, "value": issuer}, "aud": {"essential": True}},
        {"nonce": nonce, "client_id": oauth.client_id, "access_token": token["access_token"]},
    )
    claims.validate(leeway=LEEWAY)
    assert rp_site.jwks_fetches == 1

    refreshed = oauth.refresh_token(metadata["token_endpoint"])
    assert refreshed["refresh_token"] != token["refresh_token"]
    introspected = oauth.introspect_token(
        metadata["introspection_endpoint"], token=refreshed["access_token"]
    )
    assert introspected.status_code == 200, introspected.text
    assert introspected.json()["active"] is True
    revoked = oauth.revoke_token(
        metadata["revocation_endpoint"],
        token=refreshed["refresh_token"],
        token_type_hint="refresh_token",
    )
    assert revoked.status_code == 200, revoked.text
    with pytest.raises(OAuthError) as refused:
        oauth.refresh_token(metadata["token_endpoint"])
    assert refused.value.error == "invalid_grant"  # authenticated, but the token is revoked
    assert rp_site.jwks_fetches == 1  # the keys came from the shared cache after the first fetch

    # Signed by a key the RP never published: invalid_client, however well-formed.
    stranger = OAuth2Session(
        oauth.client_id,
        RSAKey.generate_key(2048, private=True),
        token_endpoint_auth_method="private_key_jwt",
        default_timeout=10,
    )
    stranger.register_client_auth_method(PrivateKeyJWT())
    with pytest.raises(OAuthError) as refused:
        stranger.fetch_token(
            metadata["token_endpoint"], grant_type="refresh_token", refresh_token="x"
        )
    assert refused.value.error == "invalid_client"


# --- openid-client (Node) ---------------------------------------------------------------------
class NodeRelyingParty:
    """tests/rp/openid_client_rp.mjs, spoken to in JSON lines. A thread reads its stdout into a
    queue: select() on the pipe would miss lines already read into the file object's buffer."""

    def __init__(self, env: dict[str, str], log: Path, script: str = "openid_client_rp.mjs"):
        self.log = log
        self.process = subprocess.Popen(
            [NODE, str(RP_DIR / script)],
            cwd=RP_DIR, env=env, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log.open("w"),
        )  # fmt: skip
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.put(line)
        self.lines.put("")  # end of output

    def next(self, step: str, seconds: float = 30) -> dict:
        try:
            line = self.lines.get(timeout=seconds)
        except queue.Empty:
            line = ""
        if not line:
            self.process.kill()
            pytest.fail(f"openid-client said nothing while {step}; stderr: {self.log.read_text()}")
        message = json.loads(line)
        if message["step"] == "error":
            pytest.fail(f"openid-client failed while {step}: {message}")
        assert message["step"] == step, message
        return message

    def answer(self, **values: str) -> None:
        self.process.stdin.write(json.dumps(values) + "\n")
        self.process.stdin.flush()

    def close(self) -> int:
        try:
            return self.process.wait(10)
        finally:
            if self.process.poll() is None:
                self.process.kill()


@pytest.fixture
def node_rp(production, rp_site, tmp_path) -> Iterator:
    if NODE is None:
        pytest.skip("node is not installed: the openid-client run needs Node 20 (tests/rp)")
    if not (RP_DIR / "node_modules" / "openid-client").is_dir():
        pytest.fail(
            "tests/rp/node_modules is missing: run `npm ci --prefix tests/rp` (make test does)"
        )
    started: list[NodeRelyingParty] = []

    def start(initial_access_token: str, script: str = "openid_client_rp.mjs") -> NodeRelyingParty:
        env = {
            "PATH": os.environ["PATH"],
            "ISSUER": production.issuer,
            "INITIAL_ACCESS_TOKEN": initial_access_token,
            "REDIRECT_URI": rp_site.redirect_uri,
            "POST_LOGOUT_REDIRECT_URI": rp_site.post_logout_redirect_uri,
            "BACKCHANNEL_LOGOUT_URI": rp_site.backchannel_logout_uri,
        }
        started.append(NodeRelyingParty(env, tmp_path / "node.log", script))
        return started[-1]

    yield start
    for rp in started:
        if rp.process.poll() is None:
            rp.process.kill()


def test_openid_client_discovery_registration_code_pkce_refresh_userinfo_introspection_revocation_and_logout(
    production, rp_site, page, node_rp
):
    issuer = production.issuer
    user = UserFactory()
    rp = node_rp(create_initial_access_token(note="openid-client RP run"))

    registered = rp.next("registered")
    assert registered["token_endpoint_auth_method"] == "client_secret_post"
    registered_without_scope(registered["client_id"])

    authorize = rp.next("authorize")["url"]
    assert "code_challenge_method=S256" in authorize and "nonce=" in authorize
    callback = signs_in_and_consents(page, rp_site, authorize, user, "openid-client RP")
    rp.answer(callback=callback)

    tokens = rp.next("tokens")
    claims = tokens["claims"]
    assert set(tokens["scope"].split()) == set(SCOPE.split())
    assert (claims["iss"], claims["aud"], claims["sub"]) == (
        issuer,
        registered["client_id"],
        str(user.pk),
    )
    session = UserSession.objects.active().get(user=user)
    assert claims["sid"] == session.sid

    userinfo = rp.next("userinfo")["userinfo"]
    assert (userinfo["sub"], userinfo["email"]) == (claims["sub"], user.email)

    introspected = rp.next("introspected")
    assert introspected["access"]["active"] is True
    assert introspected["revoked"] == {"active": False}
    assert introspected["refresh_after_revocation"] == "invalid_grant"

    logout = rp.next("logout")["url"]
    rp.answer(landed=logs_out(page, rp_site, logout))
    assert rp.next("done")["after_logout"] == {"active": False}
    assert rp.close() == 0

    metadata = requests.get(f"{issuer}/.well-known/openid-configuration", timeout=10).json()
    logout_token_arrives(rp_site, metadata, registered["client_id"], claims["sid"])
    session.refresh_from_db()
    assert session.revoked_at is not None


def test_openid_client_dpop_code_with_dpop_jkt_refresh_and_userinfo(
    production, rp_site, page, node_rp
):
    """RFC 9449 with an RP library that implements it (openid-client / oauth4webapi): a public
    client with dpop_bound_access_tokens; code + PKCE with dpop_jkt (§10); DPoP-bound tokens
    (§5); a refresh with the same key (the refresh token is bound, §5); userinfo with
    Authorization: DPoP (§7); a refresh without a proof refused."""
    user = UserFactory()
    rp = node_rp(
        create_initial_access_token(note="openid-client DPoP run"), "openid_client_dpop.mjs"
    )
    registered = rp.next("registered")
    client = Client.objects.get(client_id=registered["client_id"])
    assert client.is_public and client.dpop_bound_access_tokens

    authorize = rp.next("authorize")["url"]
    assert f"dpop_jkt={registered['jkt']}" in authorize
    callback = signs_in_and_consents(page, rp_site, authorize, user, "openid-client DPoP SPA")
    rp.answer(callback=callback)

    tokens = rp.next("tokens")
    assert tokens["token_type"].lower() == "dpop" and tokens["sub"] == str(user.pk)  # (lowered)
    payload = tokens["access_token"].split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert claims["cnf"] == {"jkt": registered["jkt"]}

    userinfo = rp.next("userinfo")
    assert userinfo["userinfo"]["sub"] == str(user.pk)
    # The bound token, stolen and sent as a bearer token, gets nothing (§7.2).
    stolen = requests.get(
        f"{production.issuer}/userinfo",
        headers={"Authorization": f"Bearer {userinfo['access_token']}"},
        timeout=10,
    )
    assert stolen.status_code == 401 and stolen.headers["WWW-Authenticate"].startswith("DPoP ")
    assert rp.next("done")["refresh_without_the_key"] == "invalid_dpop_proof"  # §5.2
    assert rp.close() == 0
    assert RefreshToken.objects.filter(client=client, dpop_jkt=registered["jkt"]).count() == 2
