"""/ping: the cheapest view there is, through the normal middleware stack. The token benchmark
(bench/tokens.py) measures it next to the OAuth endpoints, as the floor of what a request costs."""

from django.http import HttpRequest, HttpResponse


def ping(request: HttpRequest) -> HttpResponse:
    return HttpResponse("pong", content_type="text/plain")
