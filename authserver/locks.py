"""Run-at-most-once-at-a-time locks for jobs, across every machine."""

import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager

from django.core.cache import cache
from django.db import connection

logger = logging.getLogger(__name__)


def _lock_id(name: str) -> int:
    # pg advisory locks take a signed 64-bit key.
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


@contextmanager
def advisory_lock(name: str, timeout: int = 3600) -> Iterator[bool]:
    """Yield True if this process now holds ``name``, False if another holder is busy. Never waits.

    On PostgreSQL this is a session-level ``pg_try_advisory_lock``: released when the block ends,
    or by the server when the connection dies with a killed worker, so a lock is never left
    behind. The embedded quick start (SQLite) uses an atomic cache ``add`` with a timeout instead.
    """
    if connection.vendor == "postgresql":
        key = _lock_id(name)
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s)", [key])
            acquired = cursor.fetchone()[0]
        try:
            yield acquired
        finally:
            if acquired:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_unlock(%s)", [key])
        return
    cache_key = f"lock:{name}"
    acquired = cache.add(cache_key, 1, timeout)
    try:
        yield acquired
    finally:
        if acquired:
            cache.delete(cache_key)
