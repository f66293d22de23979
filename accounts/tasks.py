import logging
import time

from celery import shared_task

from accounts import services
from authserver.locks import advisory_lock

logger = logging.getLogger(__name__)

MAX_RUNS = 50  # re-enqueued runs in a row before waiting for the next beat slot


@shared_task(name="accounts.purge_sessions", ignore_result=True)
def purge_sessions(batch_size: int = 1000, max_batches: int = 20, run: int = 1) -> int:
    """Delete expired and long-ended browser sessions in bounded batches.

    Idempotent; one run at a time across machines; re-enqueues itself while rows remain.
    """
    with advisory_lock("accounts.purge_sessions") as acquired:
        if not acquired:
            logger.info("purge_sessions: another run holds the lock; skipping")
            return 0
        started = time.monotonic()
        result = services.purge_sessions(batch_size=batch_size, max_batches=max_batches)
        logger.info(
            "purge_sessions: deleted %d session row(s) in %.2fs%s",
            result.deleted,
            time.monotonic() - started,
            "; more remain" if result.remaining else "",
        )
    if result.remaining and run < MAX_RUNS:
        purge_sessions.apply_async(
            kwargs={"batch_size": batch_size, "max_batches": max_batches, "run": run + 1}
        )
    return result.deleted
