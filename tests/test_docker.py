"""The production shape: docker/Dockerfile, docker/compose.yml and the web server's settings.

There is no Docker engine in CI: compose files are checked with Debian's docker-compose (which
.ci/run installs), the Dockerfile by reading it, the server's settings by loading them (and the
server itself, started as the image starts it, in tests/test_server.py).
"""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from authserver import env
from authserver.logs import clean_path
from authserver.server import granian_options

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
SERVICES = ("postgres", "redis", "migrate", "web", "worker", "beat")


def compose(*args: str, env_file: Path = DOCKER / ".env.example") -> subprocess.CompletedProcess:
    executable = shutil.which("docker-compose")
    assert executable, "docker-compose is missing: apt-get install docker-compose (.ci/run does)"
    # Only PATH and HOME: the suite's own SECRET_KEY, DATABASE_URL… must not fill in ${...}.
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME")}
    return subprocess.run(
        [executable, "--env-file", str(env_file), "-f", str(DOCKER / "compose.yml"), *args],
        cwd=ROOT,
        env=keep,
        capture_output=True,
        text=True,
        timeout=60,
    )


def service_blocks(config: str) -> dict[str, str]:
    """Split `docker-compose config` output into the YAML text of each service."""
    services = ("\n" + config).split("\nservices:\n", 1)[1]
    blocks: dict[str, str] = {}
    name = None
    for line in services.splitlines():
        if line and not line.startswith(" "):
            break  # the next top-level key (volumes:, version:)
        heading = re.fullmatch(r"  ([A-Za-z0-9_.-]+):", line)
        if heading:
            name = heading.group(1)
            blocks[name] = ""
        elif name:
            blocks[name] += line + "\n"
    return blocks


def test_compose_file_renders_the_six_services_with_health_checks():
    result = compose("config")
    assert result.returncode == 0, result.stderr
    blocks = service_blocks(result.stdout)
    assert sorted(blocks) == sorted(SERVICES)
    for name in ("postgres", "redis", "web"):
        assert "    healthcheck:\n" in blocks[name] and "- NONE" not in blocks[name], name
    assert "pg_isready" in blocks["postgres"]
    assert "redis-cli" in blocks["redis"] and "ping" in blocks["redis"]
    assert "/health/ready" in blocks["web"]
    assert "command:\n    - python\n    - -m\n    - authserver.server\n" in blocks["web"]
    assert "stop_grace_period: 40s" in blocks["web"]  # past WEB_GRACEFUL_TIMEOUT's 30 s
    # web waits for the one-shot migration and never migrates itself.
    assert "migrate:\n        condition: service_completed_successfully" in blocks["web"]
    assert "migrate" not in blocks["web"].split("command:", 1)[1].split("depends_on:", 1)[0]
    assert "- migrate\n" in blocks["migrate"] and 'restart: "no"' in blocks["migrate"]
    assert "postgres:\n        condition: service_healthy" in blocks["migrate"]
    assert "- worker\n" in blocks["worker"] and "- beat\n" in blocks["beat"]
    for name in ("web", "worker", "beat"):
        assert "restart: unless-stopped" in blocks[name]
        assert 'DEBUG: "false"' in blocks[name]


def test_compose_refuses_to_render_without_a_secret_key(tmp_path):
    env_file = tmp_path / "env"
    example = (DOCKER / ".env.example").read_text()
    env_file.write_text(re.sub(r"(?m)^SECRET_KEY=.*\n", "", example))
    result = compose("config", env_file=env_file)
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) for each instruction, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (DOCKER / "Dockerfile").read_text())
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, arguments = line.partition(" ")
            instructions.append((keyword.upper(), arguments.strip()))
    return instructions


def test_dockerfile_is_multi_stage_runs_as_a_user_and_does_not_migrate():
    instructions = dockerfile_instructions()
    stages = [i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM"]
    assert len(stages) >= 2
    final = instructions[stages[-1] :]
    users = [arguments for keyword, arguments in final if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert any(k == "HEALTHCHECK" and "/health/live" in a for k, a in final)
    assert any(k == "EXPOSE" and a == "8000" for k, a in final)
    assert any(k == "RUN" and "collectstatic" in a for k, a in final)
    commands = [a for k, a in final if k in ("CMD", "ENTRYPOINT")]
    assert commands and commands[-1] == '["python", "-m", "authserver.server"]'
    assert not any("migrate" in command for command in commands)
    # Secrets and local state stay out of the build context.
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {"**/.env", ".git", ".venv", "var", "tests"} <= set(ignored)


# --- the web server's settings (authserver/server.py; through the real server: test_server.py) ---
def test_the_server_settings_suit_a_container():
    server = env.load_server({})
    assert 1 <= server.workers <= 12
    assert (server.host, server.port) == ("0.0.0.0", 8000)
    assert (server.timeout, server.graceful_timeout) == (30, 30)
    assert server.threads == 1 and server.max_rss_mib > 0
    assert server.metrics_dir == Path("/dev/shm/authserver-metrics")  # a tmpfs
    assert env.load_server({"WEB_CONCURRENCY": "3"}).workers == 3
    assert env.load_server({"PORT": "9000"}).port == 9000
    bound = env.load_server({"WEB_BIND": "[::1]:8001", "PORT": "9000"})
    assert (bound.host, bound.port) == ("::1", 8001)


def test_the_server_settings_list_every_problem_at_once():
    with pytest.raises(ImproperlyConfigured) as caught:
        env.load_server({"WEB_CONCURRENCY": "0", "WEB_THREADS": "8", "WEB_BIND": "localhost"})
    message = str(caught.value)
    assert "3 settings" in message
    assert "WEB_CONCURRENCY" in message and "WEB_BIND" in message
    assert "DATABASE_POOL_SIZE is 4" in message  # 8 threads would wait for 4 connections
    assert env.load_server({"WEB_THREADS": "8", "DATABASE_POOL_SIZE": "8"}).threads == 8


def test_granian_runs_http1_respawns_workers_stops_gracefully_and_logs_no_access():
    from granian.constants import HTTPModes, Interfaces

    options = granian_options(
        env.load_server({"WEB_THREADS": "2"}), log_json=True, log_level="INFO"
    )
    assert options["interface"] == Interfaces.WSGI and options["http"] == HTTPModes.http1
    assert options["blocking_threads"] == 2
    assert options["respawn_failed_workers"] is True
    assert options["workers_kill_timeout"] == 30  # as gunicorn's graceful_timeout
    assert options["http1_settings"].header_read_timeout == 5_000  # as gunicorn's keepalive
    assert options["workers_max_rss"] > 0
    assert options["log_access"] is False  # ours: authserver/logs.py
    handler = options["log_dictconfig"]["handlers"]["console"]
    assert handler["formatter"] == "json" and handler["filters"] == ["request_id", "redact"]


def test_only_the_token_of_a_reset_path_is_masked():
    assert clean_path("/password-reset/MQ/cx1-abc/") == "/password-reset/MQ/***/"
    assert clean_path("/password-reset/MQ/cx1-abc") == "/password-reset/MQ/***"
    assert clean_path("/password-reset/MQ/set-password/") == "/password-reset/MQ/set-password/"
    assert clean_path("/password-reset/sent/") == "/password-reset/sent/"
    assert clean_path("/token") == "/token"
    assert clean_path("/x\n1.2.3.4 - fake line") == "/x?1.2.3.4 - fake line"
    assert clean_path("/x\u2028y\x85z\x1b[31m") == "/x?y?z?[31m"
