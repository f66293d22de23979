"""WSGI applications for tests/test_server.py, served by authserver/server.py like ours."""

import json


def environ_keys(environ, start_response):
    """Answers with the names in the request's environ: what request.META would hold."""
    body = json.dumps(sorted(environ)).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]
