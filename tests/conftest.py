"""Fixtures shared by the whole suite. The database is the real PostgreSQL from DATABASE_URL."""

import re
from contextlib import contextmanager

import psycopg
import pytest
from django.core.cache import cache
from django.core.management import call_command
from django.db import connection
from django.test import Client, override_settings

from accounts.models import UserSession
from accounts.sessions import SessionStore
from authserver import breaker
from authserver.locks import _lock_id
from tests.factories import PASSWORD, ClientFactory, Registered, UserFactory
from tokens import keys, liveness
from tokens.oauth.server import get_server

FAST_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(scope="session", autouse=True)
def _static_manifest(tmp_path_factory):
    # Pages use {% static %}; with DEBUG off the manifest storage needs collected files. Each run
    # collects into its own folder, so runs side by side never see each other's half-written files.
    override = override_settings(STATIC_ROOT=tmp_path_factory.mktemp("static"))
    override.enable()
    call_command("collectstatic", interactive=False, verbosity=0)
    yield
    override.disable()


@pytest.fixture(scope="session", autouse=True)
def _stop_listening_for_revocations(django_db_setup):
    """tokens/liveness.py keeps a connection to the test database: close it before the
    database is dropped."""
    yield
    liveness.close()


@pytest.fixture(autouse=True)
def _clean_cache():
    """Each test starts with an empty cache (a Redis database reserved for tests, see Makefile),
    and with the cache's circuit breaker closed (a test may have pointed the cache at a dead Redis)."""
    breaker.reset_all()
    cache.clear()
    yield
    breaker.reset_all()
    cache.clear()


@pytest.fixture(autouse=True)
def _synchronous_email(settings):
    # Reset emails normally go through Celery (timing); tests read them from mail.outbox at once.
    settings.EMAIL_ASYNC = False


@pytest.fixture(autouse=True)
def _fast_hasher(request, settings):
    # Argon2 on every test user would make the suite slow; tests about timing opt out.
    if "real_hasher" not in request.keywords:
        settings.PASSWORD_HASHERS = FAST_HASHERS


@pytest.fixture(autouse=True)
def _fresh_server_and_keys():
    """Authlib's server is built once per process and signing keys are kept in memory; a test
    that changes settings or flushes the keys (transactional tests do) needs both anew."""
    get_server.cache_clear()
    keys.forget()
    yield
    keys.forget()


@pytest.fixture
def confidential(db) -> Registered:
    """The example web app: confidential, code + refresh + client credentials."""
    return Registered.of(ClientFactory())


@pytest.fixture
def public(db) -> Registered:
    """The example single-page app: public, PKCE."""
    return Registered.of(ClientFactory(public=True))


@pytest.fixture
def user(db):
    return UserFactory()


@pytest.fixture
def staff_user(db):
    return UserFactory(staff=True)


def sign_in(client: Client, identifier: str, password: str = PASSWORD, **extra):
    """Sign in through the real page, as a browser would."""
    return client.post("/login/", {"username": identifier, "password": password}, **extra)


def session_row(client: Client) -> UserSession:
    return UserSession.objects.get(
        session_key=SessionStore.digest(client.cookies["authserver_session"].value)
    )


@pytest.fixture
def logged_in_client(user):
    client = Client(
        HTTP_USER_AGENT="Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
    )
    response = sign_in(client, user.username)
    assert response.status_code == 302, response.content
    return client


@pytest.fixture
def staff_client(staff_user):
    client = Client()
    assert sign_in(client, staff_user.username).status_code == 302
    return client


def form_error(response) -> str:
    """The text of the page's alert box, whitespace squeezed."""
    match = re.search(r'role="alert"[^>]*>(.*?)</div>', response.content.decode(), re.S)
    return re.sub(r"<[^>]+>|\s+", " ", match.group(1)).strip() if match else ""


def second_connection(**options) -> psycopg.Connection:
    """A PostgreSQL connection of its own to the test database, as another process would have."""
    params = connection.get_connection_params()
    return psycopg.connect(
        dbname=connection.settings_dict["NAME"],
        host=params.get("host"),
        port=params.get("port"),
        user=params.get("user"),
        password=params.get("password"),
        **options,
    )


@contextmanager
def another_machine_holds(lock_name: str):
    """Another machine running a job: a second PostgreSQL connection holds its advisory lock.

    It unlocks explicitly on the way out: closing the connection frees the lock only once the
    server has handled the disconnect, which a query right after could beat."""
    lock = _lock_id(lock_name)
    with second_connection(autocommit=True) as other_machine:
        other_machine.execute("SELECT pg_advisory_lock(%s)", [lock])
        try:
            yield
        finally:
            other_machine.execute("SELECT pg_advisory_unlock(%s)", [lock])
