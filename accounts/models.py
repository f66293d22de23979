"""People, their browser sessions, and the security events about them."""

from __future__ import annotations

import secrets
from datetime import datetime
from importlib import import_module

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.contrib.auth.models import UserManager as DjangoUserManager
from django.contrib.sessions.base_session import AbstractBaseSession
from django.core.validators import RegexValidator
from django.db import models
from django.db.models.functions import Lower
from django.utils import timezone

from accounts.devices import describe_device


class UserManager(DjangoUserManager):
    def find_for_login(self, identifier: str) -> User | None:
        """The user a login form's identifier names: an email address or a username, any case."""
        identifier = identifier.strip()
        if "@" in identifier:
            lookup = self.alias(key=Lower("email")).filter(key=identifier.lower())
        else:
            lookup = self.alias(key=Lower("username")).filter(key=identifier.lower())
        return lookup.first()

    def get_by_natural_key(self, username: str) -> User:
        # createsuperuser and loaddata look people up here; match the unique index, any case.
        return self.alias(key=Lower("username")).get(key=username.lower())


username_validator = RegexValidator(
    r"^[\w.+-]+\Z",
    "Use letters, digits and . + - _ only. (No @: people may sign in with their email address.)",
)


class User(AbstractUser):
    """A person who signs in. Username and email are unique regardless of case."""

    username = models.CharField(
        "username",
        max_length=150,
        unique=True,
        validators=[username_validator],
        help_text="150 characters or fewer. Letters, digits and . + - _ only.",
    )
    email = models.EmailField(
        "email address", help_text="Used to sign in and to reset the password."
    )
    email_verified = models.BooleanField(
        default=False, help_text="The person has shown they read this address (e.g. a reset link)."
    )

    objects = UserManager()

    REQUIRED_FIELDS = ["email"]

    class Meta:
        constraints = [
            models.UniqueConstraint(
                Lower("username"),
                name="accounts_user_username_ci_unique",
                violation_error_message="A user with that username already exists.",
            ),
            models.UniqueConstraint(
                Lower("email"),
                name="accounts_user_email_ci_unique",
                violation_error_message="A user with that email address already exists.",
            ),
        ]

    def clean(self) -> None:
        super().clean()
        self.email = self.email.strip()


def new_sid() -> str:
    return secrets.token_urlsafe(24)


class UserSessionQuerySet(models.QuerySet):
    def active(self, now: datetime | None = None) -> UserSessionQuerySet:
        """Sessions that still let their browser in: not revoked, not expired."""
        return self.filter(revoked_at__isnull=True, expire_date__gt=now or timezone.now())


class UserSession(AbstractBaseSession):
    """One browser session, through Django's own session machinery (see accounts/sessions.py).

    The primary key is the SHA-256 of the cookie value (a bearer secret, never stored as is).
    ``sid`` is the public, stable name of the session (OIDC ``sid``, URLs, admin); it is set
    when a person signs in and survives key rotation (``cycle_key`` on a password change).
    """

    class EndedBy(models.TextChoices):
        PERSON = "person", "the person"
        OPERATOR = "operator", "an operator"
        SYSTEM = "system", "the system"
        CLIENT = "client", "a client application"

    session_key = models.CharField("key digest", max_length=64, primary_key=True)
    # NULL until sign-in (anonymous sessions have none); unique among those that have one.
    sid = models.CharField(max_length=64, unique=True, null=True, editable=False)  # noqa: DJ001
    user = models.ForeignKey(
        "accounts.User", null=True, on_delete=models.CASCADE, related_name="browser_sessions"
    )
    created = models.DateTimeField(default=timezone.now)
    last_seen = models.DateTimeField(default=timezone.now, help_text="Updated about once a minute.")
    ip_address = models.GenericIPAddressField(
        null=True, blank=True, help_text="Most recent client IP."
    )
    user_agent = models.CharField(max_length=512, blank=True)
    auth_time = models.DateTimeField(
        null=True, blank=True, help_text="When the person last entered a password."
    )
    amr = models.JSONField(default=list, blank=True, help_text="Authentication methods (RFC 8176).")
    revoked_at = models.DateTimeField(null=True, blank=True)
    ended_by = models.CharField(max_length=16, choices=EndedBy.choices, blank=True)
    end_reason = models.CharField(max_length=200, blank=True)

    objects = UserSessionQuerySet.as_manager()

    class Meta:
        verbose_name = "browser session"
        indexes = [
            models.Index(fields=["user", "revoked_at"], name="accounts_session_user_idx"),
            models.Index(fields=["revoked_at"], name="accounts_session_revoked_idx"),
        ]

    @classmethod
    def get_session_store_class(cls):
        # The store imports this model; the model finds its store the way Django's session
        # middleware does, through SESSION_ENGINE (accounts.sessions), so neither module
        # imports the other in a cycle.
        return import_module(settings.SESSION_ENGINE).SessionStore

    def __str__(self) -> str:
        return f"{self.user or 'anonymous'} on {self.device}"

    @property
    def device(self) -> str:
        return describe_device(self.user_agent)

    @property
    def state(self) -> str:
        if self.revoked_at:
            return "ended"
        if self.expire_date <= timezone.now():
            return "expired"
        return "active"


class LoginCounter(models.Model):
    """Login throttle counters, used only while the cache (Redis) cannot be reached, so a Redis
    outage opens neither the door to guessing nor a 500 on the sign-in page."""

    key = models.CharField(max_length=100, primary_key=True)
    count = models.IntegerField(default=0)
    expires = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return f"{self.key}: {self.count}"


class SecurityEvent(models.Model):
    """An append-only record of something that matters to an account's security."""

    class Kind(models.TextChoices):
        LOGIN_SUCCEEDED = "login_succeeded", "login succeeded"
        LOGIN_FAILED = "login_failed", "login failed"
        LOCKOUT = "lockout", "locked out after failed logins"
        LOGOUT = "logout", "logged out"
        PASSWORD_RESET_REQUESTED = "password_reset_requested", "password reset requested"
        PASSWORD_RESET = "password_reset", "password reset"
        PASSWORD_CHANGED = "password_changed", "password changed"
        SESSION_ENDED = "session_ended", "session ended"
        USER_DEACTIVATED = "user_deactivated", "user deactivated"
        REFRESH_REPLAY = "refresh_replay", "refresh token replayed"
        CODE_REPLAY = "code_replay", "authorization code replayed"
        TOKENS_REVOKED = "tokens_revoked", "tokens revoked"
        CLIENT_DEACTIVATED = "client_deactivated", "client deactivated"
        TOKEN_EXCHANGED = "token_exchanged", "token exchanged (RFC 8693)"
        FACTOR_ADDED = "factor_added", "second factor added"
        FACTOR_REMOVED = "factor_removed", "second factor removed"
        FACTORS_RESET = "factors_reset", "all factors reset"
        FACTOR_FAILED = "factor_failed", "second factor failed"
        RECOVERY_CODE_USED = "recovery_code_used", "recovery code used"
        PASSKEY_CLONED = "passkey_cloned", "passkey counter went back (cloned?)"

    Actor = UserSession.EndedBy

    kind = models.CharField(max_length=32, choices=Kind.choices)
    created = models.DateTimeField(default=timezone.now, db_index=True)
    user = models.ForeignKey(
        "accounts.User",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="security_events",
    )
    identifier = models.CharField(
        max_length=254, blank=True, help_text="What was typed as the username, for failed logins."
    )
    actor = models.CharField(max_length=16, choices=Actor.choices, default=Actor.PERSON)
    actor_user = models.ForeignKey(
        "accounts.User",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The operator, when an operator acted.",
    )
    sid = models.CharField("session", max_length=64, blank=True)
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=512, blank=True)
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created"]
        indexes = [models.Index(fields=["user", "-created"], name="accounts_event_user_idx")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} ({self.created:%Y-%m-%d %H:%M:%S})"


class TotpDevice(models.Model):
    """An authenticator app (RFC 6238) of a person. The shared secret is stored encrypted (see
    accounts/factors.py) and never shown again after enrolment. A row without ``confirmed_at``
    is an enrolment in progress: it counts for nothing until a first valid code confirms it."""

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="totp_devices")
    encrypted_secret = models.TextField(editable=False)
    created = models.DateTimeField(default=timezone.now)
    confirmed_at = models.DateTimeField(null=True, blank=True)
    last_used_step = models.BigIntegerField(
        null=True,
        blank=True,
        help_text="RFC 6238 §5.2: the last accepted time step; no code of it or before is taken.",
    )

    class Meta:
        verbose_name = "authenticator app"
        constraints = [
            models.UniqueConstraint(
                fields=["user"],
                condition=models.Q(confirmed_at__isnull=False),
                name="accounts_totp_one_confirmed",
            )
        ]

    def __str__(self) -> str:
        return f"authenticator app of {self.user_id}"


class RecoveryCode(models.Model):
    """A one-time recovery code, stored as a keyed SHA-256 (they are random, generated here)."""

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="recovery_codes")
    digest = models.CharField(max_length=64, editable=False)
    created = models.DateTimeField(default=timezone.now)
    used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "digest"], name="accounts_recovery_unique")
        ]

    def __str__(self) -> str:
        return f"recovery code {self.pk} of {self.user_id}"


class Passkey(models.Model):
    """A WebAuthn credential (a passkey) registered by a person."""

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="passkeys")
    name = models.CharField(max_length=100)
    credential_id = models.CharField(max_length=1400, unique=True, help_text="base64url")
    user_handle = models.CharField(
        max_length=100, editable=False, help_text="WebAuthn user.id (base64url), random."
    )
    public_key = models.BinaryField(editable=False)
    sign_count = models.BigIntegerField(
        default=0, help_text="WebAuthn §6.1.1: a count that goes back means a cloned key."
    )
    synced = models.BooleanField(
        default=False, help_text="Backed up by its provider (WebAuthn BS flag): amr swk, not hwk."
    )
    transports = models.JSONField(default=list, blank=True)
    aaguid = models.CharField(max_length=36, blank=True)
    created = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"passkey {self.name!r} of {self.user_id}"
