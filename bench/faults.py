"""Fault injection: the real server (python -m authserver.server, production's: granian; with
PostgreSQL, Redis and a Celery worker) while its backing services fail, and what the clients
and the database see.

    make faults                           # or: .venv/bin/python bench/faults.py [options]

Why its own services: the PostgreSQL on 5432 and the Redis on 6379 are shared with test runs and
benchmarks, and this script stops and restarts what it runs against. So it creates a throw-away
PostgreSQL cluster (``pg_createcluster <ver> faults``, trust auth on loopback) and a throw-away
``redis-server`` (no persistence), both on free ports, and removes them at the end: on success,
on failure and on Ctrl-C. It never touches the shared ones.

Scenarios (``--only`` picks some):

1. ``postgres``: PostgreSQL stopped (fast shutdown) and started again under load: refresh-token
   chains rotating and client_credentials requests. During the outage: 503 with Retry-After and
   the RFC 6749 JSON error, never a 500 or a stack trace; the time from PostgreSQL being back to
   the first 200; afterwards every chain goes on from the last token its client received and
   every family holds exactly one usable token (no half-rotation, no replay).
2. ``redis``: Redis shut down. Sign-in through the real login page, the token endpoint
   (client_credentials and refresh) and the lockout (counted in PostgreSQL meanwhile) keep
   working; Redis is started again (empty) and the same worker, reconnected, runs a job.
3. ``purge``: the Celery worker SIGKILLed (the whole worker, as the OOM killer or a lost host
   would) while the refresh-token purge is deleting; a fresh worker finishes it, and no live
   row is lost.
4. ``logout``: the worker SIGKILLed while a back-channel logout POST is in flight to a relying
   party (an HTTP server in this script that answers slowly). A fresh worker delivers
   everything; every relying party gets exactly one logout event (jti) per session, and a
   second POST only for the delivery that was in flight at the kill.

Two settings differ from production, for the worker only (``faults_settings.py`` in the run's
folder), and the output says so: back-channel logout may POST to loopback (the relying parties
are this script), and the broker's visibility timeout is 70 s instead of an hour, so a task whose
worker died comes back within the run (it must stay above tokens.logout.STALE_SENDING, 60 s,
or the redelivered delivery is skipped as "another worker is on it").

Exit status: 0 if every scenario passed, 1 if a check failed, 2 if the script could not run.
"""

# ruff: noqa: S603, S608

from __future__ import annotations

import argparse
import base64
import hashlib
import http.client
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

from common import (
    ROOT,
    bench_client,
    bench_parser,
    free_port,
    prepare_database,
    server_env,
    stop,
    table,
)

CLUSTER = "faults"
DATABASE = "authserver_bench_faults"
DEFAULT_PG_PORT = 5499
DEFAULT_REDIS_PORT = 6399
STATE_DIR = Path(tempfile.gettempdir()) / "authserver-faults"  # the Redis pid file lives here
REDIS_PIDFILE = STATE_DIR / "redis.pid"
VISIBILITY_TIMEOUT = 70  # seconds; production: 3,600 (authserver/env.py)
SCENARIOS = ("postgres", "redis", "purge", "logout")
PASSWORD = "faults-password-0123"

WORKER_SETTINGS = f'''"""authserver.settings for the fault-injection worker (bench/faults.py)."""

from authserver.settings import *  # noqa: F403

# The relying parties are the fault script's own HTTP server, on loopback.
BACKCHANNEL_LOGOUT_ALLOW_PRIVATE_NETWORKS = True
# A task whose worker died comes back after this (production: an hour), checked every 2 s.
CELERY_BROKER_TRANSPORT_OPTIONS = {{
    **CELERY_BROKER_TRANSPORT_OPTIONS,  # noqa: F405
    "visibility_timeout": {VISIBILITY_TIMEOUT},
    "unacked_restore_interval": 2,
    "unacked_restore_throttle": 1,
}}
'''


class CouldNotRun(Exception):
    """The script could not set itself up (exit status 2), as opposed to a failed check."""


# --- options ------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = bench_parser(__doc__)  # its own throw-away PostgreSQL and Redis: no database options
    add = parser.add_argument
    add("--only", nargs="+", choices=SCENARIOS, help="run only these scenarios (in this order)")
    add("--keep", action="store_true", help="leave the cluster, Redis and the logs for debugging")
    add("--pg-port", type=int, default=DEFAULT_PG_PORT, help="port of the throw-away cluster")
    add("--redis-port", type=int, default=DEFAULT_REDIS_PORT, help="port of the throw-away Redis")
    add("--web-workers", type=int, default=4, help="web worker processes (default 4)")
    add("--chains", type=int, default=8, help="refresh-token chains rotating in scenario 1")
    add("--outage", type=float, default=3.0, help="seconds PostgreSQL stays down")
    add("--stale", type=int, default=300_000, help="stale refresh tokens (scenario 3)")
    add("--live", type=int, default=100_000, help="live refresh tokens (scenario 3)")
    add("--sessions", type=int, default=4, help="browser sessions ended (scenario 4)")
    add("--rps", type=int, default=3, help="relying parties with back-channel logout (scenario 4)")
    add("--rp-delay", type=float, default=1.5, help="seconds the relying party takes to answer")
    add(
        "--logout-kill",
        choices=("worker", "child"),
        default="worker",
        help="scenario 4: SIGKILL the whole worker (default) or only the pool child running the "
        "task (the worker's main process survives and requeues it: reject_on_worker_lost)",
    )
    args = parser.parse_args(argv)
    args.scenarios = args.only or list(SCENARIOS)
    return args


# --- throw-away services ------------------------------------------------------------------------
def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def run(command: list[str], *, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(command, check=check, capture_output=True, text=True, timeout=120)


class PostgresCluster:
    """A Debian postgresql-common cluster of our own: created, stopped, started and dropped here,
    so restarting it cannot disturb anyone else's database."""

    def __init__(self, port: int):
        versions = sorted(
            (p.name for p in Path("/etc/postgresql").glob("*") if p.name.isdigit()), key=int
        )
        if not versions or not shutil.which("pg_createcluster"):
            raise CouldNotRun("PostgreSQL with Debian's postgresql-common is needed")
        self.version = versions[-1]
        self.port = port if port_is_free(port) else free_port()
        self.created = False

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{DATABASE}"

    def _ctl(self, action: str, *extra: str) -> None:
        run(["pg_ctlcluster", "--skip-systemctl-redirect", *extra, self.version, CLUSTER, action])

    def drop_leftover(self) -> bool:
        if Path(f"/etc/postgresql/{self.version}/{CLUSTER}").exists():
            run(["pg_dropcluster", "--stop", self.version, CLUSTER], check=False)
            return True
        return False

    def create(self) -> None:
        run(
            [
                "pg_createcluster", self.version, CLUSTER, "--port", str(self.port),
                "--start-conf", "manual", "--", "--auth=trust",
            ]
        )  # fmt: skip
        self.created = True
        self.start()

    def start(self) -> None:
        self._ctl("start")

    def stop(self) -> None:
        self._ctl("stop", "-m", "fast")

    def drop(self) -> None:
        if self.created:
            run(["pg_dropcluster", "--stop", self.version, CLUSTER], check=False)
            self.created = False


class RedisServer:
    """redis-server of our own, without persistence: a restart comes back empty."""

    def __init__(self, port: int, directory: Path):
        if not shutil.which("redis-server") or not shutil.which("redis-cli"):
            raise CouldNotRun("redis-server and redis-cli are needed")
        self.port = port if port_is_free(port) else free_port()
        self.directory = directory
        self.started = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    @staticmethod
    def stop_leftover() -> bool:
        """A redis-server an aborted run left behind (its pid file names it)."""
        try:
            pid = int(REDIS_PIDFILE.read_text().strip())
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except (OSError, ValueError):
            return False
        if comm != "redis-server":
            return False
        os.kill(pid, signal.SIGTERM)
        return True

    def start(self) -> None:
        STATE_DIR.mkdir(exist_ok=True)
        run(
            [
                "redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--daemonize", "yes", "--pidfile", str(REDIS_PIDFILE),
                "--dir", str(self.directory), "--logfile", str(self.directory / "redis.log"),
            ]
        )  # fmt: skip
        self.started = True
        deadline = time.monotonic() + 10
        while not self.ping():
            if time.monotonic() > deadline:
                raise CouldNotRun(f"redis-server did not answer on port {self.port}")
            time.sleep(0.05)

    def ping(self) -> bool:
        result = run(["redis-cli", "-p", str(self.port), "ping"], check=False)
        return result.stdout.strip() == "PONG"

    def shutdown(self) -> None:
        run(["redis-cli", "-p", str(self.port), "shutdown", "nosave"], check=False)
        deadline = time.monotonic() + 10
        while self.ping() and time.monotonic() < deadline:
            time.sleep(0.05)


# --- the server and the worker ------------------------------------------------------------------
def start_web(args: argparse.Namespace, port: int, log_dir: Path) -> subprocess.Popen:
    """The web server as production runs it (python -m authserver.server, its settings, DEBUG
    off), several workers as in production (bench/common.start_server runs one, pinned: right
    for measuring, wrong here: one worker stuck on a dead database would queue everything)."""
    log = open(log_dir / "web.log", "wb")
    metrics = log_dir / "metrics"
    command = [sys.executable, "-m", "authserver.server"]
    env = server_env(
        args,
        WEB_CONCURRENCY=str(args.web_workers),
        WEB_BIND=f"127.0.0.1:{port}",
        PROMETHEUS_MULTIPROC_DIR=str(metrics),
    )
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise CouldNotRun(f"the web server exited with {process.returncode}; see {log.name}")
        if request(port, "GET", "/.well-known/openid-configuration").status == 200:
            return process
        time.sleep(0.2)
    stop(process)
    raise CouldNotRun(f"the web server did not answer within 60 s; see {log.name}")


class Worker:
    """One Celery worker (prefork, concurrency 1, acks_late as configured), in its own process
    group so that SIGKILL takes the main process and its pool child together."""

    count = 0

    def __init__(self, args: argparse.Namespace, log_dir: Path):
        Worker.count += 1
        self.name = f"faults{Worker.count}"
        self.log_path = log_dir / f"worker-{Worker.count}.log"
        env = server_env(
            args,
            DJANGO_SETTINGS_MODULE="faults_settings",
            PYTHONPATH=f"{log_dir}{os.pathsep}{ROOT}",
            LOG_LEVEL="INFO",
        )
        command = [
            sys.executable, "-m", "celery", "-A", "authserver", "worker", "--concurrency=1",
            "--loglevel=INFO", "--without-gossip", "--without-mingle", "--without-heartbeat",
            f"--hostname={self.name}@%h",
        ]  # fmt: skip
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + 60
        while "ready." not in self.log():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise CouldNotRun(f"the Celery worker did not start; see {self.log_path}")
            time.sleep(0.1)

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def pool_children(self) -> list[int]:
        try:
            children = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text()
        except OSError:
            return []
        return [int(pid) for pid in children.split()]

    def kill(self) -> list[int]:
        """SIGKILL the whole worker: its main process and its pool children."""
        victims = [self.pid, *self.pool_children()]
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()
        return victims

    def stop(self) -> None:
        if self.alive():
            try:
                os.killpg(self.pid, signal.SIGTERM)
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.pid, signal.SIGKILL)
                self.process.wait()
            except ProcessLookupError:
                pass


# --- HTTP ---------------------------------------------------------------------------------------
@dataclass
class Reply:
    status: int  # 0: no answer at all (connection refused, reset, timeout)
    headers: dict[str, str]
    body: bytes
    started: float
    ended: float
    cookies: list[str] = field(default_factory=list)
    error: str = ""

    def json(self) -> dict:
        try:
            value = json.loads(self.body)
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}

    def problems(self, *, expect_json: bool) -> list[str]:
        """What no client may ever see: no answer, a 5xx other than 503, a 503 without
        Retry-After, a stack trace or a database error in the body, HTML on a JSON endpoint."""
        found = []
        if self.status == 0:
            found.append(f"no answer ({self.error})")
            return found
        if self.status >= 500 and self.status != 503:
            found.append(f"HTTP {self.status}")
        if self.status == 503:
            if not self.headers.get("retry-after"):
                found.append("503 without Retry-After")
            if expect_json and self.json().get("error") != "temporarily_unavailable":
                found.append("503 without error=temporarily_unavailable")
        text = self.body.decode(errors="replace")
        for marker in ("Traceback", "OperationalError", "psycopg", 'File "/'):
            if marker in text:
                found.append(f"{marker!r} in the body")
        if expect_json and "json" not in self.headers.get("content-type", ""):
            found.append(f"not JSON ({self.headers.get('content-type', 'no content type')})")
        return found


def request(
    port: int,
    method: str,
    path: str,
    body: str | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 60,
) -> Reply:
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body, headers or {})
        response = conn.getresponse()
        data = response.read()
        return Reply(
            response.status,
            {k.lower(): v for k, v in response.getheaders()},
            data,
            started,
            time.monotonic(),
            response.headers.get_all("Set-Cookie") or [],
        )
    except (OSError, http.client.HTTPException) as error:
        return Reply(0, {}, b"", started, time.monotonic(), error=type(error).__name__)
    finally:
        conn.close()


def token_request(port: int, client_id: str, secret: str, data: dict[str, str]) -> Reply:
    credentials = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    headers = {
        "Authorization": f"Basic {credentials}",
        "Content-Type": "application/x-www-form-urlencoded",
        "Accept": "application/json",
    }
    return request(port, "POST", "/token", urlencode(data), headers)


class Browser:
    """A person's browser: a cookie jar, the sign-in form with its CSRF token, the code flow."""

    def __init__(self, port: int):
        self.port = port
        self.cookies: dict[str, str] = {}

    def go(self, method: str, path: str, form: dict[str, str] | None = None) -> Reply:
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}
        body = None
        if form is not None:
            body = urlencode(form)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        reply = request(self.port, method, path, body, headers)
        for cookie in reply.cookies:
            name, _, rest = cookie.partition("=")
            value = rest.split(";", 1)[0]
            if value in ("", '""') or "max-age=0" in cookie.lower():
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value
        return reply

    def sign_in(self, username: str, password: str) -> tuple[Reply, Reply]:
        """GET the login page (a CSRF token and cookie), POST the form. Returns both replies."""
        page = self.go("GET", "/login/")
        match = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page.body)
        token = match.group(1).decode() if match else ""
        form = {"username": username, "password": password, "csrfmiddlewaretoken": token}
        return page, self.go("POST", "/login/", form)

    def authorize(self, client_id: str, redirect_uri: str) -> tuple[str, str]:
        """The code flow with PKCE, consent skipped (first-party): returns (code, verifier)."""
        verifier = secrets.token_urlsafe(48)
        challenge = (
            base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
            .rstrip(b"=")
            .decode()
        )
        query = urlencode(
            {
                "response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri,
                "scope": "openid profile", "state": secrets.token_urlsafe(8),
                "nonce": secrets.token_urlsafe(8), "code_challenge": challenge,
                "code_challenge_method": "S256",
            }
        )  # fmt: skip
        reply = self.go("GET", f"/authorize?{query}")
        location = reply.headers.get("location", "")
        code = parse_qs(urlsplit(location).query).get("code", [""])[0]
        if reply.status != 302 or not code:
            raise CouldNotRun(f"/authorize answered {reply.status} {location[:80]!r}")
        return code, verifier


def phase_table(samples: list[tuple[str, str, Reply]]) -> list[list[str]]:
    """Rows of (phase, request kind, count, by status, Retry-After on 503s, problems)."""
    groups: dict[tuple[str, str], list[Reply]] = {}
    for phase, kind, reply in samples:
        groups.setdefault((phase, kind), []).append(reply)
    rows = []
    for (phase, kind), replies in groups.items():
        statuses = Counter(r.status for r in replies)
        with_retry = sum(1 for r in replies if r.status == 503 and r.headers.get("retry-after"))
        problems = sum(1 for r in replies if r.problems(expect_json=True))
        rows.append(
            [
                phase,
                kind,
                str(len(replies)),
                " ".join(f"{s}x{n}" for s, n in sorted(statuses.items())),
                f"{with_retry}/{statuses.get(503, 0)}",
                str(problems),
            ]
        )
    return rows


# --- the checks ---------------------------------------------------------------------------------
class Checks:
    """PASS/FAIL lines for one scenario."""

    def __init__(self) -> None:
        self.results: list[tuple[str, bool, str]] = []

    def __call__(self, label: str, ok: bool, detail: str = "") -> bool:
        self.results.append((label, ok, detail))
        return ok

    def show(self) -> bool:
        print("  checks:")
        for label, ok, detail in self.results:
            print(f"    {'ok  ' if ok else 'FAIL'} {label}{': ' + detail if detail else ''}")
        return all(ok for _, ok, _ in self.results)


def say(text: str) -> None:
    print(text, flush=True)


def sql(statement: str, params: list | None = None) -> list[tuple]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(statement, params or [])
        return cursor.fetchall() if cursor.description else []


def reconnect() -> None:
    """Drop this process's database connection (after the cluster restarted under it)."""
    from django.db import connections

    connections.close_all()


def wait_until(condition: Callable[[], bool], seconds: float, step: float = 0.2) -> float | None:
    """Seconds until ``condition()`` held, or None if it did not within ``seconds``."""
    started = time.monotonic()
    while True:
        try:
            if condition():
                return time.monotonic() - started
        except Exception:  # the service may be coming back; ask again  # noqa: S110
            pass
        if time.monotonic() - started > seconds:
            return None
        time.sleep(step)


@dataclass
class Context:
    args: argparse.Namespace
    log_dir: Path
    cluster: PostgresCluster
    redis: RedisServer
    port: int = 0
    server: subprocess.Popen | None = None
    worker: Worker | None = None

    def new_worker(self) -> Worker:
        if self.worker is not None:
            self.worker.stop()
        self.worker = Worker(self.args, self.log_dir)
        return self.worker


def make_client(name: str, **fields) -> tuple[str, str]:
    fields.setdefault("redirect_uris", ["http://127.0.0.1:9/callback"])
    client, secret = bench_client(name, consent="skip", **fields)
    return client.client_id, secret or ""


def make_user(username: str):
    from accounts.models import User

    return User.objects.create_user(username, f"{username}@faults.test", PASSWORD)


# --- 1. PostgreSQL restarted under load ---------------------------------------------------------
def scenario_postgres(ctx: Context) -> bool:
    from tokens.models import Client, token_digest
    from tokens.refresh_tokens import store_refresh_token

    args = ctx.args
    say("\n== 1. PostgreSQL restarted under load")
    client_id, secret = make_client("Faults: PostgreSQL")
    client = Client.objects.get(client_id=client_id)
    user = make_user("faults-pg")
    chains: list[str] = []  # the refresh token each client holds now
    families = []
    for _ in range(args.chains):
        value = secrets.token_urlsafe(32)
        row = store_refresh_token(
            value, client=client, user=user, scope="openid offline_access", sid="", access=None
        )
        chains.append(value)
        families.append(str(row.family))
    reconnect()

    samples: list[tuple[float, str, int, Reply]] = []  # (sent at, kind, chain, reply)
    broken: dict[int, str] = {}  # chain -> what ended it
    lock = threading.Lock()
    stopping = threading.Event()

    def rotate(index: int) -> None:
        while not stopping.is_set() and index not in broken:
            reply = token_request(
                ctx.port,
                client_id,
                secret,
                {"grant_type": "refresh_token", "refresh_token": chains[index]},
            )
            with lock:
                samples.append((reply.started, "refresh", index, reply))
            if reply.status == 200 and reply.json().get("refresh_token"):
                chains[index] = reply.json()["refresh_token"]
            elif reply.status == 400:
                broken[index] = (
                    f"{reply.json().get('error')}: {reply.json().get('error_description')}"
                )
            elif reply.status != 200:
                time.sleep(0.05)

    def client_credentials() -> None:
        while not stopping.is_set():
            reply = token_request(ctx.port, client_id, secret, {"grant_type": "client_credentials"})
            with lock:
                samples.append((reply.started, "client_credentials", -1, reply))
            if reply.status != 200:
                time.sleep(0.05)

    threads = [threading.Thread(target=rotate, args=(i,), daemon=True) for i in range(args.chains)]
    threads += [threading.Thread(target=client_credentials, daemon=True) for _ in range(2)]
    for thread in threads:
        thread.start()
    time.sleep(2.0)
    t_stop = time.monotonic()
    ctx.cluster.stop()
    t_down = time.monotonic()
    time.sleep(args.outage)
    t_start = time.monotonic()
    ctx.cluster.start()
    t_up = time.monotonic()

    def first_refresh_after_up() -> bool:
        with lock:
            return any(
                kind == "refresh" and r.status == 200 and r.started >= t_up
                for _, kind, _, r in samples
            )

    back_after = wait_until(first_refresh_after_up, 30, step=0.02)
    time.sleep(3.0)
    stopping.set()
    for thread in threads:
        thread.join(timeout=90)
    say(
        f"  injected: {args.chains} refresh chains + 2 client_credentials loops against "
        f"{args.web_workers} web workers; PostgreSQL stopped (-m fast) at +2.0 s "
        f"(took {t_down - t_stop:.1f} s), held down {args.outage:.1f} s, started again "
        f"(took {t_up - t_start:.1f} s)"
    )

    def phase(reply: Reply) -> str:
        if reply.ended < t_stop:
            return "before"
        if reply.started > t_up:
            return "after"
        return "outage"

    labelled = [(phase(r), kind, r) for _, kind, _, r in sorted(samples, key=lambda s: s[0])]
    say("  what the clients saw (phase by request start/end; 'outage' overlaps stop..start):")
    table(
        ["phase", "request", "count", "statuses", "Retry-After on 503", "problems"],
        phase_table(labelled),
    )
    problems = Counter(p for _, _, r in labelled for p in r.problems(expect_json=True))
    for problem, count in problems.most_common():
        say(f"    problem: {problem} x{count}")
    first_200 = "never" if back_after is None else f"{back_after:.2f} s"
    say(
        f"  first refresh 200 after PostgreSQL was back (pg_ctlcluster start returned): {first_200}"
    )
    outage_503 = sum(1 for p, _, r in labelled if p == "outage" and r.status == 503)
    unexpected = Counter(
        (p, r.status)
        for p, _, r in labelled
        if r.status not in (200, 503) or (p == "before" and r.status != 200)
    )
    per_chain_after = Counter(
        i for _, kind, i, r in samples if kind == "refresh" and r.status == 200 and r.started > t_up
    )
    refresh_200 = sum(1 for _, kind, _, r in samples if kind == "refresh" and r.status == 200)

    # What the database holds.
    reconnect()
    rows = sql(
        "SELECT family::text, count(*),"
        " count(*) FILTER (WHERE rotated_at IS NULL AND revoked_at IS NULL AND expires > now()),"
        " count(*) FILTER (WHERE rotated_at IS NOT NULL),"
        " count(*) FILTER (WHERE revoked_at IS NOT NULL),"
        " count(*) FILTER (WHERE revoke_reason = 'replay'),"
        " count(*) FILTER (WHERE rotated_at IS NOT NULL AND NOT EXISTS"
        "   (SELECT 1 FROM tokens_refreshtoken c WHERE c.parent_id = r.id)),"
        " max(token_digest) FILTER (WHERE rotated_at IS NULL AND revoked_at IS NULL)"
        " FROM tokens_refreshtoken r WHERE family::text = ANY(%s) GROUP BY 1 ORDER BY 1",
        [families],
    )
    say("  what the database holds (tokens_refreshtoken, per family):")
    by_family = {row[0]: row for row in rows}
    table_rows = []
    holds_last = 0
    for index, family in enumerate(families):
        row = by_family.get(family, (family, 0, 0, 0, 0, 0, 0, None))
        matches = row[7] == token_digest(chains[index])
        holds_last += matches
        table_rows.append(
            [str(index + 1), family[:8], *(str(v) for v in row[1:7]), "yes" if matches else "NO"]
        )
    table(
        [
            "chain", "family", "rows", "usable", "rotated", "revoked", "replay",
            "rotated w/o child", "usable = client's last",
        ],
        table_rows,
    )  # fmt: skip
    rotated_total = sum(row[3] for row in rows)
    say(
        f"  rotations in the database: {rotated_total}; refresh 200s the clients received: "
        f"{refresh_200} (a rotation committed whose answer was lost would make the first larger)"
    )
    for index, reason in sorted(broken.items()):
        say(f"    chain {index + 1} stopped: {reason}")

    check = Checks()
    check("the outage was seen: refreshes answered 503 while PostgreSQL was down",
          outage_503 > 0, f"{outage_503} x 503")  # fmt: skip
    check("no 500, no missing answer, no stack trace; every 503 with Retry-After and JSON",
          not problems, ", ".join(f"{p} x{n}" for p, n in problems.items()) or "none")  # fmt: skip
    check("only 200 or 503 answers (only 200 before the outage)", not unexpected,
          ", ".join(f"{p}: {s} x{n}" for (p, s), n in unexpected.items()) or "none")  # fmt: skip
    check("service back within 10 s of PostgreSQL", back_after is not None and back_after < 10,
          first_200)  # fmt: skip
    check("every chain refreshed again after the outage (no invalid_grant)",
          not broken and len(per_chain_after) == args.chains,
          f"{len(per_chain_after)}/{args.chains} chains; {len(broken)} stopped")  # fmt: skip
    check("every family: exactly one usable token, the one its client holds",
          all(row[2] == 1 for row in rows) and len(rows) == args.chains
          and holds_last == args.chains, f"{holds_last}/{args.chains}")  # fmt: skip
    check("no family revoked (for replay or anything else)",
          sum(row[4] for row in rows) == 0, f"{sum(row[5] for row in rows)} replay rows")  # fmt: skip
    check("no rotated token without its successor (no half-rotation)",
          sum(row[6] for row in rows) == 0)  # fmt: skip
    check("rotations committed = rotations the clients received", rotated_total == refresh_200,
          f"{rotated_total} vs {refresh_200}")  # fmt: skip
    return check.show()


# --- 2. Redis stopped ---------------------------------------------------------------------------
def scenario_redis(ctx: Context) -> bool:
    from django.conf import settings
    from django.core.cache import cache
    from django.utils import timezone

    from accounts.models import LoginCounter, SecurityEvent, UserSession
    from tokens.models import AuthorizationCode, Client
    from tokens.refresh_tokens import store_refresh_token

    say("\n== 2. Redis stopped")
    if ctx.worker is None or not ctx.worker.alive():
        ctx.new_worker()
    worker_pid = ctx.worker.pid
    client_id, secret = make_client("Faults: Redis")
    client = Client.objects.get(client_id=client_id)
    person = make_user("faults-redis")
    victim = make_user("faults-lockout")
    refresh_value = secrets.token_urlsafe(32)
    store_refresh_token(
        refresh_value, client=client, user=person, scope="openid offline_access", sid="",
        access=None,
    )  # fmt: skip
    # Authorization codes that expired two hours ago: what the job run after the outage deletes.
    stale_codes = 50
    old = timezone.now() - timedelta(hours=2)
    AuthorizationCode.objects.bulk_create(
        AuthorizationCode(
            code_digest=hashlib.sha256(secrets.token_bytes(16)).hexdigest(), client=client,
            user=person, sid="", redirect_uri="http://127.0.0.1:9/callback", scope="openid",
            created=old, expires=old, access_jti="faults-stale-code",
        )
        for _ in range(stale_codes)
    )  # fmt: skip
    limit = settings.LOGIN_FAILURE_LIMIT

    ctx.redis.shutdown()
    down = not ctx.redis.ping()
    say(f"  injected: redis-cli -p {ctx.redis.port} shutdown nosave (Redis answering: {not down})")
    steps: list[tuple[str, Reply, str]] = []

    browser = Browser(ctx.port)
    page, signed_in = browser.sign_in("faults-redis", PASSWORD)
    steps.append(("GET /login/", page, "the form"))
    ok_login = signed_in.status == 302 and "/login" not in signed_in.headers.get("location", "")
    steps.append(("POST /login/ (right password)", signed_in, "signed in" if ok_login else "?"))
    sessions_page = browser.go("GET", "/account/sessions/")
    steps.append(
        ("GET /account/sessions/", sessions_page, "shown" if sessions_page.status == 200 else "?")
    )

    cc = token_request(ctx.port, client_id, secret, {"grant_type": "client_credentials"})
    steps.append(
        (
            "POST /token client_credentials",
            cc,
            "access token" if cc.json().get("access_token") else "?",
        )
    )
    refreshed = token_request(
        ctx.port, client_id, secret, {"grant_type": "refresh_token", "refresh_token": refresh_value}
    )
    new_value = refreshed.json().get("refresh_token", "")
    steps.append(("POST /token refresh_token", refreshed, "rotated" if new_value else "?"))
    again = token_request(
        ctx.port, client_id, secret, {"grant_type": "refresh_token", "refresh_token": new_value}
    )
    steps.append(
        (
            "POST /token refresh (the new one)",
            again,
            "rotated" if again.json().get("refresh_token") else "?",
        )
    )

    guesser = Browser(ctx.port)
    wrong_answers = []
    for attempt in range(1, limit + 2):
        _, reply = guesser.sign_in("faults-lockout", f"wrong-{attempt}")
        throttled = b"Too many failed sign-in attempts" in reply.body
        wrong_answers.append(reply)
        steps.append(
            (
                f"POST /login/ wrong password #{attempt}",
                reply,
                "throttled" if throttled else "refused",
            )
        )
    _, right = guesser.sign_in("faults-lockout", PASSWORD)
    locked_out = right.status == 200 and b"Too many failed sign-in attempts" in right.body
    steps.append(
        ("POST /login/ right password, after", right, "throttled" if locked_out else "LET IN")
    )

    say("  what the clients saw (Redis down):")
    table(
        ["request", "status", "outcome", "problems"],
        [[name, str(r.status), outcome, "; ".join(r.problems(expect_json=False)) or "-"]
         for name, r, outcome in steps],
    )  # fmt: skip

    # What the database holds now (before Redis comes back).
    counters = sql(
        "SELECT split_part(key, ':', 2) || ':' || split_part(key, ':', 3), count, "
        "expires > now() FROM accounts_logincounter ORDER BY 1, 2"
    )
    events = Counter(SecurityEvent.objects.filter(user=victim).values_list("kind", flat=True))
    live_sessions = UserSession.objects.filter(user=person, revoked_at__isnull=True).count()
    say("  what the database holds (Redis still down):")
    table(
        ["accounts_logincounter (kind)", "count", "live"],
        [[k, str(c), str(live)] for k, c, live in counters] or [["(none)", "-", "-"]],
    )
    say(f"    security events of the locked-out account: {dict(sorted(events.items()))}")
    say(f"    live browser sessions of the person who signed in: {live_sessions}")

    # Redis again; the same worker reconnects by itself; a job runs.
    ctx.redis.start()
    t_back = time.monotonic()
    say(f"  injected: redis-server started again on port {ctx.redis.port} (empty: no persistence)")
    from authserver.celery import app

    sent = False
    send_error = ""
    for _ in range(20):
        try:
            app.send_task("tokens.expire_authorization_codes")
            sent = True
            break
        except Exception as error:  # the producer's old connection; kombu reconnects next time
            send_error = type(error).__name__
            time.sleep(0.5)
    say(f"  enqueued tokens.expire_authorization_codes: {'yes' if sent else 'no: ' + send_error}")

    def codes_left() -> int:
        return AuthorizationCode.objects.filter(access_jti="faults-stale-code").count()

    took = wait_until(lambda: codes_left() == 0, 90, step=0.25)
    runs = None
    for _ in range(5):
        try:
            runs = cache.get("metrics:jobs:tokens.expire_authorization_codes:runs:ok")
            break
        except Exception:
            time.sleep(0.2)
    since_back = time.monotonic() - t_back
    say(
        f"  job after Redis returned: stale codes {stale_codes} -> {codes_left()} "
        f"({'in ' + format(took, '.1f') + ' s' if took is not None else 'not within 90 s'}); "
        f"record_job runs ok in the cache: {runs}; worker pid {worker_pid} -> "
        f"{ctx.worker.pid if ctx.worker.alive() else 'dead'} ({since_back:.1f} s after Redis)"
    )

    check = Checks()
    check("Redis was down during the requests", down)
    check("no 500 and no stack trace on any answer",
          all(not r.problems(expect_json=False) for _, r, _ in steps))  # fmt: skip
    check("sign-in through the login page works", page.status == 200 and ok_login
          and sessions_page.status == 200 and live_sessions == 1,
          f"GET {page.status}, POST {signed_in.status}, sessions page {sessions_page.status}")  # fmt: skip
    check("the token endpoint works (client_credentials, two rotations)",
          cc.status == 200 and refreshed.status == 200 and again.status == 200,
          f"{cc.status}, {refreshed.status}, {again.status}")  # fmt: skip
    refused_wrong = sum(1 for r in wrong_answers if r.status == 200)
    check(f"the lockout holds: {limit + 1} wrong passwords, then the right one is refused",
          locked_out and refused_wrong == limit + 1,
          "throttled" if locked_out else "the right password got in")  # fmt: skip
    check("counted in PostgreSQL (accounts_logincounter) meanwhile; one lockout event",
          LoginCounter.objects.exists() and events.get("lockout", 0) == 1
          and events.get("login_failed", 0) == limit,
          f"{len(counters)} counters, {events.get('login_failed', 0)} failures, "
          f"{events.get('lockout', 0)} lockout")  # fmt: skip
    check("the worker survived the outage and ran the job once Redis was back",
          ctx.worker.alive() and ctx.worker.pid == worker_pid and took is not None,
          "within 90 s" if took is not None else "not within 90 s")  # fmt: skip
    check("the job's run is recorded (record_job, in the cache)", bool(runs), str(runs))
    return check.show()


# --- 3. the worker SIGKILLed mid-purge ----------------------------------------------------------
def seed_purge(client_pk: int, user_pk: int, stale: int, live: int) -> float:
    """Stale and live refresh tokens, interleaved on the heap, in one INSERT ... SELECT (the
    mix of bench/purge.py: idle-expired, rotated in an expired family, revoked two days ago)."""
    from django.db import connection, transaction
    from django.utils import timezone
    from purge import _bulk_insert

    now = timezone.now()
    columns = (
        "token_digest, family, access_jti, sid, scope, revoke_reason, client_id, user_id,"
        " created, expires, family_expires, rotated_at, revoked_at"
    )
    stale_rows = (
        "SELECT encode(sha256(convert_to('faults-stale-' || g, 'UTF8')), 'hex') AS d,"
        " md5('faults-stale' || g)::uuid, 'faults-stale', '', 'openid offline_access',"
        " CASE WHEN g %% 4 = 3 THEN 'revoked' ELSE '' END, %(client)s, %(user)s,"
        " CASE g %% 4 WHEN 2 THEN %(now)s - interval '32 days'"
        "   WHEN 3 THEN %(now)s - interval '50 hours' ELSE %(now)s - interval '9 days' END,"
        " CASE g %% 4 WHEN 2 THEN %(now)s - interval '25 days'"
        "   WHEN 3 THEN %(now)s + interval '5 days' ELSE %(now)s - interval '2 days' END,"
        " CASE g %% 4 WHEN 2 THEN %(now)s - interval '2 days' ELSE %(now)s + interval '20 days' END,"
        " CASE g %% 4 WHEN 2 THEN %(now)s - interval '31 days' END,"
        " CASE g %% 4 WHEN 3 THEN %(now)s - interval '2 days' END,"
        " g::bigint * %(live)s AS o FROM generate_series(1, %(stale)s) g"
    )
    live_rows = (
        "SELECT encode(sha256(convert_to('faults-live-' || g, 'UTF8')), 'hex'),"
        " md5('faults-live' || g)::uuid, 'faults-live', '', 'openid offline_access', '',"
        " %(client)s, %(user)s, %(now)s - interval '1 hour',"
        " %(now)s + interval '1 day' + (g %% 144) * interval '1 hour',"
        " %(now)s + interval '30 days', NULL, NULL, g::bigint * %(stale)s + 1"
        " FROM generate_series(1, %(live)s) g"
    )
    statement = (
        f"INSERT INTO tokens_refreshtoken ({columns}) SELECT {columns.replace('token_digest', 'd')}"
        f" FROM ({stale_rows} UNION ALL {live_rows}) AS seeded"
        "(d, family, access_jti, sid, scope, revoke_reason, client_id, user_id, created, expires,"
        " family_expires, rotated_at, revoked_at, o) ORDER BY o"
    )
    params = {"client": client_pk, "user": user_pk, "now": now, "stale": stale, "live": live}
    started = time.monotonic()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL synchronous_commit = off")
        cursor.execute("SET LOCAL maintenance_work_mem = '256MB'")
        cursor.execute("SET LOCAL work_mem = '256MB'")
        _bulk_insert(cursor, "tokens_refreshtoken", [(statement, params)])
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE tokens_refreshtoken")
        cursor.execute("CHECKPOINT")
    return time.monotonic() - started


def token_census() -> dict[str, int]:
    rows = sql(
        "SELECT CASE WHEN access_jti IN ('faults-stale', 'faults-live') THEN access_jti"
        " ELSE 'other' END, count(*) FROM tokens_refreshtoken GROUP BY 1"
    )
    counts = {"faults-stale": 0, "faults-live": 0, "other": 0}
    counts.update(dict(rows))
    return counts


def scenario_purge(ctx: Context) -> bool:
    from django.utils import timezone

    from authserver import janitor
    from authserver.celery import app
    from tokens.models import Client

    args = ctx.args
    say("\n== 3. Celery worker SIGKILLed mid-purge")
    client_id, _ = make_client("Faults: purge")
    client = Client.objects.get(client_id=client_id)
    user = make_user("faults-purge")
    seconds = seed_purge(client.pk, user.pk, args.stale, args.live)
    before = token_census()
    backlog_before = janitor.backlog(janitor.kinds()["refresh_tokens"]).waiting
    say(
        f"  seeded {args.stale:,} stale + {args.live:,} live refresh tokens in {seconds:.1f} s; "
        f"the janitor's own backlog: {backlog_before:,}; other rows: {before['other']:,}"
    )
    worker = ctx.new_worker()
    app.send_task("tokens.expire_refresh_tokens")
    t_sent = time.monotonic()
    threshold = max(5_000, args.stale // 20)

    def deleted() -> int:
        return args.stale - token_census()["faults-stale"]

    started_after = wait_until(lambda: deleted() >= threshold, 60, step=0.03)
    if started_after is None:
        raise CouldNotRun(f"the purge did not start within 60 s; see {worker.log_path}")
    victims = worker.kill()
    t_kill = time.monotonic()
    time.sleep(0.5)
    at_kill = token_census()
    say(
        f"  injected: SIGKILL to the worker's process group (pids {victims}) "
        f"{t_kill - t_sent:.1f} s after the task was sent, with {args.stale - at_kill['faults-stale']:,} "
        f"of {args.stale:,} stale rows deleted"
    )
    # The killed worker's database session must end, and its advisory lock with it.
    lock_free = wait_until(
        lambda: not sql("SELECT 1 FROM pg_locks WHERE locktype = 'advisory'"), 30
    )
    say(
        "  the dead worker's advisory lock released by PostgreSQL: "
        + (
            "after " + format(lock_free, ".1f") + " s"
            if lock_free is not None
            else "NOT within 30 s"
        )
    )

    # The product's recovery: the unacknowledged message comes back after the broker's
    # visibility timeout (an hour in production), and the beat sends this job every 15 minutes.
    # The script stands in for the beat: a fresh worker, and the job sent again.
    worker = ctx.new_worker()
    triggers = 0
    remaining = at_kill["faults-stale"]
    last_progress = time.monotonic()
    deadline = time.monotonic() + 150
    t_restart = time.monotonic()
    while remaining and time.monotonic() < deadline:
        if triggers == 0 or time.monotonic() - last_progress > 10:
            app.send_task("tokens.expire_refresh_tokens")
            triggers += 1
            last_progress = time.monotonic()
        time.sleep(0.5)
        now_remaining = token_census()["faults-stale"]
        if now_remaining < remaining:
            last_progress = time.monotonic()
        remaining = now_remaining
    finished = time.monotonic() - t_restart
    after = token_census()
    still = janitor.kinds()["refresh_tokens"].queryset(timezone.now()).count()
    say(
        f"  recovery: a fresh worker (pid {worker.pid}); tokens.expire_refresh_tokens sent "
        f"{triggers} time(s) by the script (as the beat would); the task re-enqueued itself "
        f"while rows remained; done in {finished:.1f} s"
    )
    say("  what the database holds (tokens_refreshtoken):")
    table(
        ["rows", "seeded", "at the kill", "afterwards"],
        [
            ["stale", f"{before['faults-stale']:,}", f"{at_kill['faults-stale']:,}", f"{after['faults-stale']:,}"],
            ["live", f"{before['faults-live']:,}", f"{at_kill['faults-live']:,}", f"{after['faults-live']:,}"],
            ["other (earlier scenarios)", f"{before['other']:,}", f"{at_kill['other']:,}", f"{after['other']:,}"],
        ],
    )  # fmt: skip
    say(f"    rows the janitor's own Q still calls stale: {still:,}")

    check = Checks()
    killed_mid = 0 < args.stale - at_kill["faults-stale"] < args.stale
    check("the worker was killed mid-purge (some, not all, stale rows deleted)", killed_mid,
          f"{args.stale - at_kill['faults-stale']:,} deleted at the kill")  # fmt: skip
    check("the dead worker's advisory lock was released", lock_free is not None)
    check("every stale row purged afterwards", after["faults-stale"] == 0 and still == 0,
          f"{after['faults-stale']:,} left")  # fmt: skip
    check("no live row lost", after["faults-live"] == before["faults-live"] == args.live
          and at_kill["faults-live"] == args.live,
          f"{before['faults-live']:,} -> {after['faults-live']:,}")  # fmt: skip
    check("no other row touched", after["other"] == before["other"])
    return check.show()


# --- 4. the worker SIGKILLed mid-logout-delivery ------------------------------------------------
@dataclass
class LogoutPost:
    rp: str
    sid: str
    jti: str
    token: str
    received: float
    answered: bool = False


class RelyingParties:
    """Back-channel logout endpoints (``/rp<N>/backchannel``): each POST is recorded when it
    arrives, then answered 200 after ``delay`` seconds, so a worker can die mid-request."""

    def __init__(self, delay: float):
        self.delay = delay
        self.posts: list[LogoutPost] = []
        self.active: list[LogoutPost] = []
        self.lock = threading.Lock()
        parties = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode(errors="replace")
                token = parse_qs(body).get("logout_token", [""])[0]
                claims = unverified_claims(token)
                post = LogoutPost(
                    self.path.strip("/").split("/")[0], str(claims.get("sid", "")),
                    str(claims.get("jti", "")), token, time.monotonic(),
                )  # fmt: skip
                with parties.lock:
                    parties.posts.append(post)
                    parties.active.append(post)
                try:
                    time.sleep(parties.delay)
                    self.send_response(200)
                    self.send_header("Content-Length", "0")
                    self.send_header("Cache-Control", "no-store")
                    self.end_headers()
                    post.answered = True
                except OSError:
                    pass  # the worker died while we were thinking
                finally:
                    with parties.lock:
                        parties.active.remove(post)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def unverified_claims(token: str) -> dict:
    try:
        payload = token.split(".")[1]
        return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return {}


def verify_logout_token(token: str, key_set, issuer: str, audience: str, sid: str) -> list[str]:
    """Back-Channel Logout §2.4 / §2.6: what a relying party checks. Returns the problems."""
    from joserfc import jwt

    problems = []
    try:
        decoded = jwt.decode(token, key_set, algorithms=["RS256", "ES256"])
    except Exception as error:
        return [f"signature: {type(error).__name__}"]
    claims, header = decoded.claims, decoded.header
    now = time.time()
    if header.get("typ") != "logout+jwt":
        problems.append(f"typ {header.get('typ')!r}")
    if claims.get("iss") != issuer:
        problems.append("iss")
    if claims.get("aud") != audience and audience not in (claims.get("aud") or []):
        problems.append("aud")
    if not (claims.get("iat", now + 99) <= now + 5 and claims.get("exp", 0) > claims.get("iat", 0)):
        problems.append("iat/exp")
    events = claims.get("events")
    if (
        not isinstance(events, dict)
        or events.get("http://schemas.openid.net/event/backchannel-logout") != {}
    ):
        problems.append("events")
    if claims.get("sid") != sid:
        problems.append("sid")
    if not claims.get("sub"):
        problems.append("sub")
    if not claims.get("jti"):
        problems.append("jti")
    if "nonce" in claims:
        problems.append("nonce present")
    return problems


def scenario_logout(ctx: Context) -> bool:
    from joserfc.jwk import KeySet

    from accounts.models import UserSession
    from tokens.models import BackchannelLogout
    from tokens.revocation import end_sessions

    args = ctx.args
    say("\n== 4. Celery worker SIGKILLed mid-logout-delivery")
    parties = RelyingParties(args.rp_delay)
    try:
        rps: dict[str, tuple[str, str, str]] = {}  # label -> client_id, secret, redirect URI
        for n in range(1, args.rps + 1):
            base = f"http://127.0.0.1:{parties.port}/rp{n}"
            client_id, secret = make_client(
                f"Faults: RP {n}",
                redirect_uris=[f"{base}/callback"],
                grant_types=["authorization_code", "refresh_token"],
                backchannel_logout_uri=f"{base}/backchannel",
            )
            rps[f"rp{n}"] = (client_id, secret, f"{base}/callback")
        users = [make_user(f"faults-logout-{n}") for n in range(1, args.sessions + 1)]
        for user in users:
            browser = Browser(ctx.port)
            _, reply = browser.sign_in(user.username, PASSWORD)
            if reply.status != 302:
                raise CouldNotRun(f"sign-in of {user.username} answered {reply.status}")
            for client_id, secret, redirect_uri in rps.values():
                code, verifier = browser.authorize(client_id, redirect_uri)
                exchanged = token_request(
                    ctx.port, client_id, secret,
                    {"grant_type": "authorization_code", "code": code,
                     "redirect_uri": redirect_uri, "code_verifier": verifier},
                )  # fmt: skip
                if exchanged.status != 200 or "id_token" not in exchanged.json():
                    raise CouldNotRun(f"code exchange answered {exchanged.status}")
        sessions = UserSession.objects.filter(user__in=users, revoked_at__isnull=True)
        sids = {sid: user for sid, user in sessions.values_list("sid", "user__username")}
        expected = len(sids) * len(rps)
        say(
            f"  {len(sids)} browser sessions signed in over HTTP, each through the code flow with "
            f"{len(rps)} relying parties ({expected} session/RP pairs); the RPs answer after "
            f"{args.rp_delay:.1f} s"
        )
        worker = ctx.new_worker()
        ended = end_sessions(
            UserSession.objects.filter(sid__in=list(sids)),
            by=UserSession.EndedBy.OPERATOR,
            reason="fault injection: an operator ends the sessions",
        )
        t_ended = time.monotonic()

        def in_flight() -> bool:
            with parties.lock:
                done = sum(1 for p in parties.posts if p.answered)
                return done >= 2 and any(
                    time.monotonic() - p.received > 0.3 for p in parties.active
                )

        if wait_until(in_flight, 60, step=0.02) is None:
            raise CouldNotRun(f"no delivery in flight within 60 s; see {worker.log_path}")
        with parties.lock:
            flying = [(p.rp, p.sid) for p in parties.active]
            posts_at_kill = len(parties.posts)
        if args.logout_kill == "child":
            victims = worker.pool_children()
            for pid in victims:
                os.kill(pid, signal.SIGKILL)
        else:
            victims = worker.kill()
        t_kill = time.monotonic()
        statuses_at_kill = Counter(
            BackchannelLogout.objects.filter(sid__in=list(sids)).values_list("status", flat=True)
        )
        say(
            f"  injected: end_sessions() by an operator ({ended} sessions), then SIGKILL to the "
            f"{'pool child' if args.logout_kill == 'child' else 'whole worker'} (pids {victims}) {t_kill - t_ended:.1f} s later, while "
            f"{', '.join(f'{rp}/{sid[:8]}' for rp, sid in flying)} was in flight "
            f"({posts_at_kill} POSTs received so far)"
        )
        say(f"    deliveries at the kill: {dict(sorted(statuses_at_kill.items()))}")
        if args.logout_kill == "worker":
            worker = ctx.new_worker()

        def all_delivered() -> bool:
            return (
                BackchannelLogout.objects.filter(sid__in=list(sids), status="delivered").count()
                == expected
            )

        took = wait_until(all_delivered, VISIBILITY_TIMEOUT + 120, step=0.5)
        time.sleep(1.0)  # a late duplicate would show up here
        say(
            f"  recovery: {'the same worker, a new pool child' if args.logout_kill == 'child' else 'a fresh worker'} (pid {worker.pid}); every delivery done "
            + (f"{took:.1f} s after it started" if took is not None else "NOT within the bound")
            + f" ({time.monotonic() - t_kill:.0f} s after the kill; the in-flight task came back "
            f"after the broker's visibility timeout, {VISIBILITY_TIMEOUT} s here)"
        )

        jwks = json.loads(request(ctx.port, "GET", "/.well-known/jwks.json").body)
        key_set = KeySet.import_key_set(jwks)
        client_ids = {label: value[0] for label, value in rps.items()}
        from django.conf import settings

        rows = {
            (client_id, sid): (status, attempts, code)
            for client_id, sid, status, attempts, code in BackchannelLogout.objects.filter(
                sid__in=list(sids)
            ).values_list("client__client_id", "sid", "status", "attempts", "last_status_code")
        }
        table_rows = []
        bad_tokens: list[str] = []
        pair_problems = []
        for sid in sorted(sids):
            for label, client_id in client_ids.items():
                posts = [p for p in parties.posts if p.rp == label and p.sid == sid]
                jtis = {p.jti for p in posts}
                for post in posts:
                    for problem in verify_logout_token(
                        post.token, key_set, settings.ISSUER, client_id, sid
                    ):
                        bad_tokens.append(f"{label}/{sid[:8]}: {problem}")
                status, attempts, code = rows.get((client_id, sid), ("missing", 0, None))
                was_flying = (label, sid) in flying
                allowed = 2 if was_flying else 1
                if len(jtis) != 1 or not 1 <= len(posts) <= allowed or status != "delivered":
                    pair_problems.append(f"{label}/{sid[:8]}")
                table_rows.append(
                    [
                        label, sid[:12], sids[sid], str(len(posts)), str(len(jtis)),
                        "yes" if was_flying else "", status, str(attempts), str(code),
                    ]
                )  # fmt: skip
        say("  what the relying parties received, and what the database holds (BackchannelLogout):")
        table(
            ["RP", "sid", "user", "POSTs", "distinct jti", "in flight at kill", "status",
             "attempts", "last HTTP"],
            table_rows,
        )  # fmt: skip
        say(
            "  what the product guarantees (tokens/logout.py): one delivery row per (session, "
            "client); the jti is sha256(sid:client_id), the same on every attempt, so a POST "
            "repeated after a crash is one logout event the RP can de-duplicate (§2.6); a "
            "request in flight when its worker dies is sent again (at-least-once)"
        )
        flying_posts = sum(1 for p in parties.posts if (p.rp, p.sid) in flying)
        check = Checks()
        check("a delivery was in flight when the worker was killed", bool(flying),
              ", ".join(f"{rp}/{sid[:8]}" for rp, sid in flying))  # fmt: skip
        check("every delivery row delivered after the restart", took is not None,
              f"{sum(1 for r in rows.values() if r[0] == 'delivered')}/{expected}")  # fmt: skip
        check("every (RP, session) got exactly one logout event (one distinct jti)",
              all(len({p.jti for p in parties.posts if p.rp == label and p.sid == sid}) == 1
                  for sid in sids for label in client_ids))  # fmt: skip
        check("no duplicate POST but the one in flight at the kill", not pair_problems,
              f"in-flight pair got {flying_posts} POSTs; problems: {pair_problems or 'none'}")  # fmt: skip
        check("the in-flight delivery was retried (sent again after the crash)",
              flying_posts == 2, f"{flying_posts} POSTs")  # fmt: skip
        check("every logout token verifies against the JWKS with the right claims "
              "(typ, iss, aud, iat/exp, events, sid, sub, jti, no nonce)", not bad_tokens,
              "; ".join(bad_tokens[:5]) or f"{len(parties.posts)} tokens")  # fmt: skip
        return check.show()
    finally:
        parties.close()


# --- main ---------------------------------------------------------------------------------------
RUNNERS: dict[str, Callable[[Context], bool]] = {
    "postgres": scenario_postgres,
    "redis": scenario_redis,
    "purge": scenario_purge,
    "logout": scenario_logout,
}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    log_dir = Path(tempfile.mkdtemp(prefix="faults-"))
    (log_dir / "faults_settings.py").write_text(WORKER_SETTINGS)

    def interrupted(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupted)
    cluster: PostgresCluster | None = None
    redis: RedisServer | None = None
    ctx: Context | None = None
    verdicts: dict[str, str] = {}
    status = 0
    started = time.monotonic()
    try:
        cluster = PostgresCluster(args.pg_port)
        redis = RedisServer(args.redis_port, log_dir)
        if cluster.drop_leftover():
            say(f"== dropped the cluster {cluster.version}/{CLUSTER} an aborted run left behind")
        if RedisServer.stop_leftover():
            say("== stopped the redis-server an aborted run left behind")
        say(
            f"== throw-away services: PostgreSQL {cluster.version} cluster '{CLUSTER}' on port "
            f"{cluster.port}, redis-server on port {redis.port} (the shared 5432 / 6379 are "
            "never touched); logs in " + str(log_dir)
        )
        cluster.create()
        redis.start()
        args.database_url = cluster.url
        args.redis, args.cache_db, args.broker_db = redis.url, 0, 1
        args.keep_db = True  # the whole cluster goes at the end
        prepare_database(args)
        # This process is an operator's shell: the client-cache listener's reconnect warnings
        # while Redis is down are the product's logs, not the report.
        logging.getLogger("tokens.client_cache").setLevel(logging.ERROR)
        from tokens import keys

        keys.signing_key("RS256")
        keys.signing_key("ES256")
        reconnect()
        ctx = Context(args, log_dir, cluster, redis)
        ctx.port = free_port()
        ctx.server = start_web(args, ctx.port, log_dir)
        ctx.new_worker()
        say(
            f"== web server (python -m authserver.server: {args.web_workers} granian workers, "
            f"production settings) on "
            f"127.0.0.1:{ctx.port}; Celery worker (prefork, concurrency 1, acks_late) with "
            f"faults_settings: loopback RPs allowed, visibility timeout {VISIBILITY_TIMEOUT} s "
            "(production: 3,600 s); no beat (the script sends what the beat would)"
        )
        for name in args.scenarios:
            try:
                passed = RUNNERS[name](ctx)
            except CouldNotRun as error:
                say(f"  could not run: {error}")
                verdicts[name] = "COULD NOT RUN"
                status = max(status, 2) if status != 1 else 1
                continue
            except Exception:
                traceback.print_exc()
                verdicts[name] = "COULD NOT RUN"
                status = status or 2
                continue
            finally:
                reconnect()
            verdicts[name] = "PASS" if passed else "FAIL"
            if not passed:
                status = 1
            say(f"  {name}: {verdicts[name]}")
    except CouldNotRun as error:
        print(f"faults: could not run: {error}", file=sys.stderr)
        status = 2
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as error:
        detail = getattr(error, "stderr", "") or ""
        print(f"faults: could not run: {error} {detail}", file=sys.stderr)
        status = 2
    except KeyboardInterrupt:
        print("faults: interrupted; cleaning up", file=sys.stderr)
        status = 2
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if ctx is not None:
            if ctx.worker is not None:
                ctx.worker.stop()
            stop(ctx.server)
        if "django" in sys.modules:
            reconnect()
        if args.keep:
            say(
                f"== kept: cluster {cluster.version if cluster else '?'}/{CLUSTER} "
                f"(pg_dropcluster --stop {cluster.version if cluster else '?'} {CLUSTER}), "
                f"redis-server on port {redis.port if redis else '?'} "
                f"(redis-cli -p {redis.port if redis else '?'} shutdown nosave), logs in {log_dir}"
            )
        else:
            if redis is not None and redis.started:
                redis.shutdown()
            if cluster is not None:
                cluster.drop()
            shutil.rmtree(log_dir, ignore_errors=True)
            say("== throw-away cluster dropped, Redis stopped, logs removed")

    say(f"\nSUMMARY ({time.monotonic() - started:.0f} s)")
    for name in args.scenarios:
        say(f"  {verdicts.get(name, 'NOT RUN'):>13}  {name}")
    if status == 0 and len(verdicts) < len(args.scenarios):
        status = 2
    return status


if __name__ == "__main__":
    sys.exit(main())
