"""Second factors through the real pages: TOTP enrolment (RFC 6238), the sign-in step after the
password, recovery codes, throttling, replay, the operator's reset and the account page."""

from __future__ import annotations

import re
import time

import pyotp
import pytest
from django.test import Client

from accounts import factors
from accounts.models import RecoveryCode, SecurityEvent, TotpDevice, UserSession
from accounts.sessions import AMR_KEY
from tests.conftest import form_error, session_row, sign_in
from tests.factories import PASSWORD, UserFactory

pytestmark = pytest.mark.django_db

SECRET_SHOWN = re.compile(r'id="totp-secret">([A-Z2-7 ]+)<')


def enrol_through_the_page(client: Client) -> tuple[str, list[str]]:
    """Set up an authenticator app as a person does; returns (secret, recovery codes)."""
    page = client.get("/account/factors/totp/")
    assert page.status_code == 200
    secret = SECRET_SHOWN.search(page.content.decode()).group(1).replace(" ", "")
    response = client.post("/account/factors/totp/", {"code": pyotp.TOTP(secret).now()})
    assert response.status_code == 200, form_error(response)
    codes = re.findall(r"<li><code>([a-z2-9-]+)</code></li>", response.content.decode())
    return secret, codes


def enrolled(user) -> str:
    """A person with a confirmed authenticator app, set up through the service a few minutes ago
    (its last accepted step is then ten steps back); its secret."""
    device, secret = factors.start_totp_enrolment(user)
    assert factors.confirm_totp(user, device.pk, pyotp.TOTP(secret).now())
    TotpDevice.objects.filter(pk=device.pk).update(last_used_step=int(time.time()) // 30 - 10)
    return secret


def code_at(secret: str, offset_steps: int = 0) -> str:
    return pyotp.TOTP(secret).at(time.time() + 30 * offset_steps)


def password_step(client: Client, user, **extra):
    response = sign_in(client, user.username, **extra)
    assert response.status_code == 302 and response["Location"] == "/login/verify/"
    return response


def test_rfc6238_enrolment_shows_a_qr_code_and_the_secret_and_is_confirmed_by_a_first_code(
    logged_in_client, user
):
    page = logged_in_client.get("/account/factors/totp/")
    body = page.content.decode()
    assert "<svg" in body and "<script" not in body.split("<main")[1].split("</main>")[0]
    secret = SECRET_SHOWN.search(body).group(1).replace(" ", "")
    assert len(secret) == 32  # 160 bits (RFC 4226 §4)
    device = TotpDevice.objects.get(user=user)
    assert device.confirmed_at is None and secret not in device.encrypted_secret
    assert not factors.has_totp(user)  # nothing counts before the first code

    wrong = logged_in_client.post("/account/factors/totp/", {"code": "000000"})
    assert "not right" in form_error(wrong) and not factors.has_totp(user)
    assert secret in wrong.content.decode().replace(" ", "")  # same enrolment, shown again

    response = logged_in_client.post("/account/factors/totp/", {"code": pyotp.TOTP(secret).now()})
    assert response.status_code == 200 and "no-store" in response["Cache-Control"]
    codes = re.findall(r"<li><code>([a-z2-9-]+)</code></li>", response.content.decode())
    assert len(codes) == 10 and len(set(codes)) == 10
    assert factors.has_totp(user)
    assert SecurityEvent.objects.filter(kind="factor_added", user=user).exists()
    # The secret and the codes are never shown again, and stored only encrypted / hashed.
    assert secret not in logged_in_client.get("/account/factors/").content.decode()
    assert not RecoveryCode.objects.filter(digest__in=codes).exists()
    # The first code proved the app is at hand: this session now has two factors (RFC 8176).
    assert session_row(logged_in_client).amr == ["pwd", "otp", "mfa"]


def test_the_secret_at_rest_is_encrypted_with_a_key_derived_from_secret_key(user, settings):
    secret = enrolled(user)
    stored = TotpDevice.objects.get(user=user).encrypted_secret
    assert secret not in stored
    assert factors._secret(TotpDevice.objects.get(user=user)) == secret
    # Rotating SECRET_KEY keeps the secret readable through SECRET_KEY_FALLBACKS.
    settings.SECRET_KEY_FALLBACKS = [settings.SECRET_KEY]
    settings.SECRET_KEY = "another-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz"
    assert factors._secret(TotpDevice.objects.get(user=user)) == secret


def test_with_a_second_factor_the_password_alone_does_not_sign_in(client, user):
    enrolled(user)
    password_step(client, user)
    assert client.get("/").status_code == 302  # not signed in: "/" sends to the login page
    assert not UserSession.objects.filter(user=user).exists()
    page = client.get("/login/verify/")
    assert page.status_code == 200 and 'autocomplete="one-time-code"' in page.content.decode()


def test_rfc6238_4_the_current_code_completes_the_sign_in_with_amr_pwd_otp_mfa(client, user):
    secret = enrolled(user)
    password_step(client, user)
    response = client.post("/login/verify/", {"code": code_at(secret)})
    assert response.status_code == 302 and response["Location"] == "/"
    assert client.get("/").context["user"] == user
    row = session_row(client)
    assert row.user == user and row.amr == ["pwd", "otp", "mfa"]  # RFC 8176 §2


def test_sign_in_with_a_factor_continues_to_the_next_url(client, user):
    secret = enrolled(user)
    response = client.post(
        "/login/", {"username": user.username, "password": PASSWORD, "next": "/account/sessions/"}
    )
    assert response["Location"] == "/login/verify/"
    assert (
        client.post("/login/verify/", {"code": code_at(secret)})["Location"] == "/account/sessions/"
    )


@pytest.mark.parametrize("offset", [-1, 1])
def test_rfc6238_5_2_one_time_step_of_drift_either_way_is_accepted(client, user, offset):
    secret = enrolled(user)
    password_step(client, user)
    assert client.post("/login/verify/", {"code": code_at(secret, offset)}).status_code == 302


@pytest.mark.parametrize("offset", [-3, -2, 2, 3])
def test_rfc6238_5_2_codes_further_off_are_refused(client, user, offset):
    secret = enrolled(user)
    password_step(client, user)
    response = client.post("/login/verify/", {"code": code_at(secret, offset)})
    assert response.status_code == 200 and "not right" in form_error(response)


def test_rfc6238_5_2_a_code_cannot_be_used_twice(user):
    secret = enrolled(user)
    first, second = Client(), Client()
    code = code_at(secret)
    password_step(first, user)
    assert first.post("/login/verify/", {"code": code}).status_code == 302
    password_step(second, user)
    replay = second.post("/login/verify/", {"code": code})
    assert replay.status_code == 200 and "used already" in form_error(replay)
    # Nor a code of an earlier step, once a later one was taken.
    replay = second.post("/login/verify/", {"code": code_at(secret, -1)})
    assert replay.status_code == 200


def test_wrong_codes_are_throttled_like_passwords_and_a_correct_password_does_not_reset_them(
    client, user
):
    secret = enrolled(user)
    password_step(client, user)
    for _ in range(5):
        assert "not right" in form_error(client.post("/login/verify/", {"code": "123456"}))
    # The password again (which clears the password counter) gives no new guesses at the code.
    password_step(client, user)
    response = client.post("/login/verify/", {"code": code_at(secret)})
    assert "Too many wrong codes" in form_error(response)
    assert SecurityEvent.objects.filter(kind="factor_failed", user=user).count() == 5
    assert SecurityEvent.objects.filter(kind="lockout", user=user).count() == 1


def test_the_pending_sign_in_expires(client, user, monkeypatch):
    secret = enrolled(user)
    password_step(client, user)
    later = time.time() + factors.PENDING_SECONDS + 1
    monkeypatch.setattr(factors.time, "time", lambda: later)
    response = client.post("/login/verify/", {"code": code_at(secret)})
    assert response.status_code == 302 and response["Location"].startswith("/login/")
    assert not UserSession.objects.filter(user=user).exists()


def test_a_recovery_code_signs_in_once(user):
    enrolled(user)
    codes = factors.new_recovery_codes(user)
    browser = Client()
    password_step(browser, user)
    assert browser.post("/login/verify/", {"code": codes[3].upper()}).status_code == 302
    assert session_row(browser).amr == ["pwd", "otp", "mfa"]
    assert factors.recovery_codes_left(user) == 9
    assert SecurityEvent.objects.filter(kind="recovery_code_used", user=user).exists()
    again = Client()
    password_step(again, user)
    assert again.post("/login/verify/", {"code": codes[3]}).status_code == 200


def test_removing_the_app_needs_a_sign_in_that_used_a_factor(user):
    secret = enrolled(user)
    browser = Client()
    password_step(browser, user)
    browser.post("/login/verify/", {"code": code_at(secret)})
    assert browser.post("/account/factors/totp/remove/")["Location"] == "/account/factors/"
    assert not factors.has_totp(user)
    assert SecurityEvent.objects.filter(kind="factor_removed", user=user).exists()


def test_the_account_page_lists_the_factors(logged_in_client, user):
    page = logged_in_client.get("/account/factors/").content.decode()
    assert "Off." in page and "0 unused recovery codes" in page and "No passkeys yet" in page
    enrol_through_the_page(logged_in_client)
    page = logged_in_client.get("/account/factors/").content.decode()
    assert "On: signing in asks" in page and "10 unused recovery codes" in page


def test_an_operator_resets_a_persons_factors_in_admin(staff_client, staff_user):
    person = UserFactory()
    enrolled(person)
    factors.new_recovery_codes(person)
    response = staff_client.post(
        "/admin/accounts/user/",
        {"action": "reset_factors", "_selected_action": [person.pk]},
    )
    assert response.status_code == 302
    assert not factors.has_second_factor(person) and factors.recovery_codes_left(person) == 0
    event = SecurityEvent.objects.get(kind="factors_reset", user=person)
    assert event.actor == "operator" and event.actor_user == staff_user
    # The person signs in with the password alone again, and can enrol anew.
    assert sign_in(Client(), person.username)["Location"] == "/"
    page = staff_client.get(f"/admin/accounts/user/{person.pk}/change/").content.decode()
    assert "authenticator app: off" in page


def test_a_session_amr_of_a_password_only_sign_in_is_pwd(logged_in_client):
    assert session_row(logged_in_client).amr == ["pwd"]
    assert logged_in_client.session[AMR_KEY] == ["pwd"]
