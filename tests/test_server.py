"""The production web server (authserver/server.py: granian), through the real thing: the
process docker/Dockerfile starts, on the test database, answering over TCP.

What gunicorn's config used to guarantee, each checked here: the access log without secrets,
X-Forwarded-Proto believed only when the application is told to, Prometheus counts summed over
the workers, a hung request ended (gunicorn's timeout), graceful shutdown on SIGTERM; and one
thing gunicorn never did: the process environment copied into every request.
"""

import base64
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlencode

import psycopg
import pytest
from django.conf import settings

from tests.web import ROOT, Answer, Web, database_url, running, wait_for
from tokens.clients import create_client

pytestmark = pytest.mark.django_db(transaction=True)


@contextmanager
def locked(table: str):
    """``table`` locked (ACCESS EXCLUSIVE: even reads wait) by a transaction of our own, so a
    request that reads it hangs until the block ends."""
    with psycopg.connect(database_url()) as conn:
        conn.execute(f'LOCK TABLE "{table}" IN ACCESS EXCLUSIVE MODE')  # opens the transaction
        yield
        conn.rollback()


def token_request(
    web: Web, client_id: str, secret: str, timeout: float = 5, headers: dict | None = None
) -> Answer:
    """RFC 6749 §4.4: a client_credentials grant, client_secret_basic."""
    credentials = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return web.request(
        "POST",
        "/token",
        urlencode({"grant_type": "client_credentials"}),
        {
            "Content-Type": "application/x-www-form-urlencoded",
            "Authorization": f"Basic {credentials}",
            **(headers or {}),
        },
        timeout=timeout,
    )


def in_thread(call) -> tuple[threading.Thread, dict]:
    """``call()`` in a thread; its answer (or the exception it raised) in the dict, later."""
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["answer"] = call()
        except Exception as error:
            outcome["error"] = error

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


# --- start-up ------------------------------------------------------------------------------------
def test_a_misconfigured_environment_stops_the_master_listing_every_problem(tmp_path):
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    result = subprocess.run(
        [sys.executable, "-m", "authserver.server"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**keep, "WEB_CONCURRENCY": "none", "WEB_BIND": "8000", "DEBUG": "false"},
    )  # fmt: skip
    assert result.returncode != 0
    for name in ("WEB_CONCURRENCY", "WEB_BIND", "SECRET_KEY", "ALLOWED_HOSTS", "DATABASE_URL"):
        assert name in result.stderr, name
    assert "Spawning worker" not in result.stdout + result.stderr  # no worker was started


def test_the_master_forks_its_workers_before_django_is_set_up():
    """granian's master imports authserver.server, so importing the package must not configure
    Django: each worker sets up the application it serves after the fork (and may serve another
    one that configures its own settings, as bench/bare_django.py does)."""
    probe = (
        "import authserver.server, django.conf, sys; "
        "sys.exit(1 if django.conf.settings.configured else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


# --- the access log ------------------------------------------------------------------------------
def test_the_access_log_is_one_json_line_per_request_with_no_query_referer_or_credential(
    tmp_path,
):
    client, secret = create_client(name="Logged", grant_types=["client_credentials"])
    with running(tmp_path, LOG_JSON="true") as web:
        reset = web.request(
            "GET",
            "/password-reset/MQ/cx1-abc123/?code=QUERY-SECRET&state=STATE-SECRET",
            headers={
                "Referer": "https://rp.example/cb?code=REFERER-SECRET",
                "Authorization": "Basic ZGVtbzpCQVNJQy1TRUNSRVQ=",
                "Cookie": "authserver_session=COOKIE-SECRET",
                "X-Forwarded-For": "203.0.113.9",
                "User-Agent": "curl/8",
                "X-Request-ID": "req-access-1",
            },
        )
        issued = token_request(web, client.client_id, secret)
        forged = web.request("GET", "/x%0a127.0.0.1%20-%20-%20forged%20line")
        logged = web.log()
    assert issued.status == 200 and forged.status == 404
    entries = [json.loads(line) for line in logged.splitlines() if line.startswith("{")]
    access = [e for e in entries if e["logger"] == "authserver.access"]
    [reset_line] = [e for e in access if "/password-reset/" in e["message"]]
    assert reset_line["request_id"] == "req-access-1"
    assert reset_line["message"].startswith(
        f'127.0.0.1 203.0.113.9 "GET /password-reset/MQ/***/ HTTP/1.1" {reset.status} '
    )
    assert reset_line["message"].endswith('ms "curl/8"')
    [token_line] = [e for e in access if " /token " in e["message"]]
    assert '"POST /token HTTP/1.1" 200 ' in token_line["message"]
    assert token_line["request_id"] == issued.headers["X-Request-ID"]
    [forged_line] = [e for e in access if "forged" in e["message"]]
    assert '"GET /x?127.0.0.1 - - forged line HTTP/1.1" 404' in forged_line["message"]
    # Nothing of the query, the Referer, the credentials or the cookie, anywhere in the output.
    for secret_text in ("SECRET", "cx1-abc123", "ZGVtbz", secret, "\n127.0.0.1 - - forged"):
        assert secret_text not in logged, secret_text


def test_access_log_false_leaves_only_the_servers_own_lines(tmp_path):
    with running(tmp_path, ACCESS_LOG="false") as web:
        for _ in range(20):
            assert web.request("GET", "/.well-known/openid-configuration").status == 200
        logged = web.log()
    assert "openid-configuration" not in logged
    assert "authserver.access" not in logged and "Spawning worker" in logged


# --- X-Forwarded-Proto ---------------------------------------------------------------------------
def test_claiming_https_is_believed_only_with_trust_x_forwarded_proto(tmp_path):
    """RFC 9700 §4.13, RFC 6749 §3.2: gunicorn believed X-Forwarded-Proto from loopback by
    default; granian never sets the scheme from a header, so the application alone decides
    (TRUST_X_FORWARDED_PROTO), whoever sends it. Two things show what it believed: a token
    request for a public host name over plain http gets insecure_transport, and HSTS is sent on
    https requests only (SecurityMiddleware)."""
    client, secret = create_client(name="Scheme", grant_types=["client_credentials"])
    claim = {"X-Forwarded-Proto": "https"}
    public = {**claim, "Host": "auth.example.test"}
    hosts = "127.0.0.1,auth.example.test"
    path = "/.well-known/openid-configuration"
    # Our requests come from 127.0.0.1: the peer gunicorn trusted.
    with running(tmp_path, ALLOWED_HOSTS=hosts) as web:
        refused = token_request(web, client.client_id, secret, headers=public)
        answer = web.request("GET", path, headers=claim)
    assert refused.status == 400 and json.loads(refused.body)["error"] == "insecure_transport"
    assert answer.status == 200 and "Strict-Transport-Security" not in answer.headers

    trusting = tmp_path / "trusting"
    trusting.mkdir()
    with running(trusting, ALLOWED_HOSTS=hosts, TRUST_X_FORWARDED_PROTO="true") as web:
        issued = token_request(web, client.client_id, secret, headers=public)
        believed = web.request("GET", path, headers=claim)
        plain = web.request("GET", path)
    assert issued.status == 200 and json.loads(issued.body)["token_type"] == "Bearer"
    assert believed.headers["Strict-Transport-Security"].startswith("max-age=31536000")
    assert "Strict-Transport-Security" not in plain.headers


# --- the WSGI environ ----------------------------------------------------------------------------
def test_the_process_environment_never_reaches_a_request(tmp_path):
    """granian copies os.environ into every WSGI environ: request.META would carry SECRET_KEY
    and the database password. authserver/server.py takes them out; a client's own headers stay,
    and HTTP_PROXY in the environment does not pose as a Proxy header (httpoxy)."""
    with running(
        tmp_path,
        app="tests.web_apps:environ_keys",
        SENTINEL_SECRET="s3cr3t",
        HTTP_PROXY="http://proxy.invalid:3128",
    ) as web:
        keys = json.loads(web.request("GET", "/probe?x=1", headers={"X-Probe": "yes"}).body)
    for inherited in ("SENTINEL_SECRET", "HTTP_PROXY", "SECRET_KEY", "DATABASE_URL", "PATH"):
        assert inherited not in keys, inherited
    request_keys = {"REQUEST_METHOD", "PATH_INFO", "QUERY_STRING", "HTTP_HOST", "HTTP_X_PROBE"}
    assert request_keys | {"REMOTE_ADDR", "SERVER_PROTOCOL", "wsgi.url_scheme"} <= set(keys)


# --- answers -------------------------------------------------------------------------------------
def test_an_answer_in_memory_hands_its_database_connection_back_before_it_arrives(tmp_path):
    """Django ends a request's database connection (CONN_MAX_AGE 0, no pool) on request_finished,
    which it sends when the response is closed. authserver/server.py closes a response held in
    memory itself, before granian writes it (it hands granian a list, written in one call):
    by the time the client has its answer, the worker holds no connection of that request."""
    probe = "answered-probe"
    with running(
        tmp_path, DATABASE_URL=f"{database_url()}?application_name={probe}", DATABASE_POOL_SIZE="0"
    ) as web:
        answer = token_request(web, f"unknown-{uuid.uuid4().hex}", "secret")  # reads the clients
        assert answer.status == 401, answer.body
        with psycopg.connect(database_url()) as conn:
            (left,) = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
                " AND query LIKE '%%tokens_client%%'",
                (probe,),
            ).fetchone()
    assert left == 0


def test_a_streamed_answer_arrives_whole(tmp_path):
    """A static file is a streamed response (WhiteNoise's): granian iterates and closes it."""
    name = "css/site.css"
    expected = (Path(settings.STATIC_ROOT) / name).read_bytes()
    with running(tmp_path) as web:
        answer = web.request("GET", f"/static/{name}")
    assert answer.status == 200
    assert answer.body == expected


# --- metrics -------------------------------------------------------------------------------------
def served(web: Web, endpoint: str) -> float:
    """authserver_http_request_duration_seconds_count of ``endpoint`` on /metrics, all labels."""
    answer = web.request("GET", "/metrics")
    assert answer.status == 200
    total = 0.0
    for line in answer.text().splitlines():
        if line.startswith("authserver_http_request_duration_seconds_count{") and (
            f'endpoint="{endpoint}"' in line
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_metrics_sum_every_worker_and_forget_the_live_gauge_of_a_dead_one(tmp_path):
    endpoint = "tokens:openid_configuration"
    with running(tmp_path, workers=2) as web:
        for _ in range(40):  # each on a connection of its own: the kernel spreads them
            assert web.request("GET", "/.well-known/openid-configuration").status == 200
        workers = web.workers()
        timed = {
            int(m.group(1))
            for m in map(re.compile(r"histogram_(\d+)\.db").fullmatch, os.listdir(web.metrics_dir))
            if m
        }
        assert timed == set(workers), "each worker writes its own counts"
        assert served(web, endpoint) == 40, "and /metrics sums them"

        victim = workers[0]
        gauge = web.metrics_dir / f"gauge_livemax_{victim}.db"  # the circuit breaker's state
        assert gauge.exists()
        os.kill(victim, signal.SIGKILL)
        wait_for(
            lambda: len(web.workers()) == 2 and victim not in web.workers(),
            15,
            "granian did not replace the killed worker",
        )
        wait_for(web.answers, 15, "the server did not answer again")
        assert served(web, endpoint) == 40, "what the dead worker counted still counts"
        assert not gauge.exists(), "its live gauge is dropped at the scrape"
    assert "Respawning worker" in web.log()


# --- a hung request, and stopping ----------------------------------------------------------------
def test_a_request_past_web_timeout_ends_its_worker_and_another_takes_over(tmp_path):
    """gunicorn killed a worker whose request ran past its timeout; granian never would. A
    request stuck on a lock (or a database that stopped answering) ends its worker after
    WEB_TIMEOUT; granian starts another, which serves the next request."""
    client, secret = create_client(name="Stuck", grant_types=["client_credentials"])
    with running(tmp_path, WEB_TIMEOUT="5") as web:
        [first] = web.workers()
        with locked("tokens_client"):
            started = time.monotonic()
            with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError)):
                token_request(web, client.client_id, secret, timeout=30)
            waited = time.monotonic() - started
        assert 5 <= waited < 9
        wait_for(lambda: web.workers() not in ([], [first]), 15, "no worker replaced it")
        wait_for(web.answers, 15, "the new worker did not answer")
        assert token_request(web, client.client_id, secret).status == 200
    logged = web.log()
    assert re.search(r"POST /token still running after [5-8] s \(WEB_TIMEOUT 5 s\)", logged)
    assert f"worker {first} exits" in logged


def test_sigterm_lets_the_request_in_flight_finish_and_takes_no_new_one(tmp_path):
    client, secret = create_client(name="Draining", grant_types=["client_credentials"])
    with running(tmp_path) as web:
        with locked("tokens_client"):
            thread, outcome = in_thread(
                lambda: token_request(web, client.client_id, secret, timeout=30)
            )
            time.sleep(1)  # the request is in the worker, waiting on the lock
            web.process.send_signal(signal.SIGTERM)
            time.sleep(1)
            with pytest.raises(ConnectionRefusedError):
                web.request("GET", "/health/live")
        thread.join(15)
        assert outcome["answer"].status == 200, outcome
        assert web.process.wait(15) == 0


def test_a_request_still_running_after_web_graceful_timeout_is_cut_off(tmp_path):
    client, secret = create_client(name="Too slow", grant_types=["client_credentials"])
    with running(tmp_path, WEB_GRACEFUL_TIMEOUT="2") as web:
        with locked("tokens_client"):
            thread, outcome = in_thread(
                lambda: token_request(web, client.client_id, secret, timeout=30)
            )
            time.sleep(1)
            stopping = time.monotonic()
            web.process.send_signal(signal.SIGTERM)
            assert web.process.wait(15) == 0
            took = time.monotonic() - stopping
            thread.join(15)
    assert 1.5 <= took < 6
    assert isinstance(outcome.get("error"), (http.client.RemoteDisconnected, ConnectionResetError))
    assert "refused to gracefully stop" in web.log()
