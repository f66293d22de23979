"""gunicorn for the benchmarks' reference: `gunicorn -c bench/gunicorn.conf.py bench.bare_django`.

The issue's targets are ratios to a bare Django /ping under gunicorn's sync worker (bench/tokens.py,
``django_ping``), so that reference keeps the settings production ran until issue 13 moved it to
granian (authserver/server.py): these are docker/gunicorn.conf.py's, less its access log and
metrics hooks, which the benchmarks turn off or give a directory of their own. bench/purge.py
runs our server under it too, for the time gunicorn's access log gives each request.
"""

import os

bind = [f"0.0.0.0:{os.environ.get('PORT', '8000')}"]
workers = int(os.environ.get("WEB_CONCURRENCY") or 1)
worker_class = "sync"
timeout = 30
graceful_timeout = 30
keepalive = 5
max_requests = 1000
max_requests_jitter = 100
# The heartbeat file is written on every request: on a tmpfs, as production had it.
worker_tmp_dir = "/dev/shm"  # noqa: S108 - a tmpfs, not a shared /tmp file name
control_socket_disable = True
accesslog = None
errorlog = "-"
