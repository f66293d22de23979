"""Shared by the attack tests: real HTTP clients racing a live server (each with its own
``requests.Session`` and kept-alive connection, released together by a barrier). The OAuth
fixtures (confidential, public) come from tests/conftest.py."""

import re
import threading
from collections.abc import Callable

import pytest
import requests

from tests.factories import PASSWORD

N = 20  # concurrent clients in every race
TIMEOUT = 60  # seconds any one request, or the whole race, may take
_CSRF_FIELD = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


@pytest.fixture
def plain_http_cookies(settings):
    """The live server speaks plain http; requests never sends a Secure cookie over it, so the
    session and CSRF cookies are not Secure for the length of the test (as in test_throttle)."""
    settings.CSRF_COOKIE_SECURE = False
    settings.SESSION_COOKIE_SECURE = False


def csrf_token(page: requests.Response) -> str:
    """The CSRF token of the form on ``page``."""
    match = _CSRF_FIELD.search(page.text)
    assert match, page.text[-600:]
    return match.group(1)


def live_sign_in(
    browser: requests.Session, base_url: str, username: str, password: str = PASSWORD
) -> requests.Response:
    """Sign in through the live server's page, as a browser does: the form, then its POST."""
    token = csrf_token(browser.get(f"{base_url}/login/", timeout=TIMEOUT))
    return browser.post(
        f"{base_url}/login/",
        data={"csrfmiddlewaretoken": token, "username": username, "password": password},
        headers={"Referer": f"{base_url}/login/"},
        allow_redirects=False,
        timeout=TIMEOUT,
    )


def race(
    prepare: Callable[[int, requests.Session], object],
    attack: Callable[[int, requests.Session, object], requests.Response],
    n: int = N,
) -> list[requests.Response]:
    """``n`` threads, each with its own ``requests.Session``. Each first runs ``prepare(i,
    session)`` (which opens its kept-alive connection and fetches whatever the attack needs), then
    all wait at a barrier and run ``attack(i, session, prepared)`` at the same moment. Returns the
    n responses in thread order; any exception in a thread fails the test."""
    barrier = threading.Barrier(n, timeout=TIMEOUT)
    results: list = [None] * n
    errors: list[BaseException] = []

    def run(index: int) -> None:
        with requests.Session() as session:
            try:
                prepared = prepare(index, session)
                barrier.wait()
                results[index] = attack(index, session, prepared)
            except BaseException as error:
                errors.append(error)
                barrier.abort()

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    assert not any(thread.is_alive() for thread in threads), "a racing client never finished"
    assert not errors, errors
    return results


def open_connection(base_url: str):
    """A ``prepare`` for races on protocol endpoints: one cheap request opens the connection."""

    def prepare(index: int, session: requests.Session) -> None:
        session.get(f"{base_url}/.well-known/openid-configuration", timeout=TIMEOUT)

    return prepare


def parallel_sign_ins(
    base_url: str, identifiers: list[str], password: str
) -> list[requests.Response]:
    """One browser per identifier, each on the sign-in page, all submitting at the same moment."""

    def open_form(index: int, browser: requests.Session) -> str:
        return csrf_token(browser.get(f"{base_url}/login/", timeout=TIMEOUT))

    def submit(index: int, browser: requests.Session, token: str) -> requests.Response:
        return browser.post(
            f"{base_url}/login/",
            data={
                "csrfmiddlewaretoken": token,
                "username": identifiers[index],
                "password": password,
            },
            headers={"Referer": f"{base_url}/login/"},
            allow_redirects=False,
            timeout=TIMEOUT,
        )

    return race(open_form, submit, n=len(identifiers))


def no_server_errors(responses) -> None:
    statuses = [response.status_code for response in responses]
    assert all(status < 500 for status in statuses), statuses
