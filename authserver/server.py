"""The production web server: granian (HTTP/1.1 in Rust) running the WSGI application.

    python -m authserver.server                                   # docker/Dockerfile's command
    python -m authserver.server bench.bare_django:application     # another WSGI app, same server

Why granian and not gunicorn's sync worker: on one core the worker spends less than half the CPU
on a bare request and about a quarter less on client_credentials and introspection (bench/README.md,
"Servers compared"), connections are kept alive, and slow clients are read and written by Rust,
not by a Python process each.

Its settings are the server's own (authserver/env.py, ``load_server``; the application never
reads them): WEB_CONCURRENCY worker processes, WEB_THREADS Python threads in each, WEB_BIND (or
PORT), WEB_TIMEOUT, WEB_GRACEFUL_TIMEOUT, WEB_MAX_RSS, PROMETHEUS_MULTIPROC_DIR. This process is
granian's master. It reads the application's configuration too (env.load, not Django's
settings: those and the application are each worker's, after the fork), so a misconfiguration
of either stops it with one message listing every problem instead of crashing worker after
worker.

What gunicorn did for us and granian does not, done here or in the application:

- A request timeout. gunicorn killed a worker whose request ran past 30 s; granian never stops
  a request. ``Served`` times each one, and a watchdog thread ends the worker (logged) when one
  runs past WEB_TIMEOUT; granian starts another (``respawn_failed_workers``).
- The process environment kept out of requests. granian copies os.environ into every WSGI
  environ (CGI style, which PEP 3333 allows): request.META would carry SECRET_KEY and the
  DATABASE_URL password to anything that logs or shows it. ``Served`` takes it back out.
- The access log. granian's cannot mask a path or drop a header, so it stays off; the
  application writes one line per request (authserver/logs.py, AccessLogMiddleware).
- X-Forwarded-Proto. granian never sets wsgi.url_scheme from a header (gunicorn did, from
  loopback): the application alone decides, with TRUST_X_FORWARDED_PROTO.
- Prometheus' multi-process directory: cleared here before the workers start (gunicorn's
  on_starting); the live gauges of dead workers are dropped at scrape time by authserver/metrics.py
  (gunicorn's child_exit), since granian has no hook for a worker's death.
"""

from __future__ import annotations

import importlib
import logging
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterable

from django.core.exceptions import ImproperlyConfigured

from authserver import env
from authserver.logs import clean_path, logging_config

logger = logging.getLogger("authserver.server")

DEFAULT_APP = "authserver.wsgi:application"
# gunicorn's keepalive was 5 s. hyper's header read timeout also bounds how long a kept-alive
# connection may sit idle before its next request.
HEADER_READ_TIMEOUT_MS = 5_000
# Respawn a worker only when its memory stayed above WEB_MAX_RSS for this many 30 s samples: a
# leak grows for good, a large response comes and goes.
RSS_SAMPLES = 3
EXIT_TIMED_OUT = 70  # EX_SOFTWARE


class ChosenWorkers(logging.Filter):
    """Drops granian's start-up advice to run no more workers than CPUs and use threads instead:
    we measured that (bench/README.md) and chose processes; an operator should not undo it on
    the strength of a warning printed at every start."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Configured number of workers appears")


def log_config(*, json: bool, level: str) -> dict:
    """granian's own lines (its master and workers) in the application's format and filters."""
    config = logging_config(json=json, level=level)
    config["filters"]["chosen_workers"] = {"()": ChosenWorkers}
    # Replaces granian's own logger settings: its lines go to the root's handler.
    config["loggers"] = {
        "_granian": {"filters": ["chosen_workers"]},
        "granian.access": {"level": "WARNING"},
    }
    return config


def granian_options(server: env.ServerConfig, *, log_json: bool, log_level: str) -> dict:
    """Keyword arguments of ``granian.Granian`` for these settings."""
    from granian.constants import HTTPModes, Interfaces
    from granian.http import HTTP1Settings
    from granian.log import LogLevels

    return {
        "address": server.host,
        "port": server.port,
        "interface": Interfaces.WSGI,
        "http": HTTPModes.http1,  # what a proxy speaks to us; no cleartext HTTP/2 to parse
        "websockets": False,
        "workers": server.workers,
        "blocking_threads": server.threads,
        "http1_settings": HTTP1Settings(header_read_timeout=HEADER_READ_TIMEOUT_MS),
        # A worker that died (the watchdog, the OOM killer) is replaced, not the whole server
        # stopped; granian still exits if one dies again within 5.5 s of its respawn.
        "respawn_failed_workers": True,
        # SIGTERM: workers stop accepting and finish what they have, SIGKILL after this long.
        "workers_kill_timeout": server.graceful_timeout,
        "workers_max_rss": server.max_rss_mib or None,
        "rss_samples": RSS_SAMPLES,
        "log_access": False,
        "log_level": LogLevels(log_level.lower()),
        "log_dictconfig": log_config(json=log_json, level=log_level),
    }


class Served:
    """The WSGI application as a worker serves it: the process environment taken back out of
    each request's environ, each request timed for the watchdog, and an answer held in memory
    closed and handed to granian as a list."""

    def __init__(self, app: Callable, timeout: float):
        self.app = app
        self.timeout = timeout
        # What granian copies into every environ: os.environ, read once it is complete (the
        # application is loaded), as granian reads it right after this.
        self.inherited = tuple(env.process_environment().items())
        self.running: dict[int, tuple[float, str, str]] = {}  # thread -> (started, method, path)
        threading.Thread(target=self._watch, name="request-watchdog", daemon=True).start()

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        for name, value in self.inherited:
            # A request's own keys (REQUEST_METHOD, HTTP_*...) replace inherited ones; keep them.
            if environ.get(name) == value:
                del environ[name]
        thread = threading.get_ident()
        self.running[thread] = (
            time.monotonic(),
            environ.get("REQUEST_METHOD", ""),
            environ.get("PATH_INFO", ""),
        )
        try:
            response = self.app(environ, start_response)
        finally:
            del self.running[thread]
        if getattr(response, "streaming", True):
            return response  # streamed by granian, closed by granian when sent
        # A response in memory goes back as a list: granian then writes it in one call
        # instead of iterating it and calling close() from Rust (each of those takes the GIL
        # back, a tenth of the worker's CPU on the token endpoint). Closed here, so Django's
        # request_finished fires just before the bytes are written rather than just after.
        try:
            return [response.content]
        finally:
            response.close()

    def _watch(self) -> None:
        while True:
            time.sleep(1)
            now = time.monotonic()
            for started, method, path in tuple(self.running.values()):
                if now - started > self.timeout:
                    self._stop(method, path, now - started)

    def _stop(self, method: str, path: str, seconds: float) -> None:
        logger.critical(
            "%s %s still running after %.0f s (WEB_TIMEOUT %d s): worker %d exits, granian "
            "starts another; its other requests in flight are cut off",
            clean_path(method[:16]), clean_path(path[:2048]), seconds, self.timeout, os.getpid(),
        )  # fmt: skip
        for handler in logging.getLogger().handlers:
            handler.flush()
        os._exit(EXIT_TIMED_OUT)  # from any thread, at once, as gunicorn's SIGKILL did


def load_application(target: str) -> Served:
    """In each worker, after granian forked it: import the WSGI application, serve it wrapped."""
    module, _, name = target.partition(":")
    app = getattr(importlib.import_module(module), name or "application")
    return Served(app, timeout=env.load_server().timeout)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) > 1 or (args and args[0].startswith("-")):
        raise SystemExit("usage: python -m authserver.server [module:wsgi_application]")
    target = args[0] if args else DEFAULT_APP
    # env.load() checks the server's settings too: one message lists every problem of both.
    try:
        app_config, server = env.load(), env.load_server()
    except ImproperlyConfigured as problems:
        raise SystemExit(f"\n{problems}\n") from None

    # prometheus-client's multi-process mode: each worker writes its counts to files there and
    # /metrics sums them. What a previous run left is stale.
    shutil.rmtree(server.metrics_dir, ignore_errors=True)
    server.metrics_dir.mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(server.metrics_dir)  # inherited by the workers

    from granian import Granian

    options = granian_options(server, log_json=app_config.log_json, log_level=app_config.log_level)
    Granian(target, **options).serve(target_loader=load_application)


if __name__ == "__main__":
    main()
