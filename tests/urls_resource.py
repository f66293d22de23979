"""A resource server's URLs, for testing tokens/oauth/resource.py as an API would use it."""

from django.http import JsonResponse
from django.urls import include, path
from rest_framework.response import Response
from rest_framework.views import APIView

from tokens.oauth.resource import require_token


class Profile(APIView):
    required_scopes = ("profile",)

    def get(self, request):
        return Response(
            {"user": request.user.username or None, "client": request.auth["client_id"]}
        )


@require_token("profile")
def plain_profile(request):
    return JsonResponse({"user": request.user.username or None, "scope": request.token["scope"]})


urlpatterns = [
    path("api/profile", Profile.as_view()),
    path("plain/profile", plain_profile),
    path("", include("authserver.urls")),
]
