import logging
import time

from celery import shared_task

from authserver.janitor import make_task
from authserver.job_figures import record_job
from authserver.locks import advisory_lock
from tokens import keys, logout
from tokens.expiry import KINDS
from tokens.logout import MAX_RETRIES, deliver_backchannel_logout

__all__ = ["MAX_RETRIES", "deliver_backchannel_logout"]  # defined with the deliveries it sends

logger = logging.getLogger(__name__)


@shared_task(name="tokens.resend_logout_deliveries", ignore_result=True)
def resend_logout_deliveries() -> int:
    """Queue back-channel logouts that were never queued (broker down) or lost with a worker."""
    with advisory_lock("tokens.resend_logout_deliveries") as acquired:
        if not acquired:
            return 0
        started = time.monotonic()
        queued = logout.resend_stalled()
    record_job("tokens.resend_logout_deliveries", seconds=time.monotonic() - started, rows=queued)
    if queued:
        logger.info("resend_logout_deliveries: queued %d stalled deliver(ies)", queued)
    return queued


@shared_task(name="tokens.rotate_signing_keys", ignore_result=True)
def rotate_signing_keys() -> dict:
    """Publish, promote and retire signing keys on schedule (see tokens/keys.py)."""
    with advisory_lock("tokens.rotate_signing_keys") as acquired:
        if not acquired:
            logger.info("rotate_signing_keys: another run holds the lock; skipping")
            return {}
        started = time.monotonic()
        report = keys.rotate()
        record_job("tokens.rotate_signing_keys", seconds=time.monotonic() - started)
    logger.info(
        "rotate_signing_keys: published %s, promoted %s, retired %s, deleted %s",
        report.published, report.promoted, report.retired, report.deleted,
    )  # fmt: skip
    return report.__dict__


# tokens.expire_authorization_codes, tokens.expire_refresh_tokens, tokens.expire_consents, ...
EXPIRY_TASKS = {kind.name: make_task(kind) for kind in KINDS}
