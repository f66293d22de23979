"""The attack catalogue, second factors: attacks on TOTP (brute force, replay, skipping the step)
and on passkeys (a phishing site relaying the ceremony), each shown to fail. Given / when / then,
through the real endpoints; races through a live server with twenty real clients.

RFC 6238 §5.2 is the TOTP text ("the verifier MUST NOT accept the second attempt of the OTP
after the successful validation has been issued for the first OTP"; "it is RECOMMENDED" to
throttle); WebAuthn §7.2 steps 13 and 15 (origin and rpIdHash) are what makes a passkey
phishing-resistant."""

from __future__ import annotations

import threading

import pytest
from django.test import Client as Browser

from accounts.models import SecurityEvent, TotpDevice, UserSession
from tests.accounts.test_factors import code_at, enrolled, password_step
from tests.accounts.test_passkeys import authenticator, passwordless, post_json, registered
from tests.attacks.conftest import TIMEOUT, csrf_token, live_sign_in, no_server_errors, race
from tests.conftest import form_error
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

one_at_a_time = threading.Lock()


# === TOTP brute force ==========================================================================
def test_totp_brute_force_fails(user, settings):
    """Whoever has the password guesses the six digits: after LOGIN_FAILURE_LIMIT wrong codes even
    the right one is refused, and signing in with the password again gives no new guesses."""
    # Given a person with an authenticator app, and an attacker who knows the password
    secret = enrolled(user)
    attacker = Browser()
    password_step(attacker, user)
    # When the attacker tries codes, and starts over with the password between rounds
    for round_ in range(3):
        for guess in range(settings.LOGIN_FAILURE_LIMIT):
            attacker.post("/login/verify/", {"code": f"{round_:02d}{guess:04d}"})
        password_step(attacker, user)
    # Then the right code is refused too: no more than the limit was ever checked
    response = attacker.post("/login/verify/", {"code": code_at(secret)})
    assert "Too many wrong codes" in form_error(response)
    checked = SecurityEvent.objects.filter(kind="factor_failed", user=user).count()
    assert checked == settings.LOGIN_FAILURE_LIMIT
    assert not UserSession.objects.filter(user=user).exists()


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("plain_http_cookies")
def test_totp_brute_force_by_parallel_requests_fails(live_server, settings):
    """Twenty browsers past the password step guess at the same moment: the throttle reserves
    each attempt atomically before the code is checked, so only the limit is checked."""
    settings.LOGIN_FAILURE_LIMIT_PER_IP = 1000  # every thread is 127.0.0.1
    victim = UserFactory()
    enrolled(victim)
    base = live_server.url

    def past_the_password(index, browser):
        with one_at_a_time:  # twenty right passwords at once would trip the password throttle
            answer = live_sign_in(browser, base, victim.username)
        assert answer.headers["Location"] == "/login/verify/"
        return csrf_token(browser.get(f"{base}/login/verify/", timeout=TIMEOUT))

    def guess(index, browser, token):
        return browser.post(
            f"{base}/login/verify/",
            data={"csrfmiddlewaretoken": token, "code": f"{index:06d}"},
            headers={"Referer": f"{base}/login/verify/"},
            allow_redirects=False,
            timeout=TIMEOUT,
        )

    responses = race(past_the_password, guess)
    no_server_errors(responses)
    checked = [r for r in responses if "Too many wrong codes" not in r.text]
    assert len(checked) == settings.LOGIN_FAILURE_LIMIT
    assert SecurityEvent.objects.filter(kind="factor_failed", user=victim).count() == len(checked)


# === TOTP replay ===============================================================================
def test_totp_code_replay_fails(user):
    """A code phished or shoulder-surfed after the person used it is worth nothing (§5.2)."""
    # Given a person who signed in with the current code
    secret = enrolled(user)
    victim = Browser()
    password_step(victim, user)
    code = code_at(secret)
    assert victim.post("/login/verify/", {"code": code}).status_code == 302
    # When an attacker with the password replays that code, or the one before it
    attacker = Browser()
    password_step(attacker, user)
    replays = [attacker.post("/login/verify/", {"code": c}) for c in (code, code_at(secret, -1))]
    # Then both are refused, and only the person's session exists
    assert all("used already" in form_error(r) for r in replays)
    assert UserSession.objects.filter(user=user).count() == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("plain_http_cookies")
def test_totp_code_replay_by_parallel_requests_fails(live_server, settings):
    """Twenty browsers submit one valid code at the same moment: the step is spent by one
    compare-and-set UPDATE, so exactly one signs in."""
    settings.LOGIN_FAILURE_LIMIT_PER_IP = 1000
    victim = UserFactory()
    secret = enrolled(victim)
    base = live_server.url
    code = code_at(secret)

    def past_the_password(index, browser):
        with one_at_a_time:
            answer = live_sign_in(browser, base, victim.username)
        assert answer.headers["Location"] == "/login/verify/"
        return csrf_token(browser.get(f"{base}/login/verify/", timeout=TIMEOUT))

    def submit(index, browser, token):
        return browser.post(
            f"{base}/login/verify/",
            data={"csrfmiddlewaretoken": token, "code": code},
            headers={"Referer": f"{base}/login/verify/"},
            allow_redirects=False,
            timeout=TIMEOUT,
        )

    responses = race(past_the_password, submit)
    no_server_errors(responses)
    assert sum(r.status_code == 302 for r in responses) == 1
    assert UserSession.objects.filter(user=victim).count() == 1
    assert TotpDevice.objects.get(user=victim).last_used_step is not None


# === Skipping the second factor ================================================================
@pytest.mark.parametrize("path", ["/", "/account/sessions/", "/account/factors/"])
def test_skipping_the_second_factor_step_fails(user, path):
    """After the password, nothing is signed in: every page still asks to sign in."""
    enrolled(user)
    attacker = Browser()
    password_step(attacker, user)
    response = attacker.get(path)
    assert response.status_code == 302 and response["Location"].startswith("/login/")
    assert not UserSession.objects.filter(user=user).exists()


def test_a_pending_sign_in_cannot_be_finished_with_a_passkey_of_another_account(user):
    """The attacker knows the victim's password and holds a passkey of their own account."""
    enrolled(user)
    mallory = UserFactory()
    their_key = registered(mallory)
    attacker = Browser()
    password_step(attacker, user)
    options = post_json(attacker, "/login/verify/passkey/options/").json()
    response = post_json(attacker, "/login/verify/passkey/", {"credential": their_key.get(options)})
    assert response.status_code == 400
    assert not UserSession.objects.filter(user=user).exists()


# === WebAuthn: a phishing site relays the ceremony =============================================
@pytest.mark.parametrize(
    "relay",
    [
        {"origin": "https://auth-example-test.evil.example"},  # §7.2 step 13: the origin
        {"origin": "http://auth.example.test"},  # a downgrade to http of the right host
        {"rp_id": "evil.example"},  # §7.2 step 15: the rpIdHash
    ],
    ids=["look-alike-origin", "http-origin", "other-rp-id"],
)
def test_webauthn_origin_or_rp_id_mismatch_fails(user, relay):
    """A phishing page fetches our challenge and has the person's authenticator answer it on
    its own origin (or for its own rpId): the browser writes that origin into clientDataJSON
    and the authenticator signs the rpId's hash, so the crafted assertion is refused."""
    # Given a person with a passkey, and a phisher who fetched a challenge from us
    key = registered(user)
    phisher = Browser()
    # When the assertion made on the phisher's page is relayed to us
    response = passwordless(phisher, key, **relay)
    # Then it is refused, nobody is signed in, and the genuine origin still works
    assert response.status_code == 400
    assert phisher.get("/").status_code == 302
    assert passwordless(Browser(), key).status_code == 200


def test_webauthn_assertion_replay_fails(user):
    """A captured assertion (challenge and signature) is sent again: the challenge was single
    use and the counter has moved on."""
    key = registered(user)
    browser = Browser()
    options = post_json(browser, "/login/passkey/options/").json()
    captured = key.get(options)
    assert post_json(browser, "/login/passkey/", {"credential": captured}).status_code == 200
    replay = Browser()
    post_json(replay, "/login/passkey/options/")  # a fresh challenge of its own
    assert post_json(replay, "/login/passkey/", {"credential": captured}).status_code == 400


def test_webauthn_registration_from_a_phishing_origin_fails(logged_in_client):
    """A phisher gets a signed-in person to register the phisher's relayed credential."""
    options = post_json(logged_in_client, "/account/factors/passkeys/options/").json()
    credential = authenticator().create(options, origin="https://evil.example")
    response = post_json(
        logged_in_client, "/account/factors/passkeys/", {"credential": credential, "name": "x"}
    )
    assert response.status_code == 400
