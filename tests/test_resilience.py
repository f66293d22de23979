"""When a backing service fails: Redis (cache) or the broker down, PostgreSQL unreachable.
Sign-in and tokens keep working where they can, lockout still holds, nothing answers 500."""

import threading
from contextlib import contextmanager

import pytest
from django.db import connections
from django.test import Client as Browser

from accounts.models import LoginCounter, SecurityEvent, UserSession
from authserver.celery import app
from tests.conftest import form_error, sign_in
from tests.factories import UserFactory
from tests.tokens.conftest import exchange, get_code, token_request
from tokens import client_cache, logout
from tokens.models import BackchannelLogout, Client

DEAD_REDIS = "redis://127.0.0.1:1/0"  # nothing listens on port 1


@pytest.fixture
def cache_down(settings):
    settings.CACHES = {
        "default": {
            "BACKEND": "authserver.cache.RedisCache",
            "LOCATION": DEAD_REDIS,
            "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
        }
    }
    yield
    # A client-change listener this process started meanwhile listens to the dead Redis.
    client_cache._memory = None


@pytest.mark.django_db
def test_with_redis_down_people_sign_in_and_stay_signed_in(cache_down, user):
    browser = Browser()
    assert sign_in(browser, user.username).status_code == 302
    assert browser.get("/account/sessions/").status_code == 200  # the session row answers
    assert UserSession.objects.active().filter(user=user).count() == 1


@pytest.mark.django_db
def test_with_redis_down_the_lockout_still_holds_through_the_database(cache_down, user, settings):
    browser = Browser()
    for _ in range(settings.LOGIN_FAILURE_LIMIT):
        sign_in(browser, user.username, "wrong")
    response = sign_in(browser, user.username)  # the right password, too late
    assert form_error(response).startswith("Too many failed sign-in attempts.")
    assert LoginCounter.objects.exists()
    assert SecurityEvent.objects.filter(kind="lockout").count() == 1


@pytest.mark.django_db(transaction=True)
def test_with_redis_down_twenty_parallel_guesses_get_no_more_than_the_limit(cache_down, settings):
    victim = UserFactory()
    barrier = threading.Barrier(20)

    def guess() -> None:
        try:
            barrier.wait()
            sign_in(Browser(), victim.username, "guess")
        finally:
            connections.close_all()

    threads = [threading.Thread(target=guess) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert SecurityEvent.objects.filter(kind="login_failed").count() == settings.LOGIN_FAILURE_LIMIT


@pytest.mark.django_db
def test_with_redis_down_the_token_endpoint_keeps_working(cache_down, confidential, user):
    assert token_request(confidential, {"grant_type": "client_credentials"}).status_code == 200
    browser = Browser()
    sign_in(browser, user.username)
    code, verifier = get_code(browser, confidential, scope="openid")
    assert exchange(confidential, code, verifier).status_code == 200


def _fresh_broker_connections() -> None:
    # Celery keeps a connection pool and a producer pool built from the broker URL; drop them
    # (without closing: a closed pool may still be referenced) so the next publish reconnects.
    app._pool = None
    app.amqp._producer_pool = None


@pytest.fixture
def broker_down():
    original = app.conf.broker_url, app.conf.broker_write_url
    app.conf.broker_url = app.conf.broker_write_url = DEAD_REDIS
    _fresh_broker_connections()
    yield
    app.conf.broker_url, app.conf.broker_write_url = original
    _fresh_broker_connections()


@pytest.mark.django_db
def test_with_the_broker_down_signing_out_works_and_the_logout_waits_for_the_sweep(
    broker_down, confidential, user
):
    Client.objects.filter(pk=confidential.client.pk).update(
        backchannel_logout_uri="https://rp.example/bcl"
    )
    browser = Browser()
    sign_in(browser, user.username)
    code, verifier = get_code(browser, confidential, scope="openid")
    exchange(confidential, code, verifier)
    response = browser.post("/logout/")
    assert response.status_code == 200 and b"You are signed out" in response.content
    delivery = BackchannelLogout.objects.get()
    assert (delivery.status, delivery.attempts) == ("pending", 0)
    assert logout.enqueue([delivery.pk]) == 0  # still down: nothing lost, nothing raised


@pytest.mark.django_db
def test_stalled_deliveries_are_queued_again_once_the_broker_is_back(confidential):
    from datetime import timedelta

    from django.utils import timezone

    old = timezone.now() - timedelta(minutes=30)
    stalled = BackchannelLogout.objects.create(
        sid="s1", client=confidential.client, status="pending"
    )
    fresh = BackchannelLogout.objects.create(sid="s2", client=confidential.client, status="pending")
    died = BackchannelLogout.objects.create(
        sid="s3", client=confidential.client, status="sending", attempts=1, last_attempt_at=old
    )
    BackchannelLogout.objects.filter(pk=stalled.pk).update(created=old)
    app.connection_for_write().default_channel.client.delete("celery")  # an empty queue
    assert logout.resend_stalled() == 2  # not the fresh one: its own task is still on its way
    queued = app.connection_for_write().default_channel.client.llen("celery")
    assert queued == 2
    assert set(BackchannelLogout.objects.values_list("status", flat=True)) == {"pending", "sending"}
    assert fresh.pk and died.pk and stalled.pk


@contextmanager
def database_unreachable():
    """The database stops answering: a new connection pool pointed at a port nobody serves."""
    connection = connections["default"]
    original = connection.settings_dict["PORT"]
    connection.close()
    connection.close_pool()
    connection.settings_dict["PORT"] = "1"
    try:
        yield
    finally:
        connection.close()
        connection.close_pool()
        connection.settings_dict["PORT"] = original


@pytest.fixture
def database_down():
    with database_unreachable():
        yield


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("method", "path", "kind"),
    [
        ("post", "/token", "json"),
        ("get", "/userinfo", "json"),
        ("sign-in", "/login/", "html"),
    ],
)
def test_with_the_database_down_requests_get_503_with_retry_after_not_a_stack_trace(
    database_down, method, path, kind
):
    browser = Browser(raise_request_exception=False)
    if method == "sign-in":  # the page itself needs no database; signing in does
        response = browser.post(path, {"username": "someone", "password": "something"})
    elif method == "post":
        response = browser.post(
            path, "grant_type=client_credentials", content_type="application/x-www-form-urlencoded",
            secure=True, HTTP_AUTHORIZATION="Basic YTpi",
        )  # fmt: skip
    else:
        response = browser.get(path, secure=True, HTTP_AUTHORIZATION="Bearer x")
    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    body = response.content.decode()
    assert "Traceback" not in body and "OperationalError" not in body
    if kind == "json":
        assert response.json()["error"] == "temporarily_unavailable"
    else:
        assert "We will be back in a moment" in body


@pytest.mark.django_db(transaction=True)
def test_after_the_database_returns_service_resumes_at_once(confidential):
    def client_credentials():
        return Browser(raise_request_exception=False).post(
            "/token", "grant_type=client_credentials", content_type="application/x-www-form-urlencoded",
            secure=True, **confidential.basic(),
        )  # fmt: skip

    with database_unreachable():
        assert client_credentials().status_code == 503
    assert client_credentials().status_code == 200
