"""CPU per request, in process: each scenario's requests through the WSGI handler, no server.

    .venv/bin/python bench/cpu.py [--requests 2000] [--profile introspection] [--redis-down]

Throughput on a shared machine is noise; CPU time per request is not (much). This calls
``authserver.wsgi.application`` directly with a ready WSGI environ (what a WSGI server's worker
does, without the socket), N times per scenario, against the real PostgreSQL and Redis, and
prints this process's CPU (``time.process_time``) and the PostgreSQL backends' CPU (from /proc)
per request. ``--profile NAME`` runs that scenario under cProfile and prints the top of the
profile; ``--redis-down`` points the cache at a closed port (``CACHE_URL``) for this process
only. The bare Django /ping (bench/bare_django.py) is measured in a child process, since one
process holds one Django.

It seeds its own database the way bench/tokens.py does (``authserver_bench_cpu`` by default,
created and dropped here; its name must contain "bench").
"""

# ruff: noqa: S603

from __future__ import annotations

import cProfile
import importlib.util
import io
import json
import os
import pstats
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlencode

from common import ROOT, bench_parser, check_database_url, migrate, release_database, server_env

CLOSED_PORT_REDIS = "redis://127.0.0.1:1/0"  # nothing listens on port 1: connection refused
SCENARIOS = ("ping", "client_credentials", "introspection", "refresh")


def parse_args(argv=None):
    parser = bench_parser(
        __doc__,
        default_url="postgres://postgres@127.0.0.1:5432/authserver_bench_cpu",
        env="BENCH_CPU_DATABASE_URL",
        cache_db=12,
        broker_db=13,
    )
    add = parser.add_argument
    add("--requests", type=int, default=2_000, help="requests per scenario and round (2,000)")
    add("--rounds", type=int, default=3, help="rounds; the least CPU of them is shown (3)")
    add("--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    add("--profile", choices=SCENARIOS, help="run this scenario under cProfile, print its top")
    add("--top", type=int, default=30, help="profile lines printed (30)")
    add("--redis-down", action="store_true", help=f"the cache at {CLOSED_PORT_REDIS}")
    add("--bare", action="store_true", help="measure only bench/bare_django.py's /ping")
    add("--no-bare", action="store_true", help="skip the bare Django reference")
    add(
        "--id-token-alg",
        choices=("RS256", "ES256"),
        default="RS256",
        help="the seeded client's ID tokens, re-issued on every refresh (default RS256)",
    )
    return parser.parse_args(argv)


def _bench_tokens():
    """bench/tokens.py under another name (``tokens`` is the app)."""
    spec = importlib.util.spec_from_file_location(
        "bench_tokens", Path(__file__).with_name("tokens.py")
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_tokens"] = module
    spec.loader.exec_module(module)
    return module


def environ(method: str, path: str, form: dict | None = None, basic: str = "") -> dict:
    body = urlencode(form).encode() if form is not None else b""
    env = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "SCRIPT_NAME": "",
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "127.0.0.1",
        "HTTP_ACCEPT": "application/json",
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "wsgi.version": (1, 0),
    }
    if form is not None:
        env["CONTENT_TYPE"] = "application/x-www-form-urlencoded"
        env["CONTENT_LENGTH"] = str(len(body))
    if basic:
        env["HTTP_AUTHORIZATION"] = f"Basic {basic}"
    env["_body"] = body
    return env


def call(app, env: dict) -> tuple[str, bytes]:
    request = dict(env)
    request["wsgi.input"] = io.BytesIO(request.pop("_body"))
    status = []
    chunks = app(request, lambda s, headers, exc_info=None: status.append(s))
    try:
        body = b"".join(chunks)
    finally:
        if hasattr(chunks, "close"):
            chunks.close()
    return status[0], body


def backend_ticks(database: str) -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", [database])
        pids = [row[0] for row in cursor.fetchall()]
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total


def measure(
    app, name: str, make_env, n: int, database: str, profile: bool, top: int, offset: int = 0
) -> dict:
    if not offset:
        for i in range(min(200, n)):  # warm: caches, prepared statements, the pool
            status, body = call(app, make_env(-i - 1))
            if not status.startswith("200"):
                raise SystemExit(f"{name}: {status} {body[:300]!r}")
    ticks = os.sysconf("SC_CLK_TCK")
    pg_before = backend_ticks(database)
    # CPU time, not wall time: waiting for PostgreSQL is not this process's cost.
    profiler = cProfile.Profile(time.process_time) if profile else None
    wall, cpu = time.perf_counter(), time.process_time()
    if profiler:
        profiler.enable()
    for i in range(offset, offset + n):
        status, body = call(app, make_env(i))
        if not status.startswith("200"):
            raise SystemExit(f"{name}: {status} {body[:300]!r}")
    if profiler:
        profiler.disable()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    pg = (backend_ticks(database) - pg_before) / ticks
    if profiler:
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        stats.sort_stats("cumulative").print_stats(top)
        stats.sort_stats("tottime").print_stats(top)
        print(out.getvalue())
    return {"name": name, "cpu_us": cpu / n * 1e6, "pg_us": pg / n * 1e6, "wall_us": wall / n * 1e6}


def bare(args) -> dict:
    sys.path.insert(0, str(ROOT))
    from bench.bare_django import application

    env = environ("GET", "/ping")
    for _ in range(200):
        call(application, env)
    rounds = []
    for _ in range(args.rounds):
        cpu = time.process_time()
        for _ in range(args.requests):
            call(application, env)
        rounds.append((time.process_time() - cpu) / args.requests * 1e6)
    return {"name": "django_ping", "cpu_us": min(rounds), "max_us": max(rounds)}


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.bare:
        print(json.dumps(bare(args)))
        return 0
    check_database_url(args.database_url)
    rows = []
    if not args.no_bare:
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--bare",
                "--requests",
                str(args.requests),
                "--rounds",
                str(args.rounds),
            ],
            env=server_env(args),
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        rows.append(json.loads(out.splitlines()[-1]))
    migrate(args)
    extra = {"LOG_LEVEL": "WARNING"}
    if args.redis_down:
        extra["CACHE_URL"] = CLOSED_PORT_REDIS
    os.environ.update(server_env(args, **extra))
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    bench = _bench_tokens()
    args.tokens = args.requests * args.rounds + 500
    try:
        seeded = bench.seed(args)
        from authserver.wsgi import application

        # The user access token introspection presents: from one real refresh, as the bench does.
        _status, body = call(
            application,
            environ(
                "POST",
                "/token",
                {"grant_type": "refresh_token", "refresh_token": f"rt-{args.tokens}"},
                seeded.client_basic,
            ),
        )
        access_token = json.loads(body)["access_token"]
        ping = environ("GET", "/ping")
        cc_form = {"grant_type": "client_credentials", "scope": "profile"}
        cc = environ("POST", "/token", cc_form, seeded.client_basic)
        introspect = environ("POST", "/introspect", {"token": access_token}, seeded.resource_basic)

        def refresh(i: int) -> dict:
            number = i + 1 if i >= 0 else args.tokens + i  # warm-up from the end
            form = {"grant_type": "refresh_token", "refresh_token": f"rt-{number}"}
            return environ("POST", "/token", form, seeded.client_basic)

        makers = {
            "ping": lambda i: ping,
            "client_credentials": lambda i: cc,
            "introspection": lambda i: introspect,
            "refresh": refresh,
        }
        database = args.database_url.rsplit("/", 1)[1]
        for name in args.scenarios:
            rounds = [
                measure(
                    application,
                    name,
                    makers[name],
                    args.requests,
                    database,
                    args.profile == name and not r,
                    args.top,
                    offset=r * args.requests,
                )
                for r in range(args.rounds)
            ]
            best = min(rounds, key=lambda row: row["cpu_us"])
            best["max_us"] = max(row["cpu_us"] for row in rounds)
            rows.append(best)
    finally:
        release_database(args)
    reference = rows[0]["cpu_us"] if rows and rows[0]["name"] == "django_ping" else None
    label = " (Redis down)" if args.redis_down else ""
    print(
        f"CPU per request{label}, {args.requests:,} requests a round, the least of "
        f"{args.rounds} rounds (and the most), in process:"
    )
    header = ("scenario", "worker µs", "(max)", "PostgreSQL µs", "wall µs", "bare÷this")
    print("  {:<20} {:>10} {:>7} {:>14} {:>9} {:>10}".format(*header))
    for row in rows:
        ratio = f"{reference / row['cpu_us']:.2f}x" if reference else ""
        pg = f"{row['pg_us']:.0f}" if "pg_us" in row else ""
        wall = f"{row['wall_us']:.0f}" if "wall_us" in row else ""
        most = f"{row['max_us']:.0f}" if "max_us" in row else ""
        print(
            f"  {row['name']:<20} {row['cpu_us']:>10.0f} {most:>7} {pg:>14} {wall:>9} {ratio:>10}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
