"""The production web server for a test: ``python -m authserver.server`` (docker/Dockerfile's
command) in a process of its own, on the test database and the test cache, on a free port."""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def database_url() -> str:
    db = connection.settings_dict
    return f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def wait_for(predicate, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def text(self) -> str:
        return self.body.decode()


@dataclass
class Web:
    process: subprocess.Popen
    port: int
    log_path: Path
    metrics_dir: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def workers(self) -> list[int]:
        """granian's worker processes: the master's children."""
        try:
            children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
            return [int(pid) for pid in children.read_text().split()]
        except OSError:
            return []

    def request(
        self,
        method: str,
        path: str,
        body: str | bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 5,
    ) -> Answer:
        """One request on a connection of its own."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body, {"Host": "127.0.0.1", **(headers or {})})
            response = conn.getresponse()
            return Answer(response.status, response.headers, response.read())
        finally:
            conn.close()

    def answers(self) -> bool:
        try:
            return self.request("GET", "/health/live", timeout=2).status == 200
        except OSError:
            return False


@contextmanager
def running(
    tmp_path: Path, *, app: str | None = None, workers: int = 1, **env: str
) -> Iterator[Web]:
    """The server with the suite's settings, ``workers`` processes, ``env`` on top; stopped
    (SIGTERM, as docker stop does) at the end unless the test already stopped it."""
    port = free_port()
    metrics = tmp_path / "metrics"
    environ = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "ALLOWED_HOSTS": "127.0.0.1",
        "LOG_LEVEL": "INFO",
        "WEB_CONCURRENCY": str(workers),
        "WEB_BIND": f"127.0.0.1:{port}",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics),
        # The static files this run collected (tests/conftest.py): pages need their manifest.
        "STATIC_ROOT": str(settings.STATIC_ROOT),
        **env,
    }
    log_path = tmp_path / "web.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "authserver.server", *([app] if app else [])],
            cwd=ROOT, env=environ, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    web = Web(process, port, log_path, metrics)
    try:
        deadline = time.monotonic() + 30
        while not (web.answers() and len(web.workers()) == workers):
            assert process.poll() is None, f"the server exited\n{web.log()[-4000:]}"
            assert time.monotonic() < deadline, f"the server did not start\n{web.log()[-4000:]}"
            time.sleep(0.1)
        yield web
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(40)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
