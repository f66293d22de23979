"""Django's receivers around each request (authserver/request_signals.py): the two that can do
nothing here are gone, the one that looks after database connections stays, and a cache whose
backend does close something keeps being closed."""

import os
import subprocess
import sys

import pytest
from django.core import signals
from django.core.cache import close_caches
from django.db import connection, reset_queries
from django.test import Client, override_settings

from authserver import request_signals
from tests.web import ROOT

pytestmark = pytest.mark.django_db


def connected(signal, receiver) -> bool:
    sync, asynchronous = signal._live_receivers(None)
    return receiver in sync or receiver in asynchronous


def test_the_idle_receivers_are_gone_and_connections_are_still_looked_after():
    """As a process starts (TokensConfig.ready), in one of its own: in this one, Django's query
    capture (assertNumQueries) connects reset_queries again when it is done."""
    probe = (
        "import django; django.setup()\n"
        "from django.core import signals; from django.core.cache import close_caches\n"
        "from django.db import close_old_connections, reset_queries\n"
        "def connected(signal, receiver):\n"
        "    sync, asynchronous = signal._live_receivers(None)\n"
        "    return receiver in sync or receiver in asynchronous\n"
        "print(connected(signals.request_started, reset_queries),"
        " connected(signals.request_finished, close_caches),"
        " connected(signals.request_started, close_old_connections),"
        " connected(signals.request_finished, close_old_connections))\n"
    )
    environ = {**os.environ, "DJANGO_SETTINGS_MODULE": "authserver.settings", "DEBUG": "false"}
    completed = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, env=environ, capture_output=True, text=True
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.split() == ["False", "False", "True", "True"]


def test_a_cache_backend_with_a_close_of_its_own_is_still_closed_after_each_request():
    signals.request_finished.connect(close_caches)
    try:
        memcached = {"BACKEND": "django.core.cache.backends.memcached.PyMemcacheCache"}
        with override_settings(CACHES={"default": memcached}):
            request_signals.drop_idle_receivers()
        assert connected(signals.request_finished, close_caches)
    finally:
        signals.request_finished.disconnect(close_caches)


def test_with_debug_on_the_query_log_is_emptied_at_each_request():
    signals.request_started.connect(reset_queries)  # as Django connects it
    try:
        with override_settings(DEBUG=True):
            request_signals.drop_idle_receivers()
            assert connected(signals.request_started, reset_queries)
            connection.queries_log.append({"sql": "SELECT 1", "time": "0.000"})
            Client().get("/ping")
            assert list(connection.queries_log) == []
    finally:
        signals.request_started.disconnect(reset_queries)
