"""The OpenAPI document (authserver/openapi.yaml), and checking a real response against it.

Used by tests/test_openapi.py (one response per documented case) and by the fuzz tests (every
generated request): the status must be documented for the operation, the media type too, a JSON
body must validate against the documented schema, and documented headers must match theirs.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path

import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

DOCUMENT_PATH = Path(__file__).resolve().parents[2] / "authserver" / "openapi.yaml"
BASE_URI = "urn:authserver:openapi"
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


@lru_cache(maxsize=1)
def document() -> dict:
    return yaml.safe_load(DOCUMENT_PATH.read_text(encoding="utf-8"))


@lru_cache(maxsize=1)
def _registry() -> Registry:
    resource = Resource.from_contents(document(), default_specification=DRAFT202012)
    return Registry().with_resource(BASE_URI, resource)


def _escape(part: str) -> str:
    return part.replace("~", "~0").replace("/", "~1")


def pointer(*parts: str) -> str:
    return "".join("/" + _escape(str(part)) for part in parts)


def _follow(node: dict, where: tuple[str, ...]) -> tuple[dict, tuple[str, ...]]:
    """Follow local $refs ('#/components/...'); returns the node and where it lives."""
    while "$ref" in node:
        ref = node["$ref"]
        assert ref.startswith("#/"), ref
        where = tuple(part.replace("~1", "/").replace("~0", "~") for part in ref[2:].split("/"))
        node = document()
        for part in where:
            node = node[part]
    return node, where


@lru_cache(maxsize=256)
def validator(schema_pointer: str) -> Draft202012Validator:
    return Draft202012Validator(
        {"$ref": f"{BASE_URI}#{schema_pointer}"},
        registry=_registry(),
        format_checker=Draft202012Validator.FORMAT_CHECKER,
    )


@lru_cache(maxsize=1)
def _templates() -> list[tuple[re.Pattern, str]]:
    compiled = []
    for template in document()["paths"]:
        regex = re.escape(template)
        regex = re.sub(r"\\\{[^}]+\\\}", "[^/]+", regex)
        compiled.append((re.compile(f"^{regex}$"), template))
    # Literal paths win over templated ones.
    compiled.sort(key=lambda item: "{" in item[1])
    return compiled


def template_for(path: str) -> str | None:
    for regex, template in _templates():
        if regex.match(path):
            return template
    return None


def operation(template: str, method: str) -> dict | None:
    return document()["paths"].get(template, {}).get(method.lower())


def _media_type(content_type: str) -> str:
    return content_type.split(";")[0].strip().lower()


def problems(
    status: int, headers, body: bytes, template: str, method: str, *, json_only: bool = False
) -> list[str]:
    """What in this response the document does not allow (empty: it conforms).

    ``headers`` is any case-insensitive mapping. A method the path item does not list is held to
    the path's ``x-other-methods`` responses. ``json_only`` skips the media-type check for empty
    bodies."""
    found: list[str] = []
    item = document()["paths"].get(template)
    if item is None:
        return [f"{template} is not documented"]
    if method.lower() in item:
        responses, at = item[method.lower()]["responses"], (method.lower(), "responses")
    else:
        # x-other-methods: what every method the path item does not list is answered.
        responses, at = item.get("x-other-methods") or {}, ("x-other-methods",)
    key = next(
        (k for k in (str(status), f"{status // 100}XX", "default") if k in responses),
        None,
    )
    if key is None:
        return [f"status {status} is not documented for {method.upper()} {template}"]
    response, where = _follow(responses[key], ("paths", template, *at, key))
    content = response.get("content") or {}
    content_type = headers.get("Content-Type") or ""
    media = _media_type(content_type)
    if method.upper() == "HEAD":
        content = {}  # a HEAD answer has headers only
    if content:
        if media not in content:
            if body or not json_only:
                found.append(
                    f"{status}: Content-Type {content_type!r} is not one of {sorted(content)}"
                )
            return found
        if media == "application/json":
            try:
                data = json.loads(body)
            except ValueError as error:
                return [f"{status}: body is not JSON ({error}): {body[:200]!r}"]
            if "schema" in content[media]:
                schema_at = pointer(*where, "content", media, "schema")
                for error in validator(schema_at).iter_errors(data):
                    path = "/".join(str(p) for p in error.absolute_path)
                    found.append(f"{status}: body at '{path}': {error.message}"[:500])
    elif body and not json_only:
        found.append(f"{status}: a body ({media or 'no type'}) where none is documented")
    for name, spec in (response.get("headers") or {}).items():
        spec, header_at = _follow(spec, (*where, "headers", name))
        value = headers.get(name)
        if value is None:
            if spec.get("required"):
                found.append(f"{status}: header {name} is missing")
            continue
        if "schema" in spec:
            schema_at = pointer(*header_at, "schema")
            for error in validator(schema_at).iter_errors(value):
                found.append(f"{status}: header {name}: {error.message}"[:300])
    return found


def check(response, *, template: str | None = None) -> None:
    """Assert that a Django test client response conforms to the document."""
    request = response.request
    path = request["PATH_INFO"]
    method = request["REQUEST_METHOD"]
    template = template or template_for(path)
    assert template is not None, f"{path} is not in the document"
    found = problems(response.status_code, response.headers, response.content, template, method)
    assert not found, f"{method} {path} -> {response.status_code}:\n" + "\n".join(found)
