"""The device authorization grant (RFC 8628) through HTTP: the device endpoint, /device (sign-in,
the code, the confirmation that names the client), and the device's polls at /token."""

from __future__ import annotations

import re
import threading
from datetime import timedelta
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
from django.test import Client as Browser
from django.utils import timezone

from authserver import janitor
from authserver.logs import redact
from tests.accounts.test_factors import code_at, enrolled, password_step
from tests.factories import ClientFactory, Registered, UserFactory
from tests.tokens.conftest import endpoint, query, refresh, token_request
from tests.tokens.test_step_up import sign_in_without_factor
from tokens import access_tokens, device_codes
from tokens.models import Client, DeviceAuthorization, RefreshToken, token_digest

pytestmark = pytest.mark.django_db

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
USER_CODE = re.compile(r"^[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}$")


@pytest.fixture
def tv(db) -> Registered:
    """A public device client (a TV app): no secret, the device grant and refresh tokens."""
    return Registered.of(
        ClientFactory(
            public=True,
            name="Living Room TV",
            grant_types=[DEVICE_GRANT, "refresh_token"],
            scopes=["openid", "profile", "offline_access"],
        )
    )


@pytest.fixture
def cli(db) -> Registered:
    """A confidential device client (a command-line tool with a secret)."""
    return Registered.of(
        ClientFactory(name="Deploy CLI", grant_types=[DEVICE_GRANT], scopes=["openid", "profile"])
    )


def start(client: Registered, scope: str | None = "openid profile", *, auth: str | None = None):
    auth = auth or ("none" if client.client.is_public else "basic")
    data = {"scope": scope} if scope is not None else {}
    return endpoint("/device_authorization", client, data, auth=auth)


def started(client: Registered, scope: str = "openid profile") -> dict:
    response = start(client, scope)
    assert response.status_code == 200, response.content
    return response.json()


def poll(client: Registered, device_code: str):
    auth = "none" if client.client.is_public else "basic"
    return token_request(
        client, {"grant_type": DEVICE_GRANT, "device_code": device_code}, auth=auth
    )


def enter(browser: Browser, user_code: str, decision: str | None = None):
    data = {"user_code": user_code}
    if decision:
        data["decision"] = decision
    return browser.post("/device", data, secure=True)


def approve(browser: Browser, user_code: str, decision: str = "allow"):
    confirmation = enter(browser, user_code)
    assert confirmation.status_code == 200, confirmation.content
    assert b"Is this the device you are signing in?" in confirmation.content
    done = enter(browser, user_code, decision)
    assert done.status_code == 200, done.content
    return done


# --- §3.1 / §3.2 the device authorization request and response ------------------------------
def test_rfc8628_3_1_a_public_client_identifies_itself_with_its_client_id(tv, settings):
    response = start(tv)

    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    body = response.json()
    assert set(body) == {
        "device_code", "user_code", "verification_uri", "verification_uri_complete",
        "expires_in", "interval",
    }  # fmt: skip
    assert USER_CODE.match(body["user_code"])
    assert body["verification_uri"] == settings.ISSUER + "/device"
    assert body["verification_uri_complete"] == (
        f"{settings.ISSUER}/device?{urlencode({'user_code': body['user_code']})}"
    )
    assert body["expires_in"] == settings.DEVICE_CODE_LIFETIME
    assert body["interval"] == settings.DEVICE_CODE_INTERVAL
    assert len(body["device_code"]) >= 43


def test_rfc8628_3_1_a_confidential_client_must_authenticate(cli):
    anonymous = endpoint("/device_authorization", None, {"client_id": cli.client_id})
    wrong = endpoint("/device_authorization", Registered(cli.client, "wrong"), {"scope": "openid"})
    right = start(cli)

    assert anonymous.status_code in (400, 401) and anonymous.json()["error"] == "invalid_client"
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client", wrong.json()
    assert right.status_code == 200


def test_rfc8628_3_1_only_clients_with_the_device_grant_and_their_own_scopes(tv, confidential):
    not_allowed = start(confidential)
    bad_scope = start(tv, "openid email")
    get = Browser().get("/device_authorization", secure=True)

    assert not_allowed.status_code == 400 and not_allowed.json()["error"] == "unauthorized_client"
    assert bad_scope.status_code == 400 and bad_scope.json()["error"] == "invalid_scope"
    assert get.status_code == 405
    assert DeviceAuthorization.objects.count() == 0


def test_rfc8628_3_2_codes_are_kept_only_as_digests(tv):
    body = started(tv)
    row = DeviceAuthorization.objects.get()
    letters = body["user_code"].replace("-", "")

    assert row.device_code_digest == token_digest(body["device_code"])
    assert row.user_code_digest not in (token_digest(letters), token_digest(body["user_code"]))
    stored = str(DeviceAuthorization.objects.values().get())
    assert body["device_code"] not in stored and letters not in stored


# --- §3.3 user interaction, §5.4 remote phishing, §6.1 user codes ------------------------------
def test_rfc8628_3_3_the_verification_page_signs_the_person_in_first(tv, user):
    body = started(tv)
    response = Browser().get("/device?" + urlencode({"user_code": body["user_code"]}), secure=True)
    assert response.status_code == 302
    assert urlsplit(response["Location"]).path == "/login/"
    assert query(response["Location"])["next"] == "/device?" + urlencode(
        {"user_code": body["user_code"]}
    )


def test_rfc8628_3_3_1_the_complete_uri_fills_the_code_in_but_decides_nothing(tv, logged_in_client):
    body = started(tv)
    page = logged_in_client.get(
        "/device?" + urlencode({"user_code": body["user_code"]}), secure=True
    )
    assert page.status_code == 200
    assert f'value="{body["user_code"]}"'.encode() in page.content
    assert DeviceAuthorization.objects.get().status == DeviceAuthorization.Status.PENDING


def test_rfc8628_5_4_the_confirmation_names_the_client_and_scopes_and_asks(tv, logged_in_client):
    body = started(tv, "openid profile")
    page = enter(logged_in_client, body["user_code"])
    text = re.sub(r"<[^>]+>|\s+", " ", page.content.decode())

    assert "Is this the device you are signing in?" in text
    assert "Living Room TV" in text
    assert "See your name and username" in text
    assert "If someone sent you this code or link, deny" in text
    assert DeviceAuthorization.objects.get().status == DeviceAuthorization.Status.PENDING


@pytest.mark.parametrize("typing", ["lower", "spaces", "no dash"])
def test_rfc8628_6_1_user_codes_are_case_insensitive_and_ignore_dashes_and_spaces(
    tv, logged_in_client, typing
):
    code = started(tv)["user_code"]
    typed = {
        "lower": code.lower(),
        "spaces": " " + code.replace("-", " ") + " ",
        "no dash": code.replace("-", ""),
    }[typing]
    page = enter(logged_in_client, typed)
    assert page.status_code == 200
    assert b"Is this the device you are signing in?" in page.content


def test_rfc8628_6_1_user_codes_use_the_base_20_alphabet():
    assert device_codes.normalize_user_code("bcdf-ghjk") == "BCDFGHJK"
    assert device_codes.normalize_user_code("ABCD-EFGH") is None  # vowels are never drawn
    assert device_codes.normalize_user_code("BCDF-GHJ") is None
    assert device_codes.normalize_user_code("BCDF-GHJK1") is None


def test_rfc8628_5_1_guessing_user_codes_is_limited(tv, logged_in_client, settings):
    settings.DEVICE_CODE_ENTRY_LIMIT = 3
    real = started(tv)["user_code"]
    wrong = [enter(logged_in_client, "BCDF-GHJK") for _ in range(3)]
    refused = enter(logged_in_client, real)

    assert [response.status_code for response in wrong] == [400, 400, 400]
    assert b"not valid" in wrong[0].content
    assert refused.status_code == 429
    assert b"Is this the device" not in refused.content


def test_rfc8628_5_1_a_right_code_does_not_count_against_the_limit(tv, logged_in_client, settings):
    settings.DEVICE_CODE_ENTRY_LIMIT = 2
    for _ in range(4):
        assert enter(logged_in_client, started(tv)["user_code"]).status_code == 200


def test_rfc8628_a_code_is_answered_once(tv, logged_in_client):
    code = started(tv)["user_code"]
    approve(logged_in_client, code)
    again = enter(logged_in_client, code, "deny")
    assert again.status_code == 400
    assert DeviceAuthorization.objects.get().status == DeviceAuthorization.Status.APPROVED


# --- §3.4 / §3.5 polling ---------------------------------------------------------------------------
def test_rfc8628_3_5_authorization_pending_until_the_person_answers(tv):
    body = started(tv)
    response = poll(tv, body["device_code"])
    assert response.status_code == 400
    assert response.json()["error"] == "authorization_pending"
    assert response["Cache-Control"] == "no-store"


def test_rfc8628_3_5_polling_too_fast_is_slow_down_and_adds_five_seconds(tv):
    body = started(tv)
    assert poll(tv, body["device_code"]).json()["error"] == "authorization_pending"

    too_soon = poll(tv, body["device_code"])
    again = poll(tv, body["device_code"])

    assert too_soon.json()["error"] == "slow_down"
    assert again.json()["error"] == "slow_down"
    assert DeviceAuthorization.objects.get().interval == body["interval"] + 10
    DeviceAuthorization.objects.update(
        last_polled_at=timezone.now() - timedelta(seconds=body["interval"] + 5)
    )
    assert poll(tv, body["device_code"]).json()["error"] == "slow_down"  # 15 s now, not 10
    DeviceAuthorization.objects.update(
        last_polled_at=timezone.now() - timedelta(seconds=body["interval"] + 21)
    )
    assert poll(tv, body["device_code"]).json()["error"] == "authorization_pending"


def test_rfc8628_3_5_approved_gives_tokens_once(tv, logged_in_client, user):
    body = started(tv, "openid profile offline_access")
    poll(tv, body["device_code"])
    approve(logged_in_client, body["user_code"])

    token = poll(tv, body["device_code"])  # approved: the interval does not hold it back

    assert token.status_code == 200, token.content
    tokens = token.json()
    assert tokens["token_type"] == "Bearer"
    assert tokens["scope"] == "openid profile offline_access"
    claims = access_tokens.read(tokens["access_token"])
    assert claims["sub"] == str(user.pk) and claims["client_id"] == tv.client_id
    assert RefreshToken.objects.get().user == user
    again = poll(tv, body["device_code"])
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    assert refresh(tv, tokens["refresh_token"], auth="none").status_code == 200


def test_rfc8628_3_5_denied_is_access_denied(tv, logged_in_client):
    body = started(tv)
    done = approve(logged_in_client, body["user_code"], "deny")
    response = poll(tv, body["device_code"])
    assert response.json()["error"] == "access_denied"
    assert b"was not signed in" in done.content


def test_rfc8628_3_5_an_expired_device_code_is_expired_token(tv, logged_in_client):
    body = started(tv)
    DeviceAuthorization.objects.update(expires=timezone.now() - timedelta(seconds=1))

    assert poll(tv, body["device_code"]).json()["error"] == "expired_token"
    assert enter(logged_in_client, body["user_code"]).status_code == 400  # nothing to approve


def test_rfc8628_3_4_a_device_code_works_only_for_its_client(tv, cli):
    body = started(tv)
    other = poll(cli, body["device_code"])
    unknown = poll(tv, "not-a-device-code")
    missing = token_request(tv, {"grant_type": DEVICE_GRANT}, auth="none")

    assert other.json()["error"] == "invalid_grant"
    assert unknown.json()["error"] == "invalid_grant"
    assert missing.json()["error"] == "invalid_request"


def test_rfc8628_4_discovery_names_the_endpoint_and_the_grant(db, settings):
    metadata = Browser().get("/.well-known/oauth-authorization-server", secure=True).json()
    assert metadata["device_authorization_endpoint"] == settings.ISSUER + "/device_authorization"
    assert DEVICE_GRANT in metadata["grant_types_supported"]


def test_expired_device_authorizations_are_purged_an_hour_after_expiry(tv):
    started(tv)
    started(tv)
    old, recent = DeviceAuthorization.objects.order_by("pk")
    DeviceAuthorization.objects.filter(pk=old.pk).update(
        expires=timezone.now() - timedelta(hours=2)
    )
    DeviceAuthorization.objects.filter(pk=recent.pk).update(
        expires=timezone.now() - timedelta(minutes=5)
    )

    result = janitor.purge(janitor.kinds()["device_authorizations"])

    assert result.deleted == 1
    assert list(DeviceAuthorization.objects.values_list("pk", flat=True)) == [recent.pk]


# --- concurrency: 20 devices' worth of polls at once, through real HTTP --------------------------
@pytest.mark.django_db(transaction=True)
def test_rfc8628_twenty_concurrent_polls_of_an_approved_code_get_exactly_one_token(live_server):
    tv = Registered.of(
        ClientFactory(public=True, grant_types=[DEVICE_GRANT, "refresh_token"], scopes=["openid"])
    )
    user = UserFactory()
    body = started(tv, "openid")
    row = DeviceAuthorization.objects.get()
    assert device_codes.decide(row, user=user)
    barrier = threading.Barrier(20)
    answers: list[tuple[int, str]] = []
    lock = threading.Lock()

    def device_polls() -> None:
        barrier.wait()
        response = requests.post(
            f"{live_server.url}/token",
            data={
                "grant_type": DEVICE_GRANT,
                "device_code": body["device_code"],
                "client_id": tv.client_id,
            },
            timeout=30,
        )
        with lock:
            answers.append((response.status_code, response.json().get("error", "")))

    threads = [threading.Thread(target=device_polls) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(answers)[0] == (200, "")
    assert [answer for answer in answers if answer[0] == 200] == [(200, "")]
    assert sorted({error for status, error in answers if status != 200}) == ["invalid_grant"]
    assert RefreshToken.objects.count() == 1
    assert DeviceAuthorization.objects.get().status == DeviceAuthorization.Status.ISSUED


def test_operators_see_device_sign_ins_and_pushed_requests_without_their_codes(tv, staff_client):
    body = started(tv)
    listing = staff_client.get("/admin/tokens/deviceauthorization/")
    row = DeviceAuthorization.objects.get()
    detail = staff_client.get(f"/admin/tokens/deviceauthorization/{row.pk}/change/")
    pushed = staff_client.get("/admin/tokens/pushedauthorizationrequest/")

    assert listing.status_code == 200 and b"Living Room TV" in listing.content
    assert detail.status_code == 200
    assert row.device_code_digest.encode() not in detail.content
    assert body["device_code"].encode() not in detail.content
    assert pushed.status_code == 200


def test_rfc8628_a_device_client_registers_itself_without_redirect_uris(db, settings):
    """RFC 7591 with the device grant: a public TV app, no redirect URI, the person scopes."""
    settings.OPEN_REGISTRATION = True
    registered = Browser().post(
        "/register",
        {
            "client_name": "Kitchen Radio",
            "grant_types": [DEVICE_GRANT, "refresh_token"],
            "token_endpoint_auth_method": "none",
        },
        content_type="application/json",
        secure=True,
    )
    assert registered.status_code == 201, registered.content
    body = registered.json()
    assert body["grant_types"] == [DEVICE_GRANT, "refresh_token"]
    assert body["scope"] == "openid profile email offline_access"
    assert body["response_types"] == []
    client = Registered(Client.objects.get(client_id=body["client_id"]), None)
    assert started(client)["user_code"]


def test_device_and_user_codes_and_request_uris_are_masked_in_logs():
    line = (
        "POST /token device_code=GmRhmhcxhwAzkoEq /device?user_code=BCDF-GHJK "
        "request_uri=urn:ietf:params:oauth:request_uri:abc"
    )
    masked = redact(line)
    assert "GmRhmhcxhwAzkoEq" not in masked and "BCDF-GHJK" not in masked
    assert "abc" not in masked.split("request_uri=")[1]


# --- how the person signed in (RFC 9068 §2.2.1, OIDC Core §2, RFC 8176) ----------------------
def test_rfc9068_2_2_1_device_tokens_say_how_the_approving_person_signed_in(
    tv, logged_in_client, user
):
    body = started(tv, "openid profile offline_access")
    approve(logged_in_client, body["user_code"])
    tokens = poll(tv, body["device_code"]).json()
    claims = access_tokens.read(tokens["access_token"])
    assert (claims["acr"], claims["amr"]) == ("pwd", ["pwd"])
    # and the tokens a refresh brings say the same: the sign-in did not change
    refreshed = refresh(tv, tokens["refresh_token"], auth="none").json()
    again = access_tokens.read(refreshed["access_token"])
    assert (again["acr"], again["amr"]) == ("pwd", ["pwd"])


def test_a_device_client_that_requires_mfa_asks_the_person_for_the_second_factor(tv, user):
    Client.objects.filter(pk=tv.client.pk).update(required_acr="mfa")
    secret = enrolled(user)
    browser = Browser()
    password_step(browser, user)
    assert browser.post("/login/verify/", {"code": code_at(secret)}).status_code == 302
    # The same browser, now signed in with password and TOTP: approves and gets acr mfa.
    body = started(tv)
    approve(browser, body["user_code"])
    claims = access_tokens.read(poll(tv, body["device_code"]).json()["access_token"])
    assert (claims["acr"], claims["amr"]) == ("mfa", ["pwd", "otp", "mfa"])


def test_a_device_client_that_requires_mfa_sends_a_password_session_to_the_factor(tv, user):
    Client.objects.filter(pk=tv.client.pk).update(required_acr="mfa")
    enrolled(user)
    browser = Browser()
    sign_in_without_factor(browser, user)  # a session from before the factor was enrolled
    body = started(tv)
    response = enter(browser, body["user_code"])
    assert response.status_code == 302
    target = urlsplit(response["Location"])
    assert target.path == "/login/verify/"
    back = parse_qs(target.query)["next"][0]
    assert urlsplit(back).path == "/device" and "user_code" in parse_qs(urlsplit(back).query)
    assert poll(tv, body["device_code"]).json()["error"] == "authorization_pending"


def test_a_device_client_that_requires_mfa_refuses_a_person_without_a_second_factor(
    tv, logged_in_client
):
    Client.objects.filter(pk=tv.client.pk).update(required_acr="mfa")
    body = started(tv)
    response = enter(logged_in_client, body["user_code"], "allow")
    assert response.status_code == 403
    assert b"requires a stronger sign-in" in response.content
    assert DeviceAuthorization.objects.get().status == DeviceAuthorization.Status.PENDING
