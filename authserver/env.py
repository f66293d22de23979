"""The only module that reads ``os.environ``.

Every variable is parsed with its type and bounds. Problems are collected, not raised one at a
time, so a misconfigured deployment learns everything it must fix from a single start-up attempt.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

# Used only when DEBUG is on and SECRET_KEY is unset: the quick start needs no configuration.
_DEBUG_SECRET_KEY = "insecure-quick-start-key-never-use-in-production-0123456789abcdef"


@dataclass(frozen=True)
class Config:
    """Typed configuration, built once from the environment by :func:`load`."""

    debug: bool
    secret_key: str
    secret_key_fallbacks: list[str]
    allowed_hosts: list[str]
    issuer: str
    data_dir: Path
    static_root: Path
    database: dict
    cache: dict
    broker_url: str
    broker_transport_options: dict
    email: dict
    default_from_email: str
    log_level: str
    log_json: bool
    access_log: bool
    trusted_proxy_count: int
    secure_proxy_ssl_header: bool
    hsts_seconds: int
    session_max_age: int
    session_retention_days: int
    password_reset_timeout: int
    login_failure_limit: int
    login_failure_limit_per_ip: int
    login_failure_window: int
    access_token_audience: str
    access_token_signing_alg: str
    authorization_code_lifetime: int
    refresh_retry_window: int
    access_token_liveness_cache: int
    consent_lifetime_days: int
    extra_scopes: dict[str, str]
    id_token_lifetime: int
    signing_key_rotate_after_days: int
    open_registration: bool
    registration_token_rotation: str
    pushed_authorization_request_lifetime: int
    require_pushed_authorization_requests: bool
    device_code_lifetime: int
    device_code_interval: int
    allow_http_issuer_on_loopback: bool
    backchannel_logout_allow_private_networks: bool
    client_fetch_allow_private_networks: bool
    metrics_token: str
    metrics_allowed_networks: list
    dpop_iat_window: int
    dpop_nonce: bool
    dpop_nonce_lifetime: int


class _Reader:
    """Parses variables and collects every problem instead of stopping at the first."""

    def __init__(self, environ: dict[str, str]):
        self.environ = environ
        self.problems: list[str] = []

    def problem(self, name: str, message: str) -> None:
        self.problems.append(f"{name}: {message}")

    def raw(self, name: str) -> str | None:
        value = self.environ.get(name)
        return None if value is None or value.strip() == "" else value.strip()

    def boolean(self, name: str, default: bool) -> bool:
        value = self.environ.get(name)
        if value is None:
            return default
        lowered = value.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        self.problem(name, f"{value!r} is not a boolean. Use true or false.")
        return default

    def integer(self, name: str, default: int, *, minimum: int, maximum: int) -> int:
        value = self.raw(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            self.problem(
                name, f"{value!r} is not a whole number. Use a number from {minimum} to {maximum}."
            )
            return default
        if not minimum <= number <= maximum:
            self.problem(
                name, f"{number} is out of range. Use a number from {minimum} to {maximum}."
            )
            return default
        return number

    def string(self, name: str, default: str) -> str:
        value = self.raw(name)
        return default if value is None else value

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.string(name, default).upper()
        if value not in choices:
            self.problem(name, f"{value!r} is not one of {', '.join(choices)}.")
            return default
        return value

    def raise_problems(self) -> None:
        if self.problems:
            count = len(self.problems)
            lines = "\n".join(f"  - {problem}" for problem in self.problems)
            raise ImproperlyConfigured(
                f"The server cannot start: {count} setting{'s' if count > 1 else ''} "
                f"to fix in the environment.\n{lines}\n"
                "See the configuration table in README.md."
            )

    def csv(self, name: str) -> list[str] | None:
        value = self.raw(name)
        if value is None:
            return None
        return [item.strip() for item in value.split(",") if item.strip()]


def load(environ: dict[str, str] | None = None) -> Config:
    """Read and check the whole configuration; raise one ImproperlyConfigured listing every problem."""
    read = _Reader(dict(os.environ if environ is None else environ))
    debug = read.boolean("DEBUG", False)
    data_dir = Path(read.string("DATA_DIR", str(BASE_DIR / "var"))).resolve()

    secret_key = read.raw("SECRET_KEY")
    if secret_key is None:
        if debug:
            secret_key = _DEBUG_SECRET_KEY
        else:
            read.problem(
                "SECRET_KEY",
                "required when DEBUG is off. Generate one with: "
                "python -c 'import secrets; print(secrets.token_urlsafe(50))'",
            )
            secret_key = ""
    elif len(secret_key) < 32:
        read.problem(
            "SECRET_KEY", "is too short; use at least 32 random characters (50 recommended)."
        )

    allowed_hosts = read.csv("ALLOWED_HOSTS")
    if allowed_hosts is None:
        if debug:
            allowed_hosts = ["localhost", "127.0.0.1", "[::1]"]
        else:
            read.problem(
                "ALLOWED_HOSTS", "required when DEBUG is off, e.g. ALLOWED_HOSTS=auth.example.com"
            )
            allowed_hosts = []

    allow_http_issuer_on_loopback = read.boolean("ALLOW_HTTP_ISSUER_ON_LOOPBACK", False)
    issuer = _issuer(read, debug, allow_http_issuer_on_loopback)
    database = _database(read, debug, data_dir)
    redis_url = _redis_url(read, "REDIS_URL")
    cache = _cache(read, debug, redis_url)
    broker_url, broker_options = _broker(read, debug, redis_url, data_dir)
    email = _email(read)

    config = Config(
        debug=debug,
        secret_key=secret_key,
        secret_key_fallbacks=read.csv("SECRET_KEY_FALLBACKS") or [],
        allowed_hosts=allowed_hosts,
        issuer=issuer,
        data_dir=data_dir,
        static_root=Path(read.string("STATIC_ROOT", str(BASE_DIR / "staticfiles"))).resolve(),
        database=database,
        cache=cache,
        broker_url=broker_url,
        broker_transport_options=broker_options,
        email=email,
        default_from_email=read.string(
            "DEFAULT_FROM_EMAIL", "Authorization server <no-reply@localhost>"
        ),
        log_level=read.choice("LOG_LEVEL", "INFO", _LOG_LEVELS),
        log_json=read.boolean("LOG_JSON", False),
        access_log=read.boolean("ACCESS_LOG", True),
        trusted_proxy_count=read.integer("TRUSTED_PROXY_COUNT", 0, minimum=0, maximum=5),
        secure_proxy_ssl_header=read.boolean("TRUST_X_FORWARDED_PROTO", False),
        hsts_seconds=read.integer(
            "HSTS_SECONDS", 0 if debug else 31_536_000, minimum=0, maximum=63_072_000
        ),
        session_max_age=read.integer(
            "SESSION_MAX_AGE", 14 * 86_400, minimum=300, maximum=90 * 86_400
        ),
        session_retention_days=read.integer("SESSION_RETENTION_DAYS", 7, minimum=0, maximum=365),
        password_reset_timeout=read.integer(
            "PASSWORD_RESET_TIMEOUT", 3_600, minimum=300, maximum=3 * 86_400
        ),
        login_failure_limit=read.integer("LOGIN_FAILURE_LIMIT", 5, minimum=1, maximum=1_000),
        login_failure_limit_per_ip=read.integer(
            "LOGIN_FAILURE_LIMIT_PER_IP", 20, minimum=1, maximum=100_000
        ),
        login_failure_window=read.integer("LOGIN_FAILURE_WINDOW", 900, minimum=60, maximum=86_400),
        access_token_audience=read.string("ACCESS_TOKEN_AUDIENCE", issuer),
        access_token_signing_alg=read.choice(
            "ACCESS_TOKEN_SIGNING_ALG", "ES256", ("ES256", "RS256")
        ),
        authorization_code_lifetime=read.integer(
            "AUTHORIZATION_CODE_LIFETIME", 60, minimum=10, maximum=600
        ),
        refresh_retry_window=read.integer("REFRESH_RETRY_WINDOW", 30, minimum=0, maximum=300),
        access_token_liveness_cache=read.integer(
            "ACCESS_TOKEN_LIVENESS_CACHE", 60, minimum=0, maximum=600
        ),
        consent_lifetime_days=read.integer("CONSENT_LIFETIME_DAYS", 365, minimum=1, maximum=3650),
        extra_scopes=_scopes(read),
        id_token_lifetime=read.integer("ID_TOKEN_LIFETIME", 3600, minimum=60, maximum=86_400),
        signing_key_rotate_after_days=read.integer(
            "SIGNING_KEY_ROTATE_AFTER_DAYS", 30, minimum=1, maximum=3650
        ),
        open_registration=read.boolean("OPEN_REGISTRATION", False),
        registration_token_rotation=_registration_token_rotation(read),
        pushed_authorization_request_lifetime=read.integer(
            "PUSHED_AUTHORIZATION_REQUEST_LIFETIME", 60, minimum=10, maximum=600
        ),
        require_pushed_authorization_requests=read.boolean(
            "REQUIRE_PUSHED_AUTHORIZATION_REQUESTS", False
        ),
        device_code_lifetime=read.integer("DEVICE_CODE_LIFETIME", 600, minimum=60, maximum=1800),
        device_code_interval=read.integer("DEVICE_CODE_INTERVAL", 5, minimum=1, maximum=60),
        allow_http_issuer_on_loopback=allow_http_issuer_on_loopback,
        backchannel_logout_allow_private_networks=read.boolean(
            "BACKCHANNEL_LOGOUT_ALLOW_PRIVATE_NETWORKS", debug
        ),
        client_fetch_allow_private_networks=read.boolean(
            "CLIENT_FETCH_ALLOW_PRIVATE_NETWORKS", debug
        ),
        metrics_token=read.string("METRICS_TOKEN", ""),
        metrics_allowed_networks=_networks(
            read, "METRICS_ALLOWED_NETWORKS", "127.0.0.1/32,::1/128"
        ),
        dpop_iat_window=read.integer("DPOP_IAT_WINDOW", 60, minimum=5, maximum=600),
        dpop_nonce=read.boolean("DPOP_NONCE", False),
        dpop_nonce_lifetime=read.integer("DPOP_NONCE_LIFETIME", 300, minimum=30, maximum=3_600),
    )
    # The web server's own settings (load_server) are checked here too: whatever process reads
    # the configuration first (authserver/server.py imports the settings), one message lists
    # every problem.
    _server(read)
    read.raise_problems()
    return config


@dataclass(frozen=True)
class ServerConfig:
    """The web server's own settings (authserver/server.py), built by :func:`load_server`.

    They configure the processes, not the application, so the application never reads them.
    """

    workers: int
    threads: int
    host: str
    port: int
    timeout: int
    graceful_timeout: int
    max_rss_mib: int
    metrics_dir: Path


def process_environment() -> dict[str, str]:
    """The whole environment, as a server that copies it into each request sees it (granian
    puts it in every WSGI environ; authserver/server.py takes it back out)."""
    return dict(os.environ)


def _default_workers() -> int:
    # Processes for CPU-bound work (Argon2 password hashing, JWT signing), one spare per CPU for
    # the time a request waits on PostgreSQL or Redis; each idle worker still costs memory,
    # hence the cap.
    return min(2 * (os.cpu_count() or 1) + 1, 12)


def load_server(environ: dict[str, str] | None = None) -> ServerConfig:
    """The web server's settings; raise one ImproperlyConfigured listing every problem."""
    read = _Reader(dict(os.environ if environ is None else environ))
    config = _server(read)
    read.raise_problems()
    return config


def _server(read: _Reader) -> ServerConfig:
    workers = read.integer("WEB_CONCURRENCY", _default_workers(), minimum=1, maximum=64)
    threads = read.integer("WEB_THREADS", 1, minimum=1, maximum=32)
    try:  # a bad value is _database's problem to report, not reported twice
        pool_size = int(read.raw("DATABASE_POOL_SIZE") or 4)
    except ValueError:
        pool_size = 4
    if pool_size and threads > pool_size:
        # Each thread holds a pooled connection for its request; one more would wait for it.
        read.problem(
            "WEB_THREADS",
            f"{threads} threads per worker, but DATABASE_POOL_SIZE is {pool_size}: use at most "
            "as many threads as pooled connections.",
        )
    port = read.integer("PORT", 8000, minimum=1, maximum=65_535)
    host = "0.0.0.0"  # noqa: S104 - in a container, the published port is the boundary
    bind = read.raw("WEB_BIND")
    if bind is not None:
        name, _, number = bind.rpartition(":")
        name = name.removeprefix("[").removesuffix("]")  # [::1]:8000
        if not name or not number.isdigit() or not 1 <= int(number) <= 65_535:
            read.problem("WEB_BIND", f"{bind!r} is not host:port, e.g. 0.0.0.0:8000 or [::]:8000")
        else:
            host, port = name, int(number)
    return ServerConfig(
        workers=workers,
        threads=threads,
        host=host,
        port=port,
        timeout=read.integer("WEB_TIMEOUT", 30, minimum=5, maximum=600),
        graceful_timeout=read.integer("WEB_GRACEFUL_TIMEOUT", 30, minimum=1, maximum=600),
        max_rss_mib=read.integer("WEB_MAX_RSS", 512, minimum=0, maximum=65_536),
        # prometheus-client's own variable; on a tmpfs, so a read-only root filesystem is fine.
        metrics_dir=Path(
            read.string("PROMETHEUS_MULTIPROC_DIR", "/dev/shm/authserver-metrics")  # noqa: S108
        ),
    )


def _issuer(read: _Reader, debug: bool, allow_http_on_loopback: bool) -> str:
    value = read.raw("ISSUER")
    if value is None:
        if debug:
            return "http://127.0.0.1:8000"
        read.problem(
            "ISSUER",
            "required when DEBUG is off: the public https URL, e.g. https://auth.example.com",
        )
        return ""
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.netloc:
        read.problem("ISSUER", f"{value!r} is not an absolute URL such as https://auth.example.com")
    elif parts.scheme != "https" and not debug and not allow_http_on_loopback:
        # OpenID Connect Discovery 1.0 §3: the issuer is a case-sensitive URL using https.
        read.problem("ISSUER", "must use https when DEBUG is off.")
    elif parts.scheme != "https" and not debug and not _is_loopback_origin(parts):
        read.problem(
            "ISSUER",
            "must use https when DEBUG is off; ALLOW_HTTP_ISSUER_ON_LOOPBACK allows http only "
            "for 127.0.0.1, [::1] or localhost (with an optional port).",
        )
    elif parts.query or parts.fragment:
        read.problem("ISSUER", "must not contain a query or fragment (RFC 8414 §2).")
    return value.rstrip("/")


def _is_loopback_origin(parts) -> bool:
    """True only for http://127.0.0.1, http://[::1] or http://localhost (any port, any path):
    the hosts a browser treats as potentially trustworthy without TLS (W3C Secure Contexts
    §3.1), so nothing on the network can read or alter what is sent to them. The host is the
    parsed one, compared whole: 127.0.0.1.example.com, localhost.example.com and
    127.0.0.1@evil.example are other hosts; user information or a bad port is refused too."""
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError:
        return False
    if "@" in parts.netloc:
        return False
    return parts.hostname in ("127.0.0.1", "::1", "localhost")


def _database(read: _Reader, debug: bool, data_dir: Path) -> dict:
    value = read.raw("DATABASE_URL")
    if value is None:
        if not debug:
            read.problem(
                "DATABASE_URL",
                "required when DEBUG is off, e.g. postgres://user:password@db:5432/authserver",
            )
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(data_dir / "db.sqlite3"),
            # Embedded quick start: the web server and the worker share this file.
            "OPTIONS": {"timeout": 20, "transaction_mode": "IMMEDIATE"},
        }
    parts = urlsplit(value)
    pool_size = read.integer("DATABASE_POOL_SIZE", 4, minimum=0, maximum=100)
    prepared = read.boolean("DATABASE_PREPARED_STATEMENTS", True)
    if parts.scheme in ("postgres", "postgresql", "pgsql"):
        name = unquote(parts.path.lstrip("/"))
        if not parts.hostname and not name:
            read.problem(
                "DATABASE_URL", "names no host and no database, e.g. postgres://user@host:5432/db"
            )
        try:
            port = parts.port
        except ValueError:
            read.problem("DATABASE_URL", "has a port that is not a number.")
            port = None
        # Fail fast while the database is away: requests get a 503 within seconds, not a hang.
        options: dict = {"connect_timeout": 3}
        for key, values in parse_qs(parts.query).items():
            options[key] = values[-1]
        # The token endpoint's few fixed statements run prepared (tokens/token_store.py);
        # Django's own queries never are (it binds on the client). Turn this off behind a
        # transaction-mode PgBouncer older than 1.21, which cannot route prepared statements.
        options["prepare_threshold"] = 5 if prepared else None
        if pool_size:
            # psycopg_pool; Django requires CONN_MAX_AGE = 0 with a pool.
            options["pool"] = {"min_size": 1, "max_size": pool_size, "timeout": 3}
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": name or "postgres",
            "USER": unquote(parts.username or ""),
            "PASSWORD": unquote(parts.password or ""),
            "HOST": parts.hostname or "",
            "PORT": str(port or ""),
            "CONN_MAX_AGE": 0,
            "CONN_HEALTH_CHECKS": not pool_size,
            "OPTIONS": options,
        }
    if parts.scheme == "sqlite":
        # sqlite:///relative/db.sqlite3 or sqlite:////absolute/db.sqlite3
        path = unquote(value[len("sqlite:///") :]) if value.startswith("sqlite:///") else ""
        if not path:
            read.problem(
                "DATABASE_URL",
                "sqlite URLs need a path, e.g. sqlite:////var/lib/authserver/db.sqlite3",
            )
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": path or ":memory:",
            "OPTIONS": {"timeout": 20, "transaction_mode": "IMMEDIATE"},
        }
    read.problem(
        "DATABASE_URL",
        f"{_redact(value)!r} is not a database URL this server understands. "
        "Use postgres://user:password@host:5432/dbname (production) or sqlite:///path/db.sqlite3.",
    )
    return {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}


def _redis_url(read: _Reader, name: str) -> str | None:
    value = read.raw(name)
    if value is None:
        return None
    if urlsplit(value).scheme not in ("redis", "rediss", "unix"):
        read.problem(name, f"{_redact(value)!r} is not a Redis URL, e.g. redis://127.0.0.1:6379/0")
        return None
    return value


def _cache(read: _Reader, debug: bool, redis_url: str | None) -> dict:
    value = read.raw("CACHE_URL") or redis_url
    if value is None:
        if not debug:
            read.problem(
                "CACHE_URL",
                "set REDIS_URL (or CACHE_URL) when DEBUG is off: sessions and login throttling "
                "must be shared by every web process.",
            )
        value = "locmem://"
    scheme = urlsplit(value).scheme
    if scheme in ("redis", "rediss", "unix"):
        return {
            # Django's Redis cache behind a circuit breaker (authserver/breaker.py). Short
            # timeouts: a Redis on the network answers in a millisecond, and while it does not,
            # what a call costs is the timeout (the breaker makes that one call per back-off).
            "BACKEND": "authserver.cache.RedisCache",
            "LOCATION": value,
            "KEY_PREFIX": "authserver",
            "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
        }
    if scheme == "locmem":
        return {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": "authserver",
        }
    read.problem(
        "CACHE_URL", f"{_redact(value)!r} is not supported. Use redis://host:6379/1 or locmem://"
    )
    return {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}


def _broker(read: _Reader, debug: bool, redis_url: str | None, data_dir: Path) -> tuple[str, dict]:
    value = read.raw("CELERY_BROKER_URL") or redis_url
    if value is None:
        if not debug:
            read.problem(
                "CELERY_BROKER_URL", "set REDIS_URL (or CELERY_BROKER_URL) when DEBUG is off."
            )
        # Embedded quick start: kombu's file-system transport, no broker process needed.
        queue = data_dir / "broker"
        return "filesystem://", {
            "data_folder_in": str(queue),
            "data_folder_out": str(queue),
            "processed_folder": str(data_dir / "broker-processed"),
            # Broadcast (remote control) messages; kombu's default is ./control in the cwd.
            "control_folder": str(data_dir / "broker-control"),
            "store_processed": False,
        }
    scheme = urlsplit(value).scheme
    if scheme not in ("redis", "rediss", "amqp", "amqps", "filesystem"):
        read.problem(
            "CELERY_BROKER_URL",
            f"{_redact(value)!r} is not a broker URL, e.g. redis://127.0.0.1:6379/0",
        )
    # Redis transport: a task not acknowledged within an hour is delivered again (acks_late).
    return value, {"visibility_timeout": 3_600}


def _email(read: _Reader) -> dict:
    """EMAIL_URL: console:// (default), smtp://user:pass@host:587 (STARTTLS), smtps://… (TLS)."""
    value = read.raw("EMAIL_URL") or "console://"
    parts = urlsplit(value)
    if parts.scheme == "console":
        return {"EMAIL_BACKEND": "django.core.mail.backends.console.EmailBackend"}
    if parts.scheme == "locmem":
        return {"EMAIL_BACKEND": "django.core.mail.backends.locmem.EmailBackend"}
    if parts.scheme in ("smtp", "smtps"):
        try:
            port = parts.port
        except ValueError:
            port = None
            read.problem("EMAIL_URL", "has a port that is not a number.")
        if not parts.hostname:
            read.problem(
                "EMAIL_URL", "names no host, e.g. smtp://user:password@smtp.example.com:587"
            )
        return {
            "EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend",
            "EMAIL_HOST": parts.hostname or "",
            "EMAIL_PORT": port or (465 if parts.scheme == "smtps" else 587),
            "EMAIL_HOST_USER": unquote(parts.username or ""),
            "EMAIL_HOST_PASSWORD": unquote(parts.password or ""),
            "EMAIL_USE_SSL": parts.scheme == "smtps",
            "EMAIL_USE_TLS": parts.scheme == "smtp" and "starttls=false" not in parts.query.lower(),
            "EMAIL_TIMEOUT": 10,
        }
    read.problem(
        "EMAIL_URL", f"{_redact(value)!r} is not supported. Use console://, smtp:// or smtps://"
    )
    return {"EMAIL_BACKEND": "django.core.mail.backends.console.EmailBackend"}


def _scopes(read: _Reader) -> dict[str, str]:
    """EXTRA_SCOPES="orders.read=Read your orders;orders.write=Change your orders"."""
    value = read.raw("EXTRA_SCOPES")
    scopes: dict[str, str] = {}
    if value is None:
        return scopes
    for item in value.split(";"):
        name, _, description = item.partition("=")
        name = name.strip()
        # RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
        if not name or not all(c == "!" or "#" <= c <= "[" or "]" <= c <= "~" for c in name):
            read.problem("EXTRA_SCOPES", f"{name!r} is not a valid scope name (RFC 6749 §3.3).")
            continue
        scopes[name] = description.strip() or name
    return scopes


# --- RFC 7592 registration access tokens -------------------------------------------------------
REGISTRATION_TOKEN_ROTATIONS = ("never", "on_update", "on_every_use")


def _registration_token_rotation(read: _Reader) -> str:
    """REGISTRATION_TOKEN_ROTATION: when a client's registration access token is replaced."""
    value = read.string("REGISTRATION_TOKEN_ROTATION", "on_update").lower()
    if value not in REGISTRATION_TOKEN_ROTATIONS:
        read.problem(
            "REGISTRATION_TOKEN_ROTATION",
            f"{value!r} is not one of {', '.join(REGISTRATION_TOKEN_ROTATIONS)}.",
        )
        return "on_update"
    return value


def _networks(read: _Reader, name: str, default: str) -> list:
    from ipaddress import ip_network

    networks = []
    for item in read.csv(name) or default.split(","):
        try:
            networks.append(ip_network(item.strip(), strict=False))
        except ValueError:
            read.problem(name, f"{item!r} is not an IP network, e.g. 10.0.0.0/8 or 127.0.0.1/32")
    return networks


def _redact(url: str) -> str:
    """Never echo a password from a URL into an error message or a log."""
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@", 1)
    return url
