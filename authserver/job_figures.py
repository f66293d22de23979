"""Job figures (runs, rows, last duration) kept in the shared cache: Celery workers may run on
other machines than the web process that serves /metrics (authserver/metrics.py reads them)."""

from __future__ import annotations

import logging
import time

from django.core.cache import cache

logger = logging.getLogger(__name__)

JOBS_KEY = "metrics:jobs"


def record_job(task: str, *, seconds: float, rows: int = 0, ok: bool = True) -> None:
    """Called by Celery tasks: counts land in the shared cache, read back at scrape time."""
    try:
        cache.add(f"{JOBS_KEY}:{task}:runs:{'ok' if ok else 'failed'}", 0, None)
        cache.incr(f"{JOBS_KEY}:{task}:runs:{'ok' if ok else 'failed'}")
        cache.add(f"{JOBS_KEY}:{task}:rows", 0, None)
        cache.incr(f"{JOBS_KEY}:{task}:rows", rows)
        cache.set(f"{JOBS_KEY}:{task}:last_seconds", seconds, None)
        cache.set(f"{JOBS_KEY}:{task}:last_run", time.time(), None)
        known = cache.get(JOBS_KEY, set())
        if task not in known:
            cache.set(JOBS_KEY, known | {task}, None)
    except Exception:  # metrics must never break a job
        logger.warning("Could not record job metrics for %s", task, exc_info=True)
