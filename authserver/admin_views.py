"""Operator pages that belong to no single model: the purge backlog."""

from django.contrib import admin
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.response import TemplateResponse

from authserver import janitor


def backlog(request: HttpRequest) -> HttpResponse:
    """For each kind of stale grant: how many rows wait to be purged and how old the oldest is.
    ``?format=json`` gives the same for monitoring."""
    figures = [janitor.backlog(kind) for kind in janitor.kinds().values()]
    if request.GET.get("format") == "json":
        return JsonResponse(
            {
                "backlog": [
                    {
                        "kind": f.kind,
                        "waiting": f.waiting,
                        "oldest_age_seconds": f.oldest_age_seconds,
                    }
                    for f in figures
                ]
            }
        )
    return TemplateResponse(
        request,
        "admin/backlog.html",
        {**admin.site.each_context(request), "title": "Purge backlog", "figures": figures},
    )
