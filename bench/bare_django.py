"""A bare Django app, as ``django-admin startproject`` makes it, answering GET /ping with "pong":
the machine's reference for bench/tokens.py (scenario ``django_ping``; under the server being
measured too, as ``django_ping_server``, for information).

The issue's targets were set on a machine where such an app served about 2,860 req/s under
gunicorn with one sync worker; measuring the same app here, in the same run, under the same
gunicorn, gives the factor that scales those targets to this machine. So it keeps startproject's
defaults (its INSTALLED_APPS, MIDDLEWARE, TEMPLATES, i18n and time zone settings, the admin's
URLs) and adds only the view. No database: ``DATABASES`` is empty (Django's dummy backend), so
the request path cannot touch one without failing loudly; nothing on /ping does (the session,
the user and the messages are lazy). DEBUG is off; ALLOWED_HOSTS and SECRET_KEY come from the
environment bench/common.server_env gives every server.

    gunicorn bench.bare_django:application        # from the repository's root
"""

from __future__ import annotations

import os

from django.conf import settings

settings.configure(
    DEBUG=False,
    SECRET_KEY=os.environ.get("SECRET_KEY", "bench-only-secret-key-0123456789-abcdefghijklmn"),
    ALLOWED_HOSTS=os.environ.get("ALLOWED_HOSTS", "127.0.0.1,localhost").split(","),
    ROOT_URLCONF=__name__,
    WSGI_APPLICATION=f"{__name__}.application",
    # startproject's defaults, in its order.
    INSTALLED_APPS=[
        "django.contrib.admin",
        "django.contrib.auth",
        "django.contrib.contenttypes",
        "django.contrib.sessions",
        "django.contrib.messages",
        "django.contrib.staticfiles",
    ],
    MIDDLEWARE=[
        "django.middleware.security.SecurityMiddleware",
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.middleware.common.CommonMiddleware",
        "django.middleware.csrf.CsrfViewMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        "django.contrib.messages.middleware.MessageMiddleware",
        "django.middleware.clickjacking.XFrameOptionsMiddleware",
    ],
    TEMPLATES=[
        {
            "BACKEND": "django.template.backends.django.DjangoTemplates",
            "DIRS": [],
            "APP_DIRS": True,
            "OPTIONS": {
                "context_processors": [
                    "django.template.context_processors.request",
                    "django.contrib.auth.context_processors.auth",
                    "django.contrib.messages.context_processors.messages",
                ],
            },
        },
    ],
    DATABASES={},
    LANGUAGE_CODE="en-us",
    TIME_ZONE="UTC",
    USE_I18N=True,
    USE_TZ=True,
    STATIC_URL="static/",
    DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
)

from django.contrib import admin  # noqa: E402 - after settings.configure(), as Django requires
from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.http import HttpRequest, HttpResponse  # noqa: E402
from django.urls import path  # noqa: E402

application = get_wsgi_application()  # django.setup(): the apps are ready before the admin's URLs


def ping(request: HttpRequest) -> HttpResponse:
    return HttpResponse("pong")


urlpatterns = [
    path("admin/", admin.site.urls),
    path("ping", ping),
]
