"""OpenID Connect Back-Channel Logout 1.0: when a browser session ends, every client that got
tokens in it and registered a ``backchannel_logout_uri`` receives a signed ``logout_token``.

Deliveries are rows (one per session and client, so never two for the same pair), sent by the
Celery task at the end of this module (with the deliveries it sends, so scheduling one needs no
import of tokens/tasks.py) with retries and exponential back-off, and visible in admin.
"""

from __future__ import annotations

import hashlib
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from joserfc import jwt

from authserver.job_figures import record_job
from tokens import keys, outbound
from tokens.models import BackchannelLogout, SessionClient

logger = logging.getLogger(__name__)

EVENT = "http://schemas.openid.net/event/backchannel-logout"
Status = BackchannelLogout.Status
# A delivery marked "sending" longer than this belongs to a worker that died mid-request.
STALE_SENDING = timedelta(seconds=60)
# Longer than the task's own back-off between retries (at most 320 s): only lost work is resent.
STALLED = timedelta(minutes=10)


def schedule(sids: list[str]) -> list[int]:
    """Create the deliveries owed for these ended sessions and queue them after commit."""
    if not sids:
        return []
    participants = SessionClient.objects.filter(sid__in=sids).exclude(
        client__backchannel_logout_uri=""
    )
    rows = [
        BackchannelLogout(sid=p.sid, client_id=p.client_id, user_id=p.user_id) for p in participants
    ]
    if not rows:
        return []
    BackchannelLogout.objects.bulk_create(rows, ignore_conflicts=True)
    pending = list(
        BackchannelLogout.objects.filter(
            sid__in=sids, status=Status.PENDING, attempts=0
        ).values_list("pk", flat=True)
    )

    def enqueue_pending() -> None:
        enqueue(pending)

    transaction.on_commit(enqueue_pending)
    return pending


def enqueue(delivery_ids: list[int]) -> int:
    """Queue deliveries; if the broker is down, they stay pending and the sweep job
    (``resend_stalled``) queues them once it is back. Ending a session never fails for this."""
    queued = 0
    for delivery_id in delivery_ids:
        try:
            # retry=False: with the broker down, fail now and leave the row to the sweep.
            deliver_backchannel_logout.apply_async(args=[delivery_id], retry=False)
            queued += 1
        except Exception:
            logger.warning(
                "Broker unreachable: logout delivery %s stays pending for the sweep", delivery_id
            )
            break
    return queued


def resend_stalled(now=None) -> int:
    """Queue deliveries that nothing is working on: never queued (broker down), or whose worker
    died (acks_late only brings the message back after the broker's visibility timeout)."""
    now = now or timezone.now()
    stalled = BackchannelLogout.objects.filter(
        Q(status=Status.PENDING, created__lt=now - STALLED)
        | Q(status__in=[Status.FAILED, Status.SENDING], last_attempt_at__lt=now - STALLED)
    ).values_list("pk", flat=True)[:1000]
    return enqueue(list(stalled))


def logout_token(delivery: BackchannelLogout) -> str:
    """Back-Channel Logout §2.4: iss aud iat exp jti sub sid events, and never a nonce."""
    client = delivery.client
    algorithm = client.id_token_signed_response_alg
    kid, key = keys.signing_key(algorithm)
    now = int(time.time())
    claims = {
        "iss": settings.ISSUER,
        "aud": client.client_id,
        "iat": now,
        "exp": now + settings.LOGOUT_TOKEN_LIFETIME,
        # One logout event per session and client: a resend after a worker died mid-request
        # carries the same jti, so the relying party can tell it has seen it (§2.6).
        "jti": hashlib.sha256(f"{delivery.sid}:{client.client_id}".encode()).hexdigest()[:32],
        "sid": delivery.sid,
        "events": {EVENT: {}},
    }
    if delivery.user_id is not None:
        claims["sub"] = str(delivery.user_id)
    return jwt.encode({"alg": algorithm, "kid": kid, "typ": "logout+jwt"}, claims, key)


def _claim(delivery_id: int) -> BackchannelLogout | None:
    """Take the delivery for this attempt, unless it is done or another worker is on it."""
    now = timezone.now()
    claimable = Q(status__in=[Status.PENDING, Status.FAILED]) | Q(
        status=Status.SENDING, last_attempt_at__lt=now - STALE_SENDING
    )
    with transaction.atomic():
        delivery = (
            BackchannelLogout.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("client")
            .filter(claimable, pk=delivery_id)
            .first()
        )
        if delivery is None:
            return None
        delivery.status, delivery.last_attempt_at = Status.SENDING, now
        delivery.attempts += 1
        delivery.save(update_fields=["status", "last_attempt_at", "attempts"])
    return delivery


def deliver(delivery_id: int, *, final_attempt: bool = False) -> str:
    """Send one logout token. Returns "delivered", "retry", or "skipped"."""
    delivery = _claim(delivery_id)
    if delivery is None:
        # Done (delivered, abandoned, gone): nothing to do. Still being sent, or "sending" by a
        # worker that has just died (its pool process killed, so Celery requeued this task at
        # once, before the claim went stale): come back later rather than drop it, or it would
        # wait for resend_stalled.
        status = BackchannelLogout.objects.filter(pk=delivery_id).values_list("status", flat=True)
        done = status.first() in (None, Status.DELIVERED, Status.ABANDONED)
        return "skipped" if done else "retry"
    body = urllib.parse.urlencode({"logout_token": logout_token(delivery)}).encode()
    request = urllib.request.Request(  # noqa: S310 - the registered https URI (loopback only if allowed)
        delivery.client.backchannel_logout_uri,
        data=body,
        method="POST",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    status_code, error = None, None
    try:
        opener = outbound.opener(allow_private=settings.BACKCHANNEL_LOGOUT_ALLOW_PRIVATE_NETWORKS)
        with opener.open(request, timeout=settings.BACKCHANNEL_LOGOUT_TIMEOUT) as response:
            status_code = response.status
    except urllib.error.HTTPError as failure:  # includes 3xx: redirects are not followed
        status_code, error = failure.code, f"HTTP {failure.code}"
    except (urllib.error.URLError, OSError, ValueError) as failure:
        error = str(getattr(failure, "reason", failure))[:300]
    delivered = status_code in (200, 204) and error is None
    if delivered:
        delivery.status, delivery.delivered_at, delivery.last_error = (
            Status.DELIVERED,
            timezone.now(),
            "",
        )
    else:
        delivery.status = Status.ABANDONED if final_attempt else Status.FAILED
        delivery.last_error = (error or f"HTTP {status_code}")[:300]
    delivery.last_status_code = status_code
    delivery.save(update_fields=["status", "delivered_at", "last_error", "last_status_code"])
    logger.info(
        "Back-channel logout of session %s to %s: %s (attempt %d)",
        delivery.sid, delivery.client.client_id, delivery.status, delivery.attempts,
    )  # fmt: skip
    return "delivered" if delivered else "retry"


MAX_RETRIES = 6  # back-off 10 s, 20 s, 40 s, ... about 10 minutes in all


@shared_task(
    bind=True, name="tokens.deliver_backchannel_logout", ignore_result=True, max_retries=MAX_RETRIES
)
def deliver_backchannel_logout(self, delivery_id: int) -> str:
    """POST one logout_token; retry with exponential back-off until delivered or out of tries."""
    started = time.monotonic()
    outcome = deliver(delivery_id, final_attempt=self.request.retries >= MAX_RETRIES)
    record_job(
        "tokens.deliver_backchannel_logout",
        seconds=time.monotonic() - started,
        ok=outcome != "retry",
    )
    if outcome == "retry" and self.request.retries < MAX_RETRIES:
        raise self.retry(countdown=10 * 2**self.request.retries)
    return outcome
