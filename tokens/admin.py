from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.template.response import TemplateResponse
from django.urls import reverse

from accounts import assurance
from accounts.models import SecurityEvent
from tokens import clients, logout, revocation, scopes
from tokens.models import (
    BackchannelLogout,
    Client,
    Consent,
    DeviceAuthorization,
    InitialAccessToken,
    PushedAuthorizationRequest,
    RefreshToken,
    SigningKey,
)


class ClientForm(forms.ModelForm):
    redirect_uris = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "cols": 80}),
        required=False,
        help_text="Exact redirect URIs, one per line (https, or http on loopback for native apps).",
    )
    grant_types = forms.MultipleChoiceField(
        choices=Client.GrantType.choices, widget=forms.CheckboxSelectMultiple
    )
    allowed_scopes = forms.MultipleChoiceField(
        widget=forms.CheckboxSelectMultiple,
        required=False,
        help_text="None ticked: what the grant types can use (authorization code: openid, "
        "profile, email; with refresh token also offline_access; client credentials: none).",
    )
    default_acr_values = forms.MultipleChoiceField(
        choices=[(acr, acr) for acr in assurance.LEVELS],
        widget=forms.CheckboxSelectMultiple,
        required=False,
        help_text="Levels asked for when a request names none (OIDC Registration §2); people "
        "without the factor still get in. To insist, use Require.",
    )
    backchannel_logout_uri = forms.URLField(
        assume_scheme="https",
        required=False,
        max_length=500,
        help_text="Receives a logout_token when a browser session it used ends (https).",
    )
    post_logout_redirect_uris = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 2, "cols": 80}),
        required=False,
        help_text="Exact URIs the client may send people to after logout, one per line.",
    )
    jwks_uri = forms.URLField(
        assume_scheme="https",
        required=False,
        max_length=500,
        label="JWKS URI",
        help_text="Where the client publishes its public keys (private_key_jwt, signed request "
        "objects). Or paste the keys into JWKS; not both.",
    )
    request_uris = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 2, "cols": 80}),
        required=False,
        help_text="Exact https URLs the client may pass as request_uri, one per line.",
    )

    token_exchange_audiences = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 2, "cols": 80}),
        required=False,
        help_text="Token exchange (RFC 8693): audiences or resource URIs this client may get "
        "tokens for, one per line. Empty: no token exchange.",
    )
    token_exchange_scopes = forms.MultipleChoiceField(
        widget=forms.CheckboxSelectMultiple,
        required=False,
        help_text="Scopes an exchanged token may carry (never more than the subject token's).",
    )

    class Meta:
        model = Client
        fields = [
            "name", "client_type", "token_endpoint_auth_method", "redirect_uris", "grant_types",
            "allowed_scopes", "consent", "access_token_lifetime", "refresh_token_lifetime",
            "refresh_token_idle_lifetime", "refresh_retry_window", "id_token_signed_response_alg",
            "post_logout_redirect_uris", "backchannel_logout_uri",
            "backchannel_logout_session_required", "token_exchange_audiences",
            "token_exchange_scopes", "fapi2", "require_pushed_authorization_requests",
            "dpop_bound_access_tokens",
            "required_acr", "default_acr_values", "userinfo_signed_response_alg", "jwks", "jwks_uri",
            "token_endpoint_auth_signing_alg", "request_object_signing_alg", "request_uris",
            "id_token_on_refresh",
            "is_active",
        ]  # fmt: skip

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["allowed_scopes"].choices = [
            (scope, f"{scope}: {description}")
            for scope, description in settings.OAUTH_SCOPES.items()
        ]
        self.fields["token_exchange_scopes"].choices = self.fields["allowed_scopes"].choices
        if self.instance.pk:
            self.initial["redirect_uris"] = "\n".join(self.instance.redirect_uris)
            self.initial["token_exchange_audiences"] = "\n".join(
                self.instance.token_exchange_audiences
            )
            self.initial["post_logout_redirect_uris"] = "\n".join(
                self.instance.post_logout_redirect_uris
            )
            self.initial["request_uris"] = "\n".join(self.instance.request_uris)

    @staticmethod
    def _lines(value: str) -> list[str]:
        return [line.strip() for line in value.splitlines() if line.strip()]

    def clean_redirect_uris(self) -> list[str]:
        return self._lines(self.cleaned_data["redirect_uris"])

    def clean_post_logout_redirect_uris(self) -> list[str]:
        return self._lines(self.cleaned_data["post_logout_redirect_uris"])

    def clean_token_exchange_audiences(self) -> list[str]:
        return self._lines(self.cleaned_data["token_exchange_audiences"])

    def clean_request_uris(self) -> list[str]:
        return self._lines(self.cleaned_data["request_uris"])

    def clean_jwks(self) -> dict:
        return self.cleaned_data["jwks"] or {}

    def clean(self) -> dict:
        cleaned = super().clean()
        try:
            # The same rule as dynamic registration and create_client (tokens/scopes.py).
            cleaned["allowed_scopes"] = scopes.client_scopes(
                cleaned.get("grant_types") or [], cleaned.get("allowed_scopes")
            )
        except scopes.UnknownScopes as error:
            self.add_error("allowed_scopes", str(error))
        return cleaned


@admin.register(Client)
class ClientAdmin(admin.ModelAdmin):
    """Clients. A secret is shown once, on the page after it is made, and never again."""

    form = ClientForm
    list_display = ("name", "client_id", "client_type", "consent", "is_active", "created")
    list_filter = ("client_type", "is_active", "consent")
    search_fields = ("name", "client_id")
    readonly_fields = ("client_id", "created", "updated")
    actions = ["rotate_secret", "deactivate"]

    def get_fields(self, request, obj=None):
        fields = list(super().get_fields(request, obj))
        return fields if obj else [f for f in fields if f not in self.readonly_fields]

    def save_model(self, request, obj: Client, form, change: bool) -> None:
        deactivating = change and "is_active" in form.changed_data and not obj.is_active
        if deactivating:
            obj.is_active = True  # the service makes the change and revokes the client's tokens
        if not change:
            obj.client_id = clients.new_client_id()
            request._new_client_secret = obj.set_new_secret()
        elif {"client_type", "token_endpoint_auth_method"} & set(form.changed_data):
            # A public or private_key_jwt client keeps no secret; one turned to a secret method
            # gets a fresh one (never the secret it may have had before).
            request._new_client_secret = obj.set_new_secret()
        super().save_model(request, obj, form, change)
        if deactivating:
            revocation.deactivate_client(obj, actor_user=request.user, request=request)

    def response_add(self, request, obj, post_url_continue=None):
        return self._secret_page(
            request, obj, getattr(request, "_new_client_secret", None), created=True
        )

    def response_change(self, request, obj):
        secret = getattr(request, "_new_client_secret", None)
        if secret:
            return self._secret_page(request, obj, secret, created=False)
        return super().response_change(request, obj)

    def _secret_page(self, request, client: Client, secret: str | None, *, created: bool):
        return TemplateResponse(
            request,
            "admin/tokens/client/secret.html",
            {
                **self.admin_site.each_context(request),
                "title": "Client registered" if created else "New client secret",
                "client": client,
                "secret": secret,
                "created": created,
                "opts": self.model._meta,
            },
        )

    @admin.action(
        description="Rotate the secret (the old one stops working at once)", permissions=["change"]
    )
    def rotate_secret(self, request, queryset):
        chosen = [client for client in queryset if not client.is_public]
        if len(chosen) != 1:
            self.message_user(request, "Choose exactly one confidential client.", messages.WARNING)
            return None
        return self._secret_page(
            request, chosen[0], clients.rotate_client_secret(chosen[0]), created=False
        )

    @admin.action(
        description="Deactivate selected clients and revoke their tokens", permissions=["change"]
    )
    def deactivate(self, request, queryset):
        for client in queryset:
            revocation.deactivate_client(client, actor_user=request.user, request=request)
        self.message_user(request, f"Deactivated {queryset.count()} client(s).", messages.SUCCESS)


@admin.register(RefreshToken)
class RefreshTokenAdmin(admin.ModelAdmin):
    """Refresh tokens by family. Only digests are stored, so nothing here can be used."""

    list_display = ("pk", "client", "user", "state", "sid", "created", "expires", "revoke_reason")
    list_filter = ("revoke_reason", "client")
    list_select_related = ("client", "user")
    search_fields = ("user__username", "user__email", "client__client_id", "family", "sid")
    readonly_fields = [
        f.name
        for f in RefreshToken._meta.fields
        if f.name not in ("token_digest", "retry_response")
    ]
    exclude = ("token_digest", "retry_response")
    actions = ["revoke_families"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    @admin.action(description="Revoke selected tokens' whole families", permissions=["change"])
    def revoke_families(self, request, queryset):
        count = revocation.revoke_refresh_tokens(
            RefreshToken.objects.filter(family__in=queryset.values("family")),
            reason=RefreshToken.Reason.OPERATOR,
            request=request,
            actor=SecurityEvent.Actor.OPERATOR,
            actor_user=request.user,
        )
        self.message_user(request, f"Revoked {count} refresh token(s).", messages.SUCCESS)


@admin.register(Consent)
class ConsentAdmin(admin.ModelAdmin):
    list_display = ("user", "client", "scopes", "created", "expires")
    list_select_related = ("user", "client")
    search_fields = ("user__username", "client__name", "client__client_id")
    readonly_fields = ("user", "client", "scopes", "created", "expires")

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(PushedAuthorizationRequest)
class PushedAuthorizationRequestAdmin(admin.ModelAdmin):
    """Pushed authorization requests (RFC 9126). The request_uri is stored only as a digest."""

    list_display = ("pk", "client", "created", "expires", "claimed_at", "completed_at")
    list_select_related = ("client",)
    search_fields = ("client__client_id", "client__name")
    exclude = ("reference_digest", "browser_digest")
    readonly_fields = ("client", "parameters", "created", "expires", "claimed_at", "completed_at")

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(DeviceAuthorization)
class DeviceAuthorizationAdmin(admin.ModelAdmin):
    """Device sign-ins (RFC 8628). Both codes are stored only as digests."""

    list_display = ("pk", "client", "status", "user", "created", "expires", "issued_at")
    list_filter = ("status", "client")
    list_select_related = ("client", "user")
    search_fields = ("client__client_id", "client__name", "user__username")
    exclude = ("device_code_digest", "user_code_digest")
    readonly_fields = (
        "client", "scope", "status", "interval", "last_polled_at", "user", "sid", "auth_time",
        "created", "expires", "decided_at", "issued_at",
    )  # fmt: skip

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(SigningKey)
class SigningKeyAdmin(admin.ModelAdmin):
    """Signing keys; the private half is never shown."""

    list_display = ("kid", "algorithm", "state", "created", "activated_at", "retired_at")
    list_filter = ("state", "algorithm")
    fields = ("kid", "algorithm", "state", "public_jwk", "created", "activated_at", "retired_at")
    readonly_fields = fields

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(BackchannelLogout)
class BackchannelLogoutAdmin(admin.ModelAdmin):
    """Back-channel logout deliveries: one per ended session and client, with the outcome."""

    list_display = (
        "created",
        "client",
        "user",
        "sid",
        "status",
        "attempts",
        "last_status_code",
        "delivered_at",
    )
    list_filter = ("status", "client")
    list_select_related = ("client", "user")
    search_fields = ("sid", "client__client_id", "client__name", "user__username")
    readonly_fields = [f.name for f in BackchannelLogout._meta.fields]
    actions = ["retry"]

    def has_add_permission(self, request) -> bool:
        return False

    @admin.action(description="Send again now", permissions=["change"])
    def retry(self, request, queryset):
        waiting = queryset.exclude(status=BackchannelLogout.Status.DELIVERED)
        ids = list(waiting.values_list("pk", flat=True))
        waiting.update(status=BackchannelLogout.Status.FAILED)
        queued = logout.enqueue(ids)
        self.message_user(request, f"Queued {queued} deliver(ies).", messages.SUCCESS)


class InitialAccessTokenForm(forms.ModelForm):
    days = forms.IntegerField(
        min_value=1, max_value=365, initial=7, help_text="Valid for this many days."
    )

    class Meta:
        model = InitialAccessToken
        fields = ["note", "uses_left"]


@admin.register(InitialAccessToken)
class InitialAccessTokenAdmin(admin.ModelAdmin):
    """Tokens that let a developer register clients (RFC 7591). Shown once, stored hashed."""

    form = InitialAccessTokenForm
    list_display = ("note", "created", "expires", "uses_left")
    readonly_fields = ("created", "expires")

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def save_model(self, request, obj, form, change) -> None:
        request._new_token = clients.create_initial_access_token(
            note=form.cleaned_data["note"],
            days=form.cleaned_data["days"],
            uses=form.cleaned_data["uses_left"],
        )

    def response_add(self, request, obj, post_url_continue=None):
        return TemplateResponse(
            request,
            "admin/tokens/initialaccesstoken/created.html",
            {
                **self.admin_site.each_context(request),
                "title": "Initial access token",
                "token": request._new_token,
                "registration_endpoint": settings.ISSUER + reverse("tokens:register"),
                "opts": self.model._meta,
            },
        )
