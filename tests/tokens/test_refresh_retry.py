"""The refresh retry window (tokens/refresh_tokens.py): RFC 6749 §6 rotation and RFC 9700
§4.14.2 / OAuth 2.1 §4.3.1 replay detection, when the client's response was lost.

Within its window, the same confidential client presenting a rotated refresh token again gets
the very same answer (one successor, ever); outside it, once the successor has been used, from
another client, or asking for another scope, it is a replay that revokes the family."""

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.models import SecurityEvent
from authserver import janitor
from tests.factories import ClientFactory, Registered
from tests.tokens.conftest import (
    dpop_code_flow,
    endpoint,
    exchange,
    get_code,
    past_the_retry_window,
    refresh,
    token_request,
)
from tests.tokens.dpop_client import Holder
from tests.tokens.test_token_endpoint import assert_oauth_error
from tokens import access_tokens, revocation, sealing
from tokens.models import MAX_REFRESH_RETRY_WINDOW, Client, RefreshToken, token_digest

pytestmark = pytest.mark.django_db


@pytest.fixture
def tokens(logged_in_client):
    def obtain(client: Registered, scope="openid profile"):
        code, verifier = get_code(logged_in_client, client, scope=scope)
        response = exchange(client, code, verifier, auth="basic" if client.secret else "none")
        assert response.status_code == 200, response.content
        return response.json()

    return obtain


def family_of(value: str):
    return RefreshToken.objects.filter(
        family=RefreshToken.objects.get(token_digest=token_digest(value)).family
    )


def assert_family_revoked_for_replay(value: str) -> None:
    assert set(family_of(value).values_list("revoke_reason", flat=True)) == {"replay"}
    assert SecurityEvent.objects.filter(kind="refresh_replay").exists()


# --- within the window: the same answer --------------------------------------------------------
def test_rfc6749_s6_a_retry_within_the_window_gets_the_same_successor_pair(confidential, tokens):
    """A lost response retried: the same refresh token, the same access token (same jti, still
    valid, expires_in counted down), no second successor, no revocation, no replay event."""
    first = tokens(confidential)
    answer = refresh(confidential, first["refresh_token"])
    again = refresh(confidential, first["refresh_token"])
    assert again.status_code == 200 and again["Cache-Control"] == "no-store"
    sent, resent = answer.json(), again.json()
    assert resent["refresh_token"] == sent["refresh_token"]
    assert resent["access_token"] == sent["access_token"]
    assert resent["scope"] == sent["scope"] and resent["token_type"] == "Bearer"
    assert 0 < resent["expires_in"] <= sent["expires_in"]
    assert access_tokens.read(resent["access_token"])["jti"] == (
        RefreshToken.objects.get(token_digest=token_digest(sent["refresh_token"])).access_jti
    )
    assert family_of(first["refresh_token"]).count() == 2  # the original and its one successor
    assert not RefreshToken.objects.filter(revoked_at__isnull=False).exists()
    assert not SecurityEvent.objects.filter(kind="refresh_replay").exists()
    assert endpoint("/introspect", confidential, {"token": resent["access_token"]}).json()["active"]
    # And the successor works as ever.
    assert refresh(confidential, resent["refresh_token"]).status_code == 200


def test_rfc6749_s6_a_retry_with_the_same_narrowed_scope_gets_the_same_answer(confidential, tokens):
    first = tokens(confidential)
    sent = refresh(confidential, first["refresh_token"], scope="openid").json()
    resent = refresh(confidential, first["refresh_token"], scope="openid").json()
    assert resent["refresh_token"] == sent["refresh_token"] and resent["scope"] == "openid"


def test_a_clients_own_window_overrides_the_setting(confidential, tokens, settings):
    settings.REFRESH_RETRY_WINDOW = 0
    Client.objects.filter(pk=confidential.client.pk).update(refresh_retry_window=5)
    first = tokens(confidential)
    sent = refresh(confidential, first["refresh_token"]).json()
    resent = refresh(confidential, first["refresh_token"]).json()
    assert (resent["refresh_token"], resent["access_token"]) == (
        sent["refresh_token"],
        sent["access_token"],
    )
    RefreshToken.objects.update(created=timezone.now() - timedelta(seconds=6))
    assert_oauth_error(refresh(confidential, first["refresh_token"]), "invalid_grant")
    assert_family_revoked_for_replay(first["refresh_token"])


# --- outside it: a replay ------------------------------------------------------------------------
def test_rfc9700_4_14_2_a_retry_after_the_window_revokes_the_family(confidential, tokens):
    first = tokens(confidential)
    sent = refresh(confidential, first["refresh_token"]).json()
    past_the_retry_window(31)  # the default window is 30 s
    assert_oauth_error(refresh(confidential, first["refresh_token"]), "invalid_grant")
    assert_family_revoked_for_replay(first["refresh_token"])
    assert_oauth_error(refresh(confidential, sent["refresh_token"]), "invalid_grant")
    assert endpoint("/introspect", confidential, {"token": sent["access_token"]}).json() == {
        "active": False
    }


def test_rfc9700_4_14_2_a_retry_once_the_successor_was_used_revokes_the_family(
    confidential, tokens
):
    """OAuth 2.1 §4.3.1: the successor's use proves the client got it; the parent presented
    again after that is a copy, whoever holds it."""
    first = tokens(confidential)
    sent = refresh(confidential, first["refresh_token"]).json()
    newest = refresh(confidential, sent["refresh_token"]).json()
    assert_oauth_error(refresh(confidential, first["refresh_token"]), "invalid_grant")
    assert_family_revoked_for_replay(first["refresh_token"])
    assert_oauth_error(refresh(confidential, newest["refresh_token"]), "invalid_grant")


def test_rfc9700_4_14_2_a_rotated_token_from_another_client_revokes_the_family(
    confidential, tokens
):
    """The retry is the same client's: another client holding a copy is a breach (RFC 9700
    §4.14.2), even within the window."""
    first = tokens(confidential)
    sent = refresh(confidential, first["refresh_token"]).json()
    other = Registered.of(ClientFactory(name="Other"))
    assert_oauth_error(refresh(other, first["refresh_token"]), "invalid_grant")
    assert_family_revoked_for_replay(first["refresh_token"])
    assert_oauth_error(refresh(confidential, sent["refresh_token"]), "invalid_grant")


def test_rfc6749_s6_a_retry_asking_for_another_scope_is_a_replay(confidential, tokens):
    """A retry is the same request again; one asking for something else is not one."""
    first = tokens(confidential)
    refresh(confidential, first["refresh_token"], scope="openid")
    assert_oauth_error(refresh(confidential, first["refresh_token"]), "invalid_grant")
    assert_family_revoked_for_replay(first["refresh_token"])


def test_rfc9700_4_14_2_public_clients_have_no_retry_window(public, tokens):
    """A public client's bearer refresh token is a secret that nothing else backs: a copy
    presented within the window would be answered, so there is none (unless DPoP binds it:
    below)."""
    first = tokens(public, scope="openid")
    refresh(public, first["refresh_token"], auth="none")
    assert_oauth_error(refresh(public, first["refresh_token"], auth="none"), "invalid_grant")
    assert_family_revoked_for_replay(first["refresh_token"])
    assert RefreshToken.objects.filter(retry_response__isnull=False).count() == 0


def test_a_window_of_zero_turns_it_off(confidential, tokens):
    Client.objects.filter(pk=confidential.client.pk).update(refresh_retry_window=0)
    first = tokens(confidential)
    refresh(confidential, first["refresh_token"])
    assert_oauth_error(refresh(confidential, first["refresh_token"]), "invalid_grant")
    assert_family_revoked_for_replay(first["refresh_token"])
    assert not RefreshToken.objects.filter(retry_response__isnull=False).exists()


# --- the stored answer ---------------------------------------------------------------------------
def test_the_answer_is_sealed_at_rest_and_opens_only_with_the_rotated_token(confidential, tokens):
    first = tokens(confidential)
    sent = refresh(confidential, first["refresh_token"]).json()
    child = RefreshToken.objects.get(token_digest=token_digest(sent["refresh_token"]))
    stored = bytes(child.retry_response)
    for secret in (sent["refresh_token"], sent["access_token"], sent["access_token"][-20:]):
        assert secret.encode() not in stored
    digest = child.token_digest
    assert sealing.unseal(stored, parent_value=first["refresh_token"], successor_digest=digest)
    assert (
        sealing.unseal(stored, parent_value=sent["refresh_token"], successor_digest=digest) is None
    )
    assert sealing.unseal(stored, parent_value=first["refresh_token"], successor_digest="x") is None


def test_the_answer_is_wiped_when_the_successor_is_used_or_revoked(confidential, tokens):
    first = tokens(confidential)
    sent = refresh(confidential, first["refresh_token"]).json()
    newest = refresh(confidential, sent["refresh_token"]).json()
    used = RefreshToken.objects.get(token_digest=token_digest(sent["refresh_token"]))
    assert used.retry_response is None  # wiped by the rotation's own statement
    live = RefreshToken.objects.get(token_digest=token_digest(newest["refresh_token"]))
    assert live.retry_response is not None
    revocation.revoke_family(live.family, reason=RefreshToken.Reason.OPERATOR)
    assert not RefreshToken.objects.filter(retry_response__isnull=False).exists()


def test_the_janitor_wipes_answers_past_the_longest_window_and_keeps_the_tokens(
    confidential, tokens
):
    first = tokens(confidential)
    sent = refresh(confidential, first["refresh_token"]).json()
    kind = janitor.kinds()["refresh_retry_answers"]
    assert janitor.purge(kind).deleted == 0  # within the window: kept
    later = timezone.now() + timedelta(seconds=MAX_REFRESH_RETRY_WINDOW + 1)
    assert janitor.backlog(kind, now=later).waiting == 1
    assert janitor.purge(kind, now=later).deleted == 1
    assert not RefreshToken.objects.filter(retry_response__isnull=False).exists()
    assert RefreshToken.objects.count() == 2
    assert refresh(confidential, sent["refresh_token"]).status_code == 200


def test_the_expiry_task_wipes_them_too(confidential, tokens):
    from tokens.tasks import EXPIRY_TASKS

    first = tokens(confidential)
    refresh(confidential, first["refresh_token"])
    RefreshToken.objects.update(
        created=timezone.now() - timedelta(seconds=MAX_REFRESH_RETRY_WINDOW + 1)
    )
    assert EXPIRY_TASKS["refresh_retry_answers"]() == 1
    assert not RefreshToken.objects.filter(retry_response__isnull=False).exists()


# --- the hot path --------------------------------------------------------------------------------
def _statements_of_a_refresh(client: Registered, value: str, monkeypatch) -> list[str]:
    # Route tokens/token_store.py's statements through Django's cursor so they are counted.
    monkeypatch.setitem(connection.settings_dict["OPTIONS"], "server_side_binding", True)
    with CaptureQueriesContext(connection) as queries:
        assert refresh(client, value).status_code == 200
    monkeypatch.undo()
    return [query["sql"].split()[0] for query in queries.captured_queries]


def test_the_first_refresh_costs_no_extra_statement_with_the_window(
    logged_in_client, tokens, monkeypatch
):
    """The sealed answer rides in the successor's INSERT, its wiping in the rotation's UPDATE:
    one statement, after the SELECT that found the token."""
    with_window = Registered.of(ClientFactory(refresh_retry_window=30))
    without = Registered.of(ClientFactory(refresh_retry_window=0))
    on = _statements_of_a_refresh(with_window, tokens(with_window)["refresh_token"], monkeypatch)
    off = _statements_of_a_refresh(without, tokens(without)["refresh_token"], monkeypatch)
    assert on == off
    assert on == ["SELECT", "WITH"]  # WITH rotated AS (UPDATE ...) INSERT ...
    assert RefreshToken.objects.filter(retry_response__isnull=False).count() == 1


# --- races ---------------------------------------------------------------------------------------
N = 20


@pytest.mark.django_db(transaction=True)
def test_rfc9700_4_14_2_twenty_concurrent_refreshes_within_the_window_all_get_the_one_successor(
    logged_in_client, confidential
):
    """One compare-and-set winner; the 19 others (waiting on its row lock, or arriving after it
    committed) get its answer: one successor, one access token, no revocation."""
    code, verifier = get_code(logged_in_client, confidential, scope="openid offline_access")
    first = exchange(confidential, code, verifier).json()
    barrier = threading.Barrier(N)
    results: list = [None] * N

    def run(index: int) -> None:
        try:
            barrier.wait()
            results[index] = refresh(confidential, first["refresh_token"])
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(N)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert [r.status_code for r in results] == [200] * N, [r.content for r in results]
    bodies = [r.json() for r in results]
    assert len({b["refresh_token"] for b in bodies}) == 1
    assert len({b["access_token"] for b in bodies}) == 1
    original = RefreshToken.objects.get(token_digest=token_digest(first["refresh_token"]))
    assert RefreshToken.objects.filter(parent=original).count() == 1
    assert not RefreshToken.objects.filter(revoked_at__isnull=False).exists()
    assert not SecurityEvent.objects.filter(kind="refresh_replay").exists()
    assert refresh(confidential, bodies[0]["refresh_token"]).status_code == 200


# --- public clients whose refresh tokens are DPoP-bound (RFC 9449 §5) -----------------------
@pytest.fixture
def bound_tokens(logged_in_client, public):
    """A public client's tokens from a code exchange with a DPoP proof: its refresh token is
    bound to the holder's key."""
    holder = Holder()
    return holder, dpop_code_flow(logged_in_client, public, holder.proof(), scope="openid")


def dpop_refresh(public, value: str, proof: str | None):
    extra = {"HTTP_DPOP": proof} if proof else {}
    return token_request(
        public, {"grant_type": "refresh_token", "refresh_token": value}, auth="none", **extra
    )


def test_rfc9449_5_a_public_clients_bound_refresh_token_has_the_retry_window(public, bound_tokens):
    """RFC 9449 §5 binds a public client's refresh token to its key, so a copy is useless
    without it: the key holder retrying a lost refresh gets the same answer (one successor)."""
    holder, first = bound_tokens
    answer = dpop_refresh(public, first["refresh_token"], holder.proof())
    assert answer.status_code == 200, answer.content
    again = dpop_refresh(public, first["refresh_token"], holder.proof())
    assert again.status_code == 200, again.content
    assert again.json()["refresh_token"] == answer.json()["refresh_token"]
    assert again.json()["access_token"] == answer.json()["access_token"]
    assert RefreshToken.objects.filter(parent__isnull=False).count() == 1
    assert not RefreshToken.objects.filter(revoked_at__isnull=False).exists()


def test_rfc9449_5_a_retry_of_a_bound_token_without_its_key_gets_nothing(public, bound_tokens):
    """Within the window, the rotated token presented without a proof, or with another key,
    gets invalid_grant and not the answer; the key holder's successor keeps working."""
    holder, first = bound_tokens
    answer = dpop_refresh(public, first["refresh_token"], holder.proof()).json()
    assert_oauth_error(dpop_refresh(public, first["refresh_token"], None), "invalid_grant")
    other = Holder().proof()
    assert_oauth_error(dpop_refresh(public, first["refresh_token"], other), "invalid_grant")
    onward = dpop_refresh(public, answer["refresh_token"], holder.proof())
    assert onward.status_code == 200, onward.content


def test_rfc9700_4_14_2_a_bound_tokens_retry_after_the_window_is_a_replay(public, bound_tokens):
    holder, first = bound_tokens
    dpop_refresh(public, first["refresh_token"], holder.proof())
    past_the_retry_window()
    response = dpop_refresh(public, first["refresh_token"], holder.proof())
    assert_oauth_error(response, "invalid_grant")
    assert_family_revoked_for_replay(first["refresh_token"])
