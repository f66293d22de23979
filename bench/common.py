"""What the benchmarks share: their own PostgreSQL database, production-like settings, the real
server (the production one, authserver/server.py, or another of SERVERS; one worker pinned to
CPU 0), CPU pinning and sampling, and the tables.

Every function that needs the configuration takes the benchmark's ``argparse.Namespace``, which
must carry ``database_url``, ``redis``, ``cache_db`` and ``broker_db``.
"""

# ruff: noqa: S603

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode, urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_REDIS = "redis://127.0.0.1:6379"
SECRET_KEY = "bench-only-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz"
ISSUER = "https://auth.bench.test"
GUNICORN_CONFIG = ROOT / "bench" / "gunicorn.conf.py"  # the reference's (see that file)
SERVER_APP = "authserver.wsgi:application"
BARE_DJANGO_APP = "bench.bare_django:application"  # bench/bare_django.py: the reference
# The environment as the bench found it. setup_django() changes this process's own environment
# (no connection pool, quieter logs); servers and workers must not inherit that.
_ENVIRONMENT = dict(os.environ)


# --- configuration ------------------------------------------------------------------------------
def database_name(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


def check_database_url(url: str) -> None:
    """Refuse any database the bench must not create and drop: its name must contain 'bench'."""
    parts = urlsplit(url)
    name = database_name(url)
    if parts.scheme not in ("postgres", "postgresql") or not name:
        raise SystemExit(f"bench: {url!r} is not a postgres://host/dbname URL")
    if "bench" not in name or name == "authserver" or name.startswith("test_authserver"):
        raise SystemExit(
            f"bench: refusing database {name!r}: the bench creates and drops its database, "
            "so its name must contain 'bench' (e.g. authserver_bench)"
        )


def server_env(args: argparse.Namespace, **extra: str) -> dict[str, str]:
    """Production-like settings (DEBUG off) pointed at the bench database, on top of the
    environment the bench was started with (not what setup_django() put in this process's)."""
    env = dict(_ENVIRONMENT)
    for name in ("REDIS_URL", "DATA_DIR"):
        env.pop(name, None)
    env.update(
        DJANGO_SETTINGS_MODULE="authserver.settings",
        DEBUG="false",
        SECRET_KEY=SECRET_KEY,
        ALLOWED_HOSTS="127.0.0.1,localhost",
        ISSUER=ISSUER,
        DATABASE_URL=args.database_url,
        CACHE_URL=f"{args.redis.rstrip('/')}/{args.cache_db}",
        CELERY_BROKER_URL=f"{args.redis.rstrip('/')}/{args.broker_db}",
        PYTHONPATH=str(ROOT),
        # DPoP proofs are signed before the run (bench/tokens.py): let their iat be 10 min old.
        DPOP_IAT_WINDOW="600",
        # The application's access log (authserver/logs.py) costs the worker a formatted line
        # per request; the benchmarks measure without it, as they did gunicorn's.
        ACCESS_LOG="false",
    )
    env.update(extra)
    return env


def bench_parser(doc: str, **database) -> argparse.ArgumentParser:
    """A bench's command line, described by the first line of its docstring; with ``database``
    (add_database_arguments' keywords), the options of its own database and Redis."""
    parser = argparse.ArgumentParser(description=doc.split("\n", 1)[0])
    if database:
        add_database_arguments(parser, **database)
    return parser


def add_database_arguments(
    parser: argparse.ArgumentParser, *, default_url: str, env: str, cache_db: int, broker_db: int
) -> None:
    """--database-url (its name must contain 'bench'), --redis, --cache-db, --broker-db and
    --keep-db: each bench on databases of its own, so benches never share or drop each other's."""
    add = parser.add_argument
    add(
        "--database-url",
        default=os.environ.get(env, default_url),
        help=f"the bench's own database; its name must contain 'bench' (env {env})",
    )
    add("--redis", default=os.environ.get("BENCH_REDIS", DEFAULT_REDIS), help="Redis base URL")
    add("--cache-db", type=int, default=cache_db, help=f"Redis database for the cache ({cache_db})")
    add("--broker-db", type=int, default=broker_db, help=f"Redis database for Celery ({broker_db})")
    add("--keep-db", action="store_true", help="do not drop the database at the end")


# --- CPUs ---------------------------------------------------------------------------------------
def can_pin() -> bool:
    return hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2


def pin(cpu: int):
    """A preexec_fn pinning a child to one CPU (what ``taskset -c`` does), when there are two."""
    if not can_pin():
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


def pin_self(cpu: int) -> None:
    if can_pin():
        os.sched_setaffinity(0, {cpu})


def load_and_busy(seconds: float = 1.0) -> tuple[float, float]:
    """(1-minute load average, % of all CPUs busy over the next ``seconds``)."""
    before = CpuSampler.read().get("cpu")
    time.sleep(seconds)
    after = CpuSampler.read().get("cpu")
    busy = float("nan")
    if before and after:
        busy = CpuSampler.busy(before, after)[0]
    return os.getloadavg()[0], busy


# --- database lifecycle -------------------------------------------------------------------------
def admin_execute(url: str, statement: str) -> None:
    import psycopg

    parts = urlsplit(url)
    maintenance = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(maintenance, autocommit=True) as conn:
        conn.execute(statement)


def create_database(url: str) -> None:
    name = database_name(url)
    admin_execute(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin_execute(url, f'CREATE DATABASE "{name}"')


def drop_database(url: str) -> None:
    admin_execute(url, f'DROP DATABASE IF EXISTS "{database_name(url)}" WITH (FORCE)')


def run_manage(args: argparse.Namespace, *command: str) -> None:
    subprocess.run(
        [sys.executable, "manage.py", *command],
        cwd=ROOT,
        env=server_env(args),
        check=True,
        stdout=subprocess.DEVNULL,
    )


def migrate(args: argparse.Namespace) -> None:
    """Create the bench database afresh and migrate it (static files collected once, if missing:
    the production settings serve them through WhiteNoise's manifest)."""
    create_database(args.database_url)
    run_manage(args, "migrate", "--noinput")
    if not (ROOT / "staticfiles" / "staticfiles.json").exists():
        run_manage(args, "collectstatic", "--noinput")


def setup_django(args: argparse.Namespace) -> None:
    # The bench process itself: no pool, its own connection.
    os.environ.update(server_env(args, DATABASE_POOL_SIZE="0", LOG_LEVEL="WARNING"))
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def prepare_database(args: argparse.Namespace) -> None:
    """The bench's database created afresh and migrated, and Django set up in this process."""
    check_database_url(args.database_url)
    print(f"== database {database_name(args.database_url)}: create, migrate", flush=True)
    started = time.monotonic()
    migrate(args)
    print(f"  {time.monotonic() - started:.1f} s", flush=True)
    setup_django(args)


def release_database(args: argparse.Namespace) -> None:
    """This process's connections closed and, unless --keep-db, the bench's database dropped."""
    if "django" in sys.modules:
        from django.db import connections

        connections.close_all()
    if not getattr(args, "keep_db", False):
        drop_database(args.database_url)
        print(f"== database {database_name(args.database_url)} dropped")


def bench_client(name: str = "Bench client", **fields) -> tuple[object, str | None]:
    """A client registered as the server registers one, and the active signing key any running
    server has. Defaults: the bench callback, code + refresh + client credentials."""
    from tokens import keys
    from tokens.clients import create_client

    fields.setdefault("redirect_uris", ["https://client.bench.test/callback"])
    fields.setdefault("grant_types", ["authorization_code", "refresh_token", "client_credentials"])
    client, secret = create_client(name=name, **fields)
    keys.signing_key()
    return client, secret


def digest_sql(prefix: str, column: str = "g") -> str:
    """SQL for the hex SHA-256 of ``<prefix><column>``: what tokens.models.token_digest stores."""
    return f"encode(sha256(convert_to('{prefix}' || {column}, 'UTF8')), 'hex')"


# --- the server ---------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


SERVERS = ("gunicorn-sync", "gunicorn-gthread", "granian-wsgi", "granian-asgi", "uvicorn-asgi")
# granian-wsgi is production's: `python -m authserver.server` (docker/Dockerfile's command), with
# its settings (authserver/env.py, load_server) but for WEB_CONCURRENCY=1 and the bind address.
# The others are what it was chosen over (bench/README.md), with their own defaults.
PRODUCTION_SERVER = "granian-wsgi"
# The machine's yardstick, bench/bare_django.py's /ping, always runs under this one (bench/tokens.py).
REFERENCE_SERVER = "gunicorn-sync"


def server_command(kind: str, app: str, port: int) -> list[str]:
    """The command line of one worker of ``kind`` serving ``app`` (a WSGI ``module:name``; the
    ASGI servers get authserver/asgi.py's application for our server)."""
    asgi = app.replace("authserver.wsgi:", "authserver.asgi:")
    if kind in ("gunicorn-sync", "gunicorn-gthread"):
        command = [sys.executable, "-m", "gunicorn", "-c", str(GUNICORN_CONFIG), app]
        command.append("--workers=1")
        if kind == "gunicorn-sync":
            command.append("--worker-class=sync")
        else:
            command += ["--worker-class=gthread", "--threads=4"]
        return [*command, f"--bind=127.0.0.1:{port}", "--max-requests=0"]
    if kind == "granian-wsgi":
        return [sys.executable, "-m", "authserver.server", app]  # bound by WEB_BIND
    if kind == "granian-asgi":
        return [
            sys.executable, "-m", "granian", "--interface", "asgi", "--host", "127.0.0.1",
            "--port", str(port), "--workers", "1", "--no-ws", asgi,
        ]  # fmt: skip
    if kind == "uvicorn-asgi":
        return [
            sys.executable, "-m", "uvicorn", asgi, "--host", "127.0.0.1", "--port", str(port),
            "--workers", "1", "--no-access-log", "--lifespan", "off",
        ]  # fmt: skip
    raise ValueError(f"unknown server {kind}")


def start_server(
    args: argparse.Namespace,
    port: int,
    log_path: Path,
    *,
    access_path: Path | None = None,
    access_format: str | None = None,
    ready_path: str = "/.well-known/openid-configuration",
    app: str = SERVER_APP,
    kind: str = PRODUCTION_SERVER,
    env: dict[str, str] | None = None,
) -> subprocess.Popen:
    """``kind`` (default production's; see SERVERS) serving ``app`` (default: our server;
    ``BARE_DJANGO_APP`` for the reference) with one worker pinned to CPU 0: the same python,
    command line and environment whatever the app, ``env`` on top. Overridden for the
    measurement: no worker recycling (gunicorn's ``max_requests``: a restart landing in a
    measured phase would be a cold start), a private ``PROMETHEUS_MULTIPROC_DIR``, and the
    access log: off (ACCESS_LOG=false for the application, none from the server) unless
    ``access_path``: gunicorn's own (gunicorn kinds only) to that file in ``access_format``."""
    log = open(log_path, "wb")  # kept open for the child's lifetime
    command = server_command(kind, app, port)
    if access_path is not None:
        if not kind.startswith("gunicorn"):
            raise ValueError(f"access_path needs a gunicorn server, not {kind}")
        command.append(f"--access-logfile={access_path}")
        if access_format:
            command.append(f"--access-logformat={access_format}")
    metrics = log_path.parent / "metrics"  # prometheus multi-process files: ours, not /dev/shm's
    metrics.mkdir(exist_ok=True)
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=server_env(
            args,
            WEB_CONCURRENCY="1",
            WEB_BIND=f"127.0.0.1:{port}",
            PROMETHEUS_MULTIPROC_DIR=str(metrics),
            **(env or {}),
        ),
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=pin(0),  # sched_setaffinity only, before exec
    )
    return wait_until_ready(process, port, ready_path, kind, log_path)


def wait_until_ready(
    process: subprocess.Popen, port: int, ready_path: str, label: str, log_path: Path
) -> subprocess.Popen:
    """``process`` once GET ``ready_path`` on ``port`` answers 200; RuntimeError if it exits
    first or does not answer within 60 s (then it is terminated)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{label} exited with {process.returncode}; see {log_path}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", ready_path)
            if conn.getresponse().status == 200:
                conn.close()
                return process
        except OSError:
            pass
        time.sleep(0.2)
    process.terminate()
    raise RuntimeError(f"{label} did not answer within 60 s; see {log_path}")


def worker_pids(server: subprocess.Popen) -> list[int]:
    """The server's workers: the master's children (gunicorn, granian), or the process itself
    when it serves alone (uvicorn with one worker)."""
    try:
        children = Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text()
    except OSError:
        return []
    return [int(pid) for pid in children.split()] or [server.pid]


def stop(process: subprocess.Popen | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def show_log(log_dir: Path, name: str = "gunicorn.log") -> None:
    log = log_dir / name
    if log.exists():
        print(f"--- the end of {log} ---", file=sys.stderr)
        print(log.read_text()[-4000:], file=sys.stderr)


# --- HTTP, for the correctness checks ----------------------------------------------------------
def request(
    port: int,
    method: str,
    path: str,
    form: dict | None = None,
    basic_auth: str = "",
    dpop: str = "",
):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Accept": "application/json"}
    if dpop:
        headers["DPoP"] = dpop
    body = None
    if form is not None:
        body = urlencode(form)
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    if basic_auth:
        headers["Authorization"] = f"Basic {basic_auth}"
    try:
        conn.request(method, path, body, headers)
        response = conn.getresponse()
        data = response.read()
    finally:
        conn.close()
    try:
        parsed = json.loads(data)
    except ValueError:
        parsed = data.decode(errors="replace")
    return response.status, parsed


@dataclass
class Check:
    label: str
    ok: bool
    detail: str = ""


# --- measuring ----------------------------------------------------------------------------------
class CpuSampler:
    """/proc/stat every 0.2 s: how busy the CPUs were (all of them: ``cpu``; one: ``cpu0``...),
    and how much time went to iowait."""

    def __init__(self):
        self.samples: list[tuple[float, dict[str, list[int]]]] = []
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def read() -> dict[str, list[int]]:
        """``{"cpu": [user, nice, system, idle, iowait, irq, softirq, steal], "cpu0": ...}``"""
        try:
            with open("/proc/stat") as stat:
                lines = [line.split() for line in stat if line.startswith("cpu")]
        except OSError:
            return {}
        return {fields[0]: [int(v) for v in fields[1:9]] for fields in lines}

    @staticmethod
    def busy(first: list[int], last: list[int]) -> tuple[float, float]:
        delta = [b - a for a, b in zip(first, last, strict=True)]
        total = sum(delta) or 1
        idle, iowait = delta[3], delta[4]
        return 100 * (total - idle - iowait) / total, 100 * iowait / total

    def _run(self) -> None:
        while not self.stop_event.is_set():
            values = self.read()
            if values:
                self.samples.append((time.monotonic(), values))
            time.sleep(0.2)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join()

    def window(self, start: float, end: float, cpu: str = "cpu") -> tuple[float, float]:
        """(busy %, iowait %) of ``cpu`` (default: all CPUs) between ``start`` and ``end``."""
        inside = [
            values[cpu] for at, values in self.samples if start <= at <= end and cpu in values
        ]
        if len(inside) < 2:
            return float("nan"), float("nan")
        return self.busy(inside[0], inside[-1])


def process_cpu_ticks(pid: int) -> int | None:
    """User + system CPU time of one process so far, in clock ticks (None once it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state is fields[0]
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of proc(5))


CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


# --- report -------------------------------------------------------------------------------------
def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f}"


def table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    print("  " + "  ".join(str(h).rjust(w) for h, w in zip(header, widths, strict=True)))
    print("  " + "  ".join("-" * w for w in widths))
    for row in rows:
        print("  " + "  ".join(str(c).rjust(w) for c, w in zip(row, widths, strict=True)))
