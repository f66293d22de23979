"""The attack catalogue, for pushed authorization requests (RFC 9126) and the device flow
(RFC 8628): a leaked request_uri, a guessed one, device-code phishing, user-code guessing in
parallel. Each reads given / when / then and shows the attack failing, through the real
endpoints (a live server and real threads for the race)."""

from __future__ import annotations

import re
from urllib.parse import urlencode

import pytest
from django.test import Client as Browser

from tests.attacks.conftest import TIMEOUT, N, csrf_token, live_sign_in, race
from tests.factories import ClientFactory, Registered, UserFactory
from tests.tokens.conftest import endpoint, pkce_pair, token_request
from tokens.models import AuthorizationCode, DeviceAuthorization

pytestmark = pytest.mark.django_db

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


def push(client: Registered) -> str:
    _, challenge = pkce_pair()
    response = endpoint(
        "/par",
        client,
        {
            "response_type": "code",
            "client_id": client.client_id,
            "redirect_uri": client.client.redirect_uris[0],
            "scope": "openid",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        },
    )
    assert response.status_code == 201
    return response.json()["request_uri"]


def test_a_leaked_request_uri_opened_by_an_attackers_browser_fails(confidential, user):
    """RFC 9126 §4 (one-time use) and §7.3: given a request_uri the victim's browser has opened
    (it is on the sign-in page), when an attacker who saw the URL opens it signed in as
    themselves, then the attacker gets an error page and no code."""
    request_uri = push(confidential)
    path = "/authorize?" + urlencode(
        {"client_id": confidential.client_id, "request_uri": request_uri}
    )
    assert Browser().get(path, secure=True).status_code == 302  # the victim, off to sign in
    attacker = Browser()
    attacker.force_login(UserFactory())

    answer = attacker.get(path, secure=True)

    assert answer.status_code == 400 and "Location" not in answer
    assert AuthorizationCode.objects.count() == 0


def test_a_request_uri_guessed_or_taken_to_another_client_fails(confidential, logged_in_client):
    """RFC 9126 §7.3 and §4: a made-up request_uri, or a real one presented with another
    client's client_id, is refused without redirecting anywhere."""
    other = Registered.of(ClientFactory())
    real = push(confidential)
    guesses = [
        ("urn:ietf:params:oauth:request_uri:" + "A" * 43, confidential.client_id),
        (real, other.client_id),
    ]
    for request_uri, client_id in guesses:
        answer = logged_in_client.get(
            "/authorize?" + urlencode({"client_id": client_id, "request_uri": request_uri}),
            secure=True,
        )
        assert answer.status_code == 400 and "Location" not in answer


def test_device_code_phishing_needs_the_victims_own_confirmation(logged_in_client):
    """RFC 8628 §5.4: given an attacker who started a device flow and sent the victim its
    verification_uri_complete, when the signed-in victim opens the link, then nothing is
    approved: the page only fills the code in; the next page names the application and warns
    that a code someone sent you signs them in; the attacker's device is still told to wait."""
    tv = Registered.of(
        ClientFactory(public=True, name="Totally Legit TV", grant_types=[DEVICE_GRANT])
    )
    started = endpoint("/device_authorization", tv, {"scope": "openid"}, auth="none").json()

    link = logged_in_client.get(
        "/device?" + urlencode({"user_code": started["user_code"]}), secure=True
    )
    confirmation = logged_in_client.post(
        "/device", {"user_code": started["user_code"]}, secure=True
    )
    attacker_polls = token_request(
        tv, {"grant_type": DEVICE_GRANT, "device_code": started["device_code"]}, auth="none"
    )

    assert link.status_code == 200 and b"Is this the device" not in link.content
    text = re.sub(r"<[^>]+>|\s+", " ", confirmation.content.decode())
    assert "Is this the device you are signing in?" in text and "Totally Legit TV" in text
    assert "If someone sent you this code or link, deny" in text
    assert attacker_polls.json()["error"] == "authorization_pending"
    assert DeviceAuthorization.objects.get().status == DeviceAuthorization.Status.PENDING


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("plain_http_cookies")
def test_user_code_guessing_in_parallel_gets_no_more_tries_than_the_limit(live_server, settings):
    """RFC 8628 §5.1: given a person's signed-in browser, when 20 guesses at user codes are
    submitted at the same moment, then no more than DEVICE_CODE_ENTRY_LIMIT are checked; the
    rest are refused (429) before any code is looked up."""
    settings.DEVICE_CODE_ENTRY_LIMIT = 5
    user = UserFactory()
    url = f"{live_server.url}/device"

    def prepare(index, session):
        assert live_sign_in(session, live_server.url, user.username).status_code == 302
        return csrf_token(session.get(url, timeout=TIMEOUT))

    def guess(index, session, token):
        return session.post(
            url,
            data={
                "csrfmiddlewaretoken": token,
                "user_code": f"BCDF-GH{'JKLMNPQRSTVWXZBCDFGH'[index]}K",
            },
            headers={"Referer": url},
            timeout=TIMEOUT,
        )

    answers = race(prepare, guess)

    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [400] * 5 + [429] * (N - 5), statuses
