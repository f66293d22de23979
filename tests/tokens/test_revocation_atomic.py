"""Revocation is all or nothing (tokens/revocation.py): a failure part way through a cascade
leaves the session, its tokens, the deny list, the events and the logout deliveries as they
were, and the browser still signed in; a committed one signs the browser out at once.

The fault is injected into one real step of the cascade (the refresh-token step, or the
back-channel step); everything else runs for real against PostgreSQL and Redis, and the
database is read back afterwards."""

from datetime import timedelta

import pytest
from django.core.cache import cache
from django.test import Client as Browser
from django.utils import timezone

from accounts.models import SecurityEvent, UserSession
from accounts.sessions import SessionStore
from authserver import janitor
from tests.conftest import session_row, sign_in
from tests.tokens.conftest import exchange, get_code, refresh
from tokens import liveness, logout, revocation
from tokens.models import BackchannelLogout, RefreshToken, RevokedAccessToken

pytestmark = pytest.mark.django_db


class InjectedFault(RuntimeError):
    pass


def fail(*args, **kwargs):
    raise InjectedFault("injected after the session update")


@pytest.fixture
def signed_in(user, confidential):
    """A browser signed in, a client holding a session-bound refresh token from it and owed a
    back-channel logout when the session ends."""
    type(confidential.client).objects.filter(pk=confidential.client.pk).update(
        backchannel_logout_uri="https://rp.example.com/bcl"
    )
    browser = Browser()
    assert sign_in(browser, user.username).status_code == 302
    code, verifier = get_code(browser, confidential, scope="openid profile")
    tokens = exchange(confidential, code, verifier).json()
    return browser, tokens


def is_signed_in(browser: Browser) -> bool:
    return browser.get("/account/sessions/").status_code == 200


def assert_nothing_changed(browser, row, confidential, tokens) -> None:
    assert UserSession.objects.get(pk=row.pk).revoked_at is None
    assert RefreshToken.objects.filter(sid=row.sid, revoked_at__isnull=False).count() == 0
    assert RefreshToken.objects.filter(sid=row.sid, revoked_at__isnull=True).count() == 1
    assert not RevokedAccessToken.objects.exists()
    assert not SecurityEvent.objects.filter(
        kind__in=[SecurityEvent.Kind.SESSION_ENDED, SecurityEvent.Kind.TOKENS_REVOKED]
    ).exists()
    assert not BackchannelLogout.objects.exists()
    assert is_signed_in(browser)  # the cache entry was never dropped
    # ... and the refresh token still works over HTTP.
    assert refresh(confidential, tokens["refresh_token"]).status_code == 200


@pytest.mark.parametrize(
    "step",
    [
        pytest.param((revocation, "_revoke_refresh_tokens"), id="refresh-token step"),
        pytest.param((logout, "schedule"), id="back-channel step"),
    ],
)
def test_a_failure_after_the_session_update_leaves_session_and_tokens_unchanged(
    signed_in, confidential, monkeypatch, django_capture_on_commit_callbacks, step
):
    browser, tokens = signed_in
    row = session_row(browser)
    monkeypatch.setattr(*step, fail)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        with pytest.raises(InjectedFault):
            revocation.end_sessions(
                UserSession.objects.filter(pk=row.pk), by="operator", reason="test"
            )
    assert callbacks == []  # no cache deletion, no delivery queued
    monkeypatch.undo()
    assert_nothing_changed(browser, row, confidential, tokens)


def test_a_failure_while_deactivating_a_person_leaves_them_active(
    signed_in, confidential, user, monkeypatch
):
    browser, tokens = signed_in
    row = session_row(browser)
    monkeypatch.setattr(revocation, "_revoke_refresh_tokens", fail)
    with pytest.raises(InjectedFault):
        revocation.deactivate_user(user, by="operator")
    monkeypatch.undo()
    user.refresh_from_db()
    assert user.is_active
    assert not SecurityEvent.objects.filter(kind=SecurityEvent.Kind.USER_DEACTIVATED).exists()
    assert_nothing_changed(browser, row, confidential, tokens)


def test_the_janitor_keeps_expired_sessions_when_their_cascade_fails(
    signed_in, confidential, monkeypatch
):
    """The delete and what it implies (tokens revoked, clients told) share one transaction."""
    browser, _tokens = signed_in
    row = session_row(browser)
    UserSession.objects.filter(pk=row.pk).update(expire_date=timezone.now() - timedelta(minutes=1))
    monkeypatch.setattr(revocation, "_revoke_refresh_tokens", fail)
    with pytest.raises(InjectedFault):
        janitor.purge(janitor.kinds()["sessions"])
    monkeypatch.undo()
    assert UserSession.objects.filter(pk=row.pk).exists()
    assert RefreshToken.objects.filter(sid=row.sid, revoked_at__isnull=True).count() == 1
    assert not BackchannelLogout.objects.exists()

    result = janitor.purge(janitor.kinds()["sessions"])  # the next run does all of it
    assert result.deleted == 1
    assert not UserSession.objects.filter(pk=row.pk).exists()
    assert RefreshToken.objects.get(sid=row.sid).revoke_reason == RefreshToken.Reason.SESSION_ENDED
    assert BackchannelLogout.objects.filter(sid=row.sid).count() == 1


def test_a_committed_revocation_signs_the_browser_out_and_queues_the_logout(
    signed_in, confidential, django_capture_on_commit_callbacks
):
    browser, tokens = signed_in
    row = session_row(browser)
    cache_key = SessionStore.cache_key_for(row.pk)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        revocation.end_sessions(UserSession.objects.filter(pk=row.pk), by="operator", reason="t")
    assert cache.get(cache_key) is not None  # not committed yet: nothing outside has moved
    # Drop the cache entry, queue the delivery (and make this process forget the access tokens
    # it remembered as live: tokens/liveness.py, at most once per change).
    remembered = liveness._this_process()
    assert len([c for c in callbacks if getattr(c, "__self__", None) is not remembered]) == 2
    for callback in callbacks:  # the commit
        callback()
    assert cache.get(cache_key) is None
    assert not is_signed_in(browser)
    assert RefreshToken.objects.get(sid=row.sid).revoke_reason == RefreshToken.Reason.SESSION_ENDED
    assert BackchannelLogout.objects.filter(sid=row.sid).count() == 1
    assert refresh(confidential, tokens["refresh_token"]).status_code == 400
