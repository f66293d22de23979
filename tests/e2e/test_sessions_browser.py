"""My sessions, in a real browser: end another device's session, and sign out from the nav."""

import re

import pytest
from playwright.sync_api import expect

from accounts.models import UserSession
from tests.e2e.conftest import DESKTOP_CHROME, IPHONE_SAFARI, signed_in
from tests.factories import UserFactory

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

LAPTOP = "Chrome 126 on Windows"  # how the Device column describes DESKTOP_CHROME
PHONE = "Mobile Safari 17 on iOS"  # ... and IPHONE_SAFARI


def on_login_page(page, live_server):
    expect(page).to_have_url(re.compile("^" + re.escape(f"{live_server.url}/login/")))
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()


def test_ending_another_session_from_my_sessions_signs_that_browser_out(new_context, live_server):
    user = UserFactory()
    laptop = signed_in(new_context(DESKTOP_CHROME), user.username)
    phone = signed_in(new_context(IPHONE_SAFARI), user.username)
    phone.goto("/account/sessions/")
    expect(phone.get_by_role("heading", name="My sessions")).to_be_visible()

    laptop.get_by_role("navigation", name="Account").get_by_role("link", name="My sessions").click()
    expect(laptop).to_have_url(f"{live_server.url}/account/sessions/")
    rows = laptop.locator("table.sessions tbody tr")
    expect(rows).to_have_count(2)
    expect(laptop.get_by_text("This device", exact=True)).to_have_count(1)
    expect(rows.filter(has_text="This device")).to_contain_text(LAPTOP)
    other = rows.filter(has_text=PHONE)
    expect(other).to_have_count(1)
    expect(other).not_to_contain_text("This device")

    other.get_by_role("button").filter(has_text="End this session").click()

    expect(laptop.get_by_role("status")).to_have_text(
        "The session has ended. That device is signed out."
    )
    expect(rows).to_have_count(1)
    expect(rows).to_contain_text(LAPTOP)
    expect(rows).to_contain_text("This device")

    phone.reload()
    on_login_page(phone, live_server)

    # The laptop is still signed in; the phone's row is kept, marked ended by the person.
    laptop.reload()
    expect(laptop.get_by_role("heading", name="My sessions")).to_be_visible()
    ended = UserSession.objects.get(user=user, revoked_at__isnull=False)
    assert (ended.device, ended.ended_by) == (PHONE, "person")
    assert UserSession.objects.active().get(user=user).device == LAPTOP


def test_sign_out_from_the_nav_ends_the_session(new_context, live_server):
    user = UserFactory()
    page = signed_in(new_context(DESKTOP_CHROME), user.username)

    page.get_by_role("navigation", name="Account").get_by_role("button", name="Sign out").click()

    expect(page.get_by_role("heading", name="You are signed out")).to_be_visible()
    expect(page.get_by_role("navigation", name="Account")).to_have_count(0)
    page.goto("/account/sessions/")
    on_login_page(page, live_server)
    row = UserSession.objects.get(user=user)
    assert row.revoked_at is not None and row.end_reason == "signed out"
