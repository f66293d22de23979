"""Expiring stale grants: one engine for every kind of row that outlives its use.

Each kind says which rows may go (a ``Q`` for a given moment); the engine deletes them in
primary-key batches, each a short statement that locks only that batch, and says whether more
remain. The Celery tasks, ``manage.py expire_grants`` and the admin backlog page all go through
here, so they cannot disagree. Reading never deletes; live rows never match a kind's ``Q``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from celery import shared_task
from django.db import models, transaction
from django.db.models import Count, Min, Q
from django.utils import timezone

from authserver.job_figures import record_job
from authserver.locks import advisory_lock

logger = logging.getLogger(__name__)

BATCH_SIZE = 5_000
MAX_BATCHES = 20  # per run: 100,000 rows, then the task re-enqueues itself
MAX_RUNS = 100  # re-enqueued runs in a row before waiting for the next beat slot


@dataclass(frozen=True)
class Kind:
    """One kind of stale row."""

    name: str  # "refresh_tokens": for --only, logs and the backlog page
    label: str  # "refresh tokens"
    task_name: str  # "tokens.expire_refresh_tokens"
    model: type[models.Model]
    stale: Callable[[datetime], Q]  # rows that may be deleted at that moment
    since: str  # the timestamp that made a row stale, for the backlog's "oldest"
    # Values to read from each batch before it goes, handed to after_delete inside the delete's
    # transaction (sessions that simply expired: their tokens go and their clients are told).
    keep: tuple[str, ...] = ()
    after_delete: Callable[[list[tuple]], None] | None = field(default=None, compare=False)
    # Instead of deleting the stale rows, set these fields (a secret kept a short while on a row
    # that itself lives on: the refresh retry window's sealed answers).
    wipe: dict | None = field(default=None, compare=False)

    def queryset(self, now: datetime) -> models.QuerySet:
        return self.model._base_manager.filter(self.stale(now)).order_by()


@dataclass
class PurgeResult:
    kind: str
    deleted: int = 0
    batches: int = 0
    seconds: float = 0.0
    longest_statement: float = 0.0
    remaining: bool = False


def purge(
    kind: Kind,
    *,
    batch_size: int = BATCH_SIZE,
    max_batches: int = MAX_BATCHES,
    now: datetime | None = None,
    progress: Callable[[int], None] | None = None,
) -> PurgeResult:
    """Delete up to ``batch_size * max_batches`` stale rows of ``kind``, a batch at a time."""
    now = now or timezone.now()
    result = PurgeResult(kind.name)
    started = time.monotonic()
    stale = kind.queryset(now)
    after = None  # keyset: each batch starts where the last one ended, never rescanning
    for _ in range(max_batches):
        tick = time.monotonic()
        batch = stale if after is None else stale.filter(pk__gt=after)
        rows = list(batch.order_by("pk").values_list("pk", *kind.keep)[:batch_size])
        selected = time.monotonic()
        result.longest_statement = max(result.longest_statement, selected - tick)
        if not rows:
            break
        after = rows[-1][0]
        with transaction.atomic():
            chosen = kind.model._base_manager.filter(pk__in=[row[0] for row in rows])
            if kind.wipe is not None:
                deleted = chosen.update(**kind.wipe)
            else:
                deleted, _ = chosen.delete()
            done = time.monotonic()
            if kind.after_delete is not None:
                # Same transaction: the rows never go without what their going implies.
                kind.after_delete(rows)
        result.longest_statement = max(result.longest_statement, done - selected)
        result.deleted += deleted
        result.batches += 1
        if progress is not None:
            progress(deleted)
    else:
        # The whole table again: rows below the cursor that went stale meanwhile count too.
        tick = time.monotonic()
        result.remaining = stale.exists()
        result.longest_statement = max(result.longest_statement, time.monotonic() - tick)
    result.seconds = time.monotonic() - started
    return result


@dataclass(frozen=True)
class Backlog:
    kind: str
    label: str
    waiting: int
    oldest_age_seconds: float | None


def backlog(kind: Kind, now: datetime | None = None) -> Backlog:
    """How many rows wait to be purged, and how long the oldest has been stale."""
    now = now or timezone.now()
    figures = kind.queryset(now).aggregate(waiting=Count("pk"), oldest=Min(kind.since))
    oldest = figures["oldest"]
    age = max(0.0, (now - oldest).total_seconds()) if oldest else None
    return Backlog(kind.name, kind.label, figures["waiting"], age)


_kinds: dict[str, Kind] = {}


def register(*kinds: Kind) -> None:
    """Each app hands the janitor its kinds from ``AppConfig.ready()`` (the janitor knows no
    app). Registering a kind again replaces it, so a reload is harmless."""
    for kind in kinds:
        _kinds[kind.name] = kind


def kinds() -> dict[str, Kind]:
    """Every registered kind, in the order the apps registered them (INSTALLED_APPS order):
    the order the command and the backlog page show them."""
    return dict(_kinds)


def make_task(kind: Kind):
    """The Celery task for one kind: bounded, one run at a time across machines, re-enqueued
    while work remains (up to MAX_RUNS in a row)."""

    @shared_task(name=kind.task_name, ignore_result=True)
    def expire(batch_size: int = BATCH_SIZE, max_batches: int = MAX_BATCHES, run: int = 1) -> int:
        with advisory_lock(f"janitor:{kind.name}") as acquired:
            if not acquired:  # another run is busy; deleting is idempotent, so skip
                logger.info("%s: another run holds the lock; skipping", kind.task_name)
                return 0
            result = purge(kind, batch_size=batch_size, max_batches=max_batches)
        record_job(kind.task_name, seconds=result.seconds, rows=result.deleted)
        logger.info(
            "%s: %s %d %s in %.2fs (%d batches, longest statement %.0f ms)%s",
            kind.task_name, "wiped" if kind.wipe else "deleted", result.deleted, kind.label,
            result.seconds, result.batches,
            result.longest_statement * 1000, "; more remain, re-enqueued" if result.remaining else "",
        )  # fmt: skip
        if result.remaining and run < MAX_RUNS:
            expire.apply_async(
                kwargs={"batch_size": batch_size, "max_batches": max_batches, "run": run + 1}
            )
        return result.deleted

    expire.__doc__ = f"Delete stale {kind.label} in bounded batches."
    return expire
