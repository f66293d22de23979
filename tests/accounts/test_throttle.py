"""Brute-force protection: failures limited per account and per IP, counted atomically."""

import re
import threading

import pytest
import requests
from django.core.cache import cache
from django.test import Client

from accounts import throttle
from accounts.models import SecurityEvent
from tests.conftest import form_error, sign_in
from tests.factories import PASSWORD, UserFactory

pytestmark = pytest.mark.django_db

THROTTLED = "Too many failed sign-in attempts."


def fail(client, identifier, times, **extra):
    return [sign_in(client, identifier, "wrong password", **extra) for _ in range(times)]


def test_five_failures_lock_the_account_even_for_the_right_password(client, user):
    responses = fail(client, user.username, 5)
    assert all(form_error(r).startswith("The username or email") for r in responses)
    response = sign_in(client, user.username)  # the correct password, too late
    assert response.status_code == 200
    assert form_error(response).startswith(THROTTLED)
    assert "authserver_session" not in response.cookies


def test_the_lockout_is_recorded_once(client, user):
    fail(client, user.username, 8)
    lockouts = SecurityEvent.objects.filter(kind="lockout")
    assert lockouts.count() == 1
    assert lockouts.get().user == user
    assert SecurityEvent.objects.filter(kind="login_failed").count() == 5


def test_a_lockout_reads_the_same_for_an_account_that_does_not_exist(client, user):
    fail(client, user.username, 5)
    fail(client, "no-such-person", 5)
    known = sign_in(client, user.username, "wrong")
    unknown = sign_in(client, "no-such-person", "wrong")
    assert form_error(known) == form_error(unknown)
    assert form_error(known).startswith(THROTTLED)


def test_the_account_limit_counts_every_spelling_of_the_name(client, user):
    fail(client, user.username.upper(), 3)
    fail(client, user.username.lower(), 2)
    assert form_error(sign_in(client, user.username)).startswith(THROTTLED)


def test_a_successful_sign_in_clears_the_account_counter(client, user):
    fail(client, user.username, 4)
    assert sign_in(client, user.username).status_code == 302
    Client().post("/logout/")
    other = Client()
    fail(other, user.username, 4)
    assert sign_in(other, user.username).status_code == 302


def test_one_ip_is_limited_across_many_accounts(client, settings):
    settings.LOGIN_FAILURE_LIMIT_PER_IP = 6
    for n in range(6):
        sign_in(client, f"sprayed-{n}", "wrong password")
    victim = UserFactory()
    assert form_error(sign_in(client, victim.username)).startswith(THROTTLED)
    # Another address is not affected.
    assert sign_in(Client(REMOTE_ADDR="192.0.2.7"), victim.username).status_code == 302


def test_behind_a_proxy_the_forwarded_address_is_the_one_limited(settings, user):
    settings.TRUSTED_PROXY_COUNT = 1
    settings.LOGIN_FAILURE_LIMIT_PER_IP = 3
    attacker = Client(HTTP_X_FORWARDED_FOR="198.51.100.9")
    for n in range(3):
        sign_in(attacker, f"x{n}", "wrong")
    assert form_error(sign_in(attacker, user.username)).startswith(THROTTLED)
    # Everyone else behind the same proxy (same REMOTE_ADDR) still gets in.
    assert sign_in(Client(HTTP_X_FORWARDED_FOR="198.51.100.10"), user.username).status_code == 302


def test_each_lockout_doubles_the_next_window(settings, user):
    """The growing delay: 15 minutes, then 30, then 60 ..."""
    redis = cache._cache.get_client()
    key = throttle._key("count", "account", f"\0{user.pk}")  # one counter per existing account
    client = Client()
    fail(client, user.username, 5)
    first = redis.ttl(cache.make_and_validate_key(key))
    assert settings.LOGIN_FAILURE_WINDOW - 5 <= first <= settings.LOGIN_FAILURE_WINDOW
    cache.delete(key)  # the first window has passed
    fail(client, user.username, 1)
    second = redis.ttl(cache.make_and_validate_key(key))
    assert 2 * settings.LOGIN_FAILURE_WINDOW - 5 <= second <= 2 * settings.LOGIN_FAILURE_WINDOW


@pytest.mark.django_db(transaction=True)
def test_twenty_parallel_attempts_get_no_more_than_the_limit_through(live_server, settings):
    """Zitadel GHSA-7h8m-vrxx-vr4m: a counter read-then-written can be raced past. Ours cannot."""
    settings.CSRF_COOKIE_SECURE = False  # the live server speaks plain HTTP
    victim = UserFactory()
    barrier = threading.Barrier(20)
    answers: list[str] = []

    def attempt():
        with requests.Session() as browser:
            page = browser.get(f"{live_server.url}/login/")
            token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
            barrier.wait()
            response = browser.post(
                f"{live_server.url}/login/",
                data={
                    "csrfmiddlewaretoken": token,
                    "username": victim.username,
                    "password": "guess",
                },
                headers={"Referer": f"{live_server.url}/login/"},
            )
            answers.append("throttled" if THROTTLED in response.text else "checked")

    threads = [threading.Thread(target=attempt) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(answers) == 20
    assert answers.count("checked") == settings.LOGIN_FAILURE_LIMIT
    assert SecurityEvent.objects.filter(kind="login_failed").count() == settings.LOGIN_FAILURE_LIMIT
    # And the right password is refused now too.
    assert form_error(sign_in(Client(), victim.username, PASSWORD)).startswith(THROTTLED)
