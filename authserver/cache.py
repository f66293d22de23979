"""The cache backend: Django's Redis cache, behind the circuit breaker (authserver/breaker.py).

While Redis is unreachable every cache call fails at once with ``CacheUnavailable`` (callers
fall back to the database, as they did before, but without a connection attempt each).

A delete that could not reach Redis is not forgotten: the entry would come back, stale, when
Redis does (an ended browser session served from the cache again). So the keys are remembered
(up to PENDING_DELETES_MAX; past that the whole cache database is flushed) and deleted when
Redis answers again, before the breaker lets anyone else use it. A process that dies during the
outage takes its list with it; the entries then live until their own expiry, which is why
nothing that decides whether a token is live is read from this cache (tokens/access_tokens.py
and tokens/refresh_tokens.py ask PostgreSQL).
"""

from __future__ import annotations

import logging
import threading

from django.core.cache.backends.redis import RedisCache as DjangoRedisCache
from django.core.cache.backends.redis import RedisCacheClient

from authserver.breaker import OUTAGE_ERRORS, for_redis

logger = logging.getLogger(__name__)

PENDING_DELETES_MAX = 10_000
_ALWAYS = ("add", "get", "set", "touch", "has_key", "incr", "get_many", "set_many", "clear")


class _Missed:
    """The deletes this process could not make, per Redis (its LOCATION)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_servers: dict[tuple, tuple[RedisCacheClient, set]] = {}
        self.flush: set[tuple] = set()

    def add(self, client: RedisCacheClient, keys: list) -> None:
        servers = tuple(client._servers)
        with self.lock:
            _client, pending = self.by_servers.setdefault(servers, (client, set()))
            if servers in self.flush:
                return
            if len(pending) + len(keys) > PENDING_DELETES_MAX:
                self.flush.add(servers)
                pending.clear()
            else:
                pending.update(keys)

    def replayer(self, servers: tuple):
        def replay() -> None:
            """Redis answers again: make the deletes it missed (unguarded: the breaker is still
            open for everyone else), or flush it if there were too many to remember."""
            with self.lock:
                client, keys = self.by_servers.get(servers, (None, set()))
                keys, flush = list(keys), servers in self.flush
            if client is None:
                return
            if flush:
                RedisCacheClient.clear(client)
                logger.warning("Flushed the cache: more deletes missed in the outage than kept")
            elif keys:
                RedisCacheClient.delete_many(client, keys)
            with self.lock:
                self.by_servers[servers][1].difference_update(keys)
                self.flush.discard(servers)

        return replay


_missed = _Missed()
_replaying: set[tuple] = set()  # the servers whose breaker replays missed deletes


class GuardedClient(RedisCacheClient):
    """Every operation through the breaker; one ``redis.Redis`` per pool, not one per call."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._clients: dict[bool, object] = {}
        self.breaker = for_redis(self._servers[0])
        servers = tuple(self._servers)
        if servers not in _replaying:
            _replaying.add(servers)
            self.breaker.on_recovery(_missed.replayer(servers))

    def get_client(self, key=None, *, write=False):
        client = self._clients.get(write)
        if client is None:
            client = self._clients[write] = super().get_client(key, write=write)
        return client

    def delete(self, key):
        try:
            return self.breaker.call(super().delete, key)
        except OUTAGE_ERRORS:
            _missed.add(self, [key])
            raise

    def delete_many(self, keys):
        keys = list(keys)
        try:
            return self.breaker.call(super().delete_many, keys)
        except OUTAGE_ERRORS:
            _missed.add(self, keys)
            raise


def _guarded(name: str):
    unguarded = getattr(RedisCacheClient, name)

    def method(self, *args, **kwargs):
        return self.breaker.call(unguarded, self, *args, **kwargs)

    method.__name__ = name
    return method


for _name in _ALWAYS:
    setattr(GuardedClient, _name, _guarded(_name))


class RedisCache(DjangoRedisCache):
    """``django.core.cache.backends.redis.RedisCache`` with ``GuardedClient``."""

    def __init__(self, server, params) -> None:
        super().__init__(server, params)
        self._class = GuardedClient
