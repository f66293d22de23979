"""Health checks, Prometheus metrics, request ids and logs without secrets."""

import io
import logging
import re

import pytest
from django.core import mail
from django.test import Client as Browser

from authserver.celery import app
from authserver.logs import redact
from tests.conftest import sign_in
from tests.factories import PASSWORD
from tests.tokens.conftest import (
    endpoint,
    exchange,
    get_code,
    past_the_retry_window,
    refresh,
    token_request,
)

pytestmark = pytest.mark.django_db


# --- health ----------------------------------------------------------------------------------
def test_liveness_answers_whatever_the_host_header():
    response = Browser().get("/health/live", HTTP_HOST="10.1.2.3:8000")
    assert response.status_code == 200 and response.json() == {"status": "ok"}
    assert response["Cache-Control"] == "no-store"


def test_readiness_checks_the_database_the_broker_and_a_signing_key():
    response = Browser().get("/health/ready", HTTP_HOST="10.1.2.3:8000")
    assert response.status_code == 200
    checks = response.json()["checks"]
    assert set(checks) == {"database", "broker", "signing_key"}
    assert all(check["ok"] for check in checks.values())


def test_readiness_stays_up_but_degraded_when_only_the_broker_is_down():
    """Sign-in and tokens work without the broker; failing readiness would pull every web
    process out of the load balancer at once."""
    original = app.conf.broker_url, app.conf.broker_write_url
    app.conf.broker_url = app.conf.broker_write_url = (
        "redis://127.0.0.1:1/0"  # nothing listens there
    )
    try:
        response = Browser().get("/health/ready")
    finally:
        app.conf.broker_url, app.conf.broker_write_url = original
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "degraded" and body["checks"]["broker"]["ok"] is False
    assert body["checks"]["database"]["ok"] is True


# --- metrics ---------------------------------------------------------------------------------
def scrape(**extra) -> Browser:
    return Browser().get("/metrics", **extra)


def test_metrics_count_requests_tokens_and_login_failures(confidential, user):
    token_request(confidential, {"grant_type": "client_credentials"})
    sign_in(Browser(), user.username, "wrong")
    text = scrape().content.decode()
    assert re.search(
        r'authserver_tokens_issued_total\{grant_type="client_credentials"\} [1-9]', text
    )
    assert re.search(r"authserver_login_failures_total [1-9]", text)
    assert (
        'authserver_http_request_duration_seconds_count{endpoint="tokens:token",method="POST",status="2xx"}'
        in text
    )
    assert 'authserver_purge_backlog_rows{kind="refresh_tokens"}' in text


def test_metrics_show_job_runs_from_the_shared_cache():
    from tokens.tasks import EXPIRY_TASKS

    EXPIRY_TASKS["consents"]()
    text = scrape().content.decode()
    assert re.search(
        r'authserver_job_runs_total\{outcome="ok",task="tokens.expire_consents"\} [1-9]', text
    )
    assert 'authserver_job_last_duration_seconds{task="tokens.expire_consents"}' in text


def test_metrics_are_hidden_from_other_networks_unless_they_bring_the_token(settings):
    assert scrape(REMOTE_ADDR="203.0.113.9").status_code == 404
    settings.METRICS_TOKEN = "scraper-secret-0123456789"
    assert scrape(REMOTE_ADDR="203.0.113.9", HTTP_AUTHORIZATION="Bearer wrong").status_code == 404
    allowed = scrape(
        REMOTE_ADDR="203.0.113.9", HTTP_AUTHORIZATION="Bearer scraper-secret-0123456789"
    )
    assert allowed.status_code == 200 and allowed["Content-Type"].startswith("text/plain")


# --- request ids -----------------------------------------------------------------------------
def test_every_response_carries_a_request_id_and_a_good_incoming_one_is_kept():
    fresh = Browser().get("/login/")["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", fresh)
    assert (
        Browser().get("/login/", HTTP_X_REQUEST_ID="lb-1234.abc")["X-Request-ID"] == "lb-1234.abc"
    )
    assert Browser().get("/login/", HTTP_X_REQUEST_ID="<script>")["X-Request-ID"] != "<script>"


# --- logs ------------------------------------------------------------------------------------
@pytest.fixture
def captured_logs():
    """What the configured console handler writes (with its filters), at DEBUG."""
    root = logging.getLogger()
    handler = next(h for h in root.handlers if isinstance(h, logging.StreamHandler) and h.filters)
    buffer = io.StringIO()
    previous_stream, previous_level = handler.setStream(buffer), root.level
    root.setLevel(logging.DEBUG)
    try:
        yield buffer
    finally:
        handler.setStream(previous_stream)
        root.setLevel(previous_level)


def test_a_full_flow_leaves_no_password_secret_code_or_token_in_the_logs(
    captured_logs, user, confidential
):
    browser = Browser()
    sign_in(browser, user.username, "a wrong password to log a failure")
    sign_in(browser, user.username)
    code, verifier = get_code(browser, confidential, scope="openid profile offline_access")
    tokens = exchange(confidential, code, verifier).json()
    second = refresh(confidential, tokens["refresh_token"]).json()
    past_the_retry_window()
    refresh(confidential, tokens["refresh_token"])  # a replay: logged as a security event
    endpoint("/introspect", confidential, {"token": second["access_token"]})
    endpoint("/revoke", confidential, {"token": second["refresh_token"]})
    Browser().post("/password-reset/", {"email": user.email})
    reset_path = re.search(
        r"https://auth\.example\.test(/password-reset/\S+)", mail.outbox[-1].body
    ).group(1)
    Browser().get(reset_path + "nope/")  # a 404 whose path holds the reset token
    logging.getLogger("tokens").warning("oops: refresh_token=%s", second["refresh_token"])
    try:
        raise ValueError(f"bad id_token {tokens['id_token']}")
    except ValueError:
        logging.getLogger("tokens").exception("with a traceback")

    written = captured_logs.getvalue()
    assert "Revoked" in written and "Not Found" in written  # the logs did capture the flow
    secrets = {
        "password": PASSWORD,
        "client secret": confidential.secret,
        "code": code,
        "code verifier": verifier,
        "access token": tokens["access_token"],
        "refresh token": tokens["refresh_token"],
        "new refresh token": second["refresh_token"],
        "id token": tokens["id_token"],
        "reset token": reset_path.strip("/").split("/")[-1],
    }
    leaked = [name for name, value in secrets.items() if value in written]
    assert leaked == []


def test_redaction_masks_the_usual_shapes_of_secrets():
    assert redact("GET /password-reset/MQ/ce8a1-0123abcdef/") == "GET /password-reset/MQ/***/"
    assert redact("client_secret=abc&code=xyz") == "client_secret=***&code=***"
    assert redact("Authorization: Bearer abc.def") == "Authorization: ***"
    assert redact("{'refresh_token': 'r-123'}") == "{'refresh_token': '***'}"
    assert redact("token eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiIxMjM0NSJ9.sig") == "token [jwt]"


def test_json_logs_are_one_object_per_line_with_the_request_id():
    import json

    from authserver.logs import AddRequestId, JsonFormatter, RedactSecrets, request_id

    token = request_id.set("req-42")
    try:
        record = logging.LogRecord(
            "tokens", logging.INFO, __file__, 1, "issued %s", ("code=abc",), None
        )
        for log_filter in (AddRequestId(), RedactSecrets()):
            log_filter.filter(record)
        line = JsonFormatter().format(record)
    finally:
        request_id.reset(token)
    entry = json.loads(line)
    assert entry["request_id"] == "req-42" and entry["message"] == "issued code=***"
    assert entry["level"] == "INFO" and entry["logger"] == "tokens"
