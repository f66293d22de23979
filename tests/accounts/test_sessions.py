"""Browser sessions: rows in PostgreSQL, read through the cache, ended from anywhere."""

from datetime import timedelta

import pytest
from django.contrib.sessions.backends.base import UpdateError
from django.core.cache import cache
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.models import SecurityEvent, UserSession
from accounts.sessions import SessionStore
from tests.conftest import session_row, sign_in
from tests.factories import PASSWORD
from tokens import revocation

pytestmark = pytest.mark.django_db

FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1"
)


def browser(user, agent=FIREFOX, ip="127.0.0.1") -> Client:
    client = Client(HTTP_USER_AGENT=agent, REMOTE_ADDR=ip)
    assert sign_in(client, user.username).status_code == 302
    return client


def is_signed_in(client: Client) -> bool:
    return client.get("/").status_code == 200


def test_a_page_view_reads_the_session_from_the_cache_not_the_database(logged_in_client):
    logged_in_client.get("/")
    with CaptureQueriesContext(connection) as queries:
        assert logged_in_client.get("/").status_code == 200
    assert not [q for q in queries.captured_queries if "accounts_usersession" in q["sql"]]


def test_last_seen_is_written_about_once_a_minute_not_on_every_request(logged_in_client):
    row = session_row(logged_in_client)
    stale = timezone.now() - timedelta(minutes=5)
    UserSession.objects.filter(pk=row.pk).update(last_seen=stale)

    logged_in_client.get("/")  # the interval opened at sign-in is still running
    assert session_row(logged_in_client).last_seen == stale

    cache.delete(SessionStore.cache_key_for(row.pk) + ":seen")  # a minute has passed
    logged_in_client.get("/", REMOTE_ADDR="203.0.113.5")
    touched = session_row(logged_in_client)
    assert touched.last_seen > stale
    assert touched.ip_address == "203.0.113.5"

    UserSession.objects.filter(pk=row.pk).update(last_seen=stale)
    for _ in range(3):
        logged_in_client.get("/")
    assert session_row(logged_in_client).last_seen == stale


def test_an_ended_session_is_signed_out_on_its_next_request(
    user, django_capture_on_commit_callbacks
):
    client = browser(user)
    row = session_row(client)
    with django_capture_on_commit_callbacks(execute=True):  # the cache entry goes on commit
        revocation.end_sessions(UserSession.objects.filter(pk=row.pk), by="system", reason="test")
    response = client.get("/account/sessions/")
    assert response.status_code == 302 and response["Location"].startswith("/login/")
    ended = UserSession.objects.get(pk=row.pk)
    assert ended.revoked_at is not None and ended.state == "ended"


def test_an_expired_session_is_signed_out(user):
    client = browser(user)
    row = session_row(client)
    UserSession.objects.filter(pk=row.pk).update(expire_date=timezone.now() - timedelta(seconds=1))
    cache.delete(SessionStore.cache_key_for(row.pk))  # the cache entry lives exactly as long
    assert not is_signed_in(client)


def test_an_ended_session_is_never_written_back(user):
    """A request still in flight when its session ends must not bring the row back to life."""
    store = SessionStore()
    store["_auth_user_id"] = str(user.pk)
    store.save()
    revocation.end_sessions(
        UserSession.objects.filter(pk=store.stored_key), by="system", reason="test"
    )
    store["more"] = 1
    with pytest.raises(UpdateError):
        store.save()
    assert UserSession.objects.get(pk=store.stored_key).revoked_at is not None


def test_my_sessions_lists_each_browser_with_device_ip_and_this_device(user):
    laptop = browser(user, FIREFOX, "192.0.2.10")
    phone = browser(user, IPHONE, "192.0.2.20")
    page = laptop.get("/account/sessions/")
    body = page.content.decode()
    assert page.status_code == 200
    assert "Firefox 128 on Linux" in body and "Mobile Safari 17 on iOS" in body
    assert "192.0.2.10" in body and "192.0.2.20" in body
    assert body.count("This device") == 1
    laptop_sid = session_row(laptop).sid
    assert f'class="current" data-sid="{laptop_sid}"' in body
    # The cookie value is a bearer secret: never shown.
    for device in (laptop, phone):
        assert device.cookies["authserver_session"].value not in body


def test_ending_another_session_signs_that_browser_out(user, django_capture_on_commit_callbacks):
    laptop, phone = browser(user), browser(user, IPHONE)
    phone_sid = session_row(phone).sid
    with django_capture_on_commit_callbacks(execute=True):  # the request's commit
        response = laptop.post(f"/account/sessions/{phone_sid}/end/")
    assert response.status_code == 302
    assert not is_signed_in(phone)
    assert is_signed_in(laptop)
    event = SecurityEvent.objects.get(kind="session_ended")
    assert (event.user, event.sid, event.actor) == (user, phone_sid, "person")


def test_ending_this_session_from_the_list_signs_out(user):
    laptop = browser(user)
    response = laptop.post(f"/account/sessions/{session_row(laptop).sid}/end/")
    assert b"You are signed out" in response.content
    assert not is_signed_in(laptop)


def test_nobody_can_end_someone_elses_session(user):
    from tests.factories import UserFactory

    mallory = browser(UserFactory())
    victim = browser(user)
    response = mallory.post(f"/account/sessions/{session_row(victim).sid}/end/", follow=True)
    assert b"already ended" in response.content
    assert is_signed_in(victim)


def test_end_all_other_sessions_keeps_only_this_one(user, django_capture_on_commit_callbacks):
    here, *others = [browser(user) for _ in range(3)]
    with django_capture_on_commit_callbacks(execute=True):  # the request's commit
        here.post("/account/sessions/end-others/")
    assert is_signed_in(here)
    assert not any(is_signed_in(other) for other in others)
    assert UserSession.objects.active().filter(user=user).count() == 1


def test_ending_sessions_needs_a_post(logged_in_client):
    sid = session_row(logged_in_client).sid
    assert logged_in_client.get(f"/account/sessions/{sid}/end/").status_code == 405
    assert is_signed_in(logged_in_client)


def test_logout_asks_for_confirmation_on_get_and_signs_out_on_post(logged_in_client, user):
    row = session_row(logged_in_client)
    page = logged_in_client.get("/logout/")
    assert b"Sign out?" in page.content
    assert is_signed_in(logged_in_client)

    done = logged_in_client.post("/logout/")
    assert b"You are signed out" in done.content
    assert not is_signed_in(logged_in_client)
    ended = UserSession.objects.get(pk=row.pk)
    assert ended.revoked_at is not None and ended.ended_by == "person"
    kinds = set(SecurityEvent.objects.filter(user=user).values_list("kind", flat=True))
    assert {"logout", "session_ended"} <= kinds


def test_logout_without_a_csrf_token_is_refused_with_a_friendly_page(user):
    client = Client(enforce_csrf_checks=True)
    sign_in(client, user.username)  # sign_in posts without a token, so do it the honest way:
    page = client.get("/login/")
    token = (
        page.cookies["csrftoken"].value
        if "csrftoken" in page.cookies
        else client.cookies["csrftoken"].value
    )
    client.post(
        "/login/", {"username": user.username, "password": PASSWORD, "csrfmiddlewaretoken": token}
    )
    assert is_signed_in(client)
    response = client.post("/logout/")
    assert response.status_code == 403
    assert b"This form has expired" in response.content
    assert is_signed_in(client)


def test_password_change_ends_other_sessions_and_keeps_this_one(user):
    here, elsewhere = browser(user), browser(user)
    before = session_row(here)
    response = here.post(
        "/account/password/",
        {
            "old_password": PASSWORD,
            "new_password1": "a brand new passphrase",
            "new_password2": "a brand new passphrase",
        },
    )
    assert response.status_code == 302
    assert is_signed_in(here)
    assert not is_signed_in(elsewhere)
    after = session_row(here)
    # The key rotates (Django cycles it); the session keeps its name, start time and history.
    assert after.session_key != before.session_key
    assert (after.sid, after.created) == (before.sid, before.created)
    assert SecurityEvent.objects.filter(kind="password_changed", user=user).exists()
    user.refresh_from_db()
    assert user.check_password("a brand new passphrase")


def test_password_change_with_a_wrong_old_password_changes_nothing(user):
    here, elsewhere = browser(user), browser(user)
    response = here.post(
        "/account/password/",
        {
            "old_password": "nope",
            "new_password1": "a brand new passphrase",
            "new_password2": "a brand new passphrase",
        },
    )
    assert response.status_code == 200
    assert is_signed_in(elsewhere)
    user.refresh_from_db()
    assert user.check_password(PASSWORD)


def test_flushing_a_signed_in_session_marks_its_row_ended_rather_than_deleting_it(user):
    """Django flushes on logout and on a change of user; the row stays, ended, for the record."""
    store = SessionStore()
    store["_auth_user_id"] = str(user.pk)
    store.save()
    key = store.stored_key
    store.flush()
    row = UserSession.objects.get(pk=key)
    assert row.revoked_at is not None and row.end_reason == "signed out"


def test_an_anonymous_session_is_deleted_when_flushed():
    store = SessionStore()
    store["cart"] = "nothing"
    store.save()
    key = store.stored_key
    store.flush()
    assert not UserSession.objects.filter(pk=key).exists()
