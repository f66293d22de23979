"""The Celery app and its beat schedule."""

import os

from celery import Celery
from celery.schedules import crontab

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "authserver.settings")

app = Celery("authserver")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


# Once Celery reads its configuration (the first task sent, the worker starting), not when this
# module is imported: importing the package must not load the settings. authserver/server.py
# imports it in granian's master, which forks the workers and may serve another application.
@app.on_after_configure.connect
def _prepare_filesystem_broker(**_kwargs) -> None:
    """The quick start's embedded broker is a folder; both the web process and the worker use it."""
    from pathlib import Path

    from django.conf import settings

    if settings.CELERY_BROKER_URL.startswith("filesystem://"):
        for key in ("data_folder_in", "data_folder_out", "processed_folder", "control_folder"):
            Path(settings.CELERY_BROKER_TRANSPORT_OPTIONS[key]).mkdir(parents=True, exist_ok=True)


# Minutes are staggered so jobs do not start together; `expires` drops a run that waited in the
# queue past its next slot, so a stalled worker does not come back to a pile of duplicates. Each
# expiry job re-enqueues itself while work remains, so these are floors, not ceilings.
def _every_quarter_hour(offset: int) -> crontab:
    return crontab(minute=",".join(str(offset + 15 * i) for i in range(4)))


_QUARTER = {"expires": 14 * 60}
app.conf.beat_schedule = {
    "tokens-expire-authorization-codes": {
        "task": "tokens.expire_authorization_codes",
        "schedule": _every_quarter_hour(1),
        "options": _QUARTER,
    },
    "tokens-expire-refresh-tokens": {
        "task": "tokens.expire_refresh_tokens",
        "schedule": _every_quarter_hour(4),
        "options": _QUARTER,
    },
    "tokens-wipe-refresh-retry-answers": {
        "task": "tokens.wipe_refresh_retry_answers",
        "schedule": crontab(minute="2-59/5"),
        "options": {"expires": 4 * 60},
    },
    "accounts-expire-sessions": {
        "task": "accounts.expire_sessions",
        "schedule": _every_quarter_hour(7),
        "options": _QUARTER,
    },
    "tokens-prune-deny-list": {
        "task": "tokens.prune_deny_list",
        "schedule": _every_quarter_hour(11),
        "options": _QUARTER,
    },
    "tokens-expire-consents": {
        "task": "tokens.expire_consents",
        "schedule": crontab(minute="23"),
        "options": {"expires": 50 * 60},
    },
    "tokens-expire-initial-access-tokens": {
        "task": "tokens.expire_initial_access_tokens",
        "schedule": crontab(minute="29"),
        "options": {"expires": 50 * 60},
    },
    "tokens-expire-pushed-authorization-requests": {
        "task": "tokens.expire_pushed_authorization_requests",
        "schedule": _every_quarter_hour(13),
        "options": _QUARTER,
    },
    "tokens-expire-device-authorizations": {
        "task": "tokens.expire_device_authorizations",
        "schedule": crontab(minute="33"),
        "options": {"expires": 50 * 60},
    },
    "tokens-expire-session-clients": {
        "task": "tokens.expire_session_clients",
        "schedule": crontab(minute="53"),
        "options": {"expires": 50 * 60},
    },
    "accounts-expire-login-counters": {
        "task": "accounts.expire_login_counters",
        "schedule": crontab(minute="47"),
        "options": {"expires": 50 * 60},
    },
    "accounts-expire-totp-enrolments": {
        "task": "accounts.expire_totp_enrolments",
        "schedule": crontab(hour="4", minute="41"),
        "options": {"expires": 6 * 3600},
    },
    "tokens-resend-logout-deliveries": {
        "task": "tokens.resend_logout_deliveries",
        "schedule": crontab(minute="*/5"),
        "options": {"expires": 4 * 60},
    },
    "tokens-expire-logout-deliveries": {
        "task": "tokens.expire_logout_deliveries",
        "schedule": crontab(hour="3", minute="37"),
        "options": {"expires": 6 * 3600},
    },
    "tokens-rotate-signing-keys": {
        "task": "tokens.rotate_signing_keys",
        "schedule": crontab(minute="17"),
        "options": {"expires": 30 * 60},
    },
}
