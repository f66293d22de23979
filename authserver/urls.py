from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from accounts import views as account_views
from authserver import admin_views, metrics
from authserver.ping import ping

handler500 = "authserver.errors.server_error"

urlpatterns = [
    path("metrics", metrics.metrics, name="metrics"),
    path("ping", ping, name="ping"),
    path("", include("authserver.openapi")),  # /openapi.yaml
    # Operators sign in through the same throttled, audited page as everyone else.
    path("admin/login/", RedirectView.as_view(pattern_name="accounts:login", query_string=True)),
    path("admin/logout/", account_views.LogoutView.as_view()),
    path("admin/backlog/", admin.site.admin_view(admin_views.backlog), name="backlog"),
    path("admin/", admin.site.urls),
    path("", include("tokens.urls")),
    path("", include("accounts.urls")),
]
