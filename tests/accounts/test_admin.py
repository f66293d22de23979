"""Operators in Django admin: see sessions and events, end sessions, deactivate people."""

import pytest
from django.test import Client

from accounts.models import SecurityEvent, UserSession
from tests.conftest import session_row, sign_in
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def signed_in_browser(user) -> Client:
    client = Client()
    assert sign_in(client, user.username).status_code == 302
    return client


def test_admin_login_goes_through_the_throttled_sign_in_page(client):
    response = client.get("/admin/login/?next=/admin/")
    assert response.status_code == 302
    assert response["Location"] == "/login/?next=/admin/"


def test_an_operator_revoking_a_session_signs_that_browser_out_at_once(
    staff_client, staff_user, user, django_capture_on_commit_callbacks
):
    victim = signed_in_browser(user)
    row = session_row(victim)
    with django_capture_on_commit_callbacks(execute=True):  # the request's commit
        response = staff_client.post(
            "/admin/accounts/usersession/",
            {"action": "revoke_sessions", "_selected_action": [row.pk]},
        )
    assert response.status_code == 302
    assert victim.get("/").status_code == 302  # signed out on the very next request
    event = SecurityEvent.objects.get(kind="session_ended", user=user)
    assert (event.actor, event.actor_user, event.sid) == ("operator", staff_user, row.sid)
    assert UserSession.objects.get(pk=row.pk).ended_by == "operator"


def test_the_session_list_shows_device_ip_and_state_but_never_the_key(staff_client, user):
    victim = signed_in_browser(user)
    row = session_row(victim)
    page = staff_client.get("/admin/accounts/usersession/?state=active&q=" + user.username)
    body = page.content.decode()
    assert page.status_code == 200
    assert user.username in body and "127.0.0.1" in body and "active" in body
    assert victim.cookies["authserver_session"].value not in body
    detail = staff_client.get(f"/admin/accounts/usersession/{row.pk}/change/").content.decode()
    assert row.sid in detail
    assert 'name="session_data"' not in detail and row.session_data not in detail


def test_ended_sessions_are_filtered_out_of_the_active_view(staff_client, user):
    victim = signed_in_browser(user)
    victim.post("/logout/")
    active = staff_client.get("/admin/accounts/usersession/?state=active").content.decode()
    ended = staff_client.get("/admin/accounts/usersession/?state=ended").content.decode()
    assert f">{user.username}<" not in active
    assert f">{user.username}<" in ended


def test_the_end_all_sessions_button_on_a_user_page(
    staff_client, user, django_capture_on_commit_callbacks
):
    browsers = [signed_in_browser(user) for _ in range(2)]
    page = staff_client.get(f"/admin/accounts/user/{user.pk}/change/")
    assert b"End all sessions (2 active)" in page.content
    with django_capture_on_commit_callbacks(execute=True):  # the request's commit
        response = staff_client.post(f"/admin/accounts/user/{user.pk}/end-sessions/")
    assert response.status_code == 302
    assert all(b.get("/").status_code == 302 for b in browsers)
    assert (
        SecurityEvent.objects.filter(kind="session_ended", actor="operator", user=user).count() == 2
    )


def test_the_end_all_sessions_url_ignores_a_get(staff_client, user):
    browser = signed_in_browser(user)
    staff_client.get(f"/admin/accounts/user/{user.pk}/end-sessions/")
    assert browser.get("/").status_code == 200


def test_deactivating_a_user_in_admin_ends_their_sessions(staff_client, staff_user, user):
    browser = signed_in_browser(user)
    change = staff_client.get(f"/admin/accounts/user/{user.pk}/change/")
    form = change.context["adminform"].form
    data = {
        k: v
        for k, v in form.initial.items()
        if v is not None
        and k not in ("password", "groups", "user_permissions", "last_login", "date_joined")
    }
    data.update(
        {
            "is_active": "",
            "date_joined_0": user.date_joined.strftime("%Y-%m-%d"),
            "date_joined_1": user.date_joined.strftime("%H:%M:%S"),
            "browser_sessions-TOTAL_FORMS": "1",
            "browser_sessions-INITIAL_FORMS": "1",
            "browser_sessions-MIN_NUM_FORMS": "0",
            "browser_sessions-MAX_NUM_FORMS": "0",
            "browser_sessions-0-session_key": session_row(browser).pk,
            "browser_sessions-0-user": str(user.pk),
        }
    )
    data = {k: v for k, v in data.items() if v is not False}
    response = staff_client.post(f"/admin/accounts/user/{user.pk}/change/", data)
    assert response.status_code == 302, (
        response.context["adminform"].form.errors if response.context else ""
    )
    user.refresh_from_db()
    assert not user.is_active
    assert browser.get("/").status_code == 302
    assert SecurityEvent.objects.filter(
        kind="user_deactivated", user=user, actor_user=staff_user
    ).exists()


def test_the_deactivate_action_ends_every_session_of_each_user(staff_client):
    people = UserFactory.create_batch(2)
    browsers = [signed_in_browser(person) for person in people]
    staff_client.post(
        "/admin/accounts/user/",
        {"action": "deactivate_users", "_selected_action": [p.pk for p in people]},
    )
    assert all(b.get("/").status_code == 302 for b in browsers)
    assert not UserSession.objects.active().filter(user__in=people).exists()


def test_security_events_are_read_only(staff_client, user):
    sign_in(Client(), user.username, "wrong")
    event = SecurityEvent.objects.get(kind="login_failed")
    listing = staff_client.get("/admin/accounts/securityevent/")
    assert listing.status_code == 200 and b"login failed" in listing.content
    assert staff_client.get("/admin/accounts/securityevent/add/").status_code == 403
    assert staff_client.post(f"/admin/accounts/securityevent/{event.pk}/delete/").status_code == 403
    staff_client.post(f"/admin/accounts/securityevent/{event.pk}/change/", {"kind": "logout"})
    event.refresh_from_db()
    assert event.kind == "login_failed"


def test_people_without_staff_rights_cannot_reach_admin(logged_in_client):
    response = logged_in_client.get("/admin/accounts/usersession/")
    assert response.status_code == 302
