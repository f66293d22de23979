"""The production shape: docker/Dockerfile, docker/compose.yml and docker/gunicorn.conf.py.

There is no Docker engine in CI: compose files are checked with Debian's docker-compose (which
.ci/run installs), the Dockerfile by reading it, the gunicorn settings by running the file.
"""

import os
import re
import runpy
import shutil
import subprocess
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from gunicorn import glogging
from gunicorn.config import Config

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
    assert commands and "gunicorn" in commands[-1] and "docker/gunicorn.conf.py" in commands[-1]
    assert not any("migrate" in command for command in commands)
    # Secrets and local state stay out of the build context.
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {"**/.env", ".git", ".venv", "var", "tests"} <= set(ignored)


@pytest.fixture
def gunicorn_settings(monkeypatch):
    monkeypatch.delenv("WEB_CONCURRENCY", raising=False)
    return runpy.run_path(str(DOCKER / "gunicorn.conf.py"))


def test_gunicorn_settings_suit_a_container(gunicorn_settings, monkeypatch):
    assert 1 <= gunicorn_settings["workers"] <= 12
    assert gunicorn_settings["bind"] == ["0.0.0.0:8000"]
    assert (gunicorn_settings["timeout"], gunicorn_settings["graceful_timeout"]) == (30, 30)
    assert gunicorn_settings["max_requests"] > 0 and gunicorn_settings["max_requests_jitter"] > 0
    assert gunicorn_settings["worker_tmp_dir"] == "/dev/shm"
    assert gunicorn_settings["forwarded_allow_ips"] == "127.0.0.1,::1"
    assert issubclass(gunicorn_settings["logger_class"], glogging.Logger)
    monkeypatch.setenv("WEB_CONCURRENCY", "3")
    assert runpy.run_path(str(DOCKER / "gunicorn.conf.py"))["workers"] == 3


def test_the_access_log_format_names_no_query_string_header_or_cookie(gunicorn_settings):
    log_format = gunicorn_settings["access_log_format"]
    for atom in ("%(r)s", "%(q)s", "%(f)s", "%(u)s", "{authorization}", "{cookie}", "}o)s", "}e)s"):
        assert atom not in log_format


def access_line(settings: dict, log_format: str, path: str, query: str = "") -> str:
    """What gunicorn writes for one request, through the configured logger class."""
    cfg = Config()
    cfg.set("access_log_format", log_format)
    logger = settings["logger_class"](cfg)
    environ = {
        "REQUEST_METHOD": "GET",
        "RAW_URI": f"{path}?{query}" if query else path,
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "10.0.0.2",
        "HTTP_REFERER": "https://auth.example.test/authorize?state=REFERER-SECRET",
        "HTTP_USER_AGENT": "curl/8",
        "HTTP_AUTHORIZATION": "Basic ZGVtbzpCQVNJQy1TRUNSRVQ=",
    }
    request = SimpleNamespace(
        headers=[
            ("AUTHORIZATION", environ["HTTP_AUTHORIZATION"]),
            ("COOKIE", "authserver_session=COOKIE-SECRET"),
            ("X-FORWARDED-FOR", "203.0.113.9"),
        ]
    )
    response = SimpleNamespace(
        status="302 Found",
        sent=0,
        headers=[("Location", "https://rp.example/cb?code=LOCATION-SECRET")],
    )
    atoms = logger.atoms(response, request, environ, timedelta(milliseconds=12))
    return log_format % glogging.SafeAtoms(atoms)


def test_the_access_log_masks_reset_tokens_and_drops_secrets_whatever_the_format(
    gunicorn_settings,
):
    configured = access_line(
        gunicorn_settings, gunicorn_settings["access_log_format"], "/password-reset/MQ/cx1-abc123/"
    )
    assert '"GET /password-reset/MQ/***/ HTTP/1.1" 302' in configured
    assert "203.0.113.9" in configured and "cx1-abc123" not in configured

    # Even a format that asks for the request line, query, referer, user and headers gets "-".
    hostile = (
        "%(r)s %(q)s %(f)s %(u)s %({authorization}i)s %({cookie}i)s "
        "%({location}o)s %({http_authorization}e)s"
    )
    line = access_line(
        gunicorn_settings, hostile, "/password-reset/MQ/cx1-abc123/", "code=QUERY-SECRET"
    )
    assert line.startswith("GET /password-reset/MQ/***/ HTTP/1.1 - - - ")
    assert "SECRET" not in line and "cx1-abc123" not in line and "demo" not in line


def test_only_the_token_of_a_reset_path_is_masked(gunicorn_settings):
    clean_path = gunicorn_settings["clean_path"]
    assert clean_path("/password-reset/MQ/cx1-abc/") == "/password-reset/MQ/***/"
    assert clean_path("/password-reset/MQ/set-password/") == "/password-reset/MQ/set-password/"
    assert clean_path("/password-reset/sent/") == "/password-reset/sent/"
    assert clean_path("/token") == "/token"
    assert clean_path("/x\n1.2.3.4 - fake line") == "/x?1.2.3.4 - fake line"
