"""schemathesis against authserver/openapi.yaml, loaded from /openapi.yaml through the Django WSGI
application and run in process (werkzeug's test client, no server).

Every documented operation gets schemathesis' examples, coverage and fuzzing phases, positive and
negative, with credentials drawn from a real world (a client's valid Basic, a person's access
token, an initial access token, none, wrong and malformed ones) and over https or plain http.
Checks: not_a_server_error, status code, content type, response headers and response schema
conformance, and tests/fuzz/harness.py's (the RFC's error shape and codes, no-store, no
traceback).
"""

from __future__ import annotations

import sys

import pytest
import schemathesis
from django.core import signals
from django.core.handlers.wsgi import WSGIHandler
from django.db import close_old_connections
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.factories import UserFactory
from tests.fuzz import harness
from tests.fuzz.harness import SCHEMATHESIS_MINIMUM, Sent, hypothesis_settings
from tests.fuzz.strategies import authorization_values, basic
from tokens import access_tokens
from tokens.clients import create_client, create_initial_access_token

pytestmark = [
    pytest.mark.django_db,
    # client_ids become cache keys as sent (harmless with Redis, not with memcached): reported.
    pytest.mark.filterwarnings("ignore::django.core.cache.backends.base.CacheKeyWarning"),
]

APP = WSGIHandler()
SCHEMA = schemathesis.openapi.from_wsgi("/openapi.yaml", APP)
PROTOCOL = (
    r"^/(authorize|token|introspect|revoke|par|userinfo|register|logout/end-session|\.well-known/)"
)
protocol = SCHEMA.include(path_regex=PROTOCOL)
the_rest = SCHEMA.exclude(path_regex=PROTOCOL)

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
# How many examples schemathesis generates per operation (its coverage phase adds its own).
PROTOCOL_EXAMPLES = 60
OTHER_EXAMPLES = 8


BROKEN = authorization_values([basic("nobody", "x")], [])


class World:
    """Credentials to put on generated requests; exceptions the application raised."""

    def __init__(self):
        client, secret = create_client(
            name="Schemathesis",
            redirect_uris=["https://app.example.com/callback"],
            grant_types=["authorization_code", "refresh_token", "client_credentials"],
            scopes=["openid", "profile", "email"],
        )
        self.initial = create_initial_access_token(uses=100_000)
        person = access_tokens.issue(
            client=client, user=UserFactory(), scope="openid profile email"
        )
        self.errors: list[BaseException] = []
        # The valid Basic, a person's access token, the initial access token (each three
        # times as likely as one broken value), none, and the broken ones.
        valid = [
            basic(client.client_id, secret),
            f"Bearer {person.value}",
            f"Bearer {self.initial}",
        ]
        self.authorizations = valid * 3 + [None, None] + [v for v in BROKEN if _sendable(v)]

    def authorization(self, index: int) -> str | None:
        return self.authorizations[index % len(self.authorizations)]

    def record(self, sender, request=None, **kwargs):
        self.errors.append(sys.exc_info()[1])


def _sendable(value: str) -> bool:
    """What a real HTTP client will put in a header (requests refuses the rest; the malformed
    ones are test_protocol_fuzz.py's business, through the Django test client)."""
    from requests.exceptions import InvalidHeader
    from requests.utils import check_header_validity

    try:
        check_header_validity(("Authorization", value))
    except InvalidHeader:
        return False
    return True


EXECUTED: set[str] = set()


@pytest.fixture
def world(db, request):
    """The world, with Django's per-request connection closing off: the application runs inside
    this test's transaction, as the Django test client arranges for its own requests."""
    world = World()
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    signals.got_request_exception.connect(world.record)
    try:
        yield world
    finally:
        signals.got_request_exception.disconnect(world.record)
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)
    EXECUTED.add(request.node.nodeid)


@pytest.fixture(scope="module", autouse=True)
def _schemathesis_minimum(request):
    """Once every default test of this module has run, its share of the budget was sent."""
    before = harness.REQUESTS["schemathesis"]
    yield
    mine = [
        item.nodeid
        for item in request.session.items
        if item.module is request.module and "fuzz_long" not in item.keywords
    ]
    if mine and all(nodeid in EXECUTED for nodeid in mine):
        sent = harness.REQUESTS["schemathesis"] - before
        assert sent >= SCHEMATHESIS_MINIMUM, f"schemathesis sent {sent} requests"


def _sent(response) -> Sent:
    from urllib.parse import urlsplit

    prepared = response.request
    url = urlsplit(prepared.url)
    body = prepared.body or b""
    if isinstance(body, str):
        body = body.encode("utf-8", "surrogateescape")
    headers = {k: v for k, v in prepared.headers.items() if k.lower() != "content-type"}
    content_type = prepared.headers.get("Content-Type")
    return Sent(
        prepared.method, url.path, url.query, body, content_type, headers, url.scheme == "https"
    )


def run(case, world: World, auth: int, secure: bool) -> None:
    harness.REQUESTS["schemathesis"] += 1
    headers = {}
    value = world.authorization(auth)
    if value is not None:
        headers["Authorization"] = value
    world.errors.clear()
    response = case.call(
        base_url="https://localhost" if secure else "http://localhost", headers=headers
    )
    sent = _sent(response)
    if world.errors:
        error = world.errors[0]
        harness.server_error("schemathesis", sent, error)
        return  # a known finding, counted
    answer = (response.status_code, _headers(response), response.content)
    if harness.answer_problems(case.operation.path, sent.method, *answer):
        # Fails the test, unless the answer is a known finding (then it is counted).
        harness.check_answer("schemathesis", sent, *answer)
        return
    if harness.expected_error(case.operation.path, sent):
        harness.check_answer("schemathesis", sent, *answer)  # the exact error code it is due
    case.validate_response(response, checks=CHECKS)


class _Headers(dict):
    def get(self, name, default=None):
        for key, value in self.items():
            if key.lower() == name.lower():
                return value
        return default


def _headers(response) -> _Headers:
    return _Headers({name: values[-1] for name, values in response.headers.items()})


@protocol.parametrize()
@protocol.given(auth=st.integers(0, 40), secure=st.integers(0, 9).map(bool))
@hypothesis_settings(PROTOCOL_EXAMPLES)
def test_protocol_operations(case, auth, secure, world):
    run(case, world, auth, secure)


@the_rest.parametrize()
@the_rest.given(auth=st.integers(0, 40), secure=st.integers(0, 9).map(bool))
@hypothesis_settings(OTHER_EXAMPLES)
def test_pages_and_operations(case, auth, secure, world):
    run(case, world, auth, secure)


@pytest.mark.fuzz_long
@protocol.parametrize()
@protocol.given(auth=st.integers(0, 40), secure=st.integers(0, 9).map(bool))
@hypothesis_settings(PROTOCOL_EXAMPLES * harness.LONG_FACTOR)
def test_protocol_operations_long(case, auth, secure, world):
    run(case, world, auth, secure)
