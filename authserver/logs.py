"""Logging: a request id on every line, JSON when asked for, and no secrets, ever.

The redaction filter runs on every handler, so a secret that reaches a log call by accident (a
password-reset link in a 404 warning, a token in an exception message) is masked before it is
written. Tests prove a full token flow leaves no password, secret, code or token in the logs.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import uuid

from django.http import HttpRequest, HttpResponse

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

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
        value = incoming if _INCOMING_ID.match(incoming) else uuid.uuid4().hex
        token = request_id.set(value)
        try:
            response = self.get_response(request)
        finally:
            request_id.reset(token)
        response["X-Request-ID"] = value
        return response
