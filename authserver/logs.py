"""Logging: a request id on every line, JSON when asked for, and no secrets, ever.

The redaction filter runs on every handler, so a secret that reaches a log call by accident (a
password-reset link in a 404 warning, a token in an exception message) is masked before it is
written. Tests prove a full token flow leaves no password, secret, code or token in the logs.

The access log is ours too (AccessLogMiddleware), not the web server's: one line per request,
through the same handler, filters and format as every other line, whatever server runs us.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import re
import time
from typing import TYPE_CHECKING

from django.conf import settings
from django.core.exceptions import MiddlewareNotUsed

if TYPE_CHECKING:  # authserver/server.py's master process imports this module without Django
    from django.http import HttpRequest, HttpResponse

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
access_logger = logging.getLogger("authserver.access")

_INCOMING_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

_SECRET_PATTERNS = [
    # /password-reset/<uidb64>/<token>/ (Django's reset links)
    (re.compile(r"(/password-reset/[^/\s]+/)(?!set-password/)[^/\s?]+"), r"\1***"),
    # key=value in query strings, form bodies, reprs and URLs
    (
        re.compile(
            r"(?i)\b(client_secret|code_verifier|code|device_code|user_code|request_uri|"
            r"refresh_token|access_token|id_token(?:_hint)?|"
            r"logout_token|registration_access_token|initial_access_token|token|password[12]?|"
            r"old_password|new_password[12]?|csrfmiddlewaretoken)(['\"]?\s*[=:]\s*['\"]?)([^&\s'\",}]+)"
        ),
        r"\1\2***",
    ),
    (
        re.compile(r"(?i)(authorization['\"]?\s*[:=]\s*['\"]?)(basic|bearer)?\s*[^\s'\",}]+"),
        r"\1***",
    ),
    (re.compile(r"eyJ[\w-]{8,}\.[\w-]{8,}\.[\w-]*"), "[jwt]"),
]


def redact(text: str) -> str:
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not getattr(record, "_redacted_exc", False):
            # Formatted once here, so the traceback text goes through the same masks.
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info, record._redacted_exc = None, True
        return True


class AddRequestId(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log collectors."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
        }
        if record.exc_text:
            entry["exception"] = record.exc_text
        elif record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)


class RequestIdMiddleware:
    """Tag the request (and every log line it causes) with an id: the caller's X-Request-ID
    when it is well formed, a fresh one otherwise. The response carries it back."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        incoming = request.META.get("HTTP_X_REQUEST_ID", "")
        value = incoming if _INCOMING_ID.match(incoming) else os.urandom(16).hex()  # (uuid4: 4x)
        token = request_id.set(value)
        try:
            response = self.get_response(request)
        finally:
            request_id.reset(token)
        response["X-Request-ID"] = value
        return response


# /password-reset/<uidb64>/<token>/ carries a working reset credential in the path itself.
_RESET_TOKEN = re.compile(r"(/password-reset/[^/]+/)(?!set-password(?:/|$))[^/]+")
# C0 and C1 controls and the Unicode line separators: a client must not write a line of its own.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def clean_path(path: str) -> str:
    """The path as it may be logged: reset tokens masked, control characters (log forging) gone."""
    return _CONTROL.sub("?", _RESET_TOKEN.sub(r"\1***", path))


def _clean(value: str, limit: int) -> str:
    return _CONTROL.sub("?", value[:limit]) or "-"


class AccessLogMiddleware:
    """One line per request on the ``authserver.access`` logger, e.g.
    ``10.0.0.2 203.0.113.9 "POST /token HTTP/1.1" 200 512 3.1ms "curl/8"``: the peer, the
    X-Forwarded-For it sent, the request line, status, body bytes, time in Django, user agent.

    The path only: never the query string (codes, state, tokens on some routes), the Referer
    (it carries those too), Authorization, cookies or response headers (Location carries codes).
    Reset tokens in /password-reset/ paths are masked, control characters replaced, and the
    redaction filter runs on the line like on any other. ACCESS_LOG=false turns it off.
    """

    def __init__(self, get_response):
        if not settings.ACCESS_LOG:
            raise MiddlewareNotUsed
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = self.get_response(request)
        if access_logger.isEnabledFor(logging.INFO):
            meta = request.META
            size = "-" if response.streaming else len(response.content)
            access_logger.info(
                '%s %s "%s %s %s" %d %s %.1fms "%s"',
                _clean(meta.get("REMOTE_ADDR", ""), 64),
                _clean(meta.get("HTTP_X_FORWARDED_FOR", ""), 256),
                _clean(request.method or "", 16),
                clean_path(request.path[:2048]),
                _clean(meta.get("SERVER_PROTOCOL", ""), 16),
                response.status_code,
                size,
                (time.perf_counter() - started) * 1000,
                _clean(meta.get("HTTP_USER_AGENT", ""), 256),
            )
        return response


def logging_config(*, json: bool, level: str) -> dict:
    """The one logging configuration (settings.LOGGING, and the web server's master, which
    loads no Django settings: authserver/server.py): one console handler, JSON or plain, with
    the request id and the redaction filter on every line."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {
            "request_id": {"()": "authserver.logs.AddRequestId"},
            "redact": {"()": "authserver.logs.RedactSecrets"},
        },
        "formatters": {
            "plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"},
            "json": {"()": "authserver.logs.JsonFormatter"},
        },
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "formatter": "json" if json else "plain",
                "filters": ["request_id", "redact"],
            }
        },
        "root": {"handlers": ["console"], "level": level},
    }
