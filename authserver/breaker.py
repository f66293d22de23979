"""A circuit breaker for the cache's Redis: once it stops answering, stop calling it for a while.

Every use of the cache's Redis goes through one breaker per process (``for_redis``): the cache backend
(authserver/cache.py: sessions, the client copies shared between hosts, login counters, CORS
origins, job figures) and the client-change channel (tokens/client_cache.py). Each of them
already has the database to fall back on, so what an outage cost was not wrong answers but
time: a connection attempt per call, a log line per request. With the breaker:

* closed (Redis answers): calls go through. A connection error or timeout opens it.
* open: calls fail at once with ``CacheUnavailable`` (a redis ``ConnectionError``, which every
  caller already handles), for ``backoff`` seconds: 1 s, doubling to 30 s while Redis stays
  away. Then one call is let through as a probe; the change listener's reconnects are probes too.
* a probe that succeeds closes it again; what has to happen before anyone uses the recovered
  Redis (replaying cache deletes that could not be done, authserver/cache.py) runs first.

One WARNING when it opens and one INFO when it closes, per process and outage, and the gauge
``authserver_redis_circuit_open`` (authserver/metrics.py).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from authserver.metrics import REDIS_CIRCUIT_OPEN, REDIS_CIRCUIT_OPENED

logger = logging.getLogger(__name__)

FIRST_BACKOFF = 1.0
MAX_BACKOFF = 30.0
# What an unreachable Redis raises; anything else (a wrong type, a full memory) is an answer.
OUTAGE_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError)


class CacheUnavailable(RedisConnectionError):
    """Raised instead of calling Redis while the breaker is open."""


class Breaker:
    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._retry_at = 0.0  # 0: closed
        self._backoff = FIRST_BACKOFF
        self._opened_at = 0.0
        self._probing = False  # a probe is out: its failure doubles the back-off
        self._on_recovery: list[Callable[[], None]] = []

    @property
    def is_open(self) -> bool:
        return self._retry_at != 0.0

    def on_recovery(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` (in the probe's thread) each time Redis answers again, before the
        breaker closes; if it raises an outage error, the breaker stays open."""
        self._on_recovery.append(callback)

    def allow(self) -> bool:
        """True if this call may go to Redis: closed, or open and due for a probe (this caller
        is the probe; the others keep skipping until it reports)."""
        retry_at = self._retry_at
        if retry_at == 0.0:
            return True
        now = time.monotonic()
        if now < retry_at:
            return False
        with self._lock:
            if self._retry_at == 0.0 or now < self._retry_at:
                return self._retry_at == 0.0
            self._retry_at = now + self._backoff  # one probe per back-off period
            self._probing = True
            return True

    def check(self) -> None:
        """Raise ``CacheUnavailable`` unless the call may go to Redis."""
        if not self.allow():
            raise CacheUnavailable(f"{self.name} is unreachable (circuit open)")

    def failed(self, error: BaseException | None = None) -> None:
        now = time.monotonic()
        with self._lock:
            if self._retry_at == 0.0:
                self._opened_at = now
                self._backoff = FIRST_BACKOFF
                REDIS_CIRCUIT_OPEN.set(1)
                REDIS_CIRCUIT_OPENED.inc()
                logger.warning(
                    "%s unreachable (%s): not calling it for %.0f s at a time; the database "
                    "answers meanwhile",
                    self.name,
                    type(error).__name__ if error else "error",
                    self._backoff,
                )
            elif self._probing:
                self._backoff = min(self._backoff * 2, MAX_BACKOFF)
            else:
                return  # a call that was in flight when it opened: nothing new
            self._probing = False
            self._retry_at = now + self._backoff

    def succeeded(self) -> None:
        """Redis answered someone (the change listener's reconnect): recover and close."""
        if self._retry_at == 0.0:
            return
        try:
            self._recover()
        except OUTAGE_ERRORS as error:
            self.failed(error)
            return
        self._close()

    def _recover(self) -> None:
        for callback in self._on_recovery:
            callback()

    def _close(self) -> None:
        with self._lock:
            if self._retry_at == 0.0:
                return
            self._retry_at = 0.0
            self._probing = False
            outage = time.monotonic() - self._opened_at
        REDIS_CIRCUIT_OPEN.set(0)
        logger.info("%s reachable again after %.1f s", self.name, outage)

    def reset(self) -> None:
        """Closed, as at start-up, without a word (tests)."""
        with self._lock:
            self._retry_at, self._probing, self._backoff = 0.0, False, FIRST_BACKOFF
        REDIS_CIRCUIT_OPEN.set(0)

    def call(self, function: Callable, *args, **kwargs):
        """``function(*args, **kwargs)`` through the breaker. The probe after a back-off runs
        the recovery callbacks before its own call, so nobody reads what they repair."""
        probe = self._retry_at != 0.0
        if probe:
            self.check()
        try:
            if probe:
                self._recover()
            result = function(*args, **kwargs)
        except OUTAGE_ERRORS as error:
            if not isinstance(error, CacheUnavailable):
                self.failed(error)
            raise
        if probe:
            self._close()
        return result


_breakers: dict[str, Breaker] = {}
_breakers_lock = threading.Lock()


def for_redis(url: str) -> Breaker:
    """The breaker of the Redis at ``url`` (the cache's LOCATION): one per Redis, per process."""
    breaker = _breakers.get(url)
    if breaker is None:
        with _breakers_lock:
            breaker = _breakers.setdefault(url, Breaker("Redis (cache)"))
    return breaker


def reset_all() -> None:
    """Every breaker closed, as at start-up (tests point the cache at dead Redis servers)."""
    for breaker in list(_breakers.values()):
        breaker.reset()
