"""A URLconf with a view that fails, to see the 500 page a person would get."""

from django.urls import include, path


def explode(request):
    raise RuntimeError("a bug")


urlpatterns = [path("explode/", explode), path("", include("authserver.urls"))]
