"""The cache's Redis unreachable (authserver/breaker.py, authserver/cache.py): the token endpoint
keeps answering from process memory and PostgreSQL, the breaker stops calling the dead Redis,
says so once per outage and once on recovery, and shows its state on /metrics.

The server is the production one (tests/web.py), one worker whose CACHE_URL points at a port of
our own: closed at first (connection refused), then served by a redis-server this test starts,
then closed again. The shared Redis of the suite is never touched."""

import base64
import http.client
import json
import shutil
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import urlencode

import pytest
from django.conf import settings
from django.core.cache import caches

from authserver.breaker import CacheUnavailable
from tests.web import free_port, running, wait_for
from tokens.clients import create_client

OPENED = "Redis (cache) unreachable"
RECOVERED = "Redis (cache) reachable again"

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not shutil.which("redis-server"), reason="needs redis-server"),
]


class OwnRedis:
    """A redis-server of this test's own on ``port``, started and stopped at will."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for(self._answers, 10, "redis-server did not start")

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def cli(self, *command: str) -> str:
        return subprocess.run(
            ["redis-cli", "-p", str(self.port), *command],
            capture_output=True, text=True, check=True, timeout=5,
        ).stdout.strip()  # fmt: skip

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


@pytest.fixture
def own_redis():
    redis = OwnRedis(free_port())
    yield redis
    redis.stop()


@pytest.fixture
def server(tmp_path, own_redis):
    """One worker of the production server on the test database, its cache on ``own_redis``'s
    port; no access log: these tests count the lines the worker writes of its own."""
    cache_url = f"redis://127.0.0.1:{own_redis.port}/0"
    with running(tmp_path, CACHE_URL=cache_url, ACCESS_LOG="false") as web:
        yield web.port, web.log_path


def get(port: int, path: str) -> tuple[int, str]:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode()
    except OSError:
        return 0, ""


def grant(port: int, client_id: str, secret: str) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    credentials = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    conn.request(
        "POST",
        "/token",
        urlencode({"grant_type": "client_credentials"}),
        {
            "Content-Type": "application/x-www-form-urlencoded",
            "Authorization": f"Basic {credentials}",
        },
    )
    response = conn.getresponse()
    return response.status, json.loads(response.read())


def circuit_open(port: int) -> float | None:
    status, text = get(port, "/metrics")
    assert status == 200
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == "authserver_redis_circuit_open":
            return float(value)
    return None


def count(log_path: Path, text: str) -> int:
    return log_path.read_text(errors="replace").count(text)


def test_tokens_keep_coming_with_the_cache_unreachable_and_the_breaker_says_it_once(server):
    port, log_path = server
    client, secret = create_client(name="Outage", grant_types=["client_credentials"])
    started = time.monotonic()
    answers = [grant(port, client.client_id, secret) for _ in range(200)]
    elapsed = time.monotonic() - started
    assert all(status == 200 and body["token_type"] == "Bearer" for status, body in answers)
    assert elapsed < 10  # no connect timeout per request
    assert count(log_path, OPENED) == 1
    assert count(log_path, "Could not cache") == 0
    # Everything else the worker wrote in 200 requests: the start-up lines, not one per request.
    assert len(log_path.read_text().splitlines()) < 20, log_path.read_text()
    assert circuit_open(port) == 1.0


def test_the_breaker_closes_when_redis_answers_again_and_opens_once_more_when_it_goes(
    server, own_redis
):
    port, log_path = server
    client, secret = create_client(name="Outage", grant_types=["client_credentials"])
    assert grant(port, client.client_id, secret)[0] == 200
    wait_for(lambda: count(log_path, OPENED) == 1, 5, "the outage was not reported")

    own_redis.start()
    # The change listener reconnects within a second or two and is the breaker's probe.
    wait_for(lambda: count(log_path, RECOVERED) == 1, 10, "the recovery was not reported")
    assert circuit_open(port) == 0.0
    for _ in range(20):
        assert grant(port, client.client_id, secret)[0] == 200
    # The worker uses the recovered Redis: the client's shared copy is back in it.
    assert own_redis.cli("--scan", "--pattern", "*tokens.client:*") != ""

    own_redis.stop()
    for _ in range(50):
        assert grant(port, client.client_id, secret)[0] == 200
    wait_for(lambda: count(log_path, OPENED) == 2, 5, "the second outage was not reported")
    assert count(log_path, RECOVERED) == 1
    assert circuit_open(port) == 1.0


@pytest.fixture
def cache_on(own_redis, settings):
    """This process's cache on ``own_redis`` (started), as production configures it."""
    own_redis.start()
    settings.CACHES = {
        "default": {
            **settings.CACHES["default"],
            "LOCATION": f"redis://127.0.0.1:{own_redis.port}/0",
            "OPTIONS": {"socket_connect_timeout": 0.2, "socket_timeout": 0.2},
        }
    }
    yield caches["default"]


def test_a_delete_the_outage_swallowed_is_made_when_redis_answers_again(cache_on, own_redis):
    """An ended session's cached copy must not come back with Redis (authserver/cache.py)."""
    assert settings.CACHES["default"]["BACKEND"] == "authserver.cache.RedisCache"
    cache_on.set("ended-session", "still signed in", 600)
    own_redis.cli("CLIENT", "PAUSE", "1500", "ALL")  # Redis alive but not answering: a partition
    with pytest.raises(Exception):
        cache_on.delete("ended-session")
    assert cache_on._cache.breaker.is_open
    with pytest.raises(CacheUnavailable):
        cache_on.get("ended-session")
    time.sleep(1.6)  # the pause is over, and the first back-off (1 s) too
    assert cache_on.get("ended-session") is None  # the probe replayed the delete first
    assert not cache_on._cache.breaker.is_open


def test_while_open_the_cache_is_not_called_at_all(cache_on, own_redis):
    own_redis.stop()
    with pytest.raises(Exception):
        cache_on.get("anything")
    started = time.perf_counter()
    for _ in range(1_000):
        with pytest.raises(CacheUnavailable):
            cache_on.get("anything")
    assert time.perf_counter() - started < 0.5
