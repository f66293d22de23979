"""Django's receivers around every request, less the two that can do nothing here."""

from django.conf import settings
from django.core import signals
from django.core.cache import close_caches
from django.core.cache.backends.base import BaseCache
from django.db import reset_queries
from django.utils.module_loading import import_string


def drop_idle_receivers() -> None:
    """Django connects four receivers to request_started and request_finished. Two of them are
    work for nothing in this configuration, on every request (with the dispatch, ~3 % of a
    client_credentials grant in process, bench/cpu.py):

    - ``reset_queries`` empties the query log, which only DEBUG fills (Django's own query
      capture, as in assertNumQueries, disconnects it and counts by position anyway);
    - ``close_caches`` calls ``close()`` on each cache, a no-op in BaseCache that the Redis and
      local-memory backends keep. A backend that closes something (memcached) keeps it.

    ``close_old_connections``, which ends connections past CONN_MAX_AGE or broken and hands
    pooled ones back, stays on both signals."""
    if not settings.DEBUG:
        signals.request_started.disconnect(reset_queries)
    backends = (import_string(cache["BACKEND"]) for cache in settings.CACHES.values())
    if all(backend.close is BaseCache.close for backend in backends):
        signals.request_finished.disconnect(close_caches)
