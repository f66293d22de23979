"""Access tokens this process found live, kept until anything that could end one changes.

Whether an access token is live (its client and person active, its ``jti`` not deny-listed, its
browser session alive: tokens/access_tokens.py) was one statement per introspection, and that
statement, with the connection it needs, was over half of introspection's cost. A resource
server presents the same token many times, and revocations are rare. So each process keeps the
tokens it found live, by ``jti``, until the earliest of: the token's ``exp``, its session's
expiry, and ``ACCESS_TOKEN_LIVENESS_CACHE`` seconds. It forgets all of them the moment
PostgreSQL says something changed:

- Triggers (tokens/migrations/0015_liveness_notify.py) on the four tables that decide it send
  ``NOTIFY authserver_liveness`` in the transaction that ends a session, deactivates or deletes
  a person or a client, or deny-lists a token, whoever writes it (the revocation service, the
  admin, the janitor, SQL by hand); PostgreSQL delivers it when that transaction commits.
- Each process LISTENs on a connection of its own, and every check first reads whatever has
  arrived on it (a poll that does not wait; no thread). A check that starts once a revocation's
  notification has reached the process never answers from memory, so a revocation is exact
  everywhere from the moment PostgreSQL has delivered it, well under a millisecond after commit.
- The revocation service also drops this process's memory itself, at once and on commit, so
  the process that revokes never waits for its own notification.
- Nothing is kept, and every check asks the rows, while the listening connection is down (it
  is retried once a second and, once back, starts from an empty memory), inside a transaction
  (which may see its own uncommitted revocation, announced to no one yet), on SQLite (the
  quick start), or with the setting at 0.

TCP keepalives on the listening connection find a dead PostgreSQL host within ~25 s; the
setting bounds how long an answer can outlive a connection that died without a word.
"""

from __future__ import annotations

import logging
import os
import select
import threading
import time

import psycopg
from django.conf import settings
from django.db import connection, transaction

logger = logging.getLogger(__name__)

CHANNEL = "authserver_liveness"
SIZE = 50_000  # tokens remembered per process; the oldest go first
RETRY_SECONDS = 1.0
# libpq options of Django's own connection the listening one must not take.
_NOT_LIBPQ = {"cursor_factory", "context", "prepare_threshold", "pool", "server_side_binding"}
_KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
}


class _View:
    def __init__(self) -> None:
        self.pid = os.getpid()
        self.lock = threading.Lock()
        self.generation = 0
        self.live: dict[str, tuple[int, float]] = {}  # jti -> (generation, until: epoch s)
        self.listener = None  # a psycopg connection LISTENing on CHANNEL
        self.poller = None  # select.poll() on its socket (no FD_SETSIZE limit, unlike select)
        self.retry_at = 0.0

    # --- the listening connection (callers hold self.lock) ---
    def _forget(self) -> None:
        self.generation += 1
        self.live.clear()

    def _listen(self) -> bool:
        if time.monotonic() < self.retry_at:
            return False
        params = {
            k: v for k, v in connection.get_connection_params().items() if k not in _NOT_LIBPQ
        }
        try:
            listener = psycopg.connect(**{**_KEEPALIVES, **params}, autocommit=True)
            listener.execute(f"LISTEN {CHANNEL}")
        except Exception as error:  # PostgreSQL away: the rows answer (or fail) as before
            self.retry_at = time.monotonic() + RETRY_SECONDS
            logger.debug("Cannot listen for revocations (%s); asking the rows", error)
            return False
        self.listener = listener
        self.poller = select.poll()
        self.poller.register(listener.pgconn.socket, select.POLLIN)
        self._forget()  # what changed while nobody listened is unknown
        return True

    def _lost(self, error: Exception) -> None:
        logger.warning("Stopped hearing revocations (%s); asking the rows until back", error)
        try:
            self.listener.close()
        except Exception:
            logger.debug("Closing the lost listening connection failed", exc_info=True)
        self.listener = None
        self._forget()
        self.retry_at = time.monotonic() + RETRY_SECONDS

    def heard(self) -> bool:
        """Read what has arrived (without waiting); True while the memory may be used."""
        if self.listener is None and not self._listen():
            return False
        pgconn = self.listener.pgconn
        try:
            if self.poller.poll(0):  # data, or the connection closed
                pgconn.consume_input()
                arrived = False
                while pgconn.notifies() is not None:
                    arrived = True
                if arrived:
                    self._forget()
            if pgconn.status != psycopg.pq.ConnStatus.OK:
                raise ConnectionError("the listening connection is not open")
        except Exception as error:
            self._lost(error)
            return False
        return True

    # --- what callers use ---
    def lookup(self, jti: str, now: float) -> tuple[bool, int | None]:
        with self.lock:
            if not self.heard():
                return False, None
            entry = self.live.get(jti)
            known = entry is not None and entry[0] == self.generation and now < entry[1]
            return known, self.generation

    def remember(self, jti: str, generation: int, until: float) -> None:
        with self.lock:
            if generation != self.generation:
                return  # something changed while the rows were read: they may be stale
            if len(self.live) >= SIZE:
                self.live.pop(next(iter(self.live)))
            self.live[jti] = (generation, until)

    def forget(self) -> None:
        with self.lock:
            self._forget()


_view: _View | None = None
_inherited: list[_View] = []  # a forked child keeps its parent's connection, never closes it
_start = threading.Lock()


def _this_process() -> _View | None:
    global _view
    view = _view
    if view is not None and view.pid == os.getpid():
        return view
    if connection.vendor != "postgresql":
        return None
    with _start:
        if _view is None or _view.pid != os.getpid():
            if _view is not None:
                _inherited.append(_view)  # closing it would end the parent's LISTEN
            _view = _View()
        return _view


def lookup(jti: str) -> tuple[bool, int | None]:
    """Before asking the rows about ``jti``: (known live, the generation to ``remember`` what
    the rows say under, or None to keep nothing)."""
    if settings.ACCESS_TOKEN_LIVENESS_CACHE <= 0 or connection.in_atomic_block:
        return False, None
    view = _this_process()
    return view.lookup(jti, time.time()) if view is not None else (False, None)


def remember(jti: str, generation: int, until: float) -> None:
    """The rows said ``jti`` is live, for a lookup that returned ``generation``; keep it until
    ``until`` (epoch seconds), at most the setting's seconds from now."""
    view = _this_process()
    if view is not None:
        view.remember(
            jti, generation, min(until, time.time() + settings.ACCESS_TOKEN_LIVENESS_CACHE)
        )


def close() -> None:
    """Stop listening (the test database cannot be dropped while a session is connected)."""
    view = _this_process()
    if view is not None:
        with view.lock:
            if view.listener is not None:
                view.listener.close()
                view.listener = None
                view._forget()


def changed() -> None:
    """This process revoked something: forget now, and again once committed (a check between
    the two may have read the rows as they were before the commit)."""
    view = _this_process()
    if view is None:
        return
    view.forget()
    transaction.on_commit(view.forget)
