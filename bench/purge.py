"""Benchmark: purge 1,000,000 stale refresh tokens while the token endpoint keeps refreshing.

    make bench-purge                      # or: .venv/bin/python bench/purge.py [options]

What it does, in its own PostgreSQL database (``authserver_bench`` by default; the name must
contain "bench", and it is created, migrated and dropped here):

1. Seeds with SQL (``INSERT ... SELECT ... FROM generate_series``, secondary indexes and
   constraints dropped during the load and rebuilt from their exact catalogue definitions):
   1,000,000 stale refresh tokens (idle leaves, rotated rows of expired families, rows revoked
   two days ago), 1,000,000 live ones whose values are ``bench-live-<n>`` (so the load can use
   them), and rows that are *not* live but must be kept (inside the retention windows); stale and
   live authorization codes and browser sessions likewise. Every seeded row carries a marker
   (``access_jti`` / ``user_agent`` = ``seed-stale`` / ``seed-live`` / ``seed-keep``), so the
   check afterwards counts exactly what survived. Then ``VACUUM ANALYZE``.
2. Starts the real server under gunicorn's sync worker (bench/gunicorn.conf.py, the settings
   production had before granian), one worker pinned to CPU 0, production settings (DEBUG off):
   gunicorn's access log gives each request's time as the server saw it (``%(D)s``), which
   granian's cannot; the purge's cost is the database's, whatever the server.
3. Checks that one refresh grant answers 200 with a new refresh token, and that it works too.
4. Load: ``--concurrency`` client threads on CPU 1 (``http.client``), each request a
   ``refresh_token`` grant with client_secret_basic, each seeded live token used once.
   Phase "at rest": ``--rest-seconds`` of load. Phase "during purge": the same load while
   another process (CPU 1) runs ``janitor.purge`` for refresh tokens until nothing remains.
   Then codes and sessions are purged (no load) and reported.
5. Verifies: no live or kept row was deleted, no stale row remains, every successful refresh
   left its new token; prints the table and PASS/FAIL per target.

Exit status: 1 on a correctness failure (a live row deleted, a stale row left, a request that
failed); a missed speed target is reported, not fatal. 2 when the benchmark could not run.
"""

# ruff: noqa: S603, S608

from __future__ import annotations

import argparse
import base64
import http.client
import itertools
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

from common import (
    GUNICORN_CONFIG,
    REFERENCE_SERVER,
    ROOT,
    CpuSampler,
    bench_client,
    bench_parser,
    check_database_url,
    digest_sql,
    free_port,
    ms,
    pin,
    pin_self,
    prepare_database,
    release_database,
    server_env,
    show_log,
    start_server,
    stop,
    table,
)

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/authserver_bench"
LIVE_SCOPE = "openid offline_access"  # offline_access: not bound to a browser session

# Targets (issue 5).
TARGET_SECONDS = 60.0
TARGET_P99_RATIO = 2.0


# --- configuration ------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    database = {"default_url": DEFAULT_DATABASE_URL, "env": "BENCH_DATABASE_URL"}
    parser = bench_parser(__doc__, **database, cache_db=12, broker_db=13)
    add = parser.add_argument
    add("--stale", type=int, default=1_000_000, help="stale refresh tokens")
    add("--live", type=int, default=1_000_000, help="live refresh tokens")
    add("--keep", type=int, default=40_000, help="not live, not yet stale: must be kept")
    add("--codes", type=int, default=200_000, help="stale authorization codes")
    add("--live-codes", type=int, default=20_000)
    add("--sessions", type=int, default=200_000, help="stale browser sessions")
    add("--live-sessions", type=int, default=20_000)
    add("--users", type=int, default=1_000)
    add(
        "--layout",
        choices=("interleaved", "ordered"),
        default="interleaved",
        help="interleaved: stale and live tokens alternate by id (they share heap pages: the "
        "harder case); ordered: every stale id below every live id",
    )
    add("--batch-size", type=int, default=5_000, help="janitor batch size")
    add("--max-batches", type=int, default=20, help="batches per janitor.purge() call")
    add("--rest-seconds", type=float, default=15.0, help="length of the at-rest phase")
    add("--warmup-seconds", type=float, default=3.0)
    add("--concurrency", type=int, default=2, help="client threads (one connection each)")
    add(
        "--purge-cpu",
        type=int,
        default=1,
        help="CPU the purge process is pinned to (default 1, with the load); -1: not pinned",
    )
    add("--no-explain", action="store_true", help="skip EXPLAIN of the first batch's SELECT")
    add("--worker", nargs="+", metavar="KIND", help=argparse.SUPPRESS)  # internal: purge process
    return parser.parse_args(argv)


# --- seeding ------------------------------------------------------------------------------------
@dataclass
class Seeded:
    client_id: str
    client_secret: str
    live_tokens: int
    token_seed_max_id: int
    counts: dict[str, int] = field(default_factory=dict)


def _without_secondary_indexes(cursor, table: str):
    """Drop ``table``'s secondary indexes, unique and foreign-key constraints; return the
    statements that put exactly them back (from pg_get_indexdef / pg_get_constraintdef)."""
    cursor.execute(
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conrelid = %s::regclass AND contype IN ('u', 'f')",
        [table],
    )
    constraints = cursor.fetchall()
    cursor.execute(
        "SELECT i.relname, pg_get_indexdef(x.indexrelid) FROM pg_index x "
        "JOIN pg_class i ON i.oid = x.indexrelid "
        "WHERE x.indrelid = %s::regclass AND NOT x.indisprimary "
        "AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid)",
        [table],
    )
    indexes = cursor.fetchall()
    for name, _definition in constraints:
        cursor.execute(f'ALTER TABLE "{table}" DROP CONSTRAINT "{name}"')
    for name, _definition in indexes:
        cursor.execute(f'DROP INDEX "{name}"')
    return [definition for _name, definition in indexes] + [
        f'ALTER TABLE "{table}" ADD CONSTRAINT "{name}" {definition}'
        for name, definition in constraints
    ]


def _bulk_insert(cursor, table: str, statements: list[tuple[str, list]]) -> None:
    restore = _without_secondary_indexes(cursor, table)
    for sql, params in statements:
        cursor.execute(sql, params)
    for statement in restore:
        cursor.execute(statement)


_digest = digest_sql


def seed(args: argparse.Namespace) -> Seeded:
    from django.db import connection, transaction
    from django.utils import timezone

    now = timezone.now()
    client, secret = bench_client(grant_types=["authorization_code", "refresh_token"])
    users = args.users
    stale, live, keep = args.stale, args.live, args.keep
    if args.layout == "interleaved":
        stale_id, live_id = "2 * g - 1", "2 * g"
        seed_max = 2 * max(stale, live)
    else:
        stale_id, live_id = "g", f"{stale} + g"
        seed_max = stale + live
    user = f"(SELECT min(id) FROM accounts_user) + g %% {users}"
    common = "sid, scope, revoke_reason, client_id, user_id, created"

    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL synchronous_commit = off")
        cursor.execute("SET LOCAL maintenance_work_mem = '256MB'")
        cursor.execute(
            "INSERT INTO accounts_user (password, is_superuser, first_name, last_name, is_staff,"
            " is_active, date_joined, username, email, email_verified)"
            " SELECT '!', false, '', '', false, true, %s, 'bench-user-' || g,"
            " 'bench-user-' || g || '@bench.test', true FROM generate_series(1, %s) g",
            [now, users],
        )
        token_columns = (
            f"INSERT INTO tokens_refreshtoken (id, token_digest, family, access_jti, {common},"
            " expires, family_expires, rotated_at, revoked_at)"
        )
        token_select = (
            " SELECT {id}, {digest}, md5('{kind}' || g)::uuid, '{marker}', '', %(scope)s, {reason},"
            f" %(client)s, {user}, {{created}}, {{expires}}, {{family_expires}}, {{rotated}},"
            " {revoked} FROM generate_series(1, {n}) g"
        )
        p = {"scope": LIVE_SCOPE, "client": client.pk, "now": now}

        def tokens(n, ident, prefix, kind, marker, created, expires, family, rotated, revoked):
            reason = f"CASE WHEN ({revoked}) IS NOT NULL THEN 'revoked' ELSE '' END"
            return token_select.format(
                n=int(n),
                id=ident,
                digest=_digest(prefix),
                kind=kind,
                marker=marker,
                reason=reason,
                created=created,
                expires=expires,
                family_expires=family,
                rotated=rotated,
                revoked=revoked,
            )

        ago = "%(now)s - interval '{}'".format
        ahead = "%(now)s + interval '{}'".format
        # Stale, a mix of the three ways a row goes (tokens/expiry.py _stale_refresh_tokens):
        # g % 4 in (0, 1): the family's live end idled out two days ago;
        # g % 4 = 2: a rotated row of a family past its absolute lifetime two days ago;
        # g % 4 = 3: revoked two days ago (though its expiry is still ahead).
        stale_case = "CASE g %% 4 {}END".format
        statements = [
            tokens(
                stale,
                stale_id,
                "bench-stale-",
                "stale",
                "seed-stale",
                stale_case(
                    f"WHEN 2 THEN {ago('32 days')} WHEN 3 THEN {ago('50 hours')} "
                    f"ELSE {ago('9 days')} "
                ),
                stale_case(
                    f"WHEN 2 THEN {ago('25 days')} WHEN 3 THEN {ahead('5 days')} "
                    f"ELSE {ago('2 days')} "
                ),
                stale_case(f"WHEN 2 THEN {ago('2 days')} ELSE {ahead('20 days')} "),
                stale_case(f"WHEN 2 THEN {ago('31 days')} ELSE NULL "),
                f"CASE WHEN g %% 4 = 3 THEN {ago('2 days')} END",
            ),
            # Live: usable now; their values are bench-live-<g>.
            tokens(
                live,
                live_id,
                "bench-live-",
                "live",
                "seed-live",
                ago("1 hour"),
                "%(now)s + interval '1 day' + (g %% 144) * interval '1 hour'",
                ahead("30 days"),
                "NULL",
                "NULL",
            ),
        ]
        # Kept: no longer usable, but inside a retention window (replay detection), so the
        # janitor must leave them: idle-expired 12 h ago / rotated an hour ago / revoked an hour
        # ago / family past its lifetime 12 h ago.
        quarter = keep // 4
        kinds = [
            (ago("12 hours"), ahead("20 days"), "NULL", "NULL"),
            (ahead("3 days"), ahead("20 days"), ago("1 hour"), "NULL"),
            (ahead("3 days"), ahead("20 days"), "NULL", ago("1 hour")),
            (ago("13 hours"), ago("12 hours"), ago("2 days"), "NULL"),
        ]
        for number, (expires, family, rotated, revoked) in enumerate(kinds):
            first = seed_max + number * quarter
            statements.append(
                tokens(
                    quarter,
                    f"{first} + g",
                    f"bench-keep-{number}-",
                    f"keep{number}",
                    "seed-keep",
                    ago("3 days"),
                    expires,
                    family,
                    rotated,
                    revoked,
                )
            )
        token_seed_max = seed_max + 4 * quarter

        # One statement, in id order: the heap's physical order is the ids' order, so with the
        # interleaved layout stale and live rows really do share pages.
        cursor.execute("SET LOCAL work_mem = '512MB'")
        started = time.monotonic()
        everything = (
            token_columns
            + " SELECT * FROM ("
            + " UNION ALL ".join(statements)
            + ") AS seeded ORDER BY 1"
        )
        _bulk_insert(cursor, "tokens_refreshtoken", [(everything, p)])
        cursor.execute(
            "SELECT setval(pg_get_serial_sequence('tokens_refreshtoken', 'id'), %s)",
            [token_seed_max],
        )
        tokens_seconds = time.monotonic() - started

        # Authorization codes: stale = expired 2 h ago (retention is 1 h); live = unexpired,
        # or used and expired 30 min ago (kept for replay detection).
        code_sql = (
            "INSERT INTO tokens_authorizationcode (code_digest, client_id, user_id, sid,"
            " redirect_uri, scope, nonce, code_challenge, code_challenge_method, auth_time, amr,"
            " created, expires, used_at, access_jti)"
            " SELECT {digest}, %(client)s, {user}, '', 'https://client.bench.test/callback',"
            " 'openid', '', '', '', %(now)s, '[]', {created}, {expires}, {used}, '{marker}'"
            " FROM generate_series(1, %(n)s) g"
        )
        code_statements = [
            (
                code_sql.format(
                    digest=_digest("bench-code-stale-"),
                    user=user,
                    created=ago("2 hours 1 minute"),
                    expires=ago("2 hours"),
                    used=f"CASE WHEN g %% 2 = 0 THEN {ago('2 hours 1 minute')} END",
                    marker="seed-stale",
                ),
                {**p, "n": args.codes},
            ),
            (
                code_sql.format(
                    digest=_digest("bench-code-live-"),
                    user=user,
                    created=f"CASE WHEN g %% 2 = 0 THEN {ago('31 minutes')} ELSE %(now)s END",
                    expires=f"CASE WHEN g %% 2 = 0 THEN {ago('30 minutes')} "
                    f"ELSE {ahead('10 minutes')} END",
                    used=f"CASE WHEN g %% 2 = 0 THEN {ago('30 minutes')} END",
                    marker="seed-live",
                ),
                {**p, "n": args.live_codes},
            ),
        ]
        _bulk_insert(cursor, "tokens_authorizationcode", code_statements)

        # Sessions: stale = expired a day ago (signed in: they have a sid, so the purge
        # announces them) or ended 30 days ago (retention is 7); live = active, or ended a day
        # ago (still shown to operators).
        session_sql = (
            "INSERT INTO accounts_usersession (session_key, session_data, expire_date, sid,"
            " user_id, created, last_seen, user_agent, auth_time, amr, revoked_at, ended_by,"
            " end_reason)"
            " SELECT {digest}, '', {expire_date}, '{kind}-sid-' || g, {user}, {created},"
            " {created}, '{marker}', {created}, '[\"pwd\"]', {revoked}, {ended_by}, ''"
            " FROM generate_series(1, %(n)s) g"
        )
        session_statements = [
            (
                session_sql.format(
                    digest=_digest("bench-session-stale-"),
                    expire_date=f"CASE WHEN g %% 4 = 3 THEN {ahead('1 day')} "
                    f"ELSE {ago('1 day')} END",
                    kind="stale",
                    user=user,
                    created=ago("15 days"),
                    marker="seed-stale",
                    revoked=f"CASE WHEN g %% 4 = 3 THEN {ago('30 days')} END",
                    ended_by="CASE WHEN g %% 4 = 3 THEN 'person' ELSE '' END",
                ),
                {**p, "n": args.sessions},
            ),
            (
                session_sql.format(
                    digest=_digest("bench-session-live-"),
                    expire_date=ahead("7 days"),
                    kind="live",
                    user=user,
                    created=ago("7 days"),
                    marker="seed-live",
                    revoked=f"CASE WHEN g %% 4 = 3 THEN {ago('1 day')} END",
                    ended_by="CASE WHEN g %% 4 = 3 THEN 'person' ELSE '' END",
                ),
                {**p, "n": args.live_sessions},
            ),
        ]
        _bulk_insert(cursor, "accounts_usersession", session_statements)
    seconds = time.monotonic() - started
    print(
        f"  refresh tokens inserted and indexed in {tokens_seconds:.1f} s; all in {seconds:.1f} s"
    )

    started = time.monotonic()
    with connection.cursor() as cursor:
        for table in (
            "accounts_user",
            "tokens_client",
            "tokens_refreshtoken",
            "tokens_authorizationcode",
            "accounts_usersession",
        ):
            cursor.execute(f'VACUUM ANALYZE "{table}"')
        # Write the seed out now, so the at-rest phase does not pay for it.
        cursor.execute("CHECKPOINT")
    print(f"  VACUUM ANALYZE and CHECKPOINT in {time.monotonic() - started:.1f} s")
    seeded = Seeded(client.client_id, secret, live, token_seed_max)
    seeded.counts = census()
    return seeded


def census() -> dict[str, int]:
    """Rows by seeded marker, per table (plus rows the server created since)."""
    from django.db import connection

    queries = {
        "tokens": "SELECT access_jti, count(*) FROM tokens_refreshtoken"
        " WHERE access_jti LIKE %s GROUP BY 1",
        "codes": "SELECT access_jti, count(*) FROM tokens_authorizationcode"
        " WHERE access_jti LIKE %s GROUP BY 1",
        "sessions": "SELECT user_agent, count(*) FROM accounts_usersession"
        " WHERE user_agent LIKE %s GROUP BY 1",
    }
    counts: dict[str, int] = {}
    with connection.cursor() as cursor:
        for table, sql in queries.items():
            cursor.execute(sql, ["seed-%"])
            for marker, count in cursor.fetchall():
                counts[f"{table}:{marker}"] = count
        cursor.execute(
            "SELECT count(*) FROM tokens_refreshtoken WHERE access_jti NOT LIKE %s", ["seed-%"]
        )
        counts["tokens:new"] = cursor.fetchone()[0]
    return counts


def still_stale() -> dict[str, int]:
    """Rows each kind's own Q still matches (after the purge: should be none)."""
    from django.utils import timezone

    from authserver.janitor import kinds

    now = timezone.now()
    found = kinds()
    return {
        name: found[name].queryset(now).count()
        for name in ("refresh_tokens", "authorization_codes", "sessions")
    }


def explain_first_batch(batch_size: int) -> list[str]:
    """EXPLAIN (ANALYZE, BUFFERS) of the janitor's first SELECT (it deletes nothing)."""
    from django.db import connection
    from django.utils import timezone

    from authserver.janitor import kinds

    query = kinds()["refresh_tokens"].queryset(timezone.now()).values_list("pk")[:batch_size]
    sql, params = query.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS, TIMING OFF) {sql}", params)
        return [row[0] for row in cursor.fetchall()]


# --- the server ---------------------------------------------------------------------------------
ACCESS_FORMAT = "%({x-bench-start}i)s %(D)s %(s)s"  # client's start, server's microseconds


# --- the load -----------------------------------------------------------------------------------
class Client:
    """One keep-alive ``http.client`` connection sending refresh_token grants (client_secret_basic).
    gunicorn's sync worker closes after each response; http.client then reconnects by itself,
    and that connect is part of the measured latency, as it is for any client of this setup."""

    def __init__(self, port: int, client_id: str, secret: str):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        credentials = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
        self.headers = {
            "Authorization": f"Basic {credentials}",
            "Content-Type": "application/x-www-form-urlencoded",
            "Accept": "application/json",
        }

    def refresh(self, value: str, started: float = 0.0) -> tuple[int, dict | None]:
        body = urlencode({"grant_type": "refresh_token", "refresh_token": value})
        headers = {**self.headers, "X-Bench-Start": f"{started:.6f}"}
        try:
            self.conn.request("POST", "/token", body, headers)
            response = self.conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException):
            self.conn.close()
            return 0, None
        try:
            return response.status, json.loads(data)
        except ValueError:
            return response.status, None


@dataclass
class Sample:
    start: float
    latency: float
    status: int


class Load:
    """``concurrency`` threads, closed loop, each live seeded token used exactly once."""

    def __init__(self, port: int, seeded: Seeded, concurrency: int, reserved: int):
        self.port, self.seeded, self.concurrency = port, seeded, concurrency
        pool = list(range(reserved + 1, seeded.live_tokens + 1))
        random.Random(5).shuffle(pool)  # noqa: S311 - random rows, no cache-friendly order
        self.pool, self.next = pool, itertools.count()
        self.samples: list[Sample] = []
        self.stop_event = threading.Event()
        self.threads: list[threading.Thread] = []

    def _run(self) -> None:
        client = Client(self.port, self.seeded.client_id, self.seeded.client_secret)
        while not self.stop_event.is_set():
            index = next(self.next)
            if index >= len(self.pool):
                break
            started = time.monotonic()
            status, body = client.refresh(f"bench-live-{self.pool[index]}", started)
            latency = time.monotonic() - started
            if status == 200 and not (body and body.get("refresh_token")):
                status = -200  # a 200 without a new refresh token is an error too
            self.samples.append(Sample(started, latency, status))

    def start(self) -> None:
        self.stop_event.clear()
        self.threads = [
            threading.Thread(target=self._run, daemon=True) for _ in range(self.concurrency)
        ]
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        for thread in self.threads:
            thread.join()

    def window(self, start: float, end: float) -> list[Sample]:
        return [s for s in self.samples if start <= s.start < end]

    @property
    def used(self) -> int:
        return min(next(self.next), len(self.pool))


def server_samples(access_path: Path) -> list[Sample]:
    """What gunicorn measured for each request (from the worker's first byte read to the last
    byte written: no client scheduling, no accept queue), keyed by the client's start time."""
    samples = []
    for line in access_path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] not in ("-", "0.000000"):
            samples.append(Sample(float(parts[0]), int(parts[1]) / 1e6, int(parts[2])))
    return samples


@dataclass
class LoadFigures:
    requests: int
    seconds: float
    errors: int
    p50: float
    p99: float
    max: float

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def figures(samples: list[Sample], seconds: float) -> LoadFigures:
    latencies = sorted(s.latency for s in samples)

    def quantile(q: float) -> float:
        if not latencies:
            return float("nan")
        return latencies[min(len(latencies) - 1, max(0, math.ceil(q * len(latencies)) - 1))]

    errors = sum(1 for s in samples if s.status != 200)
    return LoadFigures(
        len(samples),
        seconds,
        errors,
        quantile(0.50),
        quantile(0.99),
        latencies[-1] if latencies else float("nan"),
    )


# --- the purge process --------------------------------------------------------------------------
def purge_worker(args: argparse.Namespace) -> None:
    """Run in a child process: purge each kind until nothing remains, as ``expire_grants``
    and the re-enqueued Celery task do; print one JSON line of figures per kind."""
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.db import connection

    from authserver import janitor

    # Every statement the janitor runs, timed by its verb (SELECT / DELETE / UPDATE ...).
    statements: dict[str, list[float]] = {}

    def timed(execute, sql, params, many, context):
        started = time.monotonic()
        try:
            return execute(sql, params, many, context)
        finally:
            verb = sql.lstrip().split(None, 1)[0].upper()
            statements.setdefault(verb, []).append(time.monotonic() - started)

    all_kinds = janitor.kinds()
    for name in args.worker:
        statements.clear()
        kind = all_kinds[name]
        batch_times: list[float] = []
        last = [time.monotonic()]

        def progress(_deleted: int, batch_times=batch_times, last=last) -> None:
            now = time.monotonic()
            batch_times.append(now - last[0])
            last[0] = now

        deleted = batches = runs = 0
        longest = 0.0
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_current_wal_lsn()")
            wal_start = cursor.fetchone()[0]
        started = last[0] = time.monotonic()
        while True:
            with connection.execute_wrapper(timed):
                result = janitor.purge(
                    kind,
                    batch_size=args.batch_size,
                    max_batches=args.max_batches,
                    progress=progress,
                )
            runs += 1
            deleted += result.deleted
            batches += result.batches
            longest = max(longest, result.longest_statement)
            last[0] = time.monotonic()
            if not result.remaining:
                break
        ended = time.monotonic()
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)", [wal_start])
            wal_bytes = int(cursor.fetchone()[0])
        batch_times.sort()
        print(
            json.dumps(
                {
                    "kind": name,
                    "deleted": deleted,
                    "batches": batches,
                    "runs": runs,
                    "start": started,
                    "end": ended,
                    "seconds": ended - started,
                    "longest_statement": longest,
                    "batch_p50": batch_times[len(batch_times) // 2] if batch_times else 0.0,
                    "batch_max": batch_times[-1] if batch_times else 0.0,
                    "wal_bytes": wal_bytes,
                    "statements": {
                        verb: {"count": len(times), "max": max(times), "total": sum(times)}
                        for verb, times in statements.items()
                    },
                }
            ),
            flush=True,
        )


def run_purge(args: argparse.Namespace, kinds: list[str]) -> dict[str, dict]:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--database-url",
        args.database_url,
        "--batch-size",
        str(args.batch_size),
        "--max-batches",
        str(args.max_batches),
        "--worker",
        *kinds,
    ]
    # A Celery worker's settings: the default connection pool, production logging.
    completed = subprocess.run(
        command,
        cwd=ROOT,
        env=server_env(args, LOG_LEVEL="WARNING"),
        stdout=subprocess.PIPE,
        text=True,
        check=True,
        preexec_fn=pin(args.purge_cpu) if args.purge_cpu >= 0 else None,
    )
    results = {}
    for line in completed.stdout.splitlines():
        if line.startswith("{"):
            row = json.loads(line)
            results[row["kind"]] = row
    return results


# --- report -------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        purge_worker(args)
        return 0
    check_database_url(args.database_url)
    pin_self(1)  # the load generator (this process) shares CPU 1 with the purge process
    server = None
    log_dir = Path(tempfile.mkdtemp(prefix="bench-purge-"))
    busy = os.getloadavg()[0]
    if busy > 0.5:
        print(
            f"bench: warning: load average {busy:.2f} before starting; something else is using "
            "the CPUs, so the figures will be noisy (two cores: it matters)"
        )
    try:
        prepare_database(args)

        print(
            f"== seed: {args.stale:,} stale + {args.live:,} live + {args.keep:,} kept refresh "
            f"tokens ({args.layout}), {args.codes:,} + {args.live_codes:,} codes, "
            f"{args.sessions:,} + {args.live_sessions:,} sessions"
        )
        seeded = seed(args)
        before = seeded.counts
        print(f"  {json.dumps(before)}")
        if not args.no_explain:
            print(f"== EXPLAIN of the first batch's SELECT (batch size {args.batch_size})")
            for line in explain_first_batch(args.batch_size):
                print(f"  {line}")
        from django.db import connections

        connections.close_all()

        port = free_port()
        where = f"CPU {args.purge_cpu}" if args.purge_cpu >= 0 else "any CPU"
        config = GUNICORN_CONFIG.relative_to(ROOT) if GUNICORN_CONFIG.exists() else "no config"
        print(
            f"== gunicorn ({config}): 1 sync worker on 127.0.0.1:{port}, CPU 0; load on CPU 1, "
            f"purge process on {where}"
        )
        access_path = log_dir / "access.log"
        server = start_server(
            args,
            port,
            log_dir / "gunicorn.log",
            kind=REFERENCE_SERVER,
            access_path=access_path,
            access_format=ACCESS_FORMAT,
        )

        # Correctness first: a refresh answers 200 with a new refresh token, which works too.
        client = Client(port, seeded.client_id, seeded.client_secret)
        status, body = client.refresh("bench-live-1")
        first_ok = status == 200 and bool(body and body.get("refresh_token"))
        second_ok = False
        if first_ok:
            status2, body2 = client.refresh(body["refresh_token"])
            second_ok = status2 == 200 and bool(body2 and body2.get("refresh_token"))
        print(f"  refresh check: {'ok' if first_ok and second_ok else 'FAILED'} ({status})")
        if not (first_ok and second_ok):
            print(f"  response: {body!r}")
            show_log(log_dir)
            return 1
        checked_children = 2

        load = Load(port, seeded, args.concurrency, reserved=1)
        print(f"== warm-up {args.warmup_seconds:.0f} s, then at rest {args.rest_seconds:.0f} s")
        cpu = CpuSampler()
        cpu.start()
        load.start()
        time.sleep(args.warmup_seconds)
        rest_start = time.monotonic()
        time.sleep(args.rest_seconds)
        rest_end = time.monotonic()
        rest = figures(load.window(rest_start, rest_end), rest_end - rest_start)

        print(f"== purge refresh tokens under load (batch {args.batch_size:,})")
        purged = run_purge(args, ["refresh_tokens"])["refresh_tokens"]
        load.stop()
        during = figures(
            load.window(purged["start"], purged["end"]), purged["end"] - purged["start"]
        )
        cpu.stop()
        all_errors = sum(1 for s in load.samples if s.status != 200)
        all_ok = sum(1 for s in load.samples if s.status == 200)
        windows = {
            "at rest": (rest_start, rest_end),
            "during purge": (purged["start"], purged["end"]),
        }

        print("== purge authorization codes and sessions (no load)")
        purged_others = run_purge(args, ["authorization_codes", "sessions"])
        stop(server)
        server = None
        served = server_samples(access_path)
        server_side = {
            label: figures([s for s in served if start <= s.start < end], end - start)
            for label, (start, end) in windows.items()
        }
        cpu_use = {label: cpu.window(start, end) for label, (start, end) in windows.items()}

        after = census()
        remaining = still_stale()
    except (subprocess.CalledProcessError, RuntimeError) as error:
        print(f"bench: {error}", file=sys.stderr)
        show_log(log_dir)
        return 2
    finally:
        stop(server)
        release_database(args)

    shutil.rmtree(log_dir, ignore_errors=True)

    # --- figures and verdicts ---
    print()
    print("PURGE")
    rows = []
    for result in [purged, *purged_others.values()]:
        rate = result["deleted"] / result["seconds"] if result["seconds"] else 0.0
        rows.append(
            [
                result["kind"],
                f"{result['deleted']:,}",
                f"{result['batches']:,}",
                f"{result['seconds']:.2f}",
                f"{rate:,.0f}",
                ms(result["longest_statement"]),
                ms(max((f["max"] for f in result["statements"].values()), default=0.0)),
                ms(result["batch_p50"]),
                ms(result["batch_max"]),
            ]
        )
    table(
        [
            "kind",
            "rows",
            "batches",
            "seconds",
            "rows/s",
            "longest stmt ms",
            "any stmt ms",
            "batch p50 ms",
            "batch max ms",
        ],
        rows,
    )
    for result in [purged, *purged_others.values()]:
        parts = [f"WAL {result['wal_bytes'] / 2**20:,.0f} MiB"] + [
            f"{verb} x{figure['count']:,}: max {ms(figure['max'])} ms, total {figure['total']:.2f} s"
            for verb, figure in sorted(result["statements"].items())
        ]
        print(f"  {result['kind']}: {'; '.join(parts)}")
    print(
        "  (longest stmt: PurgeResult.longest_statement, a batch's SELECT or DELETE; any stmt:"
        " every statement the purge ran, including the exists() that ends each run)"
    )
    print()
    print(f"TOKEN ENDPOINT (refresh_token grant, {args.concurrency} client threads, closed loop)")
    ratio = during.p99 / rest.p99 if rest.p99 else float("inf")
    server_ratio = (
        server_side["during purge"].p99 / server_side["at rest"].p99
        if server_side["at rest"].p99
        else float("inf")
    )
    table(
        [
            "phase",
            "seconds",
            "requests",
            "req/s",
            "p50 ms",
            "p99 ms",
            "max ms",
            "errors",
            "server p50",
            "server p99",
            "CPU busy %",
            "iowait %",
        ],
        [
            [
                label,
                f"{f.seconds:.1f}",
                f"{f.requests:,}",
                f"{f.rate:,.1f}",
                ms(f.p50),
                ms(f.p99),
                ms(f.max),
                f"{f.errors:,}",
                ms(server_side[label].p50),
                ms(server_side[label].p99),
                f"{cpu_use[label][0]:.0f}",
                f"{cpu_use[label][1]:.0f}",
            ]
            for label, f in (("at rest", rest), ("during purge", during))
        ],
    )
    print(
        f"  p99 during / p99 at rest = {ratio:.2f} (as the client sees it; "
        f"{server_ratio:.2f} as gunicorn times it)"
    )
    print(
        "  (p50/p99/max: the client's clock, connect included; server p50/p99: gunicorn's own"
        " request time, without the accept queue or the client's scheduling)"
    )

    # Correctness: every seeded live / kept row is still there, every stale one is gone, and
    # every successful refresh left exactly one new token.
    expected_new = all_ok + checked_children
    checks = [
        (
            "live refresh tokens deleted",
            before.get("tokens:seed-live", 0) - after.get("tokens:seed-live", 0),
            0,
        ),
        (
            "kept refresh tokens deleted",
            before.get("tokens:seed-keep", 0) - after.get("tokens:seed-keep", 0),
            0,
        ),
        ("new refresh tokens lost", expected_new - after.get("tokens:new", 0), 0),
        (
            "live codes deleted",
            before.get("codes:seed-live", 0) - after.get("codes:seed-live", 0),
            0,
        ),
        (
            "live sessions deleted",
            before.get("sessions:seed-live", 0) - after.get("sessions:seed-live", 0),
            0,
        ),
        ("stale refresh tokens left", after.get("tokens:seed-stale", 0), 0),
        ("stale codes left", after.get("codes:seed-stale", 0), 0),
        ("stale sessions left", after.get("sessions:seed-stale", 0), 0),
        ("rows any kind still calls stale", sum(remaining.values()), 0),
        ("stale refresh tokens purged", purged["deleted"], before.get("tokens:seed-stale", 0)),
        ("failed token requests", all_errors, 0),
    ]
    print()
    print("CORRECTNESS")
    correct = True
    for label, value, expected in checks:
        ok = value == expected
        correct &= ok
        print(f"  {'ok  ' if ok else 'FAIL'} {label}: {value:,} (expected {expected:,})")
    print(f"  ({load.used + 1:,} seeded live tokens used by the load, each once)")

    live_deleted = sum(value for label, value, _ in checks if label.endswith("deleted"))
    print()
    print("TARGETS")
    stale_rows = before.get("tokens:seed-stale", 0)
    targets = [
        (
            f"{stale_rows:,} stale refresh tokens purged in under {TARGET_SECONDS:.0f} s",
            purged["seconds"] < TARGET_SECONDS,
            f"{purged['seconds']:.1f} s, {purged['deleted'] / purged['seconds']:,.0f} rows/s",
        ),
        (
            f"token endpoint p99 during the purge <= {TARGET_P99_RATIO:.0f}x at rest",
            ratio <= TARGET_P99_RATIO,
            f"{ms(during.p99)} ms vs {ms(rest.p99)} ms = {ratio:.2f}x",
        ),
        (
            "zero live rows deleted",
            live_deleted == 0,
            f"{live_deleted:,} live or kept rows deleted (tokens, codes, sessions)",
        ),
    ]
    for label, ok, detail in targets:
        print(f"  {'PASS' if ok else 'FAIL'}  {label}: {detail}")
    return 0 if correct else 1


if __name__ == "__main__":
    sys.exit(main())
