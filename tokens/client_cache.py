"""Clients for the hot path, in process memory, dropped everywhere the moment one changes.

The token endpoint looks its client up on every request; a round trip to Redis for it cost a
fifth of the endpoint's time. So each process keeps the clients it has used. A change to a
client (save, delete, bulk update) publishes its id on a Redis channel once the transaction has
committed, and a listener thread in every process drops its copy.

Correctness does not rest on the messages arriving: a process drops every copy it has each time
its listener subscribes (on start and after any reconnect), so what it kept while it could not
hear is gone as soon as it can. While Redis is unreachable (authserver/breaker.py) nobody can
publish or hear a change, and the copies keep serving until their TTL: a change made on another
host during an outage reaches this one within TTL seconds, and at once when Redis is back. A
change made in this process is seen here at once regardless. Revocation never rests on these
copies: whether a token is live is asked of PostgreSQL (tokens/access_tokens.py), whose own
announcements, not Redis's, end what a process remembers of it (tokens/liveness.py). A
generation counter keeps a lookup that raced with a change from storing what it read before
the change.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from django.conf import settings
from django.core.cache import cache
from django.db import transaction

from authserver.breaker import for_redis

logger = logging.getLogger(__name__)

TTL = 60.0
UNKNOWN = object()  # not in this process's memory: ask the shared cache or the database
SHARED_SECONDS = 300  # a client's copy in the shared cache (Redis)
CORS_ORIGINS_KEY = "tokens.cors.known-origins"  # every active client's origins (tokens/cors.py)


def shared_key(client_id: str) -> str:
    """The shared cache's key for one client."""
    return f"tokens.client:{client_id}"


def invalidate(client_ids) -> None:
    """Clients changed: drop every copy of them, everywhere. Called by the model layer only
    (``Client.save``/``delete`` and the queryset's ``update``/``delete`` in tokens/models.py),
    which every write to a client passes through.

    The shared cache is cleared now and again once the change is committed (a lookup in between
    would cache the row as it was before); this process's memory now, every other process's
    on commit (Redis pub/sub); the CORS origins with the shared copies.
    """
    client_ids = list(client_ids)
    keys = [shared_key(client_id) for client_id in client_ids] + [CORS_ORIGINS_KEY]

    def drop() -> None:
        try:
            cache.delete_many(keys)
        except Exception:
            logger.exception(
                "Could not drop cached clients; they expire within %d s", SHARED_SECONDS
            )

    drop()
    transaction.on_commit(drop)
    changed(client_ids)


class _Memory:
    def __init__(self) -> None:
        self.pid = os.getpid()
        self.entries: dict[str, tuple[object, float]] = {}
        self.generation = 0
        self.listening = threading.Event()
        self.lock = threading.Lock()

    def drop(self, client_id: str | None) -> None:
        with self.lock:
            self.generation += 1
            if client_id is None:
                self.entries.clear()
            else:
                self.entries.pop(client_id, None)


_memory: _Memory | None = None
_start_lock = threading.Lock()


def _redis_url() -> str | None:
    cache = settings.CACHES["default"]
    return cache["LOCATION"] if cache["BACKEND"].endswith("RedisCache") else None


def _channel() -> str:
    return f"{settings.CACHES['default'].get('KEY_PREFIX', '')}:clients-changed"


def _listen(memory: _Memory, url: str) -> None:
    import redis

    while True:
        try:
            connection = redis.Redis.from_url(
                url, socket_connect_timeout=0.5, socket_keepalive=True, health_check_interval=30
            )
            subscription = connection.pubsub()
            subscription.subscribe(_channel())
            for message in subscription.listen():
                if message["type"] == "subscribe":
                    memory.drop(None)  # whatever happened before we listened is unknown
                    memory.listening.set()
                    for_redis(url).succeeded()  # this reconnect is the breaker's probe too
                elif message["type"] == "message":
                    data = message["data"].decode()
                    memory.drop(None if data == "*" else data)
        except Exception as error:
            # The breaker says it once per outage; the copies serve on until their TTL.
            for_redis(url).failed(error)
        memory.listening.clear()
        time.sleep(1)


def _memory_for_this_process() -> _Memory | None:
    """This process's memory, with its listener started (once per process: a server or Celery
    may fork after import, and a thread does not survive a fork)."""
    global _memory
    memory = _memory
    if memory is not None and memory.pid == os.getpid():
        return memory
    url = _redis_url()
    if url is None:
        return None  # no Redis (the quick start's in-process cache already is memory)
    with _start_lock:
        if _memory is None or _memory.pid != os.getpid():
            _memory = _Memory()
            threading.Thread(
                target=_listen, args=(_memory, url), name="client-changes", daemon=True
            ).start()
        return _memory


def get(client_id: str):
    memory = _memory_for_this_process()
    if memory is None:
        return UNKNOWN
    entry = memory.entries.get(client_id)
    if entry is None or entry[1] < time.monotonic():
        return UNKNOWN
    return entry[0]


def generation() -> int:
    memory = _memory_for_this_process()
    return memory.generation if memory is not None else 0


def put(client_id: str, client, seen_generation: int) -> None:
    """Keep ``client`` (or None: no such active client) for TTL seconds, unless a change
    arrived since the lookup began (``seen_generation``)."""
    memory = _memory_for_this_process()
    if memory is None:
        return
    with memory.lock:
        if memory.generation == seen_generation:
            memory.entries[client_id] = (client, time.monotonic() + TTL)


def changed(client_ids: list[str]) -> None:
    """Clients changed: drop this process's copies now, and everyone's once committed."""
    memory = _memory_for_this_process()
    if memory is not None:
        for client_id in client_ids:
            memory.drop(client_id)
    url = _redis_url()
    if url is None:
        return

    def publish() -> None:
        import redis

        try:
            connection = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
            message = client_ids[0] if len(client_ids) == 1 else "*"
            for_redis(url).call(connection.publish, _channel(), message)
        except Exception:
            logger.warning(
                "Could not announce a client change; other processes drop it within %d s", TTL
            )

    transaction.on_commit(publish)
