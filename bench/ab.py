"""A against B on the same run: this working tree's server and another revision's, interleaved.

`make bench` measures one server at a time, and on a shared VM the host's speed drifts by
±10-15 % from one minute to the next: enough to hide a 5 % change, or fake one. This runs both
servers at once (one worker each, pinned to CPU 0 with PostgreSQL and Redis, wrk on CPU 1) and
alternates short wrk bursts between them, A B A B..., so drift lands on both alike. It prints,
per scenario, each side's total requests per second and worker CPU per request, and B ÷ A.

    .venv/bin/python bench/ab.py --base HEAD~3 --scenarios client_credentials introspection

``--base`` is checked out in a throw-away git worktree (sharing this venv); B is the working
tree as it is, uncommitted changes included. Both use the same seeded database.
"""

# ruff: noqa: S603
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import tokens
from bench.common import (
    ROOT,
    check_database_url,
    free_port,
    pin_self,
    prepare_database,
    process_cpu_ticks,
    release_database,
    server_env,
    stop,
    wait_until_ready,
    worker_pids,
)

SCENARIOS = ("ping", "client_credentials", "introspection")
GIT = shutil.which("git") or "git"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="HEAD", help="A: the git revision (default HEAD)")
    parser.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    parser.add_argument("--bursts", type=int, default=8, help="bursts per side and scenario (8)")
    parser.add_argument("--seconds", type=float, default=3, help="seconds per burst (3)")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--wrk", default="wrk")
    parser.add_argument("--redis", default=os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379"))
    parser.add_argument("--cache-db", type=int, default=10)
    parser.add_argument("--broker-db", type=int, default=11)
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "BENCH_AB_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/authserver_bench_ab"
        ),
    )
    args = parser.parse_args(argv)
    args.keep_db = False
    args.tokens = 2_000  # the correctness checks use a few; the scenarios here use none
    args.id_token_alg = "RS256"
    return args


def start(args, source: Path, port: int, log: Path) -> subprocess.Popen:
    metrics = log.parent / f"metrics-{port}"
    metrics.mkdir()
    env = server_env(
        args,
        PYTHONPATH=str(source),
        WEB_CONCURRENCY="1",
        WEB_BIND=f"127.0.0.1:{port}",
        PROMETHEUS_MULTIPROC_DIR=str(metrics),
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "authserver.server", "authserver.wsgi:application"],
        cwd=source,
        env=env,
        stdout=open(log, "wb"),  # kept open for the child's lifetime
        stderr=subprocess.STDOUT,
        preexec_fn=lambda: os.sched_setaffinity(0, {0}),
    )
    return wait_until_ready(process, port, "/.well-known/openid-configuration", "granian", log)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    check_database_url(args.database_url)
    args.wrk = shutil.which(args.wrk) or sys.exit(f"{args.wrk} not found")
    work = Path(tempfile.mkdtemp(prefix="bench-ab-"))
    base = work / "base"
    subprocess.run(
        [GIT, "worktree", "add", "--detach", "-q", str(base), args.base], cwd=ROOT, check=True
    )
    servers: list[subprocess.Popen] = []
    pinning = tokens.ServicePinning(0)
    try:
        (base / ".venv").symlink_to(ROOT / ".venv")
        pin_self(1)
        prepare_database(args)
        seeded = tokens.seed(args)
        from django.core.cache import cache
        from django.db import connections

        cache.clear()
        connections.close_all()
        pinning.pin()
        sides = {"A": base, "B": ROOT}
        ports = {side: free_port() for side in sides}
        for side, source in sides.items():
            servers.append(start(args, source, ports[side], work / f"{side}.log"))
        workers = {side: worker_pids(server) for side, server in zip(sides, servers, strict=True)}
        checks, access_token = tokens.correctness(ports["B"], seeded)
        if failed := [check for check in checks if not check.ok]:
            raise SystemExit(f"correctness failed on B: {failed}")
        scripts = tokens.scenario_scripts(args, seeded, access_token, work)
        print(f"A = {args.base} ({_revision(base)}), B = the working tree; {args.bursts} bursts of "
              f"{args.seconds:g} s each, alternating")  # fmt: skip
        ticks_per_second = os.sysconf("SC_CLK_TCK")
        for scenario in args.scenarios:
            path, script, arguments = scripts[scenario]
            extra = arguments(0)  # (these scenarios use no seeded token)
            for side in sides:  # warm both
                tokens.run_wrk(args, ports[side], path, script, 2, *extra)
            requests = dict.fromkeys(sides, 0)
            seconds = dict.fromkeys(sides, 0.0)
            ticks = dict.fromkeys(sides, 0)
            for burst in range(args.bursts):
                order = list(sides) if burst % 2 == 0 else list(reversed(sides))
                for side in order:
                    before = sum(process_cpu_ticks(pid) or 0 for pid in workers[side])
                    result = tokens.run_wrk(args, ports[side], path, script, args.seconds, *extra)
                    ticks[side] += sum(process_cpu_ticks(pid) or 0 for pid in workers[side])
                    ticks[side] -= before
                    if result.errors:
                        raise SystemExit(f"{scenario} on {side}: {result.errors} errors")
                    requests[side] += result.requests
                    seconds[side] += result.seconds
            rate = {side: requests[side] / seconds[side] for side in sides}
            cpu = {side: ticks[side] / ticks_per_second / requests[side] * 1e6 for side in sides}
            print(
                f"{scenario:>20}  A {rate['A']:7,.0f} req/s {cpu['A']:5.0f} µs   "
                f"B {rate['B']:7,.0f} req/s {cpu['B']:5.0f} µs   "
                f"B/A {rate['B'] / rate['A']:.3f} req/s, {cpu['B'] / cpu['A']:.3f} CPU"
            )
    finally:
        for server in servers:
            stop(server)
        if pinning.active:
            pinning.restore()
        release_database(args)
        subprocess.run([GIT, "worktree", "remove", "--force", str(base)], cwd=ROOT, check=False)
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _revision(path: Path) -> str:
    return subprocess.run(
        [GIT, "log", "-1", "--format=%h %s"], cwd=path, capture_output=True, text=True
    ).stdout.strip()[:70]


if __name__ == "__main__":
    sys.exit(main())
