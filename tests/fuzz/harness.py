"""What every fuzzed request is held to, and the count of requests sent.

Per answer: no server error (status < 500, no exception); the status, media type, JSON body and
documented headers conform to authserver/openapi.yaml; the protocol JSON endpoints answer errors
as ``{"error": ..., "error_description"?: ...}`` with a code from their RFC's set and an
``error_description`` in RFC 6749's character set; token, introspection and revocation answers
are never cacheable; HTML pages never show a traceback. Where the request alone decides the
error (``expected_error``: a missing required parameter, a wrong method, a registration body
that is not a JSON object), or the fuzz test knows it (``send(..., expect=...)``), the answer
must carry exactly that code, not just any of the RFC's.

Known findings (tests/fuzz/test_found.py, strict xfail reproductions) are recognised here by their
exception or answer, counted and reported at the end of the run instead of failing every fuzz
test: when one is fixed, its xfail turns into a failure, and its entry here is removed with it.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import traceback
from collections import Counter
from dataclasses import dataclass, field
from typing import NamedTuple
from urllib.parse import parse_qsl, urlsplit

from tests.fuzz import spec

# --- budget ------------------------------------------------------------------------------------
# The default run (part of `make test`) sends at least TOTAL_MINIMUM generated requests across
# the fuzz tests; `-m fuzz_long` runs the long variants with the budget multiplied by LONG_FACTOR.
TOTAL_MINIMUM = 10_000
LONG_FACTOR = int(os.environ.get("FUZZ_LONG_FACTOR", "10"))

# The schemathesis module's share of the default run (asserted there, once all of it has run).
SCHEMATHESIS_MINIMUM = 1_100

REQUESTS: Counter[str] = Counter()  # generated requests sent, by fuzz target
# FUZZ_SURVEY=1: record every distinct problem (first request that showed it) instead of failing,
# and list them at the end of the run: for finding what to reproduce, not for CI.
SURVEY = bool(os.environ.get("FUZZ_SURVEY"))
SURVEYED: dict[str, str] = {}
KNOWN: Counter[str] = Counter()  # answers recognised as a known finding, by finding


def budgets(default: int):
    """Parametrize a fuzz test over its budget: the default run, and the long one (fuzz_long),
    which is skipped unless selected with ``-m fuzz_long``."""
    import pytest

    return pytest.mark.parametrize(
        "budget",
        [
            pytest.param(default, id="default"),
            pytest.param(default * LONG_FACTOR, id="long", marks=pytest.mark.fuzz_long),
        ],
    )


def hypothesis_settings(budget: int):
    from hypothesis import HealthCheck, Phase, settings

    return settings(
        max_examples=budget,
        deadline=None,
        derandomize=True,  # the same requests on every run: CI stays reproducible
        database=None,  # nothing written to .hypothesis/
        suppress_health_check=list(HealthCheck),
        phases=(Phase.explicit, Phase.generate, Phase.shrink),
        print_blob=False,
    )


# --- the RFCs' error codes ---------------------------------------------------------------------
RFC6749_TOKEN = {
    "invalid_request",
    "invalid_client",
    "invalid_grant",
    "unauthorized_client",
    "unsupported_grant_type",
    "invalid_scope",
}
INSECURE = {"insecure_transport"}  # Authlib: plain http to a non-loopback host
DEVICE_POLLING = {"authorization_pending", "slow_down", "access_denied", "expired_token"}
DPOP = {"invalid_dpop_proof", "use_dpop_nonce"}  # RFC 9449 §5, §7.1, §8, §9
TOKEN_ERRORS = (
    RFC6749_TOKEN | INSECURE | DEVICE_POLLING | DPOP | {"invalid_target"}
)  # RFC 8628 §3.5, RFC 8693 §2.2.2
TOKEN_OPERATION_ERRORS = RFC6749_TOKEN | INSECURE | {"unsupported_token_type"}  # RFC 7009 §2.2.1
BEARER_ERRORS = {"invalid_request", "invalid_token", "insufficient_scope"}  # RFC 6750 §3.1
REGISTRATION_ERRORS = BEARER_ERRORS | {  # RFC 7591 §3.2.2, RFC 7592
    "invalid_redirect_uri",
    "invalid_client_metadata",
    "invalid_software_statement",
    "unapproved_software_statement",
    "invalid_client",
    "unauthorized_client",
    "access_denied",
    "insecure_transport",
}
# RFC 9126 §2.3: the authorization endpoint's errors (RFC 6749 §4.1.2.1, OIDC Core §3.1.2.6)
# and the token endpoint's client authentication ones, as JSON.
PAR_ERRORS = (
    (RFC6749_TOKEN - {"invalid_grant", "unsupported_grant_type"})
    | INSECURE
    | {"unsupported_response_type", "request_not_supported"}
)
JSON_ERRORS = {
    "/token": TOKEN_ERRORS,
    "/par": PAR_ERRORS,
    "/device_authorization": RFC6749_TOKEN | INSECURE,
    "/introspect": TOKEN_OPERATION_ERRORS,
    "/revoke": TOKEN_OPERATION_ERRORS,
    "/userinfo": BEARER_ERRORS | DPOP,
    "/register": REGISTRATION_ERRORS,
    "/register/{client_id}": REGISTRATION_ERRORS,
}
NO_STORE = {"/token", "/introspect", "/revoke", "/par", "/device_authorization"}
ERROR_DESCRIPTION = re.compile(r"[\x20-\x21\x23-\x5B\x5D-\x7E]*")  # RFC 6749 §5.2
TRACEBACK_SIGNS = (b"Traceback (most recent call last)", b"Exception Value", b'id="traceback"')


# --- known findings ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Finding:
    """A known defect, recognised by the exception a request raised (type, message, a function in
    its traceback) or by the answer it got (``answer``: a predicate on the request and answer)."""

    name: str
    exception: type[BaseException] | None = None
    message: str = ""  # a substring of str(exception)
    frame: str = ""  # a function name somewhere in the traceback
    answer: object = None  # (template, sent, status, headers, body) -> bool

    def matches_error(self, error: BaseException) -> bool:
        if self.exception is None or not isinstance(error, self.exception):
            return False
        if self.message not in str(error):
            return False
        names = {entry.name for entry in traceback.extract_tb(error.__traceback__)}
        return not self.frame or self.frame in names

    def matches_answer(self, template, sent, status, headers, body) -> bool:
        return self.answer is not None and bool(self.answer(template, sent, status, headers, body))


# Filled in from what the fuzzers found (tests/fuzz/findings.py); each has a strict-xfail
# reproduction in tests/fuzz/test_found.py.
FINDINGS: list[Finding] = []


# --- one request, one answer -------------------------------------------------------------------
@dataclass
class Sent:
    """A request as sent, for failure messages that reproduce it."""

    method: str
    path: str
    query: str = ""  # the raw QUERY_STRING (latin-1 decoded, as WSGI servers pass it)
    body: bytes = b""
    content_type: str | None = None
    headers: dict = field(default_factory=dict)
    secure: bool = True

    def __str__(self) -> str:
        lines = [f"{self.method} {self.path}{'?' + self.query if self.query else ''}"]
        lines += [f"{k}: {str(v)[:300]!r}" for k, v in self.headers.items()]
        if self.content_type is not None:
            lines.append(f"Content-Type: {self.content_type!r}")
        lines.append(f"secure: {self.secure}")
        if self.body:
            lines.append(f"body ({len(self.body)} bytes): {self.body[:600]!r}")
        return "\n".join(lines)


def answer_problems(template: str, method: str, status: int, headers, body: bytes) -> list[str]:
    """Everything wrong with one answer (empty: nothing)."""
    found: list[str] = []
    if status >= 500:
        return [f"server error {status}: {body[:300]!r}"]
    media = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
    if method == "HEAD":
        body = b""  # what a server sends back for HEAD (the test client strips it too)
    if template in JSON_ERRORS and method == "HEAD":
        pass
    elif template in JSON_ERRORS and media == "application/json" and status >= 400:
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        if not isinstance(data, dict) or not isinstance(data.get("error"), str):
            found.append(f"{status}: not an RFC error object: {body[:300]!r}")
        else:
            if data["error"] not in JSON_ERRORS[template]:
                found.append(f"{status}: error {data['error']!r} is not one of this RFC's codes")
            description = data.get("error_description")
            if description is not None and (
                not isinstance(description, str) or not ERROR_DESCRIPTION.fullmatch(description)
            ):
                found.append(f"{status}: error_description outside RFC 6749 §5.2: {description!r}")
    elif template in JSON_ERRORS and status >= 400 and (status != 405 or body):
        found.append(
            f"{status}: a {media or 'typeless'} error where RFC JSON is due: {body[:200]!r}"
        )
    if template in NO_STORE and media == "application/json":
        if "no-store" not in (headers.get("Cache-Control") or ""):
            found.append(f"{status}: Cache-Control {headers.get('Cache-Control')!r} lacks no-store")
    if media == "text/html" and any(sign in body for sign in TRACEBACK_SIGNS):
        found.append(f"{status}: the HTML page shows a traceback")
    found += spec.problems(status, headers, body, template, method)
    return found


# --- answers whose exact error code is known ------------------------------------------------------
FORM = "application/x-www-form-urlencoded"
FORM_ENDPOINTS = ("/token", "/introspect", "/revoke", "/par", "/device_authorization")
EXACT: Counter[str] = Counter()  # answers held to an exact error code, by target and code


def readable_form(sent: Sent) -> dict[str, str] | None:
    """The parameters of a plain form POST over TLS, as the server reads them; None for anything
    odder (a query string, another type or charset, bytes that are not ASCII, escapes that are
    not UTF-8), whose answer depends on which check comes first."""
    if sent.method != "POST" or not sent.secure or sent.query or sent.content_type != FORM:
        return None
    try:
        pairs = parse_qsl(sent.body.decode("ascii"), keep_blank_values=True, errors="strict")
    except (UnicodeDecodeError, ValueError):
        return None
    return dict(pairs)  # a repeated name is invalid_request too (RFC 6749 §3.2)


CREDENTIALS = re.compile(r"([A-Za-z][\w.+-]*) ([\x21-\x7e]+)")  # RFC 7235 §2.1, one space


def well_formed_credentials(headers: dict) -> bool:
    """No Authorization header, or ``scheme credentials`` of another scheme, or Basic ones that
    decode (RFC 7617): then a malformed request is refused before anyone is authenticated."""
    value = headers.get("HTTP_AUTHORIZATION", headers.get("Authorization"))  # environ or header
    if value is None:
        return True
    match = CREDENTIALS.fullmatch(value)
    if match is None:
        return False
    scheme, credentials = match.groups()
    if scheme.lower() != "basic":
        return True
    try:
        decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return False
    return ":" in decoded and not any(ord(ch) < 0x20 for ch in decoded)


def _not_a_json_object(sent: Sent) -> bool:
    """RFC 7591 §3.1: what the registration endpoints refuse before reading any metadata."""
    media = (sent.content_type or "").split(";")[0].strip().lower()
    if media != "application/json" or not sent.body or len(sent.body) > 65_536:
        return True
    try:
        return not isinstance(json.loads(sent.body), dict)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return True


class Expected(NamedTuple):
    """The error code an answer must carry, and why (for the run's summary)."""

    code: str
    why: str


def expected_error(template: str, sent: Sent) -> Expected | None:
    """The error this request must get, where the request alone decides it."""
    method = sent.method
    if template in FORM_ENDPOINTS:
        if method in ("GET", "PUT", "DELETE", "PATCH"):
            return Expected("invalid_request", "method")  # RFC 6749 §3.2: POST (405, RFC JSON)
        form = readable_form(sent)
        if form is None or not well_formed_credentials(sent.headers):
            return None
        if template == "/token":
            # RFC 6749 §5.2 / §3.2: a missing or empty required parameter is invalid_request.
            grant_type = form.get("grant_type")
            if not grant_type:
                return Expected("invalid_request", "no grant_type")
            needed = {
                "authorization_code": "code",
                "refresh_token": "refresh_token",
                "urn:ietf:params:oauth:grant-type:device_code": "device_code",  # RFC 8628 §3.4
            }
            if grant_type in needed and not form.get(needed[grant_type]):
                return Expected("invalid_request", f"no {needed[grant_type]}")
        elif template == "/device_authorization":
            return None  # nothing is required but the client (RFC 8628 §3.1)
        elif template == "/par":
            if not form.get("client_id"):  # RFC 9126 §2.1: required, as at /authorize
                return Expected("invalid_request", "no client_id")
        elif not form.get("token"):  # RFC 7009 §2.1, RFC 7662 §2.1
            return Expected("invalid_request", "no token")
        return None
    if template == "/register":
        if method in ("GET", "PUT", "DELETE", "PATCH"):
            return Expected("invalid_request", "method")  # RFC 7591 §3: POST
        if method == "POST" and _not_a_json_object(sent):
            return Expected("invalid_client_metadata", "not a JSON object")  # RFC 7591 §3.1
    if template == "/register/{client_id}":
        if method in ("POST", "PATCH"):
            return Expected("invalid_request", "method")  # RFC 7592 §2: GET, PUT, DELETE
        if method == "PUT" and _not_a_json_object(sent):
            return Expected("invalid_client_metadata", "not a JSON object")
    return None


def error_code(status: int, headers, body: bytes) -> str | None:
    """The ``error`` an answer carries: in its JSON body, or in the query of its redirect."""
    if status in (302, 303) and headers.get("Location"):
        return dict(parse_qsl(urlsplit(headers["Location"]).query)).get("error")
    try:
        data = json.loads(body)
    except ValueError:
        return None
    return data.get("error") if isinstance(data, dict) else None


def check_answer(
    target: str, sent: Sent, status: int, headers, body: bytes, expect: Expected | None = None
) -> None:
    template = spec.template_for(sent.path)
    assert template is not None, sent.path
    found = answer_problems(template, sent.method, status, headers, body)
    expect = expect or expected_error(template, sent)
    if expect is not None and sent.method != "HEAD":
        EXACT[f"{target}: {expect.code} ({expect.why})"] += 1
        if (got := error_code(status, headers, body)) != expect.code or status < 300:
            found.append(f"{status}: error {got!r} where exactly {expect.code!r} is due")
    if found:
        for finding in FINDINGS:
            if finding.matches_answer(template, sent, status, headers, body):
                KNOWN[finding.name] += 1
                return
    message = f"[{target}] request:\n{sent}\nanswer {status}:\n" + "\n".join(found)
    if found and SURVEY:
        key = f"{target} {status} " + re.sub(r"'[^']*'|\"[^\"]*\"|\d+", "_", found[0])[:120]
        SURVEYED.setdefault(key, message[:3000])
        return
    assert not found, message


def server_error(target: str, sent: Sent, error: BaseException) -> None:
    """A request raised: fine only if it is a known finding (counted); else the test fails."""
    for finding in FINDINGS:
        if finding.matches_error(error):
            KNOWN[finding.name] += 1
            return
    detail = "".join(traceback.format_exception(error))[-4000:]
    if SURVEY:
        frames = traceback.extract_tb(error.__traceback__)
        mine = [e for e in frames if "site-packages" not in e.filename]
        where = f"{mine[-1].filename}:{mine[-1].name}" if mine else "?"
        inner = " < ".join(e.name for e in frames[-3:])
        key = f"{target} {type(error).__name__} {where} {inner}"
        SURVEYED.setdefault(key, f"request:\n{sent}\n\n{detail}")
        return
    raise AssertionError(f"[{target}] server error for request:\n{sent}\n\n{detail}") from None


def send(target: str, browser, sent: Sent, *, expect: Expected | None = None):
    """Send one generated request through a Django test client and check the answer (``expect``:
    the error code the caller knows this request must get).

    Each request runs in a savepoint, so one that fails in the database cannot poison the
    test's transaction for the requests after it. Returns the response (None after a known
    server error)."""
    from django.db import transaction

    REQUESTS[target] += 1
    extra = dict(sent.headers)  # WSGI environ keys: HTTP_*, CONTENT_TYPE, ...
    if sent.query:
        extra["QUERY_STRING"] = sent.query  # as a server hands it over: latin-1 decoded bytes
    kwargs = {"secure": sent.secure}
    if sent.content_type is not None:
        kwargs["content_type"] = sent.content_type
    try:
        with transaction.atomic():
            response = browser.generic(sent.method, sent.path, sent.body, **kwargs, **extra)
    except Exception as error:  # the test client re-raises what the view raised
        server_error(target, sent, error)
        return None
    check_answer(target, sent, response.status_code, response.headers, response.content, expect)
    return response
