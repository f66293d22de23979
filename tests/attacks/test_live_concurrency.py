"""Twenty real clients at once against a live server on PostgreSQL: one code redeemed, one refresh
token rotated, one consent granted, one account guessed at. Exactly one winner each time, no 5xx,
and the database consistent afterwards.

Each client is a thread with its own ``requests.Session`` (its own kept-alive connection, opened
before the race), released together by a ``threading.Barrier``; the live server answers each
request in its own thread with its own database connection. tests/tokens/test_concurrency.py
races the same rules in-process; these go through the whole HTTP stack.
"""

import pytest
import requests
from django.db.models import Count
from django.test import Client as Browser

from accounts.models import SecurityEvent
from tests.accounts.test_throttle import THROTTLED
from tests.attacks.conftest import (
    TIMEOUT,
    N,
    csrf_token,
    live_sign_in,
    no_server_errors,
    open_connection,
    parallel_sign_ins,
    race,
)
from tests.conftest import form_error, sign_in
from tests.factories import PASSWORD, UserFactory
from tests.tokens.conftest import (
    REDIRECT,
    authorize_url,
    endpoint,
    exchange,
    get_code,
    past_the_retry_window,
    pkce_pair,
    query,
    refresh,
)
from tokens import access_tokens
from tokens.models import AuthorizationCode, Consent, RefreshToken, RevokedAccessToken, token_digest

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("plain_http_cookies"),
]


def post_to_token_endpoint(base_url: str, client, form: dict):
    def attack(index, session, prepared):
        return session.post(
            f"{base_url}/token",
            data=form,
            auth=(client.client_id, client.secret),
            timeout=TIMEOUT,
        )

    return attack


def one_winner(responses) -> dict:
    """Exactly one 200; every other answer a clean RFC 6749 §5.2 invalid_grant. The winner's body."""
    no_server_errors(responses)
    statuses = sorted(response.status_code for response in responses)
    assert statuses.count(200) == 1, statuses
    losers = [response for response in responses if response.status_code != 200]
    assert all(r.status_code == 400 and r.json()["error"] == "invalid_grant" for r in losers), [
        r.text for r in losers
    ]
    return next(response.json() for response in responses if response.status_code == 200)


def no_family_has_two_live_tokens() -> None:
    doubled = (
        RefreshToken.objects.filter(rotated_at__isnull=True, revoked_at__isnull=True)
        .values("family")
        .annotate(live=Count("id"))
        .filter(live__gt=1)
    )
    assert not doubled.exists(), list(doubled)


def test_one_code_redeemed_by_twenty_clients_at_once_has_exactly_one_winner(
    live_server, logged_in_client, confidential
):
    """RFC 6749 §4.1.2: a code is used once; a second use is denied and what the first bought is
    revoked. Raced over HTTP, the winner is the one that locked the row; the 19 others are
    replays of a used code, so the winner's tokens are revoked too."""
    # Given a code the person's browser has just brought back to the client
    code, verifier = get_code(logged_in_client, confidential, scope="openid profile")
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "code_verifier": verifier,
        "redirect_uri": REDIRECT,
    }

    # When twenty copies of the client redeem it at the same moment
    responses = race(
        open_connection(live_server.url),
        post_to_token_endpoint(live_server.url, confidential, form),
    )

    # Then exactly one gets tokens, the others invalid_grant
    winner = one_winner(responses)
    # And the database shows the code used once, by the winner: its access token's jti, one
    # refresh-token family of one token, no second family from the same code
    row = AuthorizationCode.objects.get(code_digest=token_digest(code))
    assert row.used_at is not None
    assert row.access_jti == access_tokens.read(winner["access_token"])["jti"]
    (issued,) = RefreshToken.objects.filter(authorization_code=row)
    assert issued.token_digest == token_digest(winner["refresh_token"])
    assert RefreshToken.objects.filter(family=issued.family).count() == 1
    assert RefreshToken.objects.count() == 1
    # And the 19 replays revoked what the winner got (RFC 6749 §4.1.2), each one recorded
    assert (issued.revoke_reason, issued.revoked_at is not None) == ("code_replay", True)
    assert RevokedAccessToken.objects.filter(jti=row.access_jti).exists()
    assert SecurityEvent.objects.filter(kind="code_replay").count() == N - 1
    assert refresh(confidential, winner["refresh_token"]).json()["error"] == "invalid_grant"
    introspection = endpoint("/introspect", confidential, {"token": winner["access_token"]})
    assert introspection.json() == {"active": False}


def test_one_refresh_token_rotated_by_twenty_clients_at_once_has_exactly_one_winner(
    live_server, logged_in_client, confidential, settings
):
    """RFC 9700 §4.14.2: rotation is one compare-and-set. Raced over HTTP: one new token, one
    child row, never two live tokens in a family. A loser that reads the token after the
    winner committed is a replay and revokes the family (also the winner's new token). With
    the retry window off (the test below races it on)."""
    settings.REFRESH_RETRY_WINDOW = 0
    # Given a client holding a refresh token
    code, verifier = get_code(logged_in_client, confidential, scope="openid profile")
    first = exchange(confidential, code, verifier).json()
    form = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}

    # When twenty copies of it refresh with that token at the same moment
    responses = race(
        open_connection(live_server.url),
        post_to_token_endpoint(live_server.url, confidential, form),
    )

    # Then exactly one gets a new pair, the others invalid_grant
    winner = one_winner(responses)
    # And the family is the original and one child (the winner's), with no grandchild
    original = RefreshToken.objects.get(token_digest=token_digest(first["refresh_token"]))
    assert original.rotated_at is not None
    family = RefreshToken.objects.filter(family=original.family)
    assert family.count() == 2
    child = family.get(parent=original)
    assert child.token_digest == token_digest(winner["refresh_token"])
    assert not RefreshToken.objects.filter(parent=child).exists()
    # And no family anywhere has two live leaves
    no_family_has_two_live_tokens()
    if SecurityEvent.objects.filter(kind="refresh_replay").exists():
        # Some losers came after the rotation committed: replays, the whole family revoked.
        assert not family.filter(revoked_at__isnull=True).exists()
        assert refresh(confidential, winner["refresh_token"]).json()["error"] == "invalid_grant"
    else:
        # Every loser was stopped by the compare-and-set alone: the winner's token lives on.
        assert refresh(confidential, winner["refresh_token"]).status_code == 200


def test_rfc9700_4_14_2_one_refresh_token_retried_by_twenty_clients_within_the_window_gets_one_successor(
    live_server, logged_in_client, confidential
):
    """The refresh retry window (RFC 6749 §6, OAuth 2.1 §4.3.1): twenty copies of one client
    refreshing with one token at once, over HTTP, all get the same successor pair, the one the
    compare-and-set winner stored. Past the window, presenting the token again is a replay
    that revokes the family (RFC 9700 §4.14.2)."""
    # Given a confidential client (the default 30 s window) holding a refresh token
    code, verifier = get_code(logged_in_client, confidential, scope="openid profile")
    first = exchange(confidential, code, verifier).json()
    form = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}

    # When twenty copies of it refresh with that token at the same moment
    responses = race(
        open_connection(live_server.url),
        post_to_token_endpoint(live_server.url, confidential, form),
    )

    # Then every one gets 200 and the very same pair
    no_server_errors(responses)
    assert [r.status_code for r in responses] == [200] * N, [r.text for r in responses]
    bodies = [r.json() for r in responses]
    assert len({(b["refresh_token"], b["access_token"]) for b in bodies}) == 1
    # And exactly one successor exists, nothing is revoked, no replay is recorded
    original = RefreshToken.objects.get(token_digest=token_digest(first["refresh_token"]))
    (child,) = RefreshToken.objects.filter(parent=original)
    assert child.token_digest == token_digest(bodies[0]["refresh_token"])
    assert child.access_jti == access_tokens.read(bodies[0]["access_token"])["jti"]
    assert not RefreshToken.objects.filter(revoked_at__isnull=False).exists()
    assert not SecurityEvent.objects.filter(kind="refresh_replay").exists()
    no_family_has_two_live_tokens()

    # When the window has passed and the token is presented again
    past_the_retry_window()
    late = requests.post(
        f"{live_server.url}/token",
        data=form,
        auth=(confidential.client_id, confidential.secret),
        timeout=TIMEOUT,
    )
    # Then it is a replay: invalid_grant, and the family, the successor included, is revoked
    assert (late.status_code, late.json()["error"]) == (400, "invalid_grant")
    family = RefreshToken.objects.filter(family=original.family)
    assert set(family.values_list("revoke_reason", flat=True)) == {"replay"}
    assert SecurityEvent.objects.filter(kind="refresh_replay").count() == 1
    assert refresh(confidential, bodies[0]["refresh_token"]).json()["error"] == "invalid_grant"


def test_one_consent_granted_by_twenty_parallel_posts_is_stored_exactly_once(
    live_server, user, confidential
):
    """The consent page's "Allow", submitted twenty times at once from one signed-in browser
    (a double-clicking person, or a script): every answer is a redirect to the client or a clean
    refusal, never a 5xx, and the unique constraint keeps exactly one Consent row."""
    # Given a person signed in on one browser, looking at the consent page of a client they have
    # never allowed (the consent policy is "remember")
    with requests.Session() as browser:
        assert live_sign_in(browser, live_server.url, user.username).status_code == 302
        cookies = browser.cookies.get_dict()
    url = live_server.url + authorize_url(
        confidential, scope="openid profile email", challenge=pkce_pair()[1]
    )

    def open_consent_page(index, session):
        session.cookies.update(cookies)  # the same browser session in every tab
        page = session.get(url, allow_redirects=False, timeout=TIMEOUT)
        assert page.status_code == 200 and "to use your account?" in page.text, page.text[-600:]
        return csrf_token(page)

    def allow(index, session, token):
        return session.post(
            url,
            data={"csrfmiddlewaretoken": token, "decision": "allow"},
            headers={"Referer": url},
            allow_redirects=False,
            timeout=TIMEOUT,
        )

    # When "Allow" is posted twenty times at the same moment
    responses = race(open_consent_page, allow)

    # Then no 5xx; every answer a redirect to the client with a code, or a clean refusal
    no_server_errors(responses)
    redirects = [r for r in responses if r.status_code == 302]
    assert redirects, [r.status_code for r in responses]
    assert all(r.headers["Location"].startswith(REDIRECT + "?code=") for r in redirects)
    codes = [query(r.headers["Location"])["code"] for r in redirects]
    assert len(set(codes)) == len(codes)
    # And exactly one consent is remembered, covering what was asked
    consent = Consent.objects.get(user=user, client=confidential.client)
    assert consent.scopes == ["email", "openid", "profile"]
    assert Consent.objects.count() == 1
    # And each code the client received is in the database, nothing more
    assert AuthorizationCode.objects.filter(user=user).count() == len(codes)


@pytest.mark.real_hasher  # the real Argon2 check: the slower it is, the wider the race window
def test_twenty_parallel_wrong_passwords_are_checked_exactly_the_limit_and_lock_once(
    live_server, settings
):
    """Brute-force protection under a race (Zitadel GHSA-7h8m-vrxx-vr4m): the counter is
    reserved atomically before the password check, so twenty parallel guesses get exactly
    LOGIN_FAILURE_LIMIT password checks and one lockout."""
    # Every attempt comes from 127.0.0.1: the per-IP limit is lifted so that only the account's
    # counter is under test (otherwise the IP's 20th attempt may lock the IP too, a second event).
    settings.LOGIN_FAILURE_LIMIT_PER_IP = 1000
    victim = UserFactory()

    # When twenty browsers submit a wrong password for the same account at the same moment
    responses = parallel_sign_ins(live_server.url, [victim.username] * N, "a wrong guess")

    # Then nobody is signed in, nothing broke
    no_server_errors(responses)
    assert all(r.status_code == 200 for r in responses), [r.status_code for r in responses]
    # And exactly LIMIT attempts reached the password check; the rest were turned away before it
    checked = [r for r in responses if THROTTLED not in r.text]
    assert len(checked) == settings.LOGIN_FAILURE_LIMIT
    failures = SecurityEvent.objects.filter(kind="login_failed", user=victim)
    assert failures.count() == settings.LOGIN_FAILURE_LIMIT
    # And the account was locked once, by the attempt that reached the limit
    lockout = SecurityEvent.objects.get(kind="lockout")
    assert (lockout.user, lockout.detail["locked"]) == (victim, ["account"])
    # And the right password is now refused too
    assert form_error(sign_in(Browser(), victim.username, PASSWORD)).startswith(THROTTLED)
