"""Brute-force protection for the sign-in form: failures counted per account and per client IP.

Each counter lives in the cache (Redis in production, shared by every web process). An attempt
*reserves* a number with an atomic INCR before the password is checked, so twenty parallel
attempts get the numbers 1 to 20 and only the first ``limit`` reach the password check: no race
can slip extra guesses past the limit. A successful sign-in clears the account's counter and
gives the IP back its reservation.

The window grows with each lockout in the last day (15 minutes, then 30, 60, ... up to 24
hours), so a persistent attacker gets ever fewer guesses per hour. Counters are keyed by what was
typed, not by whether such an account exists, so a lockout says nothing about existence.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.utils import timezone

from accounts.models import LoginCounter

logger = logging.getLogger(__name__)

_STRIKE_MEMORY = 86_400
_MAX_WINDOW = 86_400


@dataclass
class Attempt:
    """One sign-in attempt's reservations: ``allowed`` is False when a counter is past its limit."""

    allowed: bool = True
    counters: list[tuple[str, str, int, int]] = field(
        default_factory=list
    )  # kind, subject, n, limit


def _subjects(
    identifier: str, ip: str | None, account_id: int | None, factor: str = ""
) -> list[tuple[str, str, int]]:
    # One counter per existing account, however it is named (username or email); otherwise the
    # name as typed. "\0" cannot be typed (forms refuse NUL), so the two never collide.
    subject = f"\0{account_id}" if account_id is not None else identifier.strip().lower()
    # A second factor has counters of its own: a correct password clears the password counter,
    # and must not give back the guesses at a code.
    suffix = f"\0{factor}" if factor else ""
    subjects = [("account", subject + suffix, settings.LOGIN_FAILURE_LIMIT)]
    if ip:
        subjects.append(("ip", ip + suffix, settings.LOGIN_FAILURE_LIMIT_PER_IP))
    return subjects


def _key(prefix: str, kind: str, subject: str) -> str:
    digest = hashlib.sha256(subject.encode()).hexdigest()[:32]
    return f"login-throttle:{prefix}:{kind}:{digest}"


class _DatabaseCounters:
    """The same atomic counters in PostgreSQL (one upsert each), for when the cache is down."""

    @staticmethod
    def _table() -> str:
        return connection.ops.quote_name(LoginCounter._meta.db_table)

    def incr(self, key: str, timeout: int, delta: int = 1) -> int:
        now = timezone.now()
        table = self._table()
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {table} (key, count, expires) VALUES (%s, %s, %s) "  # noqa: S608 - table name from the model
                f"ON CONFLICT (key) DO UPDATE SET "
                f"count = CASE WHEN {table}.expires <= %s THEN %s ELSE {table}.count + %s END, "
                f"expires = CASE WHEN {table}.expires <= %s THEN excluded.expires ELSE {table}.expires END "
                f"RETURNING count",
                [key, delta, now + timedelta(seconds=timeout), now, delta, delta, now],
            )
            return cursor.fetchone()[0]

    def get(self, key: str) -> int:
        row = LoginCounter.objects.filter(key=key, expires__gt=timezone.now()).first()
        return row.count if row else 0

    def delete(self, key: str) -> None:
        LoginCounter.objects.filter(key=key).delete()


_database = _DatabaseCounters()


def _increment(key: str, timeout: int) -> int:
    """Atomically add one to a counter that starts at zero and lives ``timeout`` seconds."""
    try:
        for _ in range(3):
            cache.add(key, 0, timeout)
            try:
                return cache.incr(key)
            except ValueError:  # expired between add and incr; start it again
                continue
    except Exception:
        logger.warning("Cache unreachable: counting sign-in attempts in the database")
        return _database.incr(key, timeout)
    raise RuntimeError(f"cache counter {key} keeps vanishing")


def _get(key: str) -> int:
    try:
        return cache.get(key, 0)
    except Exception:
        return _database.get(key)


def _delete(key: str) -> None:
    try:
        cache.delete(key)
    except Exception:
        logger.warning("Cache unreachable: clearing the sign-in counter in the database only")
    _database.delete(key)  # a counter may have been kept there during an outage


def _refund(key: str) -> None:
    try:
        cache.decr(key)
    except ValueError:
        pass
    except Exception:
        _database.incr(key, 1, delta=-1)


def _window(kind: str, subject: str) -> int:
    strikes = _get(_key("strikes", kind, subject))
    return min(settings.LOGIN_FAILURE_WINDOW * 2 ** min(strikes, 10), _MAX_WINDOW)


def begin(
    identifier: str, ip: str | None, account_id: int | None = None, *, factor: str = ""
) -> Attempt:
    """Reserve this attempt on every counter; the password (or, with ``factor``, that second
    factor's code) may be checked only if ``allowed``."""
    attempt = Attempt()
    for kind, subject, limit in _subjects(identifier, ip, account_id, factor):
        n = _increment(_key("count", kind, subject), _window(kind, subject))
        attempt.counters.append((kind, subject, n, limit))
        if n > limit:
            attempt.allowed = False
    return attempt


def succeeded(attempt: Attempt) -> None:
    """A correct password: the account starts afresh, and the IP gets its reservation back."""
    for kind, subject, _n, _limit in attempt.counters:
        key = _key("count", kind, subject)
        if kind == "account":
            _delete(key)
        else:
            _refund(key)


def failed(attempt: Attempt) -> list[str]:
    """A wrong password. Return the kinds ("account", "ip") this failure has just locked.

    Only the attempt holding number ``limit`` locks, so a lockout is reported exactly once.
    """
    locked = []
    for kind, subject, n, limit in attempt.counters:
        if n == limit:
            _increment(_key("strikes", kind, subject), _STRIKE_MEMORY)
            locked.append(kind)
    return locked


def reserve(kind: str, subject: str, limit: int) -> bool:
    """One more try at something guessable other than a password (a device's user code): the
    same atomic reservation as a sign-in, in its own counter. False once past ``limit`` in the
    window; the caller gives a successful try back with ``give_back``."""
    return _increment(_key("count", kind, subject), settings.LOGIN_FAILURE_WINDOW) <= limit


def give_back(kind: str, subject: str) -> None:
    """A try reserved with ``reserve`` succeeded: it does not count against the limit."""
    _refund(_key("count", kind, subject))
