"""The OpenAPI description (authserver/openapi.yaml, served at /openapi.yaml) is kept true here.

It must be valid OpenAPI; its paths and the URL configuration must agree; and real answers of the
real endpoints, for every documented kind of response, must conform to it: status, media type,
JSON body against the documented schema, documented headers.
"""

import json
import re
from urllib.parse import urlencode, urlsplit

import pytest
import yaml
from django.test import Client as Browser
from django.urls import Resolver404, URLPattern, URLResolver, get_resolver, resolve
from openapi_spec_validator import validate

from tests.factories import PASSWORD
from tests.fuzz import spec
from tests.tokens.conftest import (
    REDIRECT,
    Registered,
    authorize_url,
    endpoint,
    exchange,
    get_code,
    pkce_pair,
    refresh,
    token_request,
)
from tokens.clients import create_client, create_initial_access_token

FORM = "application/x-www-form-urlencoded"


# --- the document itself ----------------------------------------------------------------------
def test_the_document_is_valid_openapi_3_1():
    document = spec.document()
    assert document["openapi"].startswith("3.1")
    validate(document)  # raises on any violation of the OpenAPI 3.1 schema, $refs included


def test_every_schema_in_it_is_a_valid_json_schema():
    from jsonschema import Draft202012Validator

    for schema in spec.document()["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)  # raises SchemaError on a malformed one


def test_it_is_served_at_the_documented_url_exactly_as_written():
    response = Browser().get("/openapi.yaml", secure=True)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/yaml")
    assert response.content == spec.DOCUMENT_PATH.read_bytes()
    assert yaml.safe_load(response.content) == spec.document()
    spec.check(response)


def _sample(template: str) -> str:
    return re.sub(r"\{[^}]+\}", "sample-value", template)


def test_every_documented_path_is_one_of_our_url_patterns():
    for template, item in spec.document()["paths"].items():
        if template.startswith("/health/"):
            continue  # answered by authserver.health.HealthMiddleware, before URL resolution
        try:
            match = resolve(_sample(template))
        except Resolver404:
            pytest.fail(f"{template} is documented but no URL pattern serves it")
        assert not match.route.startswith("admin/"), template
        assert {m for m in item if m in spec.METHODS}, f"{template} documents no operation"


def _routes(patterns, prefix=""):
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from _routes(pattern.url_patterns, prefix + str(pattern.pattern))
        elif isinstance(pattern, URLPattern):
            yield prefix + str(pattern.pattern), pattern


def _as_template(route: str) -> str:
    return "/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route)


def test_every_protocol_url_pattern_is_documented():
    from tokens import urls

    documented = set(spec.document()["paths"])
    for pattern in urls.urlpatterns:
        assert _as_template(str(pattern.pattern)) in documented, pattern.name


def test_every_browser_and_operations_url_pattern_is_documented_too():
    documented = set(spec.document()["paths"])
    missing = []
    for route, _pattern in _routes(get_resolver().url_patterns):
        if route.startswith("admin/"):
            continue  # the operators' admin is not part of the HTTP surface described
        if _as_template(route) not in documented:
            missing.append(route)
    assert not missing, f"URL patterns missing from authserver/openapi.yaml: {missing}"
    assert {"/health/live", "/health/ready"} <= documented


def test_every_endpoint_the_discovery_document_names_is_in_the_description():
    metadata = Browser().get("/.well-known/openid-configuration", secure=True).json()
    documented = set(spec.document()["paths"])
    for name, value in metadata.items():
        if name.endswith("_endpoint") or name == "jwks_uri":
            assert urlsplit(value).path in documented, name


# --- real answers conform: the token endpoint --------------------------------------------------
@pytest.fixture
def tokens(logged_in_client, confidential) -> dict:
    code, verifier = get_code(
        logged_in_client, confidential, scope="openid profile email offline_access", nonce="n-1"
    )
    response = exchange(confidential, code, verifier)
    spec.check(response)
    return response.json()


@pytest.mark.django_db
def test_authorization_code_grant_answer_conforms(tokens):
    assert {"access_token", "refresh_token", "id_token", "scope"} <= set(tokens)


@pytest.mark.django_db
def test_refresh_grant_answer_conforms(confidential, tokens):
    response = refresh(confidential, tokens["refresh_token"])
    assert response.status_code == 200
    spec.check(response)


@pytest.mark.django_db
def test_client_credentials_grant_answer_conforms_with_both_secret_methods(confidential):
    poster, secret = create_client(
        name="Posts its secret",
        grant_types=["client_credentials"],
        scopes=["profile"],
        token_endpoint_auth_method="client_secret_post",
    )
    for client, auth in ((confidential, "basic"), (Registered(poster, secret), "post")):
        response = token_request(
            client, {"grant_type": "client_credentials", "scope": "profile"}, auth=auth
        )
        assert response.status_code == 200, response.content
        assert "refresh_token" not in response.json()
        spec.check(response)


@pytest.mark.django_db
def test_a_public_clients_pkce_code_exchange_conforms(logged_in_client, public):
    code, verifier = get_code(logged_in_client, public, scope="openid")
    response = exchange(public, code, verifier, auth="none")
    assert response.status_code == 200, response.content
    spec.check(response)


def _raw_token(body: str, content_type: str = FORM, path: str = "/token", **extra):
    return Browser().post(path, body, content_type=content_type, secure=True, **extra)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("data", "auth", "status", "error"),
    [
        ({"grant_type": "password", "username": "a", "password": "b"}, "basic", 400, "unsupported_grant_type"),
        ({"grant_type": "authorization_code", "code": "nope", "redirect_uri": REDIRECT}, "basic", 400, "invalid_grant"),
        ({"grant_type": "refresh_token", "refresh_token": "nope"}, "basic", 400, "invalid_grant"),
        ({"grant_type": "client_credentials", "scope": "admin"}, "basic", 400, "invalid_scope"),
        ({"grant_type": "authorization_code"}, "basic", 400, "invalid_request"),
        ({"grant_type": "client_credentials"}, None, 401, "invalid_client"),
        ({"grant_type": "client_credentials", "client_id": "nobody", "client_secret": "x"}, None, 400, "invalid_client"),
    ],
)  # fmt: skip
def test_token_errors_conform(confidential, data, auth, status, error):
    response = token_request(confidential if auth else None, data, auth=auth or "basic")
    assert (response.status_code, response.json()["error"]) == (status, error), response.content
    spec.check(response)


@pytest.mark.django_db
def test_token_unauthorized_client_conforms(public):
    response = token_request(public, {"grant_type": "client_credentials"}, auth="none")
    assert response.status_code in (400, 401)
    spec.check(response)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("send", "error"),
    [
        (lambda: _raw_token("grant_type=client_credentials&grant_type=client_credentials"), "invalid_request"),
        (lambda: Browser().post("/token?grant_type=client_credentials", "", content_type=FORM, secure=True), "invalid_request"),
        (lambda: _raw_token('{"grant_type": "client_credentials"}', "application/json"), "invalid_request"),
        (lambda: _raw_token("grant_type=" + "x" * 20_000), "invalid_request"),
        (lambda: _raw_token("grant_type=client_credentials&scope=" + "x" * 5_000), "invalid_request"),
        (lambda: _raw_token("grant_type=%FF%FE"), "unsupported_grant_type"),
        (lambda: _raw_token("grant_type=authorization_code", "multipart/form-data; boundary=x"), "invalid_request"),
    ],
    ids=["repeated", "query-string", "json-body", "oversized-body", "oversized-value", "bad-utf8", "multipart"],
)  # fmt: skip
def test_refused_requests_are_rfc_6749_errors(send, error):
    response = send()
    assert response.status_code == 400
    assert response.json()["error"] == error
    assert "no-store" in response["Cache-Control"]
    spec.check(response)


@pytest.mark.django_db
def test_wrong_method_and_plain_http_conform(confidential):
    response = Browser().get("/token", secure=True)
    assert response.status_code == 405
    spec.check(response)
    insecure = Browser().post(
        "/token", "grant_type=client_credentials", content_type=FORM, **confidential.basic()
    )
    assert insecure.json()["error"] == "insecure_transport"
    spec.check(insecure)


@pytest.mark.django_db
def test_cors_preflight_conforms(public):
    for path in ("/token", "/revoke", "/userinfo"):
        response = Browser().options(path, secure=True, HTTP_ORIGIN="http://127.0.0.1:8765")
        assert response.status_code == 204
        assert response["Access-Control-Allow-Origin"] == "http://127.0.0.1:8765"
        spec.check(response)


# --- introspection and revocation --------------------------------------------------------------
@pytest.mark.django_db
def test_introspection_answers_conform(confidential, tokens):
    for token, kind in (
        (tokens["access_token"], "Bearer"),
        (tokens["refresh_token"], "refresh_token"),
    ):
        response = endpoint("/introspect", confidential, {"token": token})
        assert response.json()["active"] is True
        assert response.json()["token_type"] == kind
        spec.check(response)
    inactive = endpoint("/introspect", confidential, {"token": "not-a-token"})
    assert inactive.json() == {"active": False}
    spec.check(inactive)


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/introspect", "/revoke"])
def test_introspection_and_revocation_errors_conform(confidential, path):
    cases = [
        (endpoint(path, confidential, {"token": "x", "token_type_hint": "id_token"}), 400, "unsupported_token_type"),
        (endpoint(path, confidential, {}), 400, "invalid_request"),
        (endpoint(path, None, {"token": "x"}), 401, "invalid_client"),
        (Browser().get(path, secure=True), 405, "invalid_request"),
    ]  # fmt: skip
    for response, status, error in cases:
        assert (response.status_code, response.json()["error"]) == (status, error)
        assert "no-store" in response["Cache-Control"]
        spec.check(response)


@pytest.mark.django_db
def test_revocation_answers_conform(confidential, public, tokens):
    for client, data, auth in (
        (confidential, {"token": tokens["refresh_token"]}, "basic"),
        (confidential, {"token": "unknown"}, "basic"),
        (public, {"token": "unknown"}, "none"),
    ):
        response = endpoint("/revoke", client, data, auth=auth)
        assert response.status_code == 200
        assert response.json() == {}
        spec.check(response)


# --- OpenID Connect -----------------------------------------------------------------------------
@pytest.mark.django_db
def test_userinfo_answers_conform(confidential, tokens):
    bearer = {"HTTP_AUTHORIZATION": "Bearer " + tokens["access_token"]}
    for method in ("get", "post"):
        response = getattr(Browser(), method)("/userinfo", secure=True, **bearer)
        assert response.status_code == 200
        assert {"sub", "name", "email", "email_verified"} <= set(response.json())
        spec.check(response)
    service = token_request(confidential, {"grant_type": "client_credentials", "scope": "profile"})
    no_openid = {"HTTP_AUTHORIZATION": "Bearer " + service.json()["access_token"]}
    for headers, status in (
        ({}, 401),
        ({"HTTP_AUTHORIZATION": "Bearer garbage"}, 401),
        ({"HTTP_AUTHORIZATION": "Basic Zm9vOmJhcg=="}, 401),
        (no_openid, 403),
    ):
        response = Browser().get("/userinfo", secure=True, **headers)
        assert response.status_code == status, response.content
        spec.check(response)


@pytest.mark.django_db
def test_discovery_and_jwks_conform():
    for path in (
        "/.well-known/openid-configuration",
        "/.well-known/oauth-authorization-server",
        "/.well-known/jwks.json",
    ):
        response = Browser().get(path, secure=True)
        assert response.status_code == 200
        spec.check(response)
    response = Browser().post("/.well-known/openid-configuration", secure=True)
    assert response.status_code == 405
    spec.check(response)


@pytest.mark.django_db
def test_authorization_endpoint_answers_conform(logged_in_client, confidential):
    anonymous = Browser().get(authorize_url(confidential), secure=True)
    assert anonymous.status_code == 302 and anonymous["Location"].startswith("/login/")
    spec.check(anonymous)
    _verifier, challenge = pkce_pair()
    url = authorize_url(confidential, challenge=challenge)
    consent = logged_in_client.get(url, secure=True)
    assert consent.status_code == 200
    spec.check(consent)
    allowed = logged_in_client.post(url, {"decision": "allow"}, secure=True)
    assert allowed.status_code == 302 and "code=" in allowed["Location"]
    spec.check(allowed)
    none = Browser().get(authorize_url(confidential, prompt="none"), secure=True)
    assert "error=login_required" in none["Location"]
    spec.check(none)
    for bad in (
        "/authorize?client_id=nobody&response_type=code",
        authorize_url(confidential, redirect_uri="https://evil.example/cb"),
        authorize_url(confidential) + "&state=again",
    ):
        page = logged_in_client.get(bad, secure=True)
        assert page.status_code == 400
        assert b"Traceback" not in page.content
        spec.check(page)
    spec.check(Browser().put("/authorize", secure=True))


@pytest.mark.django_db
def test_end_session_answers_conform(logged_in_client, confidential):
    confidential.client.post_logout_redirect_uris = ["https://app.example.com/bye"]
    confidential.client.save()
    asks = logged_in_client.get("/logout/end-session", secure=True)
    assert asks.status_code == 200
    spec.check(asks)
    bad = Browser().get("/logout/end-session?id_token_hint=garbage", secure=True)
    assert bad.status_code == 400 and b"Traceback" not in bad.content
    spec.check(bad)
    query = urlencode(
        {
            "client_id": confidential.client_id,
            "post_logout_redirect_uri": "https://app.example.com/bye",
        }
    )
    away = Browser().get("/logout/end-session?" + query, secure=True)
    assert away.status_code == 302
    spec.check(away)
    posted = Browser().post("/logout/end-session", {"state": "s"}, secure=True)
    spec.check(posted)
    forged = Browser(enforce_csrf_checks=True).post("/logout/end-session/confirm", {}, secure=True)
    assert forged.status_code == 403
    spec.check(forged)


# --- registration (RFC 7591 / 7592) -------------------------------------------------------------
def _json(method: str, path: str, body=None, token: str | None = None):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    call = getattr(Browser(), method)
    if body is None:
        return call(path, secure=True, **headers)
    data = body if isinstance(body, str) else json.dumps(body)
    return call(path, data, content_type="application/json", secure=True, **headers)


@pytest.mark.django_db
def test_registration_answers_conform():
    initial = create_initial_access_token(uses=10)
    metadata = {
        "client_name": "Reports",
        "redirect_uris": ["https://reports.example.com/cb"],
        "grant_types": ["authorization_code", "refresh_token"],
        "scope": "openid profile",
        "contacts": ["ops@reports.example.com"],
        "backchannel_logout_uri": "https://reports.example.com/bcl",
    }
    created = _json("post", "/register", metadata, initial)
    assert created.status_code == 201, created.content
    spec.check(created)
    body = created.json()
    path = urlsplit(body["registration_client_uri"]).path
    read = _json("get", path, token=body["registration_access_token"])
    assert read.status_code == 200
    spec.check(read)
    update = {
        k: v
        for k, v in read.json().items()
        if k
        not in (
            "registration_access_token",
            "registration_client_uri",
            "client_id_issued_at",
            "client_secret_expires_at",
        )
    }
    update["client_name"] = "Reports 2"
    updated = _json("put", path, update, read.json()["registration_access_token"])
    assert updated.status_code == 200, updated.content
    spec.check(updated)
    for response, status in (
        (_json("post", "/register", {"redirect_uris": "x"}, initial), 400),
        (_json("post", "/register", {"redirect_uris": ["ftp://x"]}, initial), 400),
        (_json("post", "/register", "not json", initial), 400),
        (_json("post", "/register", metadata), 401),
        (_json("post", "/register", metadata, "wrong"), 401),
        (_json("get", "/register"), 405),
        (_json("get", path, token="wrong"), 401),
        (_json("post", path, token="wrong"), 405),
    ):
        assert response.status_code == status, response.content
        spec.check(response)
    deleted = _json("delete", path, token=updated.json()["registration_access_token"])
    assert deleted.status_code == 204
    spec.check(deleted)


# --- operations and browser pages ---------------------------------------------------------------
@pytest.mark.django_db
def test_health_metrics_and_pages_conform(user):
    browser = Browser()
    for path in ("/health/live", "/health/ready", "/metrics", "/ping", "/", "/login/", "/logout/"):
        spec.check(browser.get(path, secure=True))
    spec.check(browser.get("/metrics", secure=True, REMOTE_ADDR="203.0.113.9"))
    failed = browser.post("/login/", {"username": user.username, "password": "no"}, secure=True)
    assert failed.status_code == 200
    spec.check(failed)
    signed_in = browser.post(
        "/login/", {"username": user.username, "password": PASSWORD}, secure=True
    )
    assert signed_in.status_code == 302
    spec.check(signed_in)
    for path in ("/", "/account/sessions/", "/account/password/", "/password-reset/"):
        page = browser.get(path, secure=True)
        assert page.status_code == 200, path
        spec.check(page)
    forged = Browser(enforce_csrf_checks=True).post("/logout/", {}, secure=True)
    assert forged.status_code == 403
    spec.check(forged)
