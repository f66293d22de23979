"""Gunicorn settings for the container image: `gunicorn -c docker/gunicorn.conf.py authserver.wsgi`.

This file configures the server process, not the application, so it reads its own few variables
from the environment (the application's settings are read only by authserver/env.py):

- WEB_CONCURRENCY: worker processes (default 2 x CPUs + 1, at most 12).
- GUNICORN_BIND: listen address (default 0.0.0.0:$PORT, PORT defaulting to 8000).
- FORWARDED_ALLOW_IPS: see forwarded_allow_ips below.
"""

import multiprocessing
import os
import re

from gunicorn import glogging

_MAX_DEFAULT_WORKERS = 12


def _workers() -> int:
    value = os.environ.get("WEB_CONCURRENCY", "").strip()
    if value:
        return max(1, int(value))
    # Sync workers are processes: CPU-bound work (Argon2 password hashing, JWT signing) scales
    # with CPUs, and each idle worker still costs memory, hence the cap.
    return min(multiprocessing.cpu_count() * 2 + 1, _MAX_DEFAULT_WORKERS)


bind = [os.environ.get("GUNICORN_BIND", "").strip() or f"0.0.0.0:{os.environ.get('PORT', '8000')}"]
workers = _workers()
worker_class = "sync"  # expects a buffering reverse proxy (nginx, a cloud load balancer) in front
timeout = 30
graceful_timeout = 30
keepalive = 5
# Recycle workers now and then so a slow leak cannot grow forever; jitter keeps them from all
# restarting at once.
max_requests = 1000
max_requests_jitter = 100
# The heartbeat file is written on every request; /dev/shm keeps that off the container's
# overlay filesystem (and works with a read-only root filesystem).
worker_tmp_dir = "/dev/shm"  # noqa: S108 - a tmpfs, not a shared /tmp file name
# No `gunicornc` inside the container: scale and restart through the orchestrator.
control_socket_disable = True

# Gunicorn sets wsgi.url_scheme to https from X-Forwarded-Proto only for requests coming from
# these addresses. Django falls back on wsgi.url_scheme when TRUST_X_FORWARDED_PROTO is off, so
# trusting "*" here would let anyone who reaches the port claim https. The application decides
# for itself (TRUST_X_FORWARDED_PROTO, TRUSTED_PROXY_COUNT in authserver/env.py); keep gunicorn's
# loopback-only default unless the proxy's address is fixed, e.g. FORWARDED_ALLOW_IPS=10.0.0.5.
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "").strip() or "127.0.0.1,::1"

# --- Logs --------------------------------------------------------------------------------------
# Both to stdout/stderr for the container runtime. The access log names the path only: never the
# query string (codes, state, tokens on some routes), the Referer (it carries those too), the
# user from Basic auth, Authorization, cookies or response headers (Location carries codes).
accesslog = "-"
errorlog = "-"
access_log_format = (
    '%(h)s %({x-forwarded-for}i)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(M)sms "%(a)s"'
)

# /password-reset/<uidb64>/<token>/ carries a working reset credential in the path itself.
_RESET_TOKEN = re.compile(r"(/password-reset/[^/]+/)(?!set-password(?:/|$))[^/]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Request headers that may appear in the access log; every other header atom logs as "-".
_LOGGED_HEADERS = frozenset({"{x-forwarded-for}i", "{x-request-id}i"})


def clean_path(path: str) -> str:
    """The path as it may be logged: reset tokens masked, control characters (log forging) gone."""
    return _CONTROL.sub("?", _RESET_TOKEN.sub(r"\1***", path))


class RedactingLogger(glogging.Logger):
    """Gunicorn's logger, with atoms that cannot leak secrets whatever access_log_format says."""

    def atoms(self, resp, req, environ, request_time):
        atoms = super().atoms(resp, req, environ, request_time)
        path = clean_path(environ.get("PATH_INFO") or "")
        atoms.update(U=path, r=f"{atoms['m']} {path} {atoms['H']}", q="-", f="-", u="-")
        # Drop every header and environ atom ({...}i, {...}o, {...}e) but the few allowed above.
        return {k: v for k, v in atoms.items() if not k.startswith("{") or k in _LOGGED_HEADERS}


logger_class = RedactingLogger


# --- Metrics -----------------------------------------------------------------------------------
# prometheus-client's multi-process mode: every worker writes its counters to files in this
# directory and /metrics sums them, so a scrape sees the whole server, not one worker.
_metrics_dir = os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", "/dev/shm/authserver-metrics")  # noqa: S108


def on_starting(server) -> None:
    import shutil

    shutil.rmtree(_metrics_dir, ignore_errors=True)  # counts from a previous run are stale
    os.makedirs(_metrics_dir, exist_ok=True)


def child_exit(server, worker) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
