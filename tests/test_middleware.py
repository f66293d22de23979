"""Which middleware each route runs (authserver/settings.py: PROTOCOL_MIDDLEWARE and
BROWSER_MIDDLEWARE, parted by authserver.middleware.ProtocolRouter).

Every route of the URLconf is requested for real, with each middleware class recording that it
ran: the protocol endpoints get exactly the protocol list, every other route the whole stack.
"""

import re
import uuid

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.handlers.wsgi import WSGIHandler
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, resolve, reverse
from django.utils.module_loading import import_string

from authserver.middleware import ProtocolRouter

pytestmark = pytest.mark.django_db

ROUTER = ProtocolRouter.PATH
SAMPLES = {"int": "1", "uuid": str(uuid.UUID(int=1)), "str": "sample", "slug": "sample"}


def paths(patterns=None, prefix=""):
    """A path to request for every route, converters and regex groups filled in."""
    for entry in get_resolver().url_patterns if patterns is None else patterns:
        route = prefix + _example(str(entry.pattern))
        if isinstance(entry, URLResolver):
            yield from paths(entry.url_patterns, route)
        elif isinstance(entry, URLPattern):
            yield "/" + route


def _example(pattern: str) -> str:
    pattern = re.sub(r"<(?:(\w+):)?\w+>", lambda m: SAMPLES.get(m.group(1) or "str", "x"), pattern)
    # The admin's regex routes: (?P<app_label>accounts|auth|tokens)/$ and its catch-all (.*)$.
    pattern = re.sub(r"\(\?P<\w+>([\w|]+)\)", lambda m: m.group(1).split("|")[0], pattern)
    pattern = re.sub(r"\(\?P<\w+>\.\*\)", "sample", pattern)
    return pattern.lstrip("^").rstrip("$").replace("\\", "")


@pytest.fixture
def ran(monkeypatch, settings) -> list[str]:
    """The middleware that handled the last request, outermost first."""
    calls: list[str] = []
    for name in settings.MIDDLEWARE:
        cls = import_string(name)

        def traced(self, request, _original=cls.__call__, _cls=cls, _name=name):
            if type(self) is _cls:
                calls.append(_name)
            return _original(self, request)

        monkeypatch.setattr(cls, "__call__", traced)
    return calls


def test_middleware_is_the_protocol_list_the_router_and_the_browser_list(settings):
    assert settings.MIDDLEWARE == [
        *settings.PROTOCOL_MIDDLEWARE,
        ROUTER,
        *settings.BROWSER_MIDDLEWARE,
    ]
    assert not set(settings.PROTOCOL_MIDDLEWARE) & set(settings.BROWSER_MIDDLEWARE)
    # Which endpoints skip the browser stack is a decision, not a side effect: change it here too.
    assert {reverse(name) for name in settings.PROTOCOL_URL_NAMES} == {
        "/token",
        "/introspect",
        "/revoke",
        "/par",
        "/device_authorization",
        "/userinfo",
        "/.well-known/jwks.json",
        "/.well-known/openid-configuration",
        "/.well-known/oauth-authorization-server",
    }


def test_every_route_runs_the_stack_of_its_kind(ran, settings):
    """The protocol endpoints run PROTOCOL_MIDDLEWARE and nothing else; every other route in
    the URLconf (pages, admin, registration, metrics, ...) runs the whole MIDDLEWARE."""
    seen_protocol = set()
    everything = list(paths())
    assert len(everything) > 50  # the admin's routes are in there too
    for path in everything:
        name = resolve(path).view_name  # a route shadowed by an earlier one resolves to that one
        ran.clear()
        Client(raise_request_exception=False).get(path, secure=True)
        if name in settings.PROTOCOL_URL_NAMES:
            seen_protocol.add(name)
            assert ran == [*settings.PROTOCOL_MIDDLEWARE, ROUTER], path
        else:
            assert ran == settings.MIDDLEWARE, path
    assert seen_protocol == set(settings.PROTOCOL_URL_NAMES)


def test_a_near_miss_of_a_protocol_path_gets_the_whole_stack(ran, settings):
    Client().get("/token/", secure=True)  # not a protocol route: the browser's 404 page
    assert ran == settings.MIDDLEWARE


@pytest.mark.parametrize(
    "change",
    [
        lambda s: s.MIDDLEWARE.append("django.middleware.gzip.GZipMiddleware"),
        lambda s: s.MIDDLEWARE.insert(0, "django.middleware.gzip.GZipMiddleware"),
        lambda s: s.MIDDLEWARE.remove("django.middleware.csrf.CsrfViewMiddleware"),
    ],
    ids=["added-at-the-end", "added-first", "removed"],
)
def test_a_middleware_in_neither_list_stops_start_up(settings, change):
    settings.MIDDLEWARE = list(settings.MIDDLEWARE)
    change(settings)
    with pytest.raises(ImproperlyConfigured, match="PROTOCOL_MIDDLEWARE"):
        WSGIHandler()


def test_a_protocol_middleware_with_view_hooks_stops_start_up(settings):
    """The protocol path calls the view itself, so Django never calls process_view there."""
    csrf = "django.middleware.csrf.CsrfViewMiddleware"
    settings.PROTOCOL_MIDDLEWARE = [*settings.PROTOCOL_MIDDLEWARE, csrf]
    settings.BROWSER_MIDDLEWARE = [m for m in settings.BROWSER_MIDDLEWARE if m != csrf]
    settings.MIDDLEWARE = [*settings.PROTOCOL_MIDDLEWARE, ROUTER, *settings.BROWSER_MIDDLEWARE]
    with pytest.raises(ImproperlyConfigured, match="process_view"):
        WSGIHandler()


def test_the_lists_as_configured_build_a_handler():
    WSGIHandler()  # no ImproperlyConfigured
