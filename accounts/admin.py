from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.forms import UserChangeForm as DjangoUserChangeForm
from django.contrib.auth.forms import UserCreationForm as DjangoUserCreationForm
from django.db.models import Count, Q
from django.http import HttpRequest, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils import timezone

from accounts import factors
from accounts.models import Passkey, SecurityEvent, User, UserSession
from tokens import revocation

EndedBy = UserSession.EndedBy


class UserCreationForm(DjangoUserCreationForm):
    class Meta(DjangoUserCreationForm.Meta):
        model = User
        fields = ("username", "email")


class UserChangeForm(DjangoUserChangeForm):
    class Meta(DjangoUserChangeForm.Meta):
        model = User


class SessionInline(admin.TabularInline):
    model = UserSession
    verbose_name_plural = "browser sessions"
    fields = ("device", "ip_address", "created", "last_seen", "state", "end_reason")
    readonly_fields = fields
    extra = 0
    max_num = 0
    can_delete = False
    ordering = ("revoked_at", "-last_seen")
    show_change_link = True

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    form = UserChangeForm
    add_form = UserCreationForm
    add_fieldsets = (
        (None, {"classes": ("wide",), "fields": ("username", "email", "password1", "password2")}),
    )
    list_display = (
        "username",
        "email",
        "first_name",
        "last_name",
        "is_active",
        "is_staff",
        "live_sessions",
    )
    inlines = [SessionInline]
    fieldsets = (
        *DjangoUserAdmin.fieldsets,
        ("Second factors", {"fields": ("second_factors",)}),
    )
    readonly_fields = ("second_factors",)
    actions = ["deactivate_users", "reset_factors"]
    change_form_template = "admin/accounts/user/change_form.html"

    def get_queryset(self, request):
        now = timezone.now()
        live = Q(browser_sessions__revoked_at__isnull=True, browser_sessions__expire_date__gt=now)
        return (
            super()
            .get_queryset(request)
            .annotate(live_session_count=Count("browser_sessions", filter=live))
        )

    @admin.display(description="second factors")
    def second_factors(self, user: User) -> str:
        # The TOTP secret is encrypted and never shown; to take factors away, use the action
        # "Reset second factors" on the list of users.
        passkeys = [
            f"{p.name} (last used {p.last_used_at:%Y-%m-%d})" if p.last_used_at else p.name
            for p in Passkey.objects.filter(user=user)
        ]
        return (
            f"authenticator app: {'on' if factors.has_totp(user) else 'off'}; "
            f"recovery codes left: {factors.recovery_codes_left(user)}; "
            f"passkeys: {', '.join(passkeys) or 'none'}"
        )

    @admin.display(description="live sessions", ordering="live_session_count")
    def live_sessions(self, user: User) -> int:
        return user.live_session_count

    def get_urls(self):
        return [
            path(
                "<path:object_id>/end-sessions/",
                self.admin_site.admin_view(self.end_sessions_view),
                name="accounts_user_end_sessions",
            ),
            *super().get_urls(),
        ]

    def end_sessions_view(self, request: HttpRequest, object_id: str):
        """The "End all sessions" button on a user's page (POST only)."""
        user = get_object_or_404(User, pk=object_id)
        if request.method != "POST" or not self.has_change_permission(request, user):
            return HttpResponseRedirect(reverse("admin:accounts_user_change", args=[user.pk]))
        count = revocation.end_sessions(
            UserSession.objects.filter(user=user),
            by=EndedBy.OPERATOR,
            reason="ended by an operator",
            request=request,
            actor_user=request.user,
        )
        self.message_user(request, f"Ended {count} session(s) of {user}.", messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:accounts_user_change", args=[user.pk]))

    def save_model(self, request, obj: User, form, change: bool) -> None:
        deactivating = change and "is_active" in form.changed_data and not obj.is_active
        if deactivating:
            obj.is_active = True  # the service makes this change, and records and cascades it
        super().save_model(request, obj, form, change)
        if deactivating:
            revocation.deactivate_user(
                obj, by=EndedBy.OPERATOR, actor_user=request.user, request=request
            )

    @admin.action(
        description="Deactivate selected users and end their sessions", permissions=["change"]
    )
    def deactivate_users(self, request, queryset) -> None:
        for user in queryset:
            revocation.deactivate_user(
                user, by=EndedBy.OPERATOR, actor_user=request.user, request=request
            )
        self.message_user(request, f"Deactivated {queryset.count()} user(s).", messages.SUCCESS)

    @admin.action(
        description="Reset second factors (authenticator app, recovery codes, passkeys)",
        permissions=["change"],
    )
    def reset_factors(self, request, queryset) -> None:
        # For a person who lost their phone or keys: they sign in with the password and enrol
        # again. Each reset is a security event naming the operator.
        for user in queryset:
            factors.reset_factors(user, operator=request.user, request=request)
        self.message_user(
            request, f"Reset the second factors of {queryset.count()} user(s).", messages.SUCCESS
        )


class SessionStateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return [("active", "active"), ("ended", "ended"), ("expired", "expired")]

    def queryset(self, request, queryset):
        now = timezone.now()
        if self.value() == "active":
            return queryset.active(now)
        if self.value() == "ended":
            return queryset.filter(revoked_at__isnull=False)
        if self.value() == "expired":
            return queryset.filter(revoked_at__isnull=True, expire_date__lte=now)
        return queryset


@admin.register(UserSession)
class UserSessionAdmin(admin.ModelAdmin):
    """Browser sessions. The session key is a bearer secret, so it is never shown here."""

    list_display = ("user", "device", "ip_address", "created", "last_seen", "state", "ended_by")
    list_filter = (SessionStateFilter, "ended_by", "created")
    list_select_related = ("user",)
    search_fields = ("user__username", "user__email", "ip_address", "sid")
    ordering = ("-last_seen",)
    fields = (
        "user", "sid", "device", "user_agent", "ip_address", "created", "last_seen", "auth_time",
        "amr", "expire_date", "state", "revoked_at", "ended_by", "end_reason",
    )  # fmt: skip
    readonly_fields = fields
    actions = ["revoke_sessions"]

    def get_queryset(self, request):
        return super().get_queryset(request).filter(user__isnull=False)

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # sessions are ended (revoked), which keeps their history

    @admin.action(description="Revoke selected sessions", permissions=["change"])
    def revoke_sessions(self, request, queryset) -> None:
        count = revocation.end_sessions(
            queryset,
            by=EndedBy.OPERATOR,
            reason="revoked by an operator",
            request=request,
            actor_user=request.user,
        )
        self.message_user(request, f"Revoked {count} session(s).", messages.SUCCESS)


@admin.register(SecurityEvent)
class SecurityEventAdmin(admin.ModelAdmin):
    """Read-only: events are evidence."""

    list_display = (
        "created",
        "kind",
        "user",
        "identifier",
        "actor",
        "actor_user",
        "ip_address",
        "sid",
    )
    list_filter = ("kind", "actor", "created")
    list_select_related = ("user", "actor_user")
    search_fields = ("user__username", "user__email", "identifier", "ip_address", "sid")
    date_hierarchy = "created"

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
