from celery import shared_task
from django.core.mail import send_mail

from accounts.expiry import LOGIN_COUNTERS, SESSIONS, TOTP_ENROLMENTS
from authserver.janitor import make_task


@shared_task(name="accounts.send_email", ignore_result=True, max_retries=5, default_retry_delay=30)
def send_email(subject: str, body: str, from_email: str, recipients: list[str]) -> None:
    """Send one email outside the request, so how long the mail relay takes cannot tell anyone
    whether an address has an account (password reset). Retries when the relay is down."""
    try:
        send_mail(subject, body, from_email, recipients)
    except OSError as error:
        raise send_email.retry(exc=error) from None


expire_sessions = make_task(SESSIONS)
expire_login_counters = make_task(LOGIN_COUNTERS)
expire_totp_enrolments = make_task(TOTP_ENROLMENTS)
