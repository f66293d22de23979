from django.urls import path

from accounts import factor_views, views

app_name = "accounts"

urlpatterns = [
    path("", views.home, name="home"),
    path("login/", views.LoginView.as_view(), name="login"),
    path("login/verify/", factor_views.login_factor, name="login_factor"),
    path(
        "login/passkey/options/", factor_views.passkey_login_options, name="passkey_login_options"
    ),
    path("login/passkey/", factor_views.passkey_login, name="passkey_login"),
    path(
        "login/verify/passkey/options/",
        factor_views.passkey_verify_options,
        name="passkey_verify_options",
    ),
    path("login/verify/passkey/", factor_views.passkey_verify, name="passkey_verify"),
    path("logout/", views.LogoutView.as_view(), name="logout"),
    path("account/sessions/", views.session_list, name="sessions"),
    path("account/sessions/end-others/", views.end_other_sessions, name="end_other_sessions"),
    path("account/sessions/<str:sid>/end/", views.end_session, name="end_session"),
    path("account/factors/", factor_views.factor_list, name="factors"),
    path("account/factors/totp/", factor_views.totp_enrol, name="totp_enrol"),
    path("account/factors/totp/remove/", factor_views.totp_remove, name="totp_remove"),
    path("account/factors/recovery-codes/", factor_views.recovery_codes, name="recovery_codes"),
    path(
        "account/factors/passkeys/options/",
        factor_views.passkey_register_options,
        name="passkey_register_options",
    ),
    path("account/factors/passkeys/", factor_views.passkey_register, name="passkey_register"),
    path(
        "account/factors/passkeys/<str:passkey_id>/remove/",
        factor_views.passkey_remove,
        name="passkey_remove",
    ),
    path("account/password/", views.PasswordChangeView.as_view(), name="password_change"),
    path("password-reset/", views.PasswordResetView.as_view(), name="password_reset"),
    path("password-reset/sent/", views.password_reset_done, name="password_reset_done"),
    path(
        "password-reset/<uidb64>/<token>/",
        views.PasswordResetConfirmView.as_view(),
        name="password_reset_confirm",
    ),
    path("password-reset/done/", views.password_reset_complete, name="password_reset_complete"),
]
