"""The answer to an unhandled error: 503 with Retry-After when a backing service is down (the
database restarting, say), the friendly 500 page otherwise. Protocol endpoints answer in the
RFC's JSON; no one ever sees a stack trace."""

import sys

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.csrf import requires_csrf_token

PROTOCOL_PATHS = ("/token", "/introspect", "/revoke", "/userinfo", "/register")
RETRY_AFTER = "5"


@requires_csrf_token
def server_error(request: HttpRequest) -> HttpResponse:
    error = sys.exc_info()[1]  # Django calls this inside its except block
    unavailable = isinstance(error, OperationalError | InterfaceError)
    status = 503 if unavailable else 500
    if request.path.startswith(PROTOCOL_PATHS):
        response = JsonResponse(
            {
                "error": "temporarily_unavailable" if unavailable else "server_error",
                "error_description": "Try again shortly."
                if unavailable
                else "Something went wrong on our side.",
            },
            status=status,
        )
        response["Cache-Control"] = "no-store"
    else:
        response = render(request, "503.html" if unavailable else "500.html", status=status)
    if unavailable:
        response["Retry-After"] = RETRY_AFTER
    return response
