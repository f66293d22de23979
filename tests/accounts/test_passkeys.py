"""Passkeys through the real endpoints, with a software authenticator producing the bytes a
browser would: registration (WebAuthn §7.1), passwordless sign-in and the second factor (§7.2),
and the refusals the steps of those sections demand."""

from __future__ import annotations

import json
import time

import pytest
from django.conf import settings
from django.test import Client

from accounts import passkeys
from accounts.models import Passkey, SecurityEvent
from tests.accounts.authenticator import SoftAuthenticator
from tests.accounts.test_factors import code_at, enrolled, password_step
from tests.conftest import session_row
from tests.factories import UserFactory
from tests.tokens.conftest import authorize_url, exchange, pkce_pair, query
from tests.tokens.test_oidc_core import decode_id_token

pytestmark = pytest.mark.django_db

ORIGIN = "https://auth.example.test"  # the test ISSUER (Makefile)
RP_ID = "auth.example.test"


def post_json(browser: Client, path: str, body: dict | None = None):
    return browser.post(path, json.dumps(body or {}), content_type="application/json", secure=True)


def authenticator(**kwargs) -> SoftAuthenticator:
    return SoftAuthenticator(origin=ORIGIN, rp_id=RP_ID, **kwargs)


def register(browser: Client, device: SoftAuthenticator, name="Laptop", **lie):
    options = post_json(browser, "/account/factors/passkeys/options/").json()
    credential = device.create(options, **lie)
    return post_json(
        browser, "/account/factors/passkeys/", {"credential": credential, "name": name}
    )


def registered(user, **kwargs) -> SoftAuthenticator:
    browser = Client()
    browser.force_login(user)
    device = authenticator(**kwargs)
    assert register(browser, device).status_code == 200
    return device


def passwordless(browser: Client, device: SoftAuthenticator, next_url: str = "", **lie):
    options = post_json(browser, "/login/passkey/options/").json()
    return post_json(
        browser, "/login/passkey/", {"credential": device.get(options, **lie), "next": next_url}
    )


def test_webauthn_7_1_registration_options_name_the_issuer_as_relying_party(logged_in_client):
    options = post_json(logged_in_client, "/account/factors/passkeys/options/").json()
    assert options["rp"]["id"] == RP_ID  # from ISSUER, never from the Host header
    assert options["attestation"] == "none"
    assert options["authenticatorSelection"]["residentKey"] == "required"  # discoverable
    assert len(options["challenge"]) >= 43  # at least 32 random bytes (§13.4.3)
    assert options["user"]["id"] and options["user"]["name"]


def test_webauthn_7_1_a_passkey_registers_and_is_listed_on_the_account_page(logged_in_client, user):
    device = authenticator()
    response = register(logged_in_client, device, name="Work laptop")
    assert response.status_code == 200 and response.json()["location"] == "/account/factors/"
    passkey = Passkey.objects.get(user=user)
    assert passkey.name == "Work laptop" and passkey.sign_count == 0 and not passkey.synced
    page = logged_in_client.get("/account/factors/").content.decode()
    assert "Work laptop" in page and "never" in page
    assert SecurityEvent.objects.filter(kind="factor_added", user=user).exists()
    # Another passkey needs a sign-in that used a factor: this one was password only.
    again = post_json(logged_in_client, "/account/factors/passkeys/options/")
    assert again.status_code == 403 and again.json()["location"].startswith("/login/verify/")
    # Signed in with the passkey, the same authenticator is excluded (§5.4.3 excludeCredentials).
    browser = Client()
    assert passwordless(browser, device).status_code == 200
    options = post_json(browser, "/account/factors/passkeys/options/").json()
    assert [c["id"] for c in options["excludeCredentials"]] == [passkey.credential_id]


@pytest.mark.parametrize(
    "lie",
    [{"origin": "https://auth.example.test.evil.example"}, {"rp_id": "evil.example"}],
    ids=["§7.1-step-9-origin", "§7.1-step-13-rpIdHash"],
)
def test_webauthn_7_1_a_registration_for_another_origin_or_rp_is_refused(logged_in_client, lie):
    response = register(logged_in_client, authenticator(), **lie)
    assert response.status_code == 400 and not Passkey.objects.exists()


def test_webauthn_7_1_a_registration_challenge_is_single_use(logged_in_client):
    """§13.4.3: challenges are used once; a failed attempt spends it too."""
    device = authenticator()
    options = post_json(logged_in_client, "/account/factors/passkeys/options/").json()
    wrong = {"credential": device.create(options, origin="https://evil.example"), "name": "x"}
    assert post_json(logged_in_client, "/account/factors/passkeys/", wrong).status_code == 400
    right = {"credential": device.create(options), "name": "x"}
    again = post_json(logged_in_client, "/account/factors/passkeys/", right)
    assert again.status_code == 400 and "expired" in again.json()["error"]
    assert not Passkey.objects.exists()


def test_webauthn_7_2_a_discoverable_passkey_signs_in_without_a_username(user):
    device = registered(user)
    browser = Client()
    options = post_json(browser, "/login/passkey/options/").json()
    assert options["allowCredentials"] == [] and options["userVerification"] == "required"
    assert options["rpId"] == RP_ID
    response = post_json(
        browser,
        "/login/passkey/",
        {"credential": device.get(options), "next": "/account/sessions/"},
    )
    assert response.status_code == 200 and response.json()["location"] == "/account/sessions/"
    row = session_row(browser)
    assert row.user == user and row.amr == ["hwk", "mfa"]  # RFC 8176: key + its PIN/biometric
    passkey = Passkey.objects.get(user=user)
    assert passkey.sign_count == 1 and passkey.last_used_at is not None


def test_rfc8176_a_synced_passkey_is_swk(user):
    device = registered(user, synced=True)
    browser = Client()
    assert passwordless(browser, device).status_code == 200
    assert session_row(browser).amr == ["swk", "mfa"]


def test_webauthn_7_2_step_17_passwordless_sign_in_requires_user_verification(user):
    device = registered(user)
    device.user_verified = False
    browser = Client()
    assert passwordless(browser, device).status_code == 400
    assert "authserver_session" not in browser.cookies or not session_row(browser).user


@pytest.mark.parametrize(
    "lie",
    [{"origin": "https://evil.example"}, {"rp_id": "evil.example"}],
    ids=["§7.2-step-13-origin", "§7.2-step-15-rpIdHash"],
)
def test_webauthn_7_2_an_assertion_for_another_origin_or_rp_is_refused(user, lie):
    device = registered(user)
    browser = Client()
    response = passwordless(browser, device, **lie)
    assert response.status_code == 400
    assert browser.get("/").status_code == 302  # not signed in


def test_webauthn_7_2_step_21_a_counter_that_goes_back_is_refused_as_a_clone(user):
    device = registered(user)
    assert passwordless(Client(), device, counter=5).status_code == 200
    clone = Client()
    response = passwordless(clone, device, counter=5)  # the same count again: a copy of the key
    assert response.status_code == 400 and "counter" in response.json()["error"]
    event = SecurityEvent.objects.get(kind="passkey_cloned", user=user)
    assert event.detail["stored_count"] == 5 and event.detail["presented_count"] == 5
    assert passwordless(Client(), device, counter=6).status_code == 200


def test_webauthn_7_2_an_assertion_challenge_is_single_use_and_expires(user, monkeypatch):
    device = registered(user)
    browser = Client()
    options = post_json(browser, "/login/passkey/options/").json()
    credential = device.get(options)
    assert post_json(browser, "/login/passkey/", {"credential": credential}).status_code == 200
    replay = Client()
    assert post_json(replay, "/login/passkey/", {"credential": credential}).status_code == 400
    late = Client()
    options = post_json(late, "/login/passkey/options/").json()
    later = time.time() + passkeys.CHALLENGE_SECONDS + 1
    monkeypatch.setattr(passkeys.time, "time", lambda: later)
    refused = post_json(late, "/login/passkey/", {"credential": device.get(options)})
    assert refused.status_code == 400


def test_a_passkey_is_a_second_factor_after_the_password(user):
    device = registered(user)
    device.user_verified = False  # presence is enough for a second factor
    browser = Client()
    password_step(browser, user)
    page = browser.get("/login/verify/").content.decode()
    assert "Use your passkey" in page and "js/passkeys." in page
    options = post_json(browser, "/login/verify/passkey/options/").json()
    assert [c["id"] for c in options["allowCredentials"]] == [
        Passkey.objects.get(user=user).credential_id
    ]
    response = post_json(browser, "/login/verify/passkey/", {"credential": device.get(options)})
    assert response.status_code == 200 and response.json()["location"] == "/"
    assert session_row(browser).amr == ["pwd", "hwk", "mfa"]


def test_webauthn_7_2_step_6_another_persons_passkey_is_no_second_factor(user):
    registered(user)
    mallory = UserFactory()
    their_device = registered(mallory)
    browser = Client()
    password_step(browser, user)
    options = post_json(browser, "/login/verify/passkey/options/").json()
    response = post_json(
        browser, "/login/verify/passkey/", {"credential": their_device.get(options)}
    )
    assert response.status_code == 400 and browser.get("/").status_code == 302


def test_step_up_to_phr_asks_for_a_passkey_and_the_id_token_says_phr(user, confidential):
    device = registered(user)
    browser = Client()
    password_step(browser, user)  # the password step; then the passkey
    options = post_json(browser, "/login/verify/passkey/options/").json()
    post_json(browser, "/login/verify/passkey/", {"credential": device.get(options)})
    verifier, challenge = pkce_pair()
    url = authorize_url(confidential, challenge=challenge, scope="openid", acr_values="phr")
    answer = browser.get(url, secure=True)
    if answer.status_code == 200:
        answer = browser.post(url, {"decision": "allow"}, secure=True)
    code = query(answer["Location"])["code"]
    claims = decode_id_token(
        exchange(confidential, code, verifier).json()["id_token"], confidential
    )
    assert claims.claims["acr"] == "phr" and claims.claims["amr"] == ["pwd", "hwk", "mfa"]


def test_a_totp_session_is_stepped_up_to_a_passkey_for_phr(user, confidential):
    device = registered(user)
    secret = enrolled(user)
    browser = Client()
    password_step(browser, user)
    browser.post("/login/verify/", {"code": code_at(secret)})
    url = authorize_url(confidential, scope="openid", acr_values="phr")
    step = browser.get(url, secure=True)["Location"]
    assert step.startswith("/login/verify/?acr=phr")
    page = browser.get(step).content.decode()
    assert "Use your passkey" in page and 'name="code"' not in page  # a code is not phr
    # A code posted anyway does not count.
    assert browser.post(step, {"code": code_at(secret, 1)}).status_code == 200
    options = post_json(browser, "/login/verify/passkey/options/").json()
    response = post_json(
        browser, "/login/verify/passkey/", {"credential": device.get(options), "next": url}
    )
    assert response.json()["location"] == url
    assert session_row(browser).amr == ["pwd", "otp", "hwk", "mfa"]


def test_removing_a_passkey_needs_a_sign_in_with_a_factor(user):
    device = registered(user)
    browser = Client()
    password_step(browser, user)
    passkey = Passkey.objects.get(user=user)
    options = post_json(browser, "/login/verify/passkey/options/").json()
    post_json(browser, "/login/verify/passkey/", {"credential": device.get(options)})
    assert browser.post(f"/account/factors/passkeys/{passkey.pk}/remove/").status_code == 302
    assert not Passkey.objects.filter(user=user).exists()
    assert SecurityEvent.objects.filter(kind="factor_removed", user=user).exists()
    assert browser.post("/account/factors/passkeys/nope/remove/").status_code == 302


def test_a_password_only_session_cannot_remove_a_passkey(user):
    registered(user)
    browser = Client()
    browser.force_login(user)  # a session without the factor (e.g. from before enrolment)
    passkey = Passkey.objects.get(user=user)
    response = browser.post(f"/account/factors/passkeys/{passkey.pk}/remove/")
    assert response["Location"].startswith("/login/verify/")
    assert Passkey.objects.filter(user=user).exists()


def test_the_webauthn_script_is_our_own_static_file_and_the_csp_allows_it(client):
    page = client.get("/login/")
    assert '<script src="/static/js/passkeys.' in page.content.decode()
    assert "script-src 'self'" in page["Content-Security-Policy"]
    assert 'autocomplete="username webauthn"' in page.content.decode()  # conditional UI
    assert settings.ISSUER == ORIGIN
