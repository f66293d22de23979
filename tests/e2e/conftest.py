"""Playwright (sync API) driving the system Chromium, for the tests marked ``e2e``.

Nothing here downloads a browser: Chromium is /usr/bin/chromium (override with CHROMIUM_PATH).

Scope matters. While Playwright runs, its event loop counts as running in this thread, between
calls too, so Django's ``async_unsafe`` guard would refuse every ORM call made by the test (the
factories, the transactional flush after each test). The documented workaround is
DJANGO_ALLOW_ASYNC_UNSAFE. Playwright and that variable live and die together, per module: the
rest of the suite never runs with the loop marked running nor with the guard off.

Secure cookies: with DEBUG off the session and CSRF cookies are ``Secure`` and the live server is
plain http://localhost. Chromium treats localhost as a secure context and keeps and sends Secure
cookies there, so the settings are not overridden (``signed_in`` checks the cookie is Secure).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from tests.factories import PASSWORD

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = Path(os.environ.get("E2E_SCREENSHOT_DIR", "/tmp"))

# Two "devices", so the Device column tells the sessions apart.
DESKTOP_CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36"
)
IPHONE_SAFARI = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1"
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with pytest.MonkeyPatch.context() as mp:
        # Must be set before Playwright starts and stay set until after it stops (see above).
        mp.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
            )
            try:
                yield chromium
            finally:
                chromium.close()


@pytest.fixture(autouse=True)
def _unhashed_static_urls(settings):
    """Let the live server serve the stylesheet, so the browser sees the page as people do.

    With DEBUG off, ``{% static %}`` names the hashed file of the manifest storage. pytest-django's
    live server serves /static/ itself, through the finders only (the unhashed source files), and
    answers 404 before WhiteNoise is reached: every page would render without CSS. Plain storage
    names the unhashed file, which it finds.
    """
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call":
        item.e2e_failed = report.failed
    return report


@pytest.fixture
def new_context(request, browser: Browser, live_server) -> Iterator:
    """``new_context(user_agent)``: a fresh browser profile (cookies and all) on the live server.

    On failure each page is saved as a screenshot (E2E_SCREENSHOT_DIR, /tmp by default).
    """
    contexts: list[BrowserContext] = []

    def make(user_agent: str) -> BrowserContext:
        context = browser.new_context(base_url=live_server.url, user_agent=user_agent)
        context.set_default_timeout(10_000)
        contexts.append(context)
        return context

    yield make

    for number, context in enumerate(contexts):
        if getattr(request.node, "e2e_failed", False):
            for page_number, page in enumerate(context.pages):
                name = re.sub(r"\W+", "-", request.node.name)
                path = SCREENSHOTS / f"e2e-{name}-{number}-{page_number}.png"
                try:
                    page.screenshot(path=str(path), full_page=True)
                    print(f"screenshot: {path} ({page.url})")
                except Exception as exc:  # a screenshot must never hide the real failure
                    print(f"no screenshot of {page.url}: {exc}")
        context.close()


def signed_in(context: BrowserContext, username: str, password: str = PASSWORD) -> Page:
    """Sign in through the real page, as a person would; return the page, on "Your account"."""
    from django.conf import settings

    page = context.new_page()
    page.goto("/login/")
    page.get_by_label("Username or email", exact=True).fill(username)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page.get_by_role("heading", name="Your account")).to_be_visible()
    expect(page).to_have_url(re.compile(r"^https?://[^/]+/$"))
    page.wait_for_load_state()
    # The stylesheet arrived and applies (CSP style-src 'self' allows it): the page is styled.
    assert page.evaluate("[...document.styleSheets].some(sheet => sheet.cssRules.length)")
    cookie = next(c for c in context.cookies() if c["name"] == settings.SESSION_COOKIE_NAME)
    assert cookie["secure"] is settings.SESSION_COOKIE_SECURE
    return page
