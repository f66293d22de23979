"""The expiry jobs: each kind on its own (given / when / then, with time control), through a
real Celery worker on Redis, the lock-not-acquired branch, and live rows never touched."""

import time
import uuid
from datetime import timedelta
from io import StringIO

import pytest
from celery.contrib.testing.worker import start_worker
from django.core.management import call_command
from django.test import Client as Browser
from django.utils import timezone

from accounts.models import TotpDevice, UserSession
from authserver import janitor
from authserver.celery import app
from tests.conftest import another_machine_holds
from tests.factories import UserFactory
from tokens.clients import create_client
from tokens.models import (
    AuthorizationCode,
    BackchannelLogout,
    Client,
    Consent,
    InitialAccessToken,
    RefreshToken,
    RevokedAccessToken,
    SessionClient,
)
from tokens.tasks import EXPIRY_TASKS

pytestmark = pytest.mark.django_db

NOW = timezone.now()
DAY = timedelta(days=1)


def n(prefix: str = "") -> str:
    return f"{prefix}{uuid.uuid4().hex}"


@pytest.fixture
def world(db):
    """One person and one client that the rows below belong to."""
    user = UserFactory()
    client, _ = create_client(name="App", redirect_uris=["https://app.example.com/cb"])
    return user, client


def code(world, *, expires, used=False):
    user, client = world
    return AuthorizationCode.objects.create(
        code_digest=n(), client=client, user=user, sid="s", redirect_uri="https://app.example.com/cb",
        expires=expires, used_at=expires if used else None,
    )  # fmt: skip


def refresh_token(world, *, expires, family_expires=None, rotated=None, revoked=None, family=None):
    user, client = world
    return RefreshToken.objects.create(
        token_digest=n(), family=family or uuid.uuid4(), client=client, user=user, expires=expires,
        family_expires=family_expires or NOW + 30 * DAY, rotated_at=rotated, revoked_at=revoked,
    )  # fmt: skip


def session(world, *, expires, revoked=None, sid=None):
    user, _ = world
    return UserSession.objects.create(
        session_key=n(),
        session_data="",
        expire_date=expires,
        user=user,
        sid=sid or n(),
        revoked_at=revoked,
    )


def exists(row) -> bool:
    return type(row)._base_manager.filter(pk=row.pk).exists()


def purge(name: str, now=None, **kwargs) -> janitor.PurgeResult:
    return janitor.purge(janitor.kinds()[name], now=now or timezone.now(), **kwargs)


# --- each kind on its own --------------------------------------------------------------------
def test_authorization_codes_go_an_hour_after_expiry_used_or_not(world):
    # given
    live = code(world, expires=NOW + timedelta(minutes=1))
    just_expired_and_used = code(world, expires=NOW - timedelta(minutes=5), used=True)
    long_expired = code(world, expires=NOW - timedelta(hours=2))
    # when
    result = purge("authorization_codes", now=NOW)
    # then: a used code is kept a while, so presenting it again is still recognised as a replay
    assert result.deleted == 1
    assert exists(live) and exists(just_expired_and_used) and not exists(long_expired)


def test_refresh_tokens_stay_while_replay_detection_needs_them(world):
    family = uuid.uuid4()
    rotated_in_live_family = refresh_token(
        world, expires=NOW - 10 * DAY, rotated=NOW - 10 * DAY, family=family
    )
    live_child = refresh_token(world, expires=NOW + DAY, family=family)
    idle_leaf = refresh_token(world, expires=NOW - 2 * DAY)
    idle_leaf_recent = refresh_token(world, expires=NOW - timedelta(hours=2))
    revoked_long_ago = refresh_token(world, expires=NOW + DAY, revoked=NOW - 2 * DAY)
    revoked_just_now = refresh_token(world, expires=NOW + DAY, revoked=NOW - timedelta(minutes=1))
    dead_family = refresh_token(
        world, expires=NOW - 3 * DAY, family_expires=NOW - 2 * DAY, rotated=NOW - 3 * DAY
    )

    result = purge("refresh_tokens", now=NOW)

    assert result.deleted == 3
    assert not exists(idle_leaf) and not exists(revoked_long_ago) and not exists(dead_family)
    # A rotated token of a live family is how a replay is caught: it stays.
    assert exists(rotated_in_live_family) and exists(live_child)
    assert exists(idle_leaf_recent) and exists(revoked_just_now)


def test_refresh_tokens_go_exactly_when_one_of_the_three_reasons_says_so(world):
    """The janitor's query finds families past their lifetime through expires (which never
    passes family_expires): every mix of the three reasons, against each reason on its own."""
    cutoff = NOW - DAY
    moments = [NOW - 40 * DAY, NOW - 2 * DAY, NOW - timedelta(hours=2), NOW + DAY, NOW + 9 * DAY]
    rows = []
    for family_expires in moments:
        for expires in (m for m in moments if m <= family_expires):
            for rotated in (None, expires - DAY):
                for revoked in (None, NOW - 2 * DAY, NOW - timedelta(hours=1)):
                    row = refresh_token(
                        world,
                        expires=expires,
                        family_expires=family_expires,
                        rotated=rotated,
                        revoked=revoked,
                    )
                    stale = (
                        family_expires < cutoff
                        or (revoked is not None and revoked < cutoff)
                        or (rotated is None and expires < cutoff)
                    )
                    rows.append((row, stale))

    result = purge("refresh_tokens", now=NOW)

    assert result.deleted == sum(stale for _row, stale in rows)
    assert [exists(row) for row, _stale in rows] == [not stale for _row, stale in rows]


def test_consents_deny_list_entries_and_initial_tokens_go_when_expired(world):
    user, client = world
    old_consent = Consent.objects.create(
        user=user, client=client, scopes=["openid"], expires=NOW - DAY
    )
    other_user = UserFactory()
    live_consent = Consent.objects.create(
        user=other_user, client=client, scopes=["openid"], expires=NOW + DAY
    )
    old_denial = RevokedAccessToken.objects.create(jti=n(), expires=NOW - timedelta(seconds=1))
    live_denial = RevokedAccessToken.objects.create(jti=n(), expires=NOW + timedelta(minutes=5))
    expired_token = InitialAccessToken.objects.create(
        token_digest=n(), expires=NOW - DAY, uses_left=1
    )
    used_up = InitialAccessToken.objects.create(token_digest=n(), expires=NOW + DAY, uses_left=0)
    usable = InitialAccessToken.objects.create(token_digest=n(), expires=NOW + DAY, uses_left=2)

    assert purge("consents", now=NOW).deleted == 1
    assert purge("deny_list", now=NOW).deleted == 1
    assert purge("initial_access_tokens", now=NOW).deleted == 2

    assert not exists(old_consent) and exists(live_consent)
    assert not exists(old_denial) and exists(live_denial)
    assert not exists(expired_token) and not exists(used_up) and exists(usable)


def test_sessions_go_when_expired_or_ended_long_ago_and_expiry_is_announced(world):
    live = session(world, expires=NOW + DAY)
    expired = session(world, expires=NOW - timedelta(minutes=1))
    ended_recently = session(world, expires=NOW + DAY, revoked=NOW - DAY)
    ended_long_ago = session(world, expires=NOW + DAY, revoked=NOW - 30 * DAY)
    _user, _client = world
    bound = refresh_token(world, expires=NOW + DAY)
    RefreshToken.objects.filter(pk=bound.pk).update(sid=expired.sid)

    result = purge("sessions", now=NOW)

    assert result.deleted == 2
    assert exists(live) and exists(ended_recently)
    assert not exists(expired) and not exists(ended_long_ago)
    # The session that simply ran out was ended properly: its tokens are revoked.
    assert RefreshToken.objects.get(pk=bound.pk).revoke_reason == "session_ended"


def test_session_participants_stay_until_the_session_ends(world):
    user, client = world
    live = session(world, expires=NOW + DAY)
    expired_not_yet_purged = session(world, expires=NOW - DAY)
    ended = session(world, expires=NOW + DAY, revoked=NOW - timedelta(minutes=1))
    rows = {
        name: SessionClient.objects.create(sid=s.sid, client=client, user=user)
        for name, s in (("live", live), ("expired", expired_not_yet_purged), ("ended", ended))
    }
    gone = SessionClient.objects.create(sid="purged-long-ago", client=client, user=user)

    assert purge("session_clients", now=NOW).deleted == 2

    # The sessions job still has to announce the expired one, and its clients must be told then.
    assert exists(rows["live"]) and exists(rows["expired"])
    assert not exists(rows["ended"]) and not exists(gone)


def test_logout_deliveries_are_kept_a_month_unless_still_pending(world):
    _user, client = world
    old_delivered = BackchannelLogout.objects.create(sid="a", client=client, status="delivered")
    old_pending = BackchannelLogout.objects.create(sid="b", client=client, status="pending")
    recent = BackchannelLogout.objects.create(sid="c", client=client, status="abandoned")
    BackchannelLogout.objects.filter(pk__in=[old_delivered.pk, old_pending.pk]).update(
        created=NOW - 40 * DAY
    )

    assert purge("logout_deliveries", now=NOW).deleted == 1
    assert not exists(old_delivered) and exists(old_pending) and exists(recent)


# --- the engine ------------------------------------------------------------------------------
def test_purging_works_in_bounded_batches_and_says_when_more_remain(world):
    for _ in range(5):
        code(world, expires=NOW - DAY)
    live = code(world, expires=NOW + DAY)
    first = purge("authorization_codes", now=NOW, batch_size=2, max_batches=2)
    assert (first.deleted, first.batches, first.remaining) == (4, 2, True)
    second = purge("authorization_codes", now=NOW, batch_size=2, max_batches=2)
    assert (second.deleted, second.remaining) == (1, False)
    assert exists(live)


def test_purging_twice_is_harmless(world):
    code(world, expires=NOW - DAY)
    assert purge("authorization_codes", now=NOW).deleted == 1
    assert purge("authorization_codes", now=NOW).deleted == 0


def test_the_backlog_counts_what_waits_and_how_old_it_is(world):
    code(world, expires=NOW - 3 * timedelta(hours=1))
    code(world, expires=NOW - 2 * timedelta(hours=1))
    code(world, expires=NOW + DAY)
    figures = janitor.backlog(janitor.kinds()["authorization_codes"], now=NOW)
    assert figures.waiting == 2
    assert figures.oldest_age_seconds == pytest.approx(3 * 3600, abs=1)
    empty = janitor.backlog(janitor.kinds()["consents"], now=NOW)
    assert (empty.waiting, empty.oldest_age_seconds) == (0, None)


def test_a_task_skips_when_another_machine_holds_its_lock(world):
    expired = code(world, expires=NOW - DAY)
    task = EXPIRY_TASKS["authorization_codes"]
    with another_machine_holds("janitor:authorization_codes"):
        assert task() == 0
        assert exists(expired)
    assert task() == 1


def test_every_kind_has_a_task_and_a_staggered_beat_entry_with_an_expiry():
    app.loader.import_default_modules()
    scheduled = {entry["task"]: (name, entry) for name, entry in app.conf.beat_schedule.items()}
    for kind in janitor.kinds().values():
        assert kind.task_name in app.tasks
        assert kind.task_name in scheduled, kind.task_name
    minutes = []
    for name, entry in app.conf.beat_schedule.items():
        assert name == name.lower() and "_" not in name and " " not in name  # kebab-case keys
        assert entry["task"] in app.tasks, entry["task"]
        assert 0 < entry["options"]["expires"] <= 6 * 3600
        schedule = entry["schedule"]
        wait = schedule.remaining_estimate(timezone.now()).total_seconds()
        assert 0 <= wait <= 86_400
        minutes.append(tuple(sorted(schedule.minute)))
    assert len(set(minutes)) == len(minutes)  # no two jobs start in the same minutes


@pytest.mark.django_db(transaction=True)
def test_a_real_worker_on_the_broker_purges_and_re_enqueues_until_done(world):
    for _ in range(7):
        code(world, expires=timezone.now() - DAY)
    live = code(world, expires=timezone.now() + DAY)
    with start_worker(app, perform_ping_check=False, shutdown_timeout=10):
        EXPIRY_TASKS["authorization_codes"].delay(batch_size=2, max_batches=1)  # 4 runs
        deadline = time.monotonic() + 20
        while AuthorizationCode.objects.count() > 1 and time.monotonic() < deadline:
            time.sleep(0.1)
    assert list(AuthorizationCode.objects.values_list("pk", flat=True)) == [live.pk]


# --- the command and the admin page ------------------------------------------------------------
def test_the_command_shows_the_backlog_on_a_dry_run_and_deletes_nothing(world):
    code(world, expires=NOW - DAY)
    out = StringIO()
    call_command("expire_grants", "--dry-run", stdout=out)
    table = out.getvalue()
    assert (
        "authorization codes" in table and "refresh tokens" in table and "browser sessions" in table
    )
    assert AuthorizationCode.objects.count() == 1


def test_the_command_runs_the_same_purge_and_prints_a_summary(world):
    for _ in range(3):
        code(world, expires=timezone.now() - DAY)
    refresh_token(world, expires=timezone.now() - 3 * DAY)
    out = StringIO()
    call_command("expire_grants", "--only", "authorization_codes", "--batch-size", "2", stdout=out)
    assert AuthorizationCode.objects.count() == 0
    assert RefreshToken.objects.count() == 1  # not asked for
    summary = out.getvalue()
    assert "authorization codes" in summary and "done" in summary and "rows/s" in summary


def test_the_command_names_the_kinds_it_knows():
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="Unknown kind"):
        call_command("expire_grants", "--only", "everything")


def test_the_admin_backlog_page_and_its_json(staff_client, world):
    code(world, expires=timezone.now() - DAY)
    page = staff_client.get("/admin/backlog/")
    assert page.status_code == 200 and b"authorization codes" in page.content
    data = staff_client.get("/admin/backlog/?format=json").json()["backlog"]
    codes = next(item for item in data if item["kind"] == "authorization_codes")
    assert codes["waiting"] == 1 and codes["oldest_age_seconds"] > 3600
    assert Browser().get("/admin/backlog/").status_code == 302  # operators only


def test_clients_survive_every_kind(world):
    """Nothing a purge does reaches beyond its own table."""
    for kind in janitor.kinds():
        purge(kind, now=NOW + 400 * DAY)
    assert Client.objects.count() == 1


def test_unconfirmed_totp_enrolments_go_after_a_day_confirmed_ones_stay(world):
    user, _ = world
    abandoned = TotpDevice.objects.create(user=user, encrypted_secret="x")
    TotpDevice.objects.filter(pk=abandoned.pk).update(created=NOW - 2 * DAY)
    fresh = TotpDevice.objects.create(user=user, encrypted_secret="y")
    confirmed = TotpDevice.objects.create(user=user, encrypted_secret="z", confirmed_at=NOW)
    TotpDevice.objects.filter(pk=confirmed.pk).update(created=NOW - 30 * DAY)
    janitor.purge(janitor.kinds()["totp_enrolments"])
    assert not exists(abandoned) and exists(fresh) and exists(confirmed)
