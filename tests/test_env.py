"""Configuration: typed, bounded, and every problem reported at once."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from authserver import env

ROOT = Path(__file__).resolve().parent.parent

PRODUCTION = {
    "SECRET_KEY": "x" * 50,
    "ALLOWED_HOSTS": "auth.example.com",
    "ISSUER": "https://auth.example.com/",
    "DATABASE_URL": "postgres://app:s%40cret@db.internal:5433/auth?sslmode=require",
    "REDIS_URL": "redis://cache.internal:6379/0",
}


def problems(environ: dict) -> str:
    with pytest.raises(ImproperlyConfigured) as caught:
        env.load(environ)
    return str(caught.value)


def test_a_production_environment_parses_into_typed_settings():
    config = env.load(PRODUCTION)
    assert config.debug is False
    assert config.issuer == "https://auth.example.com"  # no trailing slash: it must match exactly
    db = config.database
    assert (db["ENGINE"], db["NAME"], db["USER"], db["PASSWORD"]) == (
        "django.db.backends.postgresql", "auth", "app", "s@cret",
    )  # fmt: skip
    assert (db["HOST"], db["PORT"], db["OPTIONS"]["sslmode"]) == ("db.internal", "5433", "require")
    assert db["OPTIONS"]["pool"]["max_size"] == 4
    assert db["OPTIONS"]["prepare_threshold"] == 5  # the hot statements may be prepared
    unprepared = env.load({**PRODUCTION, "DATABASE_PREPARED_STATEMENTS": "false"}).database
    assert unprepared["OPTIONS"]["prepare_threshold"] is None  # PgBouncer < 1.21
    assert config.cache["LOCATION"] == "redis://cache.internal:6379/0"
    assert config.broker_url == "redis://cache.internal:6379/0"
    assert config.login_failure_limit == 5 and config.hsts_seconds == 31_536_000


def test_debug_alone_gives_the_embedded_quick_start():
    config = env.load({"DEBUG": "true", "DATA_DIR": "/tmp/quick"})
    assert config.database["ENGINE"] == "django.db.backends.sqlite3"
    assert config.database["NAME"] == "/tmp/quick/db.sqlite3"
    assert config.broker_url == "filesystem://"
    assert config.cache["BACKEND"].endswith("LocMemCache")
    assert config.issuer == "http://127.0.0.1:8000"


def test_an_empty_production_environment_lists_every_missing_setting_at_once():
    message = problems({})
    for name in (
        "SECRET_KEY",
        "ALLOWED_HOSTS",
        "ISSUER",
        "DATABASE_URL",
        "CACHE_URL",
        "CELERY_BROKER_URL",
    ):
        assert f"- {name}:" in message
    assert "6 settings to fix" in message


def test_bad_values_are_named_with_how_to_fix_them_and_passwords_are_not_echoed():
    message = problems(
        {
            **PRODUCTION,
            "DATABASE_URL": "mysql://root:hunter2@db/auth",
            "LOGIN_FAILURE_LIMIT": "0",
            "SESSION_MAX_AGE": "forever",
            "DEBUG": "maybe",
            "ISSUER": "http://auth.example.com",
            "EMAIL_URL": "carrier-pigeon://",
        }
    )
    assert "DATABASE_URL: 'mysql://root:***@db/auth' is not a database URL" in message
    assert "hunter2" not in message
    assert "LOGIN_FAILURE_LIMIT: 0 is out of range. Use a number from 1 to 1000." in message
    assert "SESSION_MAX_AGE: 'forever' is not a whole number" in message
    assert "DEBUG: 'maybe' is not a boolean" in message
    assert "ISSUER: must use https when DEBUG is off." in message
    assert "EMAIL_URL:" in message


def test_smtp_email_settings_come_from_one_url():
    config = env.load({**PRODUCTION, "EMAIL_URL": "smtp://mailer:p%2Fw@smtp.example.com"})
    assert config.email["EMAIL_HOST"] == "smtp.example.com"
    assert config.email["EMAIL_PORT"] == 587 and config.email["EMAIL_USE_TLS"] is True
    assert config.email["EMAIL_HOST_PASSWORD"] == "p/w"


def run_manage(*args: str, **environ: str) -> subprocess.CompletedProcess:
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**keep, **environ},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_bad_database_url_stops_start_up_with_one_clear_message():
    result = run_manage(
        "check", **{**PRODUCTION, "DATABASE_URL": "postgres//db/auth", "SECRET_KEY": "short"}
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "The server cannot start: 2 settings to fix" in result.stderr
    assert "- DATABASE_URL:" in result.stderr and "- SECRET_KEY: is too short" in result.stderr


@pytest.mark.parametrize(("debug", "secure"), [("false", "True"), ("true", "False")])
def test_cookies_are_secure_exactly_when_debug_is_off(debug, secure):
    result = run_manage(
        "shell",
        "-c",
        "from django.conf import settings as s; print(s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE)",
        **{**PRODUCTION, "DEBUG": debug},
    )
    assert result.stdout.split()[-2:] == [secure, secure], result.stderr


def test_registration_token_rotation_is_on_update_unless_set_and_refuses_anything_else():
    """RFC 7592 §3: REGISTRATION_TOKEN_ROTATION is never, on_update (default) or on_every_use."""
    assert env.load(PRODUCTION).registration_token_rotation == "on_update"
    for value in ("never", "on_update", "ON_EVERY_USE"):
        config = env.load({**PRODUCTION, "REGISTRATION_TOKEN_ROTATION": value})
        assert config.registration_token_rotation == value.lower()
    message = problems({**PRODUCTION, "REGISTRATION_TOKEN_ROTATION": "on_read"})
    assert (
        "REGISTRATION_TOKEN_ROTATION: 'on_read' is not one of never, on_update, on_every_use"
        in (message)
    )


@pytest.mark.parametrize(
    "issuer",
    ["http://127.0.0.1:8000", "http://127.0.0.1", "http://[::1]:8443/", "http://localhost:9000/op"],
)
def test_allow_http_issuer_on_loopback_accepts_an_http_loopback_issuer_with_debug_off(issuer):
    config = env.load({**PRODUCTION, "ISSUER": issuer, "ALLOW_HTTP_ISSUER_ON_LOOPBACK": "true"})
    assert config.debug is False
    assert config.issuer == issuer.rstrip("/")
    # Nothing else follows from it: back-channel logout still refuses private networks.
    assert config.backchannel_logout_allow_private_networks is False


@pytest.mark.parametrize(
    "issuer",
    [
        "http://auth.example.com",
        "http://127.0.0.1.example.com",  # a public name that starts like the loopback address
        "http://localhost.example.com:8000",
        "http://127.0.0.1@evil.example",  # user information: the host is evil.example
        "http://localhost:8000@evil.example",
        "http://10.0.0.5:8000",
        "http://0.0.0.0:8000",
        "http://127.0.0.1:99999",  # not a port
    ],
)
def test_allow_http_issuer_on_loopback_refuses_every_other_host(issuer):
    message = problems({**PRODUCTION, "ISSUER": issuer, "ALLOW_HTTP_ISSUER_ON_LOOPBACK": "true"})
    assert (
        "ISSUER: must use https when DEBUG is off; ALLOW_HTTP_ISSUER_ON_LOOPBACK allows" in message
    )
    assert "1 setting to fix" in message


def test_an_http_loopback_issuer_needs_the_setting_when_debug_is_off():
    message = problems({**PRODUCTION, "ISSUER": "http://127.0.0.1:8000"})
    assert "ISSUER: must use https when DEBUG is off." in message
    assert "1 setting to fix" in message
    message = problems({**PRODUCTION, "ALLOW_HTTP_ISSUER_ON_LOOPBACK": "sometimes"})
    assert "ALLOW_HTTP_ISSUER_ON_LOOPBACK: 'sometimes' is not a boolean" in message


def test_a_loopback_http_issuer_keeps_every_other_production_default():
    """The setting changes the scheme the issuer may use and nothing else: cookies stay Secure
    (browsers keep and send them to http://127.0.0.1 and localhost, which they treat as secure
    contexts), HSTS stays on (Django sends it only over https, so never on this run), the
    manifest static storage and the DEBUG-off error pages stay."""
    result = run_manage(
        "shell",
        "-c",
        "from django.conf import settings as s; print(s.DEBUG, s.ISSUER, s.SESSION_COOKIE_SECURE,"
        " s.CSRF_COOKIE_SECURE, s.SECURE_HSTS_SECONDS, s.CSRF_TRUSTED_ORIGINS,"
        " s.BACKCHANNEL_LOGOUT_ALLOW_PRIVATE_NETWORKS)",
        **{**PRODUCTION, "ISSUER": "http://127.0.0.1:8000", "ALLOW_HTTP_ISSUER_ON_LOOPBACK": "1"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == (
        "False http://127.0.0.1:8000 True True 31536000 ['http://127.0.0.1:8000'] False"
    )


def test_backchannel_logout_to_private_networks_is_a_setting_that_defaults_to_debug():
    assert env.load({"DEBUG": "true"}).backchannel_logout_allow_private_networks is True
    assert env.load(PRODUCTION).backchannel_logout_allow_private_networks is False
    allowed = {**PRODUCTION, "BACKCHANNEL_LOGOUT_ALLOW_PRIVATE_NETWORKS": "true"}
    assert env.load(allowed).backchannel_logout_allow_private_networks is True


def test_static_root_is_where_collectstatic_writes_and_defaults_to_the_checkout():
    """STATIC_ROOT: the collected files (and the manifest pages need with DEBUG off); unset or
    blank, ./staticfiles of the checkout."""
    assert env.load({**PRODUCTION, "STATIC_ROOT": "/srv/static"}).static_root == Path("/srv/static")
    for environ in (PRODUCTION, {**PRODUCTION, "STATIC_ROOT": "  "}):
        assert env.load(environ).static_root == env.BASE_DIR / "staticfiles"
