"""The device flow (RFC 8628) end to end: a "device" asks for a code and polls the live server's
token endpoint from a thread, the way a TV app would, while a person in Chromium signs in at
/device, types the code, is asked whether this is the device they are signing in (§5.4, naming
the application), and allows it. The device's next poll gets the token."""

from __future__ import annotations

import re
import threading
import time
from urllib.parse import urlsplit

import pytest
import requests
from playwright.sync_api import expect

from tests.e2e.conftest import DESKTOP_CHROME
from tests.e2e.test_authorize_browser import fill_in_sign_in
from tests.factories import UserFactory
from tokens.clients import create_client

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


class Device(threading.Thread):
    """Polls /token with its device code every ``interval`` seconds (+5 after a slow_down, §3.5)
    until it gets a token, an error other than pending, or gives up."""

    def __init__(self, base_url: str, client_id: str, started: dict):
        super().__init__(daemon=True)
        self.base_url, self.client_id, self.started = base_url, client_id, started
        self.errors: list[str] = []
        self.token: dict | None = None

    def run(self) -> None:
        interval = self.started["interval"]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            time.sleep(interval)
            response = requests.post(
                f"{self.base_url}/token",
                data={
                    "grant_type": DEVICE_GRANT,
                    "device_code": self.started["device_code"],
                    "client_id": self.client_id,
                },
                timeout=10,
            )
            body = response.json()
            if response.status_code == 200:
                self.token = body
                return
            self.errors.append(body["error"])
            if body["error"] == "slow_down":
                interval += 5
            elif body["error"] != "authorization_pending":
                return


def test_rfc8628_a_device_polls_while_the_person_enters_the_code_and_confirms(
    new_context, live_server, settings
):
    settings.DEVICE_CODE_INTERVAL = 1
    user = UserFactory()
    client, _ = create_client(
        name="Living Room TV",
        public=True,
        grant_types=[DEVICE_GRANT, "refresh_token"],
        scopes=["openid", "profile"],
    )
    started = requests.post(
        f"{live_server.url}/device_authorization",
        data={"client_id": client.client_id, "scope": "openid profile"},
        timeout=10,
    ).json()
    device = Device(live_server.url, client.client_id, started)
    device.start()

    page = new_context(DESKTOP_CHROME).new_page()
    # The person opens the address the TV shows (verification_uri) and types the code.
    page.goto(urlsplit(started["verification_uri"]).path)
    fill_in_sign_in(page, user.username)
    expect(page.get_by_role("heading", name="Sign in a device")).to_be_visible()
    page.get_by_label("Code from the device").fill(started["user_code"].lower().replace("-", " "))
    page.get_by_role("button", name="Continue").click()

    expect(
        page.get_by_role("heading", name="Is this the device you are signing in?")
    ).to_be_visible()
    expect(page.locator(".client-name").first).to_have_text("Living Room TV")
    expect(page.get_by_text(started["user_code"])).to_be_visible()
    expect(page.get_by_text("See your name and username")).to_be_visible()
    time.sleep(1.5)  # the device is still polling, and still told to wait
    assert device.token is None and "authorization_pending" in device.errors
    page.get_by_role("button", name="Yes, sign in the device").click()
    expect(page.get_by_role("heading", name="Your device is signed in")).to_be_visible()

    device.join(timeout=30)
    assert device.token is not None, device.errors
    assert device.token["token_type"] == "Bearer"
    assert device.token["scope"] == "openid profile"
    assert device.token["access_token"] and device.token["refresh_token"]
    assert set(device.errors) <= {"authorization_pending", "slow_down"}
    # The code is spent: entering it again finds nothing to approve.
    page.goto("/device")
    page.get_by_label("Code from the device").fill(started["user_code"])
    page.get_by_role("button", name="Continue").click()
    expect(page.get_by_role("alert")).to_contain_text(re.compile("not valid|expired"))
