"""Second factors in a real Chromium: TOTP enrolment and sign-in (codes computed with pyotp, as
the person's app would), and passkeys registered and used through Chromium's virtual
authenticator (CDP WebAuthn domain: ctap2, internal transport, resident keys, user verified)."""

from __future__ import annotations

import base64
import json
import re
import time

import pyotp
import pytest
from playwright.sync_api import BrowserContext, Page, expect

from accounts.models import Passkey, UserSession
from tests.accounts.test_factors import enrolled
from tests.e2e.conftest import DESKTOP_CHROME, signed_in
from tests.e2e.test_authorize_browser import (  # noqa: F401 - browsing is a fixture
    authorize_path,
    browsing,
    exchange,
    register,
    sign_in_when_asked,
)
from tests.factories import PASSWORD, UserFactory
from tests.tokens.conftest import pkce_pair
from tokens.models import Client

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _issuer_is_the_live_server(settings, live_server):
    # WebAuthn's rpId and origin come from ISSUER; here that is the live server (localhost).
    settings.ISSUER = live_server.url


def virtual_authenticator(page: Page) -> tuple:
    cdp = page.context.new_cdp_session(page)
    cdp.send("WebAuthn.enable", {"enableUI": False})
    added = cdp.send(
        "WebAuthn.addVirtualAuthenticator",
        {
            "options": {
                "protocol": "ctap2",
                "transport": "internal",
                "hasResidentKey": True,
                "hasUserVerification": True,
                "isUserVerified": True,
                "automaticPresenceSimulation": True,
            }
        },
    )
    return cdp, added["authenticatorId"]


def password_only(context: BrowserContext, username: str, page: Page | None = None) -> Page:
    page = page or context.new_page()
    page.goto("/login/")
    page.get_by_label("Username or email", exact=True).fill(username)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Sign in", exact=True).click()
    return page


def test_totp_enrolment_and_sign_in_in_the_browser(new_context, live_server):
    user = UserFactory()
    page = signed_in(new_context(DESKTOP_CHROME), user.username)
    page.get_by_role("link", name=re.compile("Sign-in methods")).click()
    expect(page.locator("#totp-state")).to_have_text("Off.")
    page.get_by_role("link", name="Set up an authenticator app").click()
    expect(page.locator("figure.qr svg")).to_be_visible()  # the QR code, rendered server-side
    secret = page.locator("#totp-secret").inner_text().replace(" ", "")
    page.get_by_label("Code from your authenticator app").fill(pyotp.TOTP(secret).now())
    page.get_by_role("button", name="Turn on").click()
    expect(page.get_by_role("heading", name="Your recovery codes")).to_be_visible()
    expect(page.locator("#recovery-codes li")).to_have_count(10)
    page.get_by_role("link", name="I have saved them").click()
    expect(page.locator("#totp-state")).to_contain_text("On")
    expect(page.locator("#recovery-state")).to_have_text("10 unused recovery codes left.")

    # A new browser: the password, then the code from the app (the next step: codes are
    # single use, and the enrolment spent the current one).
    other = password_only(new_context(DESKTOP_CHROME), user.username)
    expect(other.get_by_role("heading", name="One more step")).to_be_visible()
    # Not signed in yet: the first browser's session is still the only one.
    assert UserSession.objects.filter(user=user, revoked_at__isnull=True).count() == 1
    other.get_by_label("Code from your authenticator app").fill(
        pyotp.TOTP(secret).at(time.time() + 30)
    )
    other.get_by_role("button", name="Verify").click()
    expect(other.get_by_role("heading", name="Your account")).to_be_visible()
    newest = UserSession.objects.filter(user=user).order_by("-created").first()
    assert newest.amr == ["pwd", "otp", "mfa"]


def test_passkey_registration_and_passwordless_sign_in_with_a_virtual_authenticator(
    new_context, live_server
):
    user = UserFactory()
    context = new_context(DESKTOP_CHROME)
    page = signed_in(context, user.username)
    cdp, authenticator = virtual_authenticator(page)  # attached to this page
    page.goto("/account/factors/")
    page.get_by_label("Name for a new passkey").fill("Virtual key")
    page.get_by_role("button", name="Add a passkey").click()
    expect(page.locator("#passkeys")).to_contain_text("Virtual key")
    expect(page.get_by_role("status")).to_contain_text("Passkey “Virtual key” added.")
    assert Passkey.objects.get(user=user).name == "Virtual key"

    # Sign out, then back in with the passkey alone, by the button (the autofill request the
    # page starts is left unanswered until then, and the button aborts it): no username typed.
    page.get_by_role("button", name="Sign out").click()
    presence = {"authenticatorId": authenticator, "enabled": False}
    cdp.send("WebAuthn.setAutomaticPresenceSimulation", presence)
    page.goto("/login/")
    expect(page.get_by_role("button", name="Sign in with a passkey")).to_be_visible()
    cdp.send("WebAuthn.setAutomaticPresenceSimulation", {**presence, "enabled": True})
    page.get_by_role("button", name="Sign in with a passkey").click()
    expect(page.get_by_role("heading", name="Your account")).to_be_visible()
    newest = UserSession.objects.filter(user=user, revoked_at__isnull=True).latest("created")
    assert newest.amr == ["hwk", "mfa"]
    passkey = Passkey.objects.get(user=user)
    assert passkey.last_used_at is not None
    page.goto("/account/factors/")
    expect(page.locator("#passkeys tbody tr").first).not_to_contain_text("never")


def test_conditional_ui_offers_the_passkey_in_the_login_pages_autofill(new_context, live_server):
    """The login page starts a conditional request (mediation "conditional") at once; with the
    virtual authenticator's automatic presence, Chromium answers it as a person picking the
    passkey from the username field's autofill would: signed in, no username, no button."""
    user = UserFactory()
    page = signed_in(new_context(DESKTOP_CHROME), user.username)
    virtual_authenticator(page)
    page.goto("/account/factors/")
    page.get_by_role("button", name="Add a passkey").click()
    expect(page.locator("#passkeys")).to_contain_text("Passkey")
    page.get_by_role("button", name="Sign out").click()
    page.goto("/login/")
    expect(page.get_by_role("heading", name="Your account")).to_be_visible()
    newest = UserSession.objects.filter(user=user, revoked_at__isnull=True).latest("created")
    assert newest.amr == ["hwk", "mfa"]


def test_a_passkey_as_the_second_factor_after_the_password(new_context, live_server):
    user = UserFactory()
    context = new_context(DESKTOP_CHROME)
    page = signed_in(context, user.username)
    cdp, authenticator = virtual_authenticator(page)
    page.goto("/account/factors/")
    page.get_by_role("button", name="Add a passkey").click()
    expect(page.locator("#passkeys")).to_contain_text("Passkey")
    page.get_by_role("button", name="Sign out").click()

    # The person does not touch the key on the sign-in page (its autofill would sign in
    # without the password, see the test above); the password, then the key.
    presence = {"authenticatorId": authenticator, "enabled": False}
    cdp.send("WebAuthn.setAutomaticPresenceSimulation", presence)
    password_only(context, user.username, page)  # the page the authenticator is attached to
    expect(page.get_by_role("heading", name="One more step")).to_be_visible()
    cdp.send("WebAuthn.setAutomaticPresenceSimulation", {**presence, "enabled": True})
    page.get_by_role("button", name="Use your passkey").click()
    expect(page.get_by_role("heading", name="Your account")).to_be_visible()
    newest = UserSession.objects.filter(user=user, revoked_at__isnull=True).latest("created")
    assert newest.amr == ["pwd", "hwk", "mfa"]


def test_step_up_in_an_authorization_request_ends_on_the_client_with_acr_mfa(
    browsing,  # noqa: F811 - the fixture imported above
    live_server,
):
    """acr_values=mfa, a first-party client (no consent page): password, then the code, and the
    factor step's answer is a redirect chain to the client, which CSP form-action must allow."""
    user = UserFactory()
    secret = enrolled(user)
    client, client_secret = register(consent=Client.Consent.SKIP)
    verifier, challenge = pkce_pair()
    page = browsing.page
    page.goto(authorize_path(client, challenge, "st-1") + "&acr_values=mfa")
    sign_in_when_asked(page, live_server, user.username)
    expect(page.get_by_role("heading", name="One more step")).to_be_visible()
    page.get_by_label("Code from your authenticator app").fill(
        pyotp.TOTP(secret).at(time.time() + 30)
    )
    page.get_by_role("button", name="Verify").click()
    answer = browsing.callback()  # fails at once on a CSP violation on the way
    assert answer["state"] == "st-1"
    token = exchange(live_server, client, client_secret, answer["code"], verifier)
    claims = json.loads(base64.urlsafe_b64decode(token["id_token"].split(".")[1] + "=="))
    assert (claims["acr"], claims["amr"]) == ("mfa", ["pwd", "otp", "mfa"])
