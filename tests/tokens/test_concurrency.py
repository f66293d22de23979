"""Races the RFCs forbid winning twice: one code, one refresh token, many simultaneous requests.

Real threads, each with its own PostgreSQL connection, released together by a barrier."""

import json
import threading
from urllib.parse import urlsplit

import pytest
from django.db import connection
from django.test import Client as Browser

from accounts.models import SecurityEvent
from tests.tokens.conftest import exchange, get_code, refresh
from tests.tokens.test_registration import WEB_APP, issue_initial_token
from tokens.models import Client, RefreshToken, token_digest

pytestmark = pytest.mark.django_db(transaction=True)

N = 20


def race(call) -> list:
    barrier = threading.Barrier(N)
    results: list = [None] * N

    def run(index: int) -> None:
        try:
            barrier.wait()
            results[index] = call()
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(N)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def test_twenty_concurrent_redemptions_of_one_code_give_exactly_one_success(
    logged_in_client, confidential
):
    """RFC 6749 §4.1.2: the code is single use, even when raced."""
    code, verifier = get_code(logged_in_client, confidential)
    responses = race(lambda: exchange(confidential, code, verifier))
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(200) == 1, statuses
    assert all(r.json()["error"] == "invalid_grant" for r in responses if r.status_code != 200)
    # The losers were replays of a used code: what the winner got is revoked (RFC 6749 §4.1.2).
    assert RefreshToken.objects.count() == 1
    assert RefreshToken.objects.get().revoke_reason == "code_replay"


def test_twenty_concurrent_refreshes_of_one_token_give_exactly_one_success(
    logged_in_client, confidential, settings
):
    """Rotation is one compare-and-set: one winner, and the database stays consistent (with the
    retry window off; tests/tokens/test_refresh_retry.py races it with the window on)."""
    settings.REFRESH_RETRY_WINDOW = 0
    code, verifier = get_code(logged_in_client, confidential, scope="openid offline_access")
    first = exchange(confidential, code, verifier).json()
    responses = race(lambda: refresh(confidential, first["refresh_token"]))
    winners = [r for r in responses if r.status_code == 200]
    assert len(winners) == 1, sorted(r.status_code for r in responses)
    assert all(r.json()["error"] == "invalid_grant" for r in responses if r.status_code != 200)
    original = RefreshToken.objects.get(parent__isnull=True)
    children = RefreshToken.objects.filter(parent=original)
    assert original.rotated_at is not None
    assert children.count() == 1  # never two children of one token
    family = RefreshToken.objects.filter(family=original.family)
    if SecurityEvent.objects.filter(kind="refresh_replay").exists():
        # A loser that arrived after the rotation committed is a replay: the family is revoked.
        assert not family.filter(revoked_at__isnull=True).exists()
    else:
        assert refresh(confidential, winners[0].json()["refresh_token"]).status_code == 200


def _read_registration(uri: str, token: str):
    return Browser().get(urlsplit(uri).path, secure=True, HTTP_AUTHORIZATION=f"Bearer {token}")


def _registered() -> dict:
    token = issue_initial_token()["initial_access_token"]
    response = Browser().post(
        "/register",
        json.dumps(WEB_APP),
        content_type="application/json",
        secure=True,
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert response.status_code == 201, response.content
    return response.json()


def test_rfc7592_s3_twenty_concurrent_reads_of_a_registration_all_succeed_with_the_same_token():
    """RFC 7592 §2.1 / §3: reads do not rotate the registration access token by default, so a
    client reading its record from several places at once is never locked out."""
    registration = _registered()
    uri, token = registration["registration_client_uri"], registration["registration_access_token"]
    responses = race(lambda: _read_registration(uri, token))
    assert sorted(r.status_code for r in responses) == [200] * N
    assert {r.json()["registration_access_token"] for r in responses} == {token}


def test_rfc7592_s3_two_concurrent_reads_rotating_on_every_use_both_get_a_working_token(settings):
    """RFC 7592 §3 with REGISTRATION_TOKEN_ROTATION=on_every_use: rotations are row-locked, so
    two reads at once each move the newest token aside; both tokens handed out work (the older
    one for REGISTRATION_TOKEN_OVERLAP seconds)."""
    settings.REGISTRATION_TOKEN_ROTATION = "on_every_use"
    registration = _registered()
    uri, token = registration["registration_client_uri"], registration["registration_access_token"]
    barrier = threading.Barrier(2)
    results: list = [None, None]

    def run(index: int) -> None:
        try:
            barrier.wait()
            results[index] = _read_registration(uri, token)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert [r.status_code for r in results] == [200, 200]
    handed_out = {r.json()["registration_access_token"] for r in results}
    assert len(handed_out) == 2 and token not in handed_out
    stored = Client.objects.get(client_id=registration["client_id"])
    assert {stored.registration_token_digest, stored.registration_token_previous_digest} == {
        token_digest(t) for t in handed_out
    }
    for handed in handed_out:
        assert stored.registration_token_state(handed) is not None
