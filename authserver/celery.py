"""The Celery app and its beat schedule."""

import os

from celery import Celery
from celery.schedules import crontab

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "authserver.settings")  # noqa: the app's entry point

app = Celery("authserver")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def _prepare_filesystem_broker() -> None:
    """The quick start's embedded broker is a folder; both the web process and the worker use it."""
    from pathlib import Path

    from django.conf import settings

    if settings.CELERY_BROKER_URL.startswith("filesystem://"):
        for key in ("data_folder_in", "data_folder_out", "processed_folder"):
            Path(settings.CELERY_BROKER_TRANSPORT_OPTIONS[key]).mkdir(parents=True, exist_ok=True)


_prepare_filesystem_broker()

# Minutes are staggered so jobs do not start together; `expires` drops a run that waited in the
# queue past its next slot, so a stalled worker does not come back to a pile of duplicates.
app.conf.beat_schedule = {
    "accounts-purge-sessions": {
        "task": "accounts.purge_sessions",
        "schedule": crontab(minute="7,22,37,52"),
        "options": {"expires": 10 * 60},
    },
    "tokens-rotate-signing-keys": {
        "task": "tokens.rotate_signing_keys",
        "schedule": crontab(minute="17"),
        "options": {"expires": 30 * 60},
    },
}
