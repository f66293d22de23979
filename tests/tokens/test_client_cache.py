"""Clients are kept in each server process's memory for the token endpoint (tokens/client_cache.py).
A change made anywhere must reach every other process at once, so these tests change a client in
this process and watch a worker of the real server (tests/web.py), a separate process with its
own memory, stop honouring the old state."""

import base64
import http.client
import time
from urllib.parse import urlencode

import pytest
from django.core.cache import cache
from django.db import connection

from tests.web import running
from tokens import client_cache
from tokens.clients import create_client, rotate_client_secret
from tokens.revocation import deactivate_client

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def server(tmp_path):
    """One worker of the production server on the test database and the test cache (so on the
    same Redis)."""
    with running(tmp_path) as web:
        yield web.port


def grant(port: int, client_id: str, secret: str) -> tuple[int, dict]:
    import json

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    credentials = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    conn.request(
        "POST",
        "/token",
        urlencode({"grant_type": "client_credentials"}),
        {
            "Content-Type": "application/x-www-form-urlencoded",
            "Authorization": f"Basic {credentials}",
            "X-Forwarded-Proto": "https",
        },
    )
    response = conn.getresponse()
    return response.status, json.loads(response.read())


def until_refused(port: int, client_id: str, secret: str, seconds: float = 2.0) -> float:
    """Seconds until the server refuses these credentials; fails the test after ``seconds``."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        status, body = grant(port, client_id, secret)
        if status == 401:
            assert body["error"] == "invalid_client"
            return time.monotonic() - started
        time.sleep(0.01)
    pytest.fail(f"the other process still accepted the client after {seconds} s")


def warm(port: int, client) -> None:
    """Put the client in the server's memory, and prove it is served from there: with the row's
    secret digest garbled behind the cache's back (no invalidation) and the shared cache's copy
    gone, only the worker's own memory can still accept the secret. The worker keeps nothing
    until its change listener has subscribed (started by its first lookup), so try again until
    it has."""
    client_id, secret = client.client_id, client.secret
    digest = client.secret_digest

    def set_digest(value: str) -> None:
        with connection.cursor() as cursor:
            cursor.execute(
                "UPDATE tokens_client SET secret_digest = %s WHERE client_id = %s",
                [value, client_id],
            )
        cache.delete(client_cache.shared_key(client_id))

    deadline = time.monotonic() + 10
    while True:
        for _ in range(5):
            assert grant(port, client_id, secret)[0] == 200
        set_digest("garbled")
        if grant(port, client_id, secret)[0] == 200:
            return  # served from the worker's memory
        set_digest(digest)
        assert time.monotonic() < deadline, "the worker never kept the client"
        time.sleep(0.1)


def test_deactivating_a_client_reaches_another_process_at_once(server):
    client, secret = create_client(name="Cached", grant_types=["client_credentials"])
    client.secret = secret
    warm(server, client)
    deactivate_client(client)
    assert until_refused(server, client.client_id, secret) < 1.0


def test_a_rotated_secret_stops_working_in_another_process_at_once(server):
    client, secret = create_client(name="Cached", grant_types=["client_credentials"])
    client.secret = secret
    warm(server, client)
    client.refresh_from_db()
    new_secret = rotate_client_secret(client)
    assert until_refused(server, client.client_id, secret) < 1.0
    assert grant(server, client.client_id, new_secret)[0] == 200


def test_a_bulk_update_reaches_another_process_at_once(server):
    from tokens.models import Client

    client, secret = create_client(name="Cached", grant_types=["client_credentials"])
    client.secret = secret
    warm(server, client)
    Client.objects.filter(pk=client.pk).update(is_active=False)
    assert until_refused(server, client.client_id, secret) < 1.0


def test_a_lookup_that_raced_with_a_change_does_not_keep_what_it_read():
    """The generation counter: a change between reading a client and storing it wins."""
    memory = client_cache._memory_for_this_process()
    deadline = time.monotonic() + 5
    while not memory.listening.is_set():
        assert time.monotonic() < deadline, "the change listener never subscribed"
        time.sleep(0.01)
    seen = client_cache.generation()
    client_cache.changed(["raced"])  # a change lands while the lookup is in flight
    client_cache.put("raced", "the row as it was", seen)
    assert client_cache.get("raced") is client_cache.UNKNOWN
    client_cache.put("raced", "the row as it is", client_cache.generation())
    assert client_cache.get("raced") == "the row as it is"
    client_cache.changed(["raced"])
    assert client_cache.get("raced") is client_cache.UNKNOWN
