"""What the fuzzers found: minimal reproductions, each a strict xfail until the application is
fixed (then it passes, strict xfail turns that into a failure, and the mark and the matching
entry in tests/fuzz/findings.py go). The ones fixed since stay as regression tests.

Every test asks for what the RFCs and the rest of this suite ask: no 5xx, and on the protocol
JSON endpoints an RFC 6749 §5.2 / RFC 7591 error object whose error_description holds only
%x20-21 / %x23-5B / %x5D-7E.
"""

import json
import re
from urllib.parse import urlencode

import pytest
from django.test import Client as Browser

from tests.factories import ClientFactory
from tests.tokens.conftest import REDIRECT, Registered, authorize_url, query
from tokens.clients import create_initial_access_token

pytestmark = pytest.mark.django_db

FORM = "application/x-www-form-urlencoded"
ERROR_DESCRIPTION = re.compile(r"[\x20-\x21\x23-\x5B\x5D-\x7E]*")


@pytest.fixture
def app(db) -> Registered:
    return Registered.of(ClientFactory(scopes=["openid", "profile"]))


def browser() -> Browser:
    return Browser(raise_request_exception=False)  # a 500 is an answer here, not an exception


def form(path: str, body: str, content_type: str = FORM, **headers):
    return browser().post(path, body, content_type=content_type, secure=True, **headers)


def assert_rfc_error(response, status: int, error: str) -> None:
    assert response.status_code == status, (response.status_code, response.content[:300])
    assert response["Content-Type"] == "application/json", response["Content-Type"]
    body = response.json()
    assert body["error"] == error, body
    assert ERROR_DESCRIPTION.fullmatch(body.get("error_description", "")), body


# --- 1. malformed Basic credentials -------------------------------------------------------------
@pytest.mark.parametrize("path", ["/token", "/introspect", "/revoke"])
@pytest.mark.parametrize(
    "authorization",
    ["Basic éé", "Basic ", " ", "Basic //46/w=="],
    ids=["non-ascii", "empty", "blank", "not-utf8"],
)
def test_malformed_basic_credentials_are_invalid_client(path, authorization):
    response = form(path, "grant_type=client_credentials&token=x", HTTP_AUTHORIZATION=authorization)
    assert_rfc_error(response, 401, "invalid_client")


# --- 2. a NUL in a client_id ---------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/token", "/introspect", "/revoke"])
def test_a_nul_in_client_id_is_invalid_client(path):
    response = form(path, "grant_type=client_credentials&token=x&client_id=%00&client_secret=x")
    assert response.status_code < 500
    assert_rfc_error(response, response.status_code, "invalid_client")


# --- 3. deeply nested JSON in a registration -----------------------------------------------------
def test_deeply_nested_registration_json_is_invalid_client_metadata():
    token = create_initial_access_token(uses=1)
    response = form(
        "/register",
        "[" * 30_000 + "]" * 30_000,
        "application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert_rfc_error(response, 400, "invalid_client_metadata")


# --- 4. a jwks that is not a JWK Set object ----------------------------------------------------
@pytest.mark.parametrize("jwks", [["x"], "keys", 1], ids=["list", "string", "number"])
@pytest.mark.parametrize("method", ["post", "put"])
def test_a_jwks_that_is_not_an_object_is_invalid_client_metadata(method, jwks):
    token = create_initial_access_token(uses=2)
    metadata = {"redirect_uris": ["https://app.example.com/cb"]}
    response = form(
        "/register", json.dumps(metadata), "application/json", HTTP_AUTHORIZATION=f"Bearer {token}"
    )
    path, bearer = "/register", token
    if method == "put":
        created = response.json()
        path = "/register/" + created["client_id"]
        bearer = created["registration_access_token"]
        metadata["client_id"] = created["client_id"]
    body = json.dumps({**metadata, "jwks": jwks})
    response = getattr(browser(), method)(
        path,
        body,
        content_type="application/json",
        secure=True,
        HTTP_AUTHORIZATION=f"Bearer {bearer}",
    )
    assert_rfc_error(response, 400, "invalid_client_metadata")


# --- 5. parameter names echoed into error_description -------------------------------------------
@pytest.mark.parametrize(
    "body",
    ["%22=1&%22=2", "%C3%A9=1&%C3%A9=2", "%5C=" + "x" * 5000, '{"grant_type":' + '"x"' * 40 + "}"],
    ids=["repeated-quote", "repeated-non-ascii", "long-backslash", "json-as-form"],
)
def test_error_descriptions_keep_to_rfc_6749_characters(body):
    response = form("/token", body)
    assert_rfc_error(response, 400, "invalid_request")


# --- 6. a form body declared in another charset -----------------------------------------------
@pytest.mark.parametrize("path", ["/token", "/introspect", "/revoke"])
@pytest.mark.parametrize("charset", ["latin-1", "utf8"])
def test_a_form_in_another_charset_is_an_rfc_error(app, path, charset):
    response = form(
        path, "grant_type=client_credentials&token=x", f"{FORM}; charset={charset}", **app.basic()
    )
    assert_rfc_error(response, 400, "invalid_request")


# --- fixed since they were found (4cdd26d: tokens/oauth/server.py, Client.check_redirect_uri);
# kept as regression tests -------------------------------------------------------------------
@pytest.mark.parametrize("response_type", ['"', "\t", "é"])
def test_an_unsupported_response_type_with_odd_characters_is_not_a_500(app, response_type):
    # Was: Authlib's UnsupportedResponseTypeError echoed it; OAuth2Error raised ValueError.
    response = browser().get(authorize_url(app, response_type=response_type), secure=True)
    assert response.status_code == 400


@pytest.mark.parametrize("redirect_uri", ['https://app.example.com/"', "\\", "https://a b/\x01"])
def test_an_unregistered_redirect_uri_with_odd_characters_is_an_error_page(app, redirect_uri):
    # Was: "Redirect URI ... is not supported by client." could not be built: a 500.
    response = browser().get(authorize_url(app, redirect_uri=redirect_uri), secure=True)
    assert response.status_code == 400
    assert "text/html" in response["Content-Type"]


@pytest.mark.parametrize("scope", ['"', "é", "\x01"])
def test_a_malformed_scope_at_the_token_endpoint_is_invalid_scope(app, scope):
    # Was: validate_requested_scope echoed the scope into InvalidScopeError: a 500; then a
    # generic invalid_request. RFC 6749 §5.2: "invalid_scope: The requested scope is invalid,
    # unknown, malformed", so exactly that, its description cleaned.
    body = urlencode({"grant_type": "client_credentials", "scope": scope})
    response = form("/token", body, **app.basic())
    assert_rfc_error(response, 400, "invalid_scope")


@pytest.mark.parametrize("scope", ['"', "é"])
def test_a_malformed_scope_at_the_authorization_endpoint_goes_back_as_invalid_scope(
    app, logged_in_client, scope
):
    # RFC 6749 §4.1.2.1: the client and its redirect URI check out, so the error goes back to
    # it (it was an error page, for want of a printable description).
    logged_in_client.raise_request_exception = False
    response = logged_in_client.get(authorize_url(app, scope=scope), secure=True)
    assert response.status_code == 302 and response["Location"].startswith(REDIRECT + "?")
    assert query(response["Location"])["error"] == "invalid_scope"
    assert ERROR_DESCRIPTION.fullmatch(query(response["Location"])["error_description"])


def test_a_non_ascii_redirect_uri_is_an_error_page(app):
    # Was: hmac.compare_digest on non-ASCII str raised TypeError: a 500.
    response = browser().get(
        authorize_url(app, redirect_uri="https://app.example.com/é"), secure=True
    )
    assert response.status_code == 400


def test_the_same_requests_without_the_odd_part_succeed(app):
    """The reproductions fail for the reason they name: the same helpers, sane values, work."""
    response = form("/token", "grant_type=client_credentials&scope=profile", **app.basic())
    assert response.status_code == 200, response.content
    assert json.loads(response.content)["token_type"] == "Bearer"
    page = browser().get(authorize_url(app), secure=True)
    assert page.status_code == 302  # off to sign in
