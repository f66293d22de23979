"""The session purge job: bounded, idempotent, one run at a time, same code everywhere."""

import time
from datetime import timedelta
from io import StringIO

import pytest
from celery.contrib.testing.worker import start_worker
from django.core.management import call_command
from django.utils import timezone

from accounts import services, tasks
from accounts.models import UserSession
from accounts.sessions import SessionStore
from authserver.celery import app
from tests.conftest import another_machine_holds
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def make_sessions(*, expired=0, ended_long_ago=0, ended_recently=0, live=0) -> dict[str, list[str]]:
    """Given session rows in each state, return their keys by state."""
    now = timezone.now()
    user = UserFactory()
    states = {
        "expired": (expired, {"expire_date": now - timedelta(hours=1)}),
        "ended_long_ago": (ended_long_ago, {"revoked_at": now - timedelta(days=30)}),
        "ended_recently": (ended_recently, {"revoked_at": now - timedelta(hours=1)}),
        "live": (live, {}),
    }
    keys: dict[str, list[str]] = {}
    for state, (count, fields) in states.items():
        rows = [
            UserSession(
                session_key=SessionStore.digest(f"{state}-{n}-{time.monotonic_ns()}"),
                session_data="",
                user=user,
                sid=f"{state}-{n}-{time.monotonic_ns()}",
                **{"expire_date": now + timedelta(days=1), **fields},
            )
            for n in range(count)
        ]
        UserSession.objects.bulk_create(rows)
        keys[state] = [row.session_key for row in rows]
    return keys


def remaining(keys: list[str]) -> int:
    return UserSession.objects.filter(session_key__in=keys).count()


def test_purge_deletes_expired_and_long_ended_sessions_and_nothing_live():
    keys = make_sessions(expired=3, ended_long_ago=2, ended_recently=2, live=4)
    result = services.purge_sessions()
    assert result.deleted == 5 and not result.remaining
    assert remaining(keys["expired"]) == remaining(keys["ended_long_ago"]) == 0
    assert remaining(keys["ended_recently"]) == 2  # kept for SESSION_RETENTION_DAYS
    assert remaining(keys["live"]) == 4


def test_purge_works_in_bounded_batches_and_says_when_more_remain():
    keys = make_sessions(expired=5, live=1)
    first = services.purge_sessions(batch_size=2, max_batches=2)
    assert (first.deleted, first.remaining) == (4, True)
    second = services.purge_sessions(batch_size=2, max_batches=2)
    assert (second.deleted, second.remaining) == (1, False)
    assert remaining(keys["live"]) == 1


def test_purging_twice_is_harmless():
    make_sessions(expired=2, live=1)
    assert tasks.purge_sessions() == 2
    assert tasks.purge_sessions() == 0
    assert UserSession.objects.count() == 1


def test_expired_sessions_are_announced_so_their_tokens_can_go():
    keys = make_sessions(expired=2, ended_long_ago=1)
    expired_sids = set(
        UserSession.objects.filter(session_key__in=keys["expired"]).values_list("sid", flat=True)
    )
    heard: list[set[str]] = []

    def listener(sender, sids, reason, **kwargs):
        heard.append(set(sids))

    services.sessions_ended.connect(listener)
    try:
        services.purge_sessions()
    finally:
        services.sessions_ended.disconnect(listener)
    assert heard == [expired_sids]  # the ended ones were announced when they ended


def test_the_task_skips_when_another_run_holds_the_lock():
    keys = make_sessions(expired=2)
    with another_machine_holds("accounts.purge_sessions"):
        assert tasks.purge_sessions() == 0
        assert remaining(keys["expired"]) == 2
    assert tasks.purge_sessions() == 2


def test_the_management_command_runs_the_same_purge():
    keys = make_sessions(expired=3, live=1)
    out = StringIO()
    call_command("purge_sessions", "--dry-run", stdout=out)
    assert "3 session row(s) would be deleted" in out.getvalue()
    assert remaining(keys["expired"]) == 3
    call_command("purge_sessions", "--batch-size", "2", stdout=out)
    assert "Deleted 3 session row(s)" in out.getvalue()
    assert remaining(keys["live"]) == 1


def test_djangos_clear_expired_hook_uses_the_bounded_purge():
    keys = make_sessions(expired=2, live=1)
    SessionStore.clear_expired()
    assert remaining(keys["expired"]) == 0 and remaining(keys["live"]) == 1


@pytest.mark.django_db(transaction=True)
def test_a_real_worker_on_the_broker_purges_and_re_enqueues_until_done():
    keys = make_sessions(expired=7, live=2)
    with start_worker(app, perform_ping_check=False, shutdown_timeout=10):
        tasks.purge_sessions.delay(batch_size=2, max_batches=1)  # 4 runs needed
        deadline = time.monotonic() + 20
        while remaining(keys["expired"]) and time.monotonic() < deadline:
            time.sleep(0.1)
    assert remaining(keys["expired"]) == 0
    assert remaining(keys["live"]) == 2


def test_every_beat_entry_names_a_real_task_with_an_expiry_and_a_sane_interval():
    app.loader.import_default_modules()
    assert app.conf.beat_schedule
    for name, entry in app.conf.beat_schedule.items():
        assert name == name.lower() and " " not in name and "_" not in name  # kebab-case keys
        assert entry["task"] in app.tasks, entry["task"]
        schedule = entry["schedule"]
        interval = (
            schedule.remaining_estimate(timezone.now()).total_seconds()
            if hasattr(schedule, "remaining_estimate")
            else schedule
        )
        assert 0 <= interval <= 24 * 3600
        assert 0 < entry["options"]["expires"] <= 3600
