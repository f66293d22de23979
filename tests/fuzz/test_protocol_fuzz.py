"""Hypothesis-generated requests against every protocol endpoint and the sign-in and consent
forms, through the Django test client, in process.

Each request starts valid (real clients, secrets, codes, tokens, redirect URIs, a signed-in
browser) and is then mutated: parameters dropped, replaced by hostile values, repeated, renamed,
added; bodies as invalid UTF-8, JSON, multipart, the wrong or no Content-Type; malformed Basic and
Bearer credentials and giant headers; plain http. Every answer is held to tests/fuzz/harness.py:
no 5xx, the RFC's error shape and codes, no-store, no traceback, and the OpenAPI document; where
the error is known (a missing required parameter, a wrong method, a registration body that is
not a JSON object, an update without client_id, an authorization request without
response_type), exactly that code, and a minimum share of each run is held to one.

Each test sends at least its budget; together with tests/fuzz/test_schemathesis.py the default
run sends at least 10,000 requests. ``-m fuzz_long`` runs the long variants instead.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qsl

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import sign_in
from tests.fuzz import harness
from tests.fuzz.harness import budgets, hypothesis_settings, send
from tests.fuzz.strategies import (
    FORM,
    HOSTILE_VALUES,
    headers,
    mutated,
    request,
    requests,
    text,
)
from tokens.models import TOKEN_EXCHANGE_GRANT

pytestmark = [
    pytest.mark.django_db,
    # client_ids become cache keys as sent (harmless with Redis, not with memcached): reported.
    pytest.mark.filterwarnings("ignore::django.core.cache.backends.base.CacheKeyWarning"),
]

BUDGETS = {  # weighted towards the cheap endpoints: the whole fuzz run stays near 90 s
    "token": 1_800,
    "introspect": 1_000,
    "revoke": 900,
    "userinfo": 1_200,
    "register": 900,
    "authorize": 1_400,
    "consent": 500,
    "end_session": 700,
    "login": 500,
    "par": 700,
    "device": 500,
}


def test_the_default_budget_adds_up_to_10000_requests():
    assert sum(BUDGETS.values()) + harness.SCHEMATHESIS_MINIMUM >= harness.TOTAL_MINIMUM


# At least this many answers per 1,000 requests are held to an exact error code (a missing
# required parameter, a wrong method, ...: tests/fuzz/harness.py), so the check cannot quietly
# stop applying.
EXACT_PER_MILLE = {
    "token": 150, "introspect": 130, "revoke": 130, "register": 200, "authorize": 20, "par": 50,
}  # fmt: skip


def _exact(target: str) -> int:
    return sum(n for key, n in harness.EXACT.items() if key.startswith(f"{target}: "))


def _run(target: str, budget: int, strategy, act) -> None:
    """Draw ``budget`` examples from ``strategy`` and ``act`` on each; check the counts."""
    before, exact_before = harness.REQUESTS[target], _exact(target)

    @hypothesis_settings(budget)
    @given(example=strategy)
    def fuzz(example):
        act(example)

    fuzz()
    sent = harness.REQUESTS[target] - before
    assert sent >= budget, f"{target}: {sent} requests sent, {budget} due"
    exact, due = _exact(target) - exact_before, budget * EXACT_PER_MILLE.get(target, 0) // 1000
    assert exact >= due, f"{target}: {exact} answers held to an exact error code, {due} due"


PROTOCOL_METHODS = ["POST"] * 16 + ["GET", "PUT", "DELETE", "OPTIONS", "PATCH", "HEAD"]


# --- token endpoint (RFC 6749 §3.2) ------------------------------------------------------------
@budgets(BUDGETS["token"])
def test_token_endpoint(world, budget):
    w, v = world, world.values
    bases = [
        [("grant_type", "client_credentials"), ("scope", "profile")],
        [("grant_type", "client_credentials")],
        [
            ("grant_type", "client_credentials"),
            ("client_id", w.poster.client_id),
            ("client_secret", w.poster.secret),
            ("scope", "openid profile"),
        ],
        *(
            [
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", "https://app.example.com/callback"),
                ("code_verifier", verifier),
            ]
            for code, verifier in zip(v["code"], v["code_verifier"], strict=True)
        ),
        *([("grant_type", "refresh_token"), ("refresh_token", rt)] for rt in v["refresh_token"]),
        [("grant_type", "refresh_token"), ("refresh_token", v["refresh_token"][0]), ("scope", "openid")],
        # RFC 8693 §2.1: token exchange, impersonation and delegation (the fuzzed app may).
        [("grant_type", TOKEN_EXCHANGE_GRANT), ("subject_token", v["subject_token"][0]), ("subject_token_type", v["subject_token_type"][0])],
        [("grant_type", TOKEN_EXCHANGE_GRANT), ("subject_token", v["subject_token"][0]), ("subject_token_type", v["subject_token_type"][0]),
         ("actor_token", v["actor_token"][0]), ("actor_token_type", v["actor_token_type"][0]), ("audience", v["audience"][0]), ("scope", "profile")],
        [
            ("grant_type", "authorization_code"),
            ("client_id", w.public.client_id),
            ("code", "unknown"),
            ("redirect_uri", "http://127.0.0.1:8765/cb"),
            ("code_verifier", "v" * 43),
        ],
        # Without a required parameter (RFC 6749 §4.1.3, §6): exactly invalid_request is due.
        [("grant_type", "authorization_code"), ("redirect_uri", "https://app.example.com/callback"), ("code_verifier", v["code_verifier"][0])],
        [("grant_type", "refresh_token"), ("scope", "openid")],
        [],
    ]  # fmt: skip
    strategy = requests(
        "/token",
        PROTOCOL_METHODS,
        mutated(bases, v),
        headers(w.authorizations, w.origins, w.token_proofs),
    )
    _run("token", budget, strategy, lambda sent: send("token", w.anonymous, sent))


# --- introspection (RFC 7662) and revocation (RFC 7009) ----------------------------------------
def _token_operation(world, budget: int, target: str, path: str) -> None:
    w, v = world, world.values
    bases = [
        *([("token", token)] for token in v["token"]),
        [("token", v["token"][0]), ("token_type_hint", "access_token")],
        [("token", v["refresh_token"][0]), ("token_type_hint", "refresh_token")],
        [
            ("token", v["token"][0]),
            ("client_id", w.poster.client_id),
            ("client_secret", w.poster.secret),
        ],
        [("token", "unknown"), ("client_id", w.public.client_id)],
        [],
    ]
    strategy = requests(
        path, PROTOCOL_METHODS, mutated(bases, v), headers(w.authorizations, w.origins)
    )
    _run(target, budget, strategy, lambda sent: send(target, w.anonymous, sent))


@budgets(BUDGETS["introspect"])
def test_introspection_endpoint(world, budget):
    _token_operation(world, budget, "introspect", "/introspect")


@budgets(BUDGETS["revoke"])
def test_revocation_endpoint(world, budget):
    _token_operation(world, budget, "revoke", "/revoke")


# --- pushed authorization requests (RFC 9126 §2) -----------------------------------------------
@budgets(BUDGETS["par"])
def test_pushed_authorization_request_endpoint(world, budget):
    w, v = world, world.values
    challenge = v["code_challenge"][0]
    bases = [
        [*query, ("code_challenge", challenge), ("code_challenge_method", "S256")]
        for query in w.authorize_queries
    ] + [
        [
            ("client_id", w.poster.client_id),
            ("client_secret", w.poster.secret),
            ("response_type", "code"),
            ("redirect_uri", "https://post.example.com/cb"),
            ("scope", "openid"),
        ],
        [("response_type", "code"), ("scope", "openid"), ("request", v["request"][0])],
        [],
    ]
    strategy = requests(
        "/par", PROTOCOL_METHODS, mutated(bases, v), headers(w.authorizations, w.origins)
    )
    _run("par", budget, strategy, lambda sent: send("par", w.anonymous, sent))


# --- device authorization (RFC 8628 §3.1) and its polls (§3.4) --------------------------------
@budgets(BUDGETS["device"])
def test_device_authorization_endpoint_and_polling(world, budget):
    w, v = world, world.values
    grant = "urn:ietf:params:oauth:grant-type:device_code"
    bases = [
        [("client_id", w.device.client_id), ("scope", "openid profile")],
        [("client_id", w.device.client_id)],
        [("scope", "openid")],
        [],
    ]
    polls = [
        [("grant_type", grant), ("client_id", w.device.client_id), ("device_code", code)]
        for code in v["device_code"]
    ] + [[("grant_type", grant), ("client_id", w.device.client_id)]]
    methods = PROTOCOL_METHODS
    starts = requests(
        "/device_authorization", methods, mutated(bases, v), headers(w.authorizations, w.origins)
    )
    tokens = requests("/token", ["POST"], mutated(polls, v), headers(w.authorizations, w.origins))

    def act(sent):
        send("device", w.anonymous, sent)

    _run("device", budget, starts | tokens, act)


# --- userinfo (OIDC Core §5.3, RFC 6750) -------------------------------------------------------
@budgets(BUDGETS["userinfo"])
def test_userinfo_endpoint(world, budget):
    w, v = world, world.values
    bases = [[], [("access_token", v["token"][0])], [("schema", "openid")]]
    methods = ["GET"] * 10 + ["POST"] * 4 + ["OPTIONS", "PUT", "DELETE", "HEAD"]
    strategy = requests(
        "/userinfo",
        methods,
        mutated(bases, v, max_mutations=2),
        headers(w.authorizations + w.dpop_authorizations, w.origins, w.userinfo_proofs),
    )
    _run("userinfo", budget, strategy, lambda sent: send("userinfo", w.anonymous, sent))


# --- dynamic registration (RFC 7591) and management (RFC 7592) ---------------------------------
JSON_HOSTILE = [
    None,
    0,
    -1,
    1.5,
    1e308,
    True,
    False,
    [],
    {},
    [None],
    [1, 2],
    [[]],
    [{}],
    "",
    "\x00",
    "é",
    "x" * 5_000,
    ["x" * 5_000],
    ["https://ok.example/cb"] * 300,
    ["https://ok.example/cb", "https://ok.example/cb"],
    ["http://127.0.0.1:8765/cb"],
    ["http://evil.example/cb"],
    ["https://user:pw@app.example/cb"],
    ["https://app.example/cb#frag"],
    ["custom.scheme:/cb"],
    ["javascript:alert(1)"],
    ["https://app.example/\x00"],
    ["https://app.example/\u202e"],
    {"nested": {"deeper": [1, {"x": None}]}},
    "client_secret_basic",
    "none",
    "private_key_jwt",
    ["authorization_code"],
    ["client_credentials"],
    ["implicit"],
    ["code"],
    ["token"],
    "openid profile",
    "openid admin",
    "RS256",
    "HS256",
    "pairwise",
]
METADATA = [
    {
        "client_name": "Fuzz web",
        "redirect_uris": ["https://fuzz.example.com/cb"],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "scope": "openid profile",
    },
    {
        "client_name": "Fuzz native",
        "redirect_uris": ["http://127.0.0.1:9999/cb"],
        "token_endpoint_auth_method": "none",
    },
    {"grant_types": ["client_credentials"], "scope": "profile"},
    {
        "redirect_uris": ["https://fuzz.example.com/cb"],
        "post_logout_redirect_uris": ["https://fuzz.example.com/bye"],
        "backchannel_logout_uri": "https://fuzz.example.com/bcl",
        "backchannel_logout_session_required": True,
        "id_token_signed_response_alg": "ES256",
        "contacts": ["ops@fuzz.example.com"],
    },
    {},
]
METADATA_NAMES = sorted({name for doc in METADATA for name in doc} | {
    "client_uri", "logo_uri", "tos_uri", "policy_uri", "software_id", "software_version",
    "subject_type", "application_type", "jwks", "jwks_uri", "request_uris", "software_statement",
    "client_id", "client_secret", "registration_access_token", "client_id_issued_at",
    "frontchannel_logout_uri", "default_max_age", "require_auth_time", "initiate_login_uri",
})  # fmt: skip
RAW_JSON = [
    b"",
    b"{",
    b"null",
    b"[]",
    b'"a string"',
    b"1",
    b"{}garbage",
    b'{"client_name": "a", "client_name": "b", "redirect_uris": ["https://a.example/cb"]}',
    b'{"redirect_uris": ["https://a.example/\xff"]}',
    b"\xef\xbb\xbf{}",  # a byte order mark
    '{"client_name": "utf-16"}'.encode("utf-16"),
    b"[" * 30_000 + b"]" * 30_000,  # deep nesting, under the 64 KiB limit
    b'{"a":' * 20_000 + b"1" + b"}" * 20_000,
    b'{"client_name": "' + b"x" * 70_000 + b'"}',  # over the 64 KiB limit
    b'{"redirect_uris": [' + b'"https://a.example/cb",' * 2_000 + b'"https://a.example/cb"]}',
    b"NaN",
    b'{"scope": Infinity}',
]


_DOCUMENTS = st.sampled_from(METADATA)
_JSON_HOSTILE = st.sampled_from(JSON_HOSTILE)
_METADATA_NAMES = st.one_of(st.sampled_from(METADATA_NAMES), text())
_JSON_VALUES = st.one_of(_JSON_HOSTILE, text())
_DOCUMENT_MUTATIONS = st.sampled_from(["drop", "replace", "add"])


@st.composite
def metadata(draw) -> dict:
    """A registration document, valid to start with, then mutated."""
    document = dict(draw(_DOCUMENTS))
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(_DOCUMENT_MUTATIONS)
        if kind == "drop" and document:
            document.pop(draw(st.sampled_from(sorted(document))))
        elif kind == "replace" and document:
            document[draw(st.sampled_from(sorted(document)))] = draw(_JSON_HOSTILE)
        else:
            document[draw(_METADATA_NAMES)] = draw(_JSON_VALUES)
    return document


_TLS = st.integers(0, 19).map(bool)  # one in twenty over plain http
REGISTRATION_TYPES = ["application/json"] * 8 + [
    "application/json; charset=utf-8",
    FORM,
    "text/plain",
    "",
]


@budgets(BUDGETS["register"])
def test_registration_endpoints(world, budget):
    w = world

    def register_one() -> dict:
        created = w.anonymous.post(
            "/register",
            json.dumps(METADATA[0]),
            content_type="application/json",
            secure=True,
            HTTP_AUTHORIZATION=f"Bearer {w.registration}",
        ).json()
        return {"client_id": created["client_id"], "token": created["registration_access_token"]}

    managed = register_one()
    initial = f"Bearer {w.registration}"
    bearer = [initial] * 6 + ["Bearer wrong", "Bearer", "Bearer ", "Basic Zm9vOmJhcg=="]
    bearer += ["Bearer é", "Bearer " + "x" * 10_000]
    raw_or_not = st.integers(0, 5)
    raw = st.sampled_from(RAW_JSON)
    content_types = st.sampled_from(REGISTRATION_TYPES)
    header_values = headers(bearer, w.origins)
    manage_or_not = st.integers(0, 3)
    ids = st.sampled_from(["MANAGED"] * 4 + ["nobody", "x" * 64, "é", "%00"])
    manage_methods = st.sampled_from(["GET", "GET", "PUT", "PUT", "DELETE", "POST", "PATCH"])
    register_methods = st.sampled_from(["POST"] * 16 + ["GET", "PUT", "DELETE"])
    documents = metadata()

    @st.composite
    def plans(draw):
        body = draw(raw) if draw(raw_or_not) == 0 else json.dumps(draw(documents)).encode()
        content_type, hdrs = draw(content_types), draw(header_values)
        if draw(manage_or_not) == 0:
            method, client_id = draw(manage_methods), draw(ids)
            fix_id = method == "PUT" and draw(st.booleans())
            return method, client_id, body, content_type, hdrs, fix_id, draw(_TLS)
        return draw(register_methods), None, body, content_type, hdrs, False, draw(_TLS)

    def act(plan):
        method, client_id, body, content_type, hdrs, fix_id, secure = plan
        hdrs = dict(hdrs)
        if client_id is None:
            path = "/register"
        else:
            client_id = managed["client_id"] if client_id == "MANAGED" else client_id
            path = "/register/" + client_id
            if hdrs.get("HTTP_AUTHORIZATION") == initial:
                hdrs["HTTP_AUTHORIZATION"] = f"Bearer {managed['token']}"
            if fix_id and body.startswith(b"{"):
                try:
                    update = json.loads(body)
                except ValueError:
                    update = None
                if isinstance(update, dict):
                    update["client_id"] = managed["client_id"]
                    body = json.dumps(update).encode()
        if method in ("GET", "DELETE"):
            body = b""
        sent = request(method, path, (body, content_type), hdrs, secure=secure)
        own = client_id == managed["client_id"]
        if own and hdrs.get("HTTP_AUTHORIZATION") == f"Bearer {managed['token']}":
            response = send("register", w.anonymous, sent, expect=_update_without_client_id(sent))
        else:
            response = send("register", w.anonymous, sent)
        if response is None or path == "/register":
            return
        if response.status_code == 200:
            managed["token"] = response.json()["registration_access_token"]
        elif response.status_code == 204:  # deleted: manage a new one from now on
            managed.update(register_one())

    _run("register", budget, plans(), act)


def _update_without_client_id(sent) -> harness.Expected | None:
    """RFC 7592 §2.2: an update MUST carry the client's client_id. Sent by the client itself
    (with its current registration access token) over TLS, a JSON object without one is
    invalid_request."""
    template = "/register/{client_id}"
    if sent.method != "PUT" or not sent.secure or harness.expected_error(template, sent):
        return None
    if json.loads(sent.body).get("client_id"):
        return None
    return harness.Expected("invalid_request", "update without client_id")


# --- the authorization endpoint (RFC 6749 §4.1.1, OIDC Core §3.1.2) ----------------------------
@budgets(BUDGETS["authorize"])
def test_authorization_endpoint(world, budget):
    """GET (and some other methods) from a signed-in browser and from an anonymous one."""
    w, v = world, world.values
    strategy = st.tuples(
        requests(
            "/authorize",
            ["GET"] * 16 + ["HEAD", "PUT", "DELETE"],
            mutated(w.authorize_queries, v),
            headers(w.authorizations, w.origins),
        ),
        st.booleans(),
    )

    def act(example):
        sent, signed_in = example
        expect = None
        if _missing_response_type(w, sent):
            expect = harness.Expected("invalid_request", "no response_type")
        response = send("authorize", w.browser if signed_in else w.anonymous, sent, expect=expect)
        if expect and response is not None:  # back to the client, at its checked redirect URI
            assert response["Location"].startswith(_missing_response_type(w, sent) + "?"), sent

    _run("authorize", budget, strategy, act)


def _missing_response_type(world, sent) -> str | None:
    """RFC 6749 §4.1.2.1: a GET over TLS from a known client with a redirect URI that checks out
    (§3.1.2.3), without response_type, is sent back there with invalid_request. Returns that
    redirect URI, or None when the request is anything else."""
    if sent.method != "GET" or not sent.secure or not sent.query.isascii():
        return None
    try:
        pairs = parse_qsl(sent.query, keep_blank_values=True, errors="strict")
    except (UnicodeDecodeError, ValueError):
        return None
    params = dict(pairs)
    if len(params) != len(pairs) or any(len(v) > 4096 for v in params.values()):
        return None  # refused on an error page first (RFC 6749 §3.1)
    if params.get("response_type"):
        return None
    if "request" in params or "request_uri" in params:
        # RFC 9126 §4, RFC 9101 §5, OIDC Core §6: a pushed request or a request object brings
        # its own parameters, and its own errors (invalid_request_uri, invalid_request_object)
        return None
    clients = {c.client_id: c.client for c in (world.confidential, world.poster, world.public)}
    client = clients.get(params.get("client_id"))
    if client is None:
        return None
    uri = params.get("redirect_uri")
    if uri:
        return uri if uri in client.redirect_uris else None
    if "openid" in params.get("scope", "").split():
        return None  # OIDC Core §3.1.2.1: redirect_uri is REQUIRED, so an error page instead
    return client.redirect_uris[0] if len(client.redirect_uris) == 1 else None


@budgets(BUDGETS["consent"])
def test_consent_form(world, budget):
    """The consent page's POST, from a signed-in browser (CSRF off in the test client)."""
    w, v = world, world.values
    decisions = [[("decision", "allow")], [("decision", "deny")], [("decision", "maybe")], []]
    strategy = requests(
        "/authorize",
        ["POST"],
        mutated(decisions, v),
        query_parameters=mutated(w.authorize_queries, v, max_mutations=2),
        plain_http=False,
    )
    _run("consent", budget, strategy, lambda sent: send("consent", w.browser, sent))


# --- RP-initiated logout -----------------------------------------------------------------------
@budgets(BUDGETS["end_session"])
def test_end_session_endpoint(world, budget):
    """GET and POST, signed in (with a hint for this session or another) or not; the confirm
    form too. A browser that got signed out is signed back in when a request wants it."""
    w, v = world, world.values
    hint = v["id_token_hint"][0]
    bases = [
        [("id_token_hint", hint), ("post_logout_redirect_uri", "https://app.example.com/bye"), ("state", "s")],
        [("client_id", w.confidential.client_id), ("post_logout_redirect_uri", "https://app.example.com/bye")],
        [("id_token_hint", hint), ("client_id", w.public.client_id)],
        [("logout_hint", w.user.username), ("ui_locales", "en")],
        [],
    ]  # fmt: skip
    paths = st.sampled_from(["/logout/end-session"] * 5 + ["/logout/end-session/confirm"])
    strategy = st.tuples(
        requests(paths, ["GET"] * 8 + ["POST"] * 7 + ["PUT"], mutated(bases, v)), st.booleans()
    )
    state = {"signed_in": True}

    def act(example):
        sent, want_signed_in = example
        if want_signed_in and not state["signed_in"]:
            assert sign_in(w.browser, w.user.username, secure=True).status_code == 302
            state["signed_in"] = True
        response = send("end_session", w.browser if want_signed_in else w.anonymous, sent)
        if want_signed_in and (response is None or response.status_code in (200, 302)):
            state["signed_in"] = False  # it may have signed out: sign in again before relying on it

    _run("end_session", budget, strategy, act)


# --- the sign-in form ----------------------------------------------------------------------------
@budgets(BUDGETS["login"])
def test_login_form(world, budget):
    """Sign-in through /login/ (CSRF off in the test client): wrong and right passwords, hostile
    names, ``next`` and ``login_hint`` values, odd X-Forwarded-For; throttling kicks in along the
    way."""
    w, v = world, world.values
    bases = [
        [("username", w.user.username), ("password", v["password"][0])],
        [("username", w.user.email.upper()), ("password", "wrong password")],
        [("username", "nobody"), ("password", "x")],
        [("username", w.user.username)],
    ]
    queries = [
        [],
        [("next", "/")],
        [("next", "/authorize?client_id=x")],
        [("login_hint", "x"), ("reauth", "1")],
    ]
    forwarded = st.fixed_dictionaries(
        {}, optional={"HTTP_X_FORWARDED_FOR": st.sampled_from(HOSTILE_VALUES)}
    )
    strategy = requests(
        "/login/",
        ["POST"] * 4 + ["GET", "PUT"],
        mutated(bases, v),
        forwarded,
        query_parameters=mutated(queries, v, max_mutations=2),
        plain_http=False,
    )
    _run("login", budget, strategy, lambda sent: send("login", w.anonymous, sent))
