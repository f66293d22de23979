from django.urls import path

from tokens import views

app_name = "tokens"

urlpatterns = [
    path("authorize", views.authorize, name="authorize"),
    path("token", views.token, name="token"),
    path("introspect", views.introspect, name="introspect"),
    path("revoke", views.revoke, name="revoke"),
    path(".well-known/jwks.json", views.jwks, name="jwks"),
]
