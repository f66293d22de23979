"""A worker SIGKILLed in the middle of a purge loses nothing live, leaves no lock behind, and
the next run finishes the work (issue: "Worker settings for safety")."""

import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection
from django.utils import timezone

from authserver.celery import app
from authserver.locks import _lock_id
from tests.factories import UserFactory
from tokens.clients import create_client
from tokens.models import AuthorizationCode
from tokens.tasks import EXPIRY_TASKS

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.django_db(transaction=True)


def seed(count: int, *, expired: bool, user, client) -> None:
    expires = timezone.now() + (-timedelta(days=1) if expired else timedelta(days=1))
    AuthorizationCode.objects.bulk_create(
        AuthorizationCode(
            code_digest=uuid.uuid4().hex,
            client=client,
            user=user,
            sid="s",
            redirect_uri="https://app.example.com/cb",
            expires=expires,
        )
        for _ in range(count)
    )


def start_worker_process() -> subprocess.Popen:
    settings = connection.settings_dict
    env = {
        **os.environ,
        # The worker must see the test database, not the one DATABASE_URL names.
        "DATABASE_URL": f"postgres://{settings['USER']}@{settings['HOST'] or '127.0.0.1'}:{settings['PORT'] or 5432}/{settings['NAME']}",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "authserver", "worker", "--pool=solo", "--loglevel=WARNING",
         "--without-gossip", "--without-mingle", "--without-heartbeat"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip


def advisory_lock_held(name: str) -> bool:
    key = _lock_id(name)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND "
            "((classid::bigint << 32) | objid::bigint) = %s",
            [key & 0xFFFFFFFFFFFFFFFF],
        )
        return cursor.fetchone()[0] > 0


def test_a_worker_killed_mid_purge_loses_nothing_live_and_the_next_run_finishes():
    user = UserFactory()
    client, _ = create_client(name="App", redirect_uris=["https://app.example.com/cb"])
    seed(40_000, expired=True, user=user, client=client)
    seed(2_000, expired=False, user=user, client=client)
    live_ids = set(
        AuthorizationCode.objects.filter(expires__gt=timezone.now()).values_list("pk", flat=True)
    )

    app.connection_for_write().default_channel.client.flushdb()  # an empty queue for this test
    worker = start_worker_process()
    try:
        EXPIRY_TASKS["authorization_codes"].delay(batch_size=200, max_batches=1_000)
        deadline = time.monotonic() + 60
        while AuthorizationCode.objects.count() > 42_000 - 2_000 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert worker.poll() is None, worker.stderr.read().decode()[-2000:]
        worker.send_signal(signal.SIGKILL)  # mid-job: some batches done, most not
        worker.wait(timeout=10)
    finally:
        if worker.poll() is None:
            worker.kill()

    left = AuthorizationCode.objects.count()
    assert 2_000 < left < 42_000 - 200, left  # killed part-way, not before or after
    assert live_ids <= set(
        AuthorizationCode.objects.values_list("pk", flat=True)
    )  # nothing live lost
    for _ in range(50):  # the server drops the dead connection, and its session lock with it
        if not advisory_lock_held("janitor:authorization_codes"):
            break
        time.sleep(0.1)
    assert not advisory_lock_held("janitor:authorization_codes")

    # The next run (the next beat slot) takes the lock and finishes the work.
    while EXPIRY_TASKS["authorization_codes"](batch_size=5_000, max_batches=20):
        pass
    assert set(AuthorizationCode.objects.values_list("pk", flat=True)) == live_ids
