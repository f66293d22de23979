"""/openapi.yaml: the OpenAPI 3.1 description of this server's HTTP surface, served as written.

The file is authserver/openapi.yaml; tests/test_openapi.py keeps it true to the code.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from django.http import HttpRequest, HttpResponse
from django.urls import path
from django.views.decorators.http import require_GET

DOCUMENT = Path(__file__).with_name("openapi.yaml")


@lru_cache(maxsize=1)
def _document() -> bytes:
    return DOCUMENT.read_bytes()


@require_GET
def openapi_yaml(request: HttpRequest) -> HttpResponse:
    response = HttpResponse(_document(), content_type="application/yaml; charset=utf-8")
    response["Cache-Control"] = "public, max-age=300"
    response["Access-Control-Allow-Origin"] = "*"  # public documentation
    return response


urlpatterns = [path("openapi.yaml", openapi_yaml, name="openapi")]
