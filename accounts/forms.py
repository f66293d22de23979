import logging

from django import forms
from django.conf import settings
from django.contrib.auth import authenticate
from django.contrib.auth.forms import (
    AuthenticationForm,
    UsernameField,
)
from django.contrib.auth.forms import (
    PasswordResetForm as DjangoPasswordResetForm,
)
from django.core.exceptions import ValidationError
from django.template import loader

from accounts import services, throttle
from accounts.models import SecurityEvent, User
from accounts.network import client_ip
from accounts.tasks import send_email
from authserver.metrics import LOGIN_FAILURES, LOGIN_LOCKOUTS, LOGIN_THROTTLED

logger = logging.getLogger(__name__)


class LoginForm(AuthenticationForm):
    """Django's sign-in form with brute-force protection and security events.

    Every failure, for an unknown name, a wrong password or an inactive account, gets the same
    words, so the form never tells whether an account exists.
    """

    username = UsernameField(
        label="Username or email",
        max_length=254,
        widget=forms.TextInput(attrs={"autofocus": True, "autocomplete": "username"}),
    )
    error_messages = {
        "invalid_login": "The username or email and password you entered do not match.",
        "inactive": "The username or email and password you entered do not match.",
        "throttled": (
            "Too many failed sign-in attempts. Please wait a while before trying again, "
            "or reset your password."
        ),
    }

    def clean(self):
        username = self.cleaned_data.get("username")
        password = self.cleaned_data.get("password")
        if username is None or not password:
            return self.cleaned_data
        known = User.objects.find_for_login(username)
        attempt = throttle.begin(
            username, client_ip(self.request), account_id=known.pk if known else None
        )
        if not attempt.allowed:
            LOGIN_THROTTLED.inc()
            raise ValidationError(self.error_messages["throttled"], code="throttled")
        self.user_cache = authenticate(self.request, username=username, password=password)
        if self.user_cache is None:
            locked = throttle.failed(attempt)
            LOGIN_FAILURES.inc()
            for subject in locked:
                LOGIN_LOCKOUTS.labels(subject).inc()
            services.record_event(
                SecurityEvent.Kind.LOGIN_FAILED,
                request=self.request,
                user=known,
                identifier=username,
            )
            if locked:
                services.record_event(
                    SecurityEvent.Kind.LOCKOUT,
                    request=self.request,
                    user=known,
                    identifier=username,
                    actor=SecurityEvent.Actor.SYSTEM,
                    locked=locked,
                )
            raise self.get_invalid_login_error()
        throttle.succeeded(attempt)
        self.confirm_login_allowed(self.user_cache)
        return self.cleaned_data


class FactorCodeForm(forms.Form):
    """A code from an authenticator app, or a recovery code."""

    code = forms.CharField(
        label="Code",
        max_length=32,
        strip=True,
        widget=forms.TextInput(
            attrs={"autocomplete": "one-time-code", "autocapitalize": "none", "spellcheck": "false"}
        ),
    )


class PasswordResetForm(DjangoPasswordResetForm):
    """Django's reset form; it answers the same whether or not the address is known."""

    def get_users(self, email):
        for user in super().get_users(email):
            services.record_event(
                SecurityEvent.Kind.PASSWORD_RESET_REQUESTED, request=self.request, user=user
            )
            yield user

    def send_mail(
        self,
        subject_template_name,
        email_template_name,
        context,
        from_email,
        to_email,
        html_email_template_name=None,
    ):
        """Django sends the reset email inside the request; a known address would then answer one
        mail-relay round trip later than an unknown one. Rendered here, sent by a Celery task."""
        subject = "".join(loader.render_to_string(subject_template_name, context).splitlines())
        body = loader.render_to_string(email_template_name, context)
        if settings.EMAIL_ASYNC:
            try:
                send_email.apply_async(args=[subject, body, from_email, [to_email]], retry=False)
                return
            except Exception:  # the broker is down: better late timing than a lost reset link
                logger.warning("Broker unreachable: sending the reset email from the request")
        send_email(subject, body, from_email, [to_email])

    def save(self, *args, request=None, **kwargs):
        self.request = request
        return super().save(*args, request=request, **kwargs)
