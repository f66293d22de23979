"""Health for load balancers and orchestrators.

/health/live: the process answers (nothing else is checked, so a database outage does not get
every web process restarted). /health/ready: the database, the broker and an active signing
key. Without the database or a key this process cannot serve: 503 with the failing check
named. Without the broker it still can (sign-in and tokens keep working; jobs wait), so the
answer stays 200 with status "degraded": failing readiness there would take every web process
out of the load balancer at once for an outage that does not stop them. Both are answered
before host validation, because probes address containers by IP.
"""

from __future__ import annotations

import logging
import time

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse

from authserver.celery import app

logger = logging.getLogger(__name__)

PATHS = {"/health/live", "/health/ready"}


def _database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _broker() -> None:
    if settings.CELERY_BROKER_URL.startswith("filesystem://"):
        return  # the quick start's folder broker cannot be down
    with app.connection_for_write() as broker:
        broker.ensure_connection(max_retries=1, timeout=2)


CHECKS = {"database": _database, "broker": _broker}
CRITICAL = {"database"}


def register_check(name: str, check, *, critical: bool) -> None:
    """An app adds what it needs to serve (from ``AppConfig.ready()``; this module knows no
    app). A failing critical check answers 503; any other answers 200 "degraded"."""
    CHECKS[name] = check
    if critical:
        CRITICAL.add(name)


def ready() -> tuple[str, dict]:
    results = {}
    for name, check in CHECKS.items():
        started = time.perf_counter()
        try:
            check()
        except Exception as error:
            logger.warning("Readiness check %s failed: %s", name, type(error).__name__)
            results[name] = {"ok": False, "error": type(error).__name__}
        else:
            results[name] = {"ok": True, "ms": round((time.perf_counter() - started) * 1000, 1)}
    failing = {name for name, result in results.items() if not result["ok"]}
    return ("unavailable" if failing & CRITICAL else "degraded" if failing else "ok"), results


class HealthMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path not in PATHS:
            return self.get_response(request)
        if request.path == "/health/live":
            response = JsonResponse({"status": "ok"})
        else:
            status, checks = ready()
            unavailable = status == "unavailable"
            response = JsonResponse(
                {"status": status, "checks": checks}, status=503 if unavailable else 200
            )
            if unavailable:
                response["Retry-After"] = "5"
        response["Cache-Control"] = "no-store"
        return response
