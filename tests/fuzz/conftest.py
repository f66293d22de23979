"""Fixtures for the fuzz tests: a world of real clients, people and tokens to start from; the
budget (the long variants run only with ``-m fuzz_long``); a summary of what was sent."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlencode

import pytest
from django.test import Client as Browser

from tests.conftest import sign_in
from tests.factories import PASSWORD, UserFactory
from tests.fuzz import findings, harness  # noqa: F401 - findings registers itself
from tests.fuzz.strategies import FORM, authorization_values, basic
from tests.tokens.conftest import Registered, authorize_url, get_code, pkce_pair
from tests.tokens.dpop_client import Holder
from tokens.clients import create_client, create_initial_access_token
from tokens.models import TOKEN_EXCHANGE_GRANT, Client
from tokens.oauth.exchange import ACCESS_TOKEN_TYPE, ID_TOKEN_TYPE

EXCHANGE_TOKEN_TYPES = [ACCESS_TOKEN_TYPE, ID_TOKEN_TYPE]


def pytest_collection_modifyitems(config, items):
    """The long variants (marked fuzz_long) run only when selected: ``-m fuzz_long``."""
    if "fuzz_long" in (config.getoption("markexpr", "") or ""):
        return
    skip = pytest.mark.skip(reason="long fuzz run: select it with -m fuzz_long")
    for item in items:
        if "fuzz_long" in item.keywords:
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not harness.REQUESTS:
        return
    write = terminalreporter.write_line
    terminalreporter.section("fuzz")
    for target, count in sorted(harness.REQUESTS.items()):
        write(f"{target:40} {count:7,} requests")
    write(f"{'total':40} {sum(harness.REQUESTS.values()):7,} requests")
    for key, count in sorted(harness.EXACT.items()):
        write(f"exact error code, {key:50} {count:7,} answers")
    for name, count in sorted(harness.KNOWN.items()):
        write(f"known finding {name}: {count:,} answers (tests/fuzz/test_found.py)")
    for key, example in harness.SURVEYED.items():
        terminalreporter.section(f"survey: {key}", sep="-")
        write(example)


@dataclass
class World:
    """What a fuzzed request may carry that is real: the valid values, by parameter name."""

    user: object
    confidential: Registered
    poster: Registered
    public: Registered
    device: Registered  # a public client with the device grant (RFC 8628)
    browser: Browser  # signed in as ``user``
    anonymous: Browser
    values: dict[str, list[str]] = field(default_factory=dict)
    authorizations: list[str] = field(default_factory=list)
    origins: list[str] = field(default_factory=list)
    authorize_queries: list[list[tuple[str, str]]] = field(default_factory=list)
    # DPoP (RFC 9449): proofs for /token and for /userinfo, and DPoP Authorization values.
    token_proofs: list[str] = field(default_factory=list)
    userinfo_proofs: list[str] = field(default_factory=list)
    dpop_authorizations: list[str] = field(default_factory=list)
    registration: str = ""  # an initial access token with uses to spare

    def sign_in_again(self) -> None:
        """The browser signed out (end-session, a reused login form): sign it back in."""
        if self.browser.get("/", secure=True).status_code != 200:
            assert sign_in(self.browser, self.user.username, secure=True).status_code == 302


@pytest.fixture
def world(db) -> World:
    user = UserFactory(username="fuzzy", email="fuzzy@example.com")
    client, secret = create_client(
        name="Fuzzed App",
        redirect_uris=["https://app.example.com/callback"],
        post_logout_redirect_uris=["https://app.example.com/bye"],
        grant_types=[
            "authorization_code", "refresh_token", "client_credentials", TOKEN_EXCHANGE_GRANT,
        ],
        scopes=["openid", "profile", "email", "offline_access"],
        consent=Client.Consent.ASK,
        token_exchange_audiences=["https://billing.example.com"],
        token_exchange_scopes=["openid", "profile"],
    )  # fmt: skip
    confidential = Registered(client, secret)
    client, secret = create_client(
        name="Posts its secret",
        redirect_uris=["https://post.example.com/cb"],
        grant_types=["authorization_code", "refresh_token", "client_credentials"],
        scopes=["openid", "profile"],
        token_endpoint_auth_method="client_secret_post",
    )
    poster = Registered(client, secret)
    client, _ = create_client(
        name="Fuzzed SPA",
        redirect_uris=["http://127.0.0.1:8765/cb"],
        public=True,
        scopes=["openid", "profile"],
    )
    public = Registered(client, None)
    client, _ = create_client(
        name="Fuzzed TV",
        public=True,
        grant_types=["urn:ietf:params:oauth:grant-type:device_code", "refresh_token"],
        scopes=["openid", "profile"],
    )
    device = Registered(client, None)

    # Two browsers for the whole test: each new test client loads the middleware again.
    browser = Browser(raise_request_exception=True)
    anonymous = Browser(raise_request_exception=True)
    assert sign_in(browser, user.username, secure=True).status_code == 302
    codes, verifiers, refresh_tokens, access_tokens, id_tokens = [], [], [], [], []
    for i, scope in enumerate(("openid profile email offline_access", "openid")):
        code, verifier = get_code(browser, confidential, scope=scope, nonce=f"n-{i}")
        tokens = anonymous.post(
            "/token",
            urlencode(
                {
                    "grant_type": "authorization_code",
                    "code": code,
                    "redirect_uri": "https://app.example.com/callback",
                    "code_verifier": verifier,
                }
            ),
            content_type="application/x-www-form-urlencoded",
            secure=True,
            **confidential.basic(),
        ).json()
        refresh_tokens.append(tokens["refresh_token"])
        access_tokens.append(tokens["access_token"])
        id_tokens.append(tokens["id_token"])
    for _ in range(3):  # unspent codes, for the token endpoint to redeem (once)
        code, verifier = get_code(browser, confidential, scope="openid profile")
        codes.append(code)
        verifiers.append(verifier)
    _verifier, challenge = pkce_pair()
    redirects = ["https://app.example.com/callback", "https://post.example.com/cb"]
    redirects.append("http://127.0.0.1:8765/cb")
    client_ids = [confidential.client_id, poster.client_id, public.client_id]
    values = {
        "grant_type": [
            "authorization_code",
            "refresh_token",
            "client_credentials",
            "password",
            "implicit",
            "urn:ietf:params:oauth:grant-type:device_code",
            TOKEN_EXCHANGE_GRANT,
        ],
        "subject_token": [*access_tokens, *id_tokens],
        "actor_token": [*access_tokens, *id_tokens],
        "subject_token_type": [*EXCHANGE_TOKEN_TYPES, "urn:ietf:params:oauth:token-type:jwt"],
        "actor_token_type": EXCHANGE_TOKEN_TYPES,
        "requested_token_type": EXCHANGE_TOKEN_TYPES,
        "audience": ["https://billing.example.com", "https://evil.example"],
        "resource": ["https://billing.example.com", "not a uri"],
        "client_id": client_ids,
        "client_secret": [confidential.secret, poster.secret, "wrong-secret"],
        "code": codes,
        "code_verifier": verifiers,
        "redirect_uri": redirects,
        "refresh_token": refresh_tokens,
        "scope": ["openid", "profile", "openid profile email offline_access", "email"],
        "token": [*access_tokens, *refresh_tokens, *id_tokens],
        "token_type_hint": ["access_token", "refresh_token", "id_token"],
        "response_type": ["code", "token", "code id_token", "none"],
        "state": ["xyz", "s p a c e"],
        "nonce": ["n-1", "n-2"],
        "code_challenge": [challenge],
        "code_challenge_method": ["S256", "plain"],
        "prompt": ["none", "login", "consent", "select_account", "none login"],
        "max_age": ["0", "60", "3600", "-1", "1.5", "99999999999"],
        "login_hint": [user.username, user.email],
        "id_token_hint": [*id_tokens, access_tokens[0]],
        "post_logout_redirect_uri": ["https://app.example.com/bye", "https://evil.example/bye"],
        "logout_hint": [user.username],
        "ui_locales": ["en", "fr-CA en"],
        "decision": ["allow", "deny"],
        "username": [user.username, user.email, "nobody"],
        "password": [PASSWORD, "wrong password"],
        "next": ["/", "//evil.example/", "https://evil.example/", "/account/sessions/"],
        "request": ["eyJhbGciOiJub25lIn0.e30."],
        "request_uri": ["https://app.example.com/request.jwt"],
    }
    world = World(
        user=user,
        confidential=confidential,
        poster=poster,
        public=public,
        device=device,
        browser=browser,
        anonymous=anonymous,
        values=values,
        origins=["https://app.example.com", "http://127.0.0.1:8765"],
    )
    world.authorizations = authorization_values(
        [
            confidential.basic()["HTTP_AUTHORIZATION"],
            basic(confidential.client_id, "wrong-secret"),
            basic(poster.client_id, poster.secret),
            basic(public.client_id, None),
            basic(public.client_id, ""),
            basic("nobody", "x"),
        ],
        [f"Bearer {token}" for token in access_tokens],
    )
    # The valid credentials come up as often as all the broken ones together.
    world.authorizations += [confidential.basic()["HTTP_AUTHORIZATION"]] * 20
    for client, base in ((confidential, {}), (public, {"code_challenge": challenge})):
        query = authorize_url(client, scope="openid profile", state="st", nonce="n", **base)
        world.authorize_queries.append(_pairs(query))
    world.authorize_queries.append(
        _pairs(authorize_url(confidential, scope="openid email", prompt="consent"))
    )
    world.authorize_queries.append(
        _pairs(authorize_url(confidential, scope="openid", id_token_hint=id_tokens[0]))
    )
    # Pushed authorization requests (RFC 9126): request_uris of both clients, for /authorize
    # (each is claimed by the first browser to present it, then refused to the other).
    for client, auth in ((confidential, confidential.basic()), (public, {})):
        params = {
            **dict(_pairs(authorize_url(client, scope="openid profile", state="st"))),
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        for _ in range(2):
            pushed = anonymous.post(
                "/par", urlencode(params), content_type=FORM, secure=True, **auth
            ).json()
            values["request_uri"].append(pushed["request_uri"])
            world.authorize_queries.append(
                [("client_id", client.client_id), ("request_uri", pushed["request_uri"])]
            )
    # Device codes (RFC 8628): one pending, one approved (its token for the first poll), one denied.
    device_codes = []
    for decision in ("pending", "allow", "deny"):
        started = anonymous.post(
            "/device_authorization",
            urlencode({"client_id": device.client_id, "scope": "openid"}),
            content_type=FORM,
            secure=True,
        ).json()
        device_codes.append(started["device_code"])
        if decision != "pending":
            browser.post(
                "/device", {"user_code": started["user_code"], "decision": decision}, secure=True
            )
    values["device_code"] = device_codes
    values["user_code"] = ["BCDF-GHJK", "bcdfghjk"]
    world.registration = create_initial_access_token(uses=100_000)
    _add_dpop(world, access_tokens)
    return world


def _add_dpop(world: World, access_tokens: list[str]) -> None:
    """Proofs signed now (valid for DPOP_IAT_WINDOW, single use), a DPoP-bound token, and
    proofs that are wrong in one way each (key, binding, ath, htu, htm, typ)."""
    holder, stranger = Holder(), Holder()
    bound = world.anonymous.post(
        "/token",
        urlencode({"grant_type": "client_credentials", "scope": "openid profile"}),
        content_type="application/x-www-form-urlencoded",
        secure=True,
        HTTP_DPOP=holder.proof(),
        **world.confidential.basic(),
    ).json()["access_token"]
    world.dpop_authorizations = [f"DPoP {bound}"] * 10 + [
        f"DPoP {access_tokens[0]}",  # not bound
        "DPoP",
        "DPoP ",
        "dpop x",
        f"Bearer {bound}",  # bound, as Bearer (RFC 9449 §7.2)
    ]
    world.token_proofs = [holder.proof() for _ in range(20)] + [
        stranger.proof(htm="GET"),
        stranger.proof(htu="https://auth.example.test/userinfo"),
        stranger.proof(header={"typ": "JWT"}),
        stranger.proof(header={"jwk": stranger.key.as_dict(private=True)}),
        stranger.proof(signer=holder.key),
    ]
    userinfo = "https://auth.example.test/userinfo"
    world.userinfo_proofs = [
        holder.proof(method, userinfo, access_token=bound)
        for method in ("GET", "POST")
        for _ in range(10)
    ] + [
        stranger.proof("GET", userinfo, access_token=bound),
        holder.proof("GET", userinfo, access_token=access_tokens[0]),
        holder.proof("GET", userinfo),
    ]


def _pairs(url: str) -> list[tuple[str, str]]:
    from urllib.parse import parse_qsl, urlsplit

    return parse_qsl(urlsplit(url).query, keep_blank_values=True)
