"""The peer of ``bench/tokens.py --peer node-oidc-provider``: what it takes to run it.

node-oidc-provider (bench/peers/node-oidc-provider/: server.mjs, seed.mjs, its PostgreSQL
adapter) is installed with ``npm ci`` from its lock file when node_modules is missing or holds
another version, gets a PostgreSQL database of its own (ours with ``_node`` appended: created,
seeded, dropped), is seeded through the provider's own models, served by one node process
(NODE_ENV=production) pinned to CPU 0 like our worker, checked with one plain request per
scenario and counted in its database afterwards. bench/tokens.py measures it with the same wrk
scripts, settings and CPU accounting as ours (``scenarios``).
"""

# ruff: noqa: S603

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from common import (
    ROOT,
    Check,
    check_database_url,
    create_database,
    database_name,
    drop_database,
    pin,
    request,
    wait_until_ready,
)

PEERS = ("node-oidc-provider",)
NODE_DIR = ROOT / "bench" / "peers" / "node-oidc-provider"
PACKAGE = "oidc-provider"
MIN_NODE = (20, 19)  # oidc-provider 9's engines (it prefers 22 LTS and says so once, at start)
# Refresh tokens seeded per second of warm-up + duration and round: node-oidc-provider's own
# figure on the machine was 460/s, so this leaves a wide margin.
SEED_RATE = 2_000
# Ours that the peer does too, in bench/tokens.py's order.
SCENARIOS = ("client_credentials", "introspection", "refresh")


class PeerUnavailable(RuntimeError):
    """The peer cannot run here (no node or npm, too old a node): what to do, in words."""


@dataclass
class Seeded:
    client_id: str
    client_basic: str  # base64 of id:secret, for HTTP Basic
    resource_basic: str
    account: str
    cc_scope: str
    refresh_scope: str  # of the seeded refresh tokens' grants
    tokens: int  # rt-1 ... rt-<tokens>
    access_token: str  # the one introspected
    seconds: float


@dataclass
class Peer:
    name: str
    node: str  # the node binary
    version: str  # of the oidc-provider package installed
    database_url: str
    seeded: Seeded | None = None
    counts: dict[str, int] = field(default_factory=dict)  # census(), before the database goes

    @property
    def database(self) -> str:
        return database_name(self.database_url)


def peer_database_url(url: str) -> str:
    """Ours with ``_node`` appended to the database name (so it contains 'bench' too)."""
    parts = urlsplit(url)
    peer = urlunsplit(parts._replace(path=f"/{database_name(url)}_node"))
    check_database_url(peer)
    return peer


def seed_count(args: argparse.Namespace) -> int:
    return int(SEED_RATE * (args.warmup + args.duration) * args.rounds * 1.1) + 1_000


# --- installing -----------------------------------------------------------------------------
def _locked_version() -> str:
    lock = json.loads((NODE_DIR / "package-lock.json").read_text())
    return lock["packages"][f"node_modules/{PACKAGE}"]["version"]


def _installed_version() -> str | None:
    try:
        return json.loads((NODE_DIR / "node_modules" / PACKAGE / "package.json").read_text())[
            "version"
        ]
    except (OSError, ValueError, KeyError):
        return None


def install(name: str, database_url: str) -> Peer:
    """node and npm found (PeerUnavailable saying what to do if not), the packages of the lock file
    installed (``npm ci``) unless node_modules already holds them."""
    if name not in PEERS:
        raise PeerUnavailable(f"unknown peer {name!r} (known: {', '.join(PEERS)})")
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        missing = " and ".join(what for what, path in (("node", node), ("npm", npm)) if not path)
        raise PeerUnavailable(
            f"--peer {name} needs Node.js {'.'.join(map(str, MIN_NODE))} or later and "
            f"npm; {missing} not found on the PATH (Debian: apt-get install nodejs npm)"
        )
    found = subprocess.run([node, "--version"], capture_output=True, text=True, check=True)
    version = tuple(int(part) for part in found.stdout.strip().lstrip("v").split(".")[:2])
    if version < MIN_NODE:
        raise PeerUnavailable(
            f"--peer {name} needs Node.js {'.'.join(map(str, MIN_NODE))} or later, "
            f"found {found.stdout.strip()}"
        )
    locked = _locked_version()
    if _installed_version() != locked:
        print(f"== {name}: npm ci in {NODE_DIR.relative_to(ROOT)} ({PACKAGE} {locked})", flush=True)
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=NODE_DIR, check=True
        )
    return Peer(name, node, locked, peer_database_url(database_url))


# --- database, seed, server ---------------------------------------------------------------------
def _env(peer: Peer) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("DEBUG", None)  # the `debug` package node-oidc-provider logs through
    env.update(NODE_ENV="production", DATABASE_URL=peer.database_url)
    return env


def seed(peer: Peer, count: int) -> Seeded:
    """The peer's database created afresh, its table made and ``count`` refresh tokens
    rt-1 ... rt-<count> (each of its own grant) and one access token seeded by seed.mjs."""
    create_database(peer.database_url)
    completed = subprocess.run(
        [peer.node, "seed.mjs", str(count)],
        cwd=NODE_DIR,
        env=_env(peer),
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"{peer.name}: seed.mjs failed ({completed.returncode}):\n"
                           f"{completed.stderr[-2000:]}")  # fmt: skip
    peer.seeded = Seeded(**json.loads(completed.stdout))
    return peer.seeded


def start(peer: Peer, port: int, log_path: Path) -> subprocess.Popen:
    """One node process on 127.0.0.1:``port``, pinned to CPU 0 as our worker is."""
    log = open(log_path, "wb")  # kept open for the child's lifetime
    process = subprocess.Popen(
        [peer.node, "server.mjs", str(port)],
        cwd=NODE_DIR,
        env=_env(peer),
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=pin(0),  # sched_setaffinity only, before exec
    )
    return wait_until_ready(process, port, "/.well-known/openid-configuration", peer.name, log_path)


def release(peer: Peer, keep: bool) -> None:
    if not keep:
        drop_database(peer.database_url)
        print(f"== database {peer.database} dropped")


def scenarios(seeded: Seeded, threads: int) -> dict[str, tuple[str, str, Callable[[int], list]]]:
    """What bench/tokens.py runs against the peer: (path, script, the script's arguments given
    the first seeded index). The same scripts as ours: node-oidc-provider's requests have the
    same shape, only the introspection path differs (/token/introspection, its default)."""
    return {
        "client_credentials": (
            "/token",
            "client_credentials.lua",
            lambda first: [seeded.client_basic, seeded.cc_scope],
        ),
        "introspection": (
            "/token/introspection",
            "introspect.lua",
            lambda first: [seeded.resource_basic, seeded.access_token],
        ),
        "refresh": ("/token", "refresh.lua", lambda first: [seeded.client_basic, first, threads]),
    }


# --- checks -------------------------------------------------------------------------------------
def _sql(peer: Peer, statement: str, params: tuple | None = None) -> list[tuple]:
    import psycopg

    with psycopg.connect(peer.database_url, autocommit=True) as conn:
        return conn.execute(statement, params).fetchall()


def _jwt_header(value: str) -> dict:
    try:
        part = value.split(".")[0]
        return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    except (IndexError, ValueError):
        return {}


def correctness(peer: Peer, port: int) -> list[Check]:
    """One plain request per scenario, its answer checked (and rt-1's rotation in the peer's
    database), as bench/tokens.py checks ours."""
    seeded = peer.seeded
    checks: list[Check] = []

    def add(label: str, ok: bool, status: int, body) -> None:
        detail = "" if ok else f"status {status}: {str(body)[:300]}"
        checks.append(Check(f"{peer.name} {label}", ok, detail))

    def bearer(body) -> bool:
        return (
            isinstance(body, dict)
            and isinstance(body.get("access_token"), str)
            and body.get("token_type") == "Bearer"
            and isinstance(body.get("expires_in"), int)
        )

    form = {"grant_type": "client_credentials", "scope": seeded.cc_scope}
    status, body = request(port, "POST", "/token", form, seeded.client_basic)
    ok = status == 200 and bearer(body) and body.get("scope") == seeded.cc_scope
    add(
        "client_credentials: a Bearer access token, no refresh token",
        ok and "refresh_token" not in body,
        status,
        body,
    )

    form = {"grant_type": "refresh_token", "refresh_token": "rt-1"}
    status, body = request(port, "POST", "/token", form, seeded.client_basic)
    new = body.get("refresh_token") if isinstance(body, dict) else None
    rows = _sql(
        peer,
        "SELECT id, consumed_at IS NOT NULL, (payload->>'rotations')::int FROM oidc_payloads"
        " WHERE type = 'RefreshToken' AND id IN ('rt-1', %s)",
        (new or "",),
    )
    state = {row[0]: row[1:] for row in rows}
    ok = (
        status == 200
        and bearer(body)
        and bool(new)
        and new != "rt-1"
        and state.get("rt-1", (False,))[0]  # consumed
        and state.get(new) == (False, 1)  # stored, one rotation
        and _jwt_header(body.get("id_token", "")).get("alg") == "RS256"
    )
    add(
        "refresh: a Bearer access token, a new refresh token and an RS256 ID token; rt-1 consumed",
        ok,
        status,
        body,
    )

    status, body = request(
        port, "POST", "/token/introspection", {"token": seeded.access_token}, seeded.resource_basic
    )
    ok = (
        status == 200
        and isinstance(body, dict)
        and body.get("active") is True
        and body.get("sub") == seeded.account
        and body.get("client_id") == seeded.client_id
    )
    add("introspection: the user access token is active, with its sub", ok, status, body)
    status, body = request(
        port, "POST", "/token/introspection", {"token": "not-a-token"}, seeded.resource_basic
    )
    add(
        "introspection: an unknown token is inactive",
        status == 200 and body == {"active": False},
        status,
        body,
    )
    return checks


def census(peer: Peer) -> dict[str, int]:
    """What the run did to the seeded rows, counted in the peer's database."""
    queries = {
        "seeded tokens left": "SELECT count(*) FROM oidc_payloads"
        " WHERE type = 'RefreshToken' AND id LIKE 'rt-%'",
        "tokens rotated": "SELECT count(*) FROM oidc_payloads"
        " WHERE type = 'RefreshToken' AND id LIKE 'rt-%' AND consumed_at IS NOT NULL",
        "tokens from rotation": "SELECT count(*) FROM oidc_payloads"
        " WHERE type = 'RefreshToken' AND (payload->>'rotations')::int = 1",
        "grants": "SELECT count(*) FROM oidc_payloads WHERE type = 'Grant'",
    }
    return {label: _sql(peer, sql)[0][0] for label, sql in queries.items()}


def consistency(peer: Peer, counts: dict[str, int]) -> list[Check]:
    """Every seeded refresh token used at most once and none revoked; the comparison with wrk's
    200s is bench/tokens.py's (used_as_answered)."""
    tokens = peer.seeded.tokens
    return [
        Check(
            f"{peer.name}: no refresh token or grant revoked (no replay detected)",
            counts["seeded tokens left"] == tokens and counts["grants"] == tokens + 1,
            f"{counts['seeded tokens left']:,} of {tokens:,} seeded tokens, "
            f"{counts['grants']:,} of {tokens + 1:,} grants",
        ),
        Check(
            f"{peer.name}: one new refresh token per rotation",
            counts["tokens rotated"] == counts["tokens from rotation"],
            f"{counts['tokens rotated']:,} rotated, {counts['tokens from rotation']:,} new",
        ),
    ]
