from django.urls import path

from tokens import device_views, oidc_views, views

app_name = "tokens"

urlpatterns = [
    path("authorize", views.authorize, name="authorize"),
    path("token", views.token, name="token"),
    path("introspect", views.introspect, name="introspect"),
    path("revoke", views.revoke, name="revoke"),
    path("par", views.pushed_authorization_request, name="par"),
    path("device_authorization", views.device_authorization, name="device_authorization"),
    path("device", device_views.device, name="device"),
    path(".well-known/jwks.json", views.jwks, name="jwks"),
    path(".well-known/openid-configuration", oidc_views.discovery, name="openid_configuration"),
    path(".well-known/oauth-authorization-server", oidc_views.discovery, name="oauth_metadata"),
    path("userinfo", oidc_views.userinfo, name="userinfo"),
    path("logout/end-session", oidc_views.end_session, name="end_session"),
    path(
        "logout/end-session/confirm", oidc_views.end_session_confirmed, name="end_session_confirmed"
    ),
    path("register", oidc_views.register, name="register"),
    path("register/<str:client_id>", oidc_views.client_configuration, name="client_configuration"),
]
