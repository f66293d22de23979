"""Races the RFCs forbid winning twice: one code, one refresh token, many simultaneous requests.

Real threads, each with its own PostgreSQL connection, released together by a barrier."""

import threading

import pytest
from django.db import connection

from accounts.models import SecurityEvent
from tests.tokens.conftest import exchange, get_code, refresh
from tokens.models import RefreshToken

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
    logged_in_client, confidential
):
    """Rotation is one compare-and-set: one winner, and the database stays consistent."""
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
