"""Prometheus metrics on /metrics (prometheus-client).

Web processes count requests, tokens, replays and login failures in process (multi-process
mode when PROMETHEUS_MULTIPROC_DIR is set, as authserver/server.py does). Job figures come
from Celery workers, which may run elsewhere, so they are kept in the shared cache and read at
scrape time, with the purge backlog (counted at most once a minute).
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import os
import re
import time

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse, HttpResponseNotFound
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from authserver import janitor
from authserver.job_figures import JOBS_KEY

REQUEST_SECONDS = Histogram(
    "authserver_http_request_duration_seconds",
    "Time to answer a request, by endpoint (URL name) and status class.",
    ["endpoint", "method", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
TOKENS_ISSUED = Counter(
    "authserver_tokens_issued_total", "Access tokens issued, by grant type.", ["grant_type"]
)


# Labelled children are made once per label values, each set bounded (grant types; URL names x
# methods x status classes): labels() validates and locks on every call, ~10 µs a request.
@functools.cache
def tokens_issued(grant_type: str) -> Counter:
    return TOKENS_ISSUED.labels(grant_type)


@functools.cache
def _request_timer(endpoint: str, method: str, status: str) -> Histogram:
    return REQUEST_SECONDS.labels(endpoint, method, status)


REFRESH_REPLAYS = Counter(
    "authserver_refresh_token_replays_total", "Rotated refresh tokens presented again."
)
REFRESH_RETRIES = Counter(
    "authserver_refresh_token_retries_total",
    "Rotated refresh tokens presented again by their client within its retry window, answered "
    "with the same successor.",
)
CODE_REPLAYS = Counter(
    "authserver_authorization_code_replays_total", "Used authorization codes presented again."
)
LOGIN_FAILURES = Counter(
    "authserver_login_failures_total", "Failed sign-ins (wrong password or unknown name)."
)
LOGIN_LOCKOUTS = Counter(
    "authserver_login_lockouts_total", "Sign-in lockouts, by what was locked.", ["subject"]
)
LOGIN_THROTTLED = Counter(
    "authserver_login_throttled_total", "Sign-in attempts refused by the throttle."
)
# authserver/breaker.py: 1 while this process does not call the cache's Redis (an outage).
REDIS_CIRCUIT_OPEN = Gauge(
    "authserver_redis_circuit_open",
    "1 while the circuit breaker keeps this process off the cache's Redis.",
    multiprocess_mode="livemax",
)
REDIS_CIRCUIT_OPENED = Counter(
    "authserver_redis_circuit_opened_total", "Outages of the cache's Redis seen (breaker opened)."
)

logger = logging.getLogger(__name__)


class SharedCollector:
    """Job runs and the purge backlog, from the shared cache and the database."""

    def collect(self):
        try:
            yield from self._collect()
        except Exception:  # the cache or the database is down: serve what the processes know
            logger.warning("Shared metrics unavailable", exc_info=True)

    def _collect(self):
        runs = CounterMetricFamily(
            "authserver_job_runs", "Job runs, by task and outcome.", labels=["task", "outcome"]
        )
        rows = CounterMetricFamily(
            "authserver_job_rows_deleted", "Rows deleted by jobs.", labels=["task"]
        )
        seconds = GaugeMetricFamily(
            "authserver_job_last_duration_seconds", "Duration of the last run.", labels=["task"]
        )
        last = GaugeMetricFamily(
            "authserver_job_last_run_timestamp_seconds", "When a job last ran.", labels=["task"]
        )
        for task in sorted(cache.get(JOBS_KEY, set())):
            for outcome in ("ok", "failed"):
                runs.add_metric([task, outcome], cache.get(f"{JOBS_KEY}:{task}:runs:{outcome}", 0))
            rows.add_metric([task], cache.get(f"{JOBS_KEY}:{task}:rows", 0))
            seconds.add_metric([task], cache.get(f"{JOBS_KEY}:{task}:last_seconds", 0))
            last.add_metric([task], cache.get(f"{JOBS_KEY}:{task}:last_run", 0))
        yield from (runs, rows, seconds, last)

        figures = cache.get("metrics:backlog")
        if figures is None:
            figures = [janitor.backlog(kind) for kind in janitor.kinds().values()]
            cache.set("metrics:backlog", figures, 60)
        waiting = GaugeMetricFamily(
            "authserver_purge_backlog_rows", "Rows waiting to be purged.", labels=["kind"]
        )
        oldest = GaugeMetricFamily(
            "authserver_purge_backlog_oldest_seconds",
            "How long the oldest waiting row has been stale.",
            labels=["kind"],
        )
        for figure in figures:
            waiting.add_metric([figure.kind], figure.waiting)
            oldest.add_metric([figure.kind], figure.oldest_age_seconds or 0)
        yield from (waiting, oldest)


class MetricsMiddleware:
    """Time every request, labelled by URL name (bounded cardinality), never by path."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = self.get_response(request)
        match = getattr(request, "resolver_match", None)
        endpoint = match.view_name if match is not None else "unmatched"
        method = request.method if request.method in _METHODS else "other"
        timer = _request_timer(endpoint, method, f"{response.status_code // 100}xx")
        timer.observe(time.perf_counter() - started)
        return response


_METHODS = {"GET", "POST", "PUT", "DELETE", "OPTIONS", "HEAD"}


def _allowed(request: HttpRequest) -> bool:
    token = settings.METRICS_TOKEN
    if token:
        import hmac

        scheme, _, value = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(
            value.strip().encode(), token.encode()
        ):
            return True
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    return any(address in network for network in settings.METRICS_ALLOWED_NETWORKS)


def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus exposition. Restricted: METRICS_ALLOWED_NETWORKS (the scraper's address as
    seen by this process) or a bearer METRICS_TOKEN; anyone else gets a 404."""
    if not _allowed(request):
        return HttpResponseNotFound()
    registry = CollectorRegistry()
    # prometheus-client's own switch (set by authserver/server.py), not app configuration.
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        forget_dead_processes(directory)
        multiprocess.MultiProcessCollector(registry)
    else:
        from prometheus_client import REGISTRY

        registry = REGISTRY
    output = generate_latest(registry)
    output += generate_latest(_shared_registry())
    response = HttpResponse(output, content_type=CONTENT_TYPE_LATEST)
    response["Cache-Control"] = "no-store"
    return response


# The files of a live gauge, per process: gauge_livemax_<pid>.db (prometheus_client.multiprocess).
_LIVE_GAUGE_FILE = re.compile(r"gauge_live[a-z]*_(\d+)\.db")


def forget_dead_processes(directory: str) -> None:
    """Drop the live gauges (the circuit breaker's state) of worker processes that are gone,
    so /metrics does not report a dead worker's open circuit for ever. Counters and histograms
    stay: what a dead worker counted still happened. gunicorn did this in its child_exit hook;
    granian has no such hook, and a worker the OOM killer ended never says so itself."""
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for pid in {int(m.group(1)) for m in map(_LIVE_GAUGE_FILE.fullmatch, names) if m}:
        if not _running(pid):
            multiprocess.mark_process_dead(pid, directory)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: is there such a process (it receives nothing)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # there is, under another user
    return True


_shared: CollectorRegistry | None = None


def _shared_registry() -> CollectorRegistry:
    global _shared
    if _shared is None:
        _shared = CollectorRegistry()
        _shared.register(SharedCollector())
    return _shared
