"""A relying party's back-channel logout endpoint next to the provider's own URLs, so a
``live_server`` can play both parts (OpenID Connect Back-Channel Logout 1.0 §2.5, §2.8)."""

from django.http import HttpResponse
from django.urls import include, path
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

# live_server runs in the test's process: the test reads what arrived from here.
RECEIVED: list[dict] = []


@csrf_exempt  # the OP's POST carries no cookie and no CSRF token (§2.5)
@require_POST
def backchannel_logout(request):
    RECEIVED.append(
        {
            "content_type": request.content_type,
            "fields": sorted(request.POST.keys()),
            "logout_token": request.POST.get("logout_token", ""),
        }
    )
    response = HttpResponse(status=200)
    response["Cache-Control"] = "no-store"  # §2.8
    return response


urlpatterns = [
    path("rp/backchannel-logout", backchannel_logout),
    path("", include("authserver.urls")),
]
