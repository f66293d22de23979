"""The token endpoint for the code grant (RFC 6749 §4.1.3-4.1.4, §5, RFC 7636 §4.6) and the
hygiene every request to it gets (RFC 6749 §2.3, §3.2, §5.2)."""

import base64
from urllib.parse import urlencode

import pytest
from django.test import Client as Browser

from accounts.models import SecurityEvent
from tests.tokens.conftest import (
    REDIRECT,
    Registered,
    endpoint,
    exchange,
    get_code,
    refresh,
    token_request,
)
from tokens.clients import create_client
from tokens.models import AuthorizationCode, RefreshToken, RevokedAccessToken

pytestmark = pytest.mark.django_db


def assert_oauth_error(response, error: str, status: int = 400) -> dict:
    """RFC 6749 §5.2: JSON error body, never cached."""
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    assert "no-store" in response["Cache-Control"]
    body = response.json()
    assert body["error"] == error, body
    return body


def test_a_code_and_its_verifier_buy_an_access_and_a_refresh_token(logged_in_client, confidential):
    """RFC 6749 §4.1.4 / §5.1."""
    code, verifier = get_code(logged_in_client, confidential, scope="openid profile")
    response = exchange(confidential, code, verifier)
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"] and response["Pragma"] == "no-cache"
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 600
    assert body["scope"] == "openid profile"
    assert body["access_token"].count(".") == 2 and len(body["refresh_token"]) >= 43
    row = RefreshToken.objects.get()
    assert row.token_digest != body["refresh_token"]  # only the digest is stored


def test_client_secret_post_works_too(logged_in_client):
    registered, secret = create_client(
        name="Poster", redirect_uris=[REDIRECT], token_endpoint_auth_method="client_secret_post"
    )
    from tests.tokens.conftest import Registered

    client = Registered(registered, secret)
    code, verifier = get_code(logged_in_client, client)
    assert exchange(client, code, verifier, auth="post").status_code == 200


def test_a_public_client_exchanges_with_its_verifier_and_no_secret(logged_in_client, public):
    code, verifier = get_code(logged_in_client, public)
    response = exchange(public, code, verifier, auth="none")
    assert response.status_code == 200 and "refresh_token" in response.json()


def test_a_public_client_without_the_verifier_gets_nothing(logged_in_client, public):
    code, _ = get_code(logged_in_client, public)
    assert_oauth_error(exchange(public, code, None, auth="none"), "invalid_request")


def test_a_wrong_verifier_is_invalid_grant_and_does_not_burn_the_code(
    logged_in_client, confidential
):
    """RFC 7636 §4.6: the verifier must match; the failed attempt changes nothing."""
    code, verifier = get_code(logged_in_client, confidential)
    assert_oauth_error(exchange(confidential, code, "x" * 43), "invalid_grant")
    assert exchange(confidential, code, verifier).status_code == 200


def test_a_verifier_without_a_challenge_is_refused(logged_in_client, confidential):
    """RFC 9700 §4.8.2: PKCE downgrade."""
    url = f"/authorize?response_type=code&client_id={confidential.client_id}&redirect_uri={REDIRECT}&scope=openid"
    location = logged_in_client.post(url, {"decision": "allow"}, secure=True)["Location"]
    from tests.tokens.conftest import query

    code = query(location)["code"]
    assert_oauth_error(exchange(confidential, code, "a" * 43), "invalid_request")


def test_a_code_redeemed_twice_fails_and_revokes_what_the_first_gave(
    logged_in_client, confidential
):
    """RFC 6749 §4.1.2: deny the second use and revoke the tokens issued from the first."""
    code, verifier = get_code(logged_in_client, confidential)
    first = exchange(confidential, code, verifier).json()
    assert_oauth_error(exchange(confidential, code, verifier), "invalid_grant")
    assert_oauth_error(refresh(confidential, first["refresh_token"]), "invalid_grant")
    introspection = endpoint("/introspect", confidential, {"token": first["access_token"]}).json()
    assert introspection == {"active": False}
    assert RevokedAccessToken.objects.count() == 1
    assert SecurityEvent.objects.filter(kind="code_replay").count() == 1


def test_a_code_is_bound_to_its_client(logged_in_client, confidential):
    other, secret = create_client(name="Other", redirect_uris=[REDIRECT])
    from tests.tokens.conftest import Registered

    code, verifier = get_code(logged_in_client, confidential)
    assert_oauth_error(exchange(Registered(other, secret), code, verifier), "invalid_grant")
    assert exchange(confidential, code, verifier).status_code == 200


def test_the_redirect_uri_must_be_the_one_sent_to_authorize(logged_in_client, confidential):
    """RFC 6749 §4.1.3: identical to the authorization request's."""
    code, verifier = get_code(logged_in_client, confidential)
    assert_oauth_error(
        exchange(confidential, code, verifier, redirect_uri=REDIRECT + "x"), "invalid_grant"
    )


def test_an_expired_code_is_invalid_grant(logged_in_client, confidential):
    from django.utils import timezone

    code, verifier = get_code(logged_in_client, confidential)
    AuthorizationCode.objects.update(expires=timezone.now())
    assert_oauth_error(exchange(confidential, code, verifier), "invalid_grant")


def test_an_unknown_code_is_invalid_grant(confidential):
    assert_oauth_error(exchange(confidential, "no-such-code", "a" * 43), "invalid_grant")


def test_a_wrong_secret_over_basic_is_401_with_www_authenticate(confidential):
    """RFC 6749 §5.2: invalid_client, 401 and WWW-Authenticate when the client used Basic."""
    bad = "Basic " + base64.b64encode(f"{confidential.client_id}:wrong".encode()).decode()
    response = Browser().post(
        "/token",
        "grant_type=client_credentials",
        content_type="application/x-www-form-urlencoded",
        HTTP_AUTHORIZATION=bad,
        secure=True,
    )
    assert_oauth_error(response, "invalid_client", 401)
    assert response["WWW-Authenticate"].startswith("Basic")


def test_a_wrong_secret_in_the_body_is_invalid_client(confidential):
    response = token_request(
        None,
        {
            "grant_type": "client_credentials",
            "client_id": confidential.client_id,
            "client_secret": "wrong",
        },
    )
    assert_oauth_error(response, "invalid_client", response.status_code)
    assert response.status_code in (400, 401)


def test_a_confidential_client_cannot_pass_as_public(logged_in_client, confidential):
    """RFC 6749 §3.2.1: a confidential client MUST authenticate."""
    code, verifier = get_code(logged_in_client, confidential)
    response = exchange(confidential, code, verifier, auth="none")
    assert response.json()["error"] == "invalid_client"


def test_an_inactive_client_gets_no_tokens(confidential):
    from tokens.models import Client

    Client.objects.update(is_active=False)
    response = token_request(confidential, {"grant_type": "client_credentials"})
    assert response.json()["error"] == "invalid_client"


def test_an_unsupported_grant_type(confidential):
    # (The device code grant is supported: tests/tokens/test_device_authorization.py.)
    for grant in ("password", "implicit", "urn:ietf:params:oauth:grant-type:saml2-bearer"):
        assert_oauth_error(
            token_request(confidential, {"grant_type": grant}), "unsupported_grant_type"
        )


MISSING_PARAMETERS = {
    "no-grant-type": {"scope": "profile"},
    "empty-grant-type": {"grant_type": "", "scope": "profile"},
    "code-grant-without-code": {
        "grant_type": "authorization_code",
        "redirect_uri": REDIRECT,
        "code_verifier": "v" * 43,
    },
    "code-grant-with-an-empty-code": {
        "grant_type": "authorization_code",
        "code": "",
        "redirect_uri": REDIRECT,
    },
    "refresh-without-refresh-token": {"grant_type": "refresh_token"},
    "refresh-with-an-empty-refresh-token": {"grant_type": "refresh_token", "refresh_token": ""},
}


@pytest.mark.parametrize("data", MISSING_PARAMETERS.values(), ids=MISSING_PARAMETERS.keys())
@pytest.mark.parametrize("credentials", ["right", "wrong", "none"])
def test_rfc6749_s5_2_a_missing_required_parameter_is_invalid_request(
    confidential, data, credentials
):
    """RFC 6749 §5.2 invalid_request: "The request is missing a required parameter"; §3.2: a
    parameter without a value is treated as omitted. Not unsupported_grant_type (there is no
    grant type to be unsupported), nor invalid_grant; and the same answer whoever sends it,
    because the request is malformed before anyone is authenticated."""
    client = {
        "right": confidential,
        "wrong": Registered(confidential.client, "not-the-secret"),
        "none": None,
    }[credentials]
    body = assert_oauth_error(token_request(client, data), "invalid_request")
    assert body["error_description"].startswith("Missing '")


def test_rfc6749_s4_1_3_an_exchange_without_the_redirect_uri_of_the_request_is_invalid_request(
    logged_in_client, confidential
):
    """RFC 6749 §4.1.3: redirect_uri is REQUIRED when the authorization request had one: its
    absence is a missing parameter (invalid_request), a different one is invalid_grant. Neither
    uses the code up."""
    code, verifier = get_code(logged_in_client, confidential)
    data = {"grant_type": "authorization_code", "code": code, "code_verifier": verifier}
    body = assert_oauth_error(token_request(confidential, data), "invalid_request")
    assert "redirect_uri" in body["error_description"]
    other = {**data, "redirect_uri": REDIRECT + "/other"}
    assert_oauth_error(token_request(confidential, other), "invalid_grant")
    assert exchange(confidential, code, verifier).status_code == 200


def test_a_grant_type_the_client_may_not_use(logged_in_client, public):
    assert_oauth_error(
        token_request(public, {"grant_type": "client_credentials"}, auth="none"),
        "invalid_client",
        401,
    )


def raw_post(
    body: bytes | str, content_type="application/x-www-form-urlencoded", path="/token", **extra
):
    return Browser().post(path, body, content_type=content_type, secure=True, **extra)


@pytest.mark.parametrize("path", ["/token", "/introspect", "/revoke"])
def test_credentials_in_the_query_string_are_refused(confidential, path):
    """RFC 6749 §2.3.1: client credentials MUST NOT be in the request URI."""
    response = raw_post(
        "grant_type=client_credentials",
        path=f"{path}?client_id={confidential.client_id}&client_secret={confidential.secret}",
    )
    assert_oauth_error(response, "invalid_request")


@pytest.mark.parametrize("path", ["/token", "/introspect", "/revoke"])
def test_a_repeated_parameter_is_refused(confidential, path):
    """RFC 6749 §3.2: parameters MUST NOT be included more than once."""
    response = raw_post(
        "grant_type=client_credentials&grant_type=client_credentials&token=a&token=b",
        path=path,
        **confidential.basic(),
    )
    assert_oauth_error(response, "invalid_request")


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        ('{"grant_type": "client_credentials"}', "application/json"),
        ("grant_type=client_credentials", "text/plain"),
        (
            "--x\r\nContent-Disposition: form-data; name=grant_type\r\n\r\nclient_credentials\r\n--x--",
            "multipart/form-data; boundary=x",
        ),
        (
            "grant_type=client_credentials&scope=" + "a" * 10_000,
            "application/x-www-form-urlencoded",
        ),
        ("grant_type=client_credentials&" + "x=1&" * 5000, "application/x-www-form-urlencoded"),
        (b"grant_type=\xff\xfe%ZZ&&&==", "application/x-www-form-urlencoded"),
    ],
    ids=["json", "text", "multipart", "huge-parameter", "huge-body", "garbage"],
)
def test_malformed_requests_get_invalid_request_never_a_500(confidential, body, content_type):
    response = raw_post(body, content_type=content_type, **confidential.basic())
    assert response.status_code == 400
    assert response.json()["error"] in ("invalid_request", "unsupported_grant_type")


def test_get_on_the_token_endpoint_is_405_in_json():
    response = Browser().get("/token", secure=True)
    assert_oauth_error(response, "invalid_request", 405)
    assert response["Allow"] == "POST"


@pytest.mark.parametrize(
    "header",
    [
        "Basic",
        "Basic !!!notbase64",
        "Basic " + base64.b64encode(b"no-colon").decode(),
        "Bearer abc",
        "Basic " + "A" * 5000,
    ],
)
def test_a_malformed_authorization_header_is_a_clean_client_error(header):
    response = raw_post(urlencode({"grant_type": "client_credentials"}), HTTP_AUTHORIZATION=header)
    assert response.status_code in (400, 401)
    assert response.json()["error"] == "invalid_client"


def test_a_browser_client_reads_the_token_answer_from_its_own_origin_only(logged_in_client, public):
    """CORS for public SPAs: the origin of a registered redirect URI, for that client only."""
    code, verifier = get_code(logged_in_client, public)
    data = {"grant_type": "authorization_code", "code": code, "code_verifier": verifier,
            "redirect_uri": public.client.redirect_uris[0], "client_id": public.client_id}  # fmt: skip
    response = raw_post(urlencode(data), HTTP_ORIGIN="http://127.0.0.1:8765")
    assert response.status_code == 200
    assert response["Access-Control-Allow-Origin"] == "http://127.0.0.1:8765"
    stranger = raw_post(urlencode(data), HTTP_ORIGIN="https://evil.example")
    assert "Access-Control-Allow-Origin" not in stranger
    preflight = Browser().options("/token", secure=True, HTTP_ORIGIN="http://127.0.0.1:8765")
    assert (
        preflight.status_code == 204
        and preflight["Access-Control-Allow-Origin"] == "http://127.0.0.1:8765"
    )
    assert "Access-Control-Allow-Origin" not in Browser().options(
        "/token", secure=True, HTTP_ORIGIN="https://evil.example"
    )


@pytest.mark.parametrize("path", ["/token", "/introspect", "/revoke"])
def test_plain_http_from_a_non_loopback_host_is_refused_in_json_not_a_500(confidential, path):
    """RFC 6749 §1.6/§3.2: TLS is required; a proxy that forgot X-Forwarded-Proto gets told."""
    response = Browser().post(
        path, "grant_type=client_credentials&token=x", content_type="application/x-www-form-urlencoded",
        **confidential.basic(),
    )  # fmt: skip
    assert response.status_code == 400
    assert response.json()["error"] == "insecure_transport"


@pytest.mark.parametrize(
    ("url", "extra"),
    [
        ("https://testserver/token", {"HTTP_AUTHORIZATION": "Basic YTpi", "HTTP_DPOP": "x.y.z"}),
        ("http://127.0.0.1/authorize?client_id=a&state=%C3%A9", {"HTTP_X_CLIENT_ID": "a"}),
        ("http://localhost/token", {"CONTENT_TYPE": "text/plain"}),
    ],
)
def test_our_oauth_request_holds_what_authlibs_own_would(url, extra):
    """tokens/oauth/server.py builds Authlib's request without Authlib's __init__ (cheaper): it
    must hold the same attributes, with the same values, and read the same headers and URI
    that Authlib's DjangoOAuth2Request would (an Authlib upgrade adding one fails here)."""
    from authlib.integrations.django_oauth2.requests import DjangoOAuth2Request
    from django.test import RequestFactory

    from tokens.oauth.server import OAuth2Request

    parts = url.split("/", 3)
    made = RequestFactory().post(
        "/" + parts[3], "a=1", content_type="application/x-www-form-urlencoded",
        secure=parts[0] == "https:", SERVER_NAME=parts[2].split(":")[0], **extra,
    )  # fmt: skip
    made.META["HTTP_HOST"] = parts[2]
    theirs, ours = DjangoOAuth2Request(made), OAuth2Request(made)
    assert set(vars(theirs)) <= set(vars(ours)) | {"uri"}
    for name, value in vars(theirs).items():
        if name not in ("headers", "payload", "uri"):
            assert getattr(ours, name) == value, name
    assert ours.uri == theirs.uri == made.build_absolute_uri()
    assert dict(ours.headers) == dict(theirs.headers) and len(ours.headers) == len(theirs.headers)
    for name in ("Authorization", "authorization", "DPoP", "X-Client-Id", "Content-Type", "Origin"):
        assert ours.headers.get(name) == theirs.headers.get(name), name
        assert (name in ours.headers) == (name in theirs.headers), name
    assert ours.payload.data == theirs.payload.data and ours.form is made.POST
    assert ours.payload.datalist == theirs.payload.datalist


def test_our_oauth_request_refuses_plain_http_where_authlib_does(settings):
    """RFC 6749 §3.2 (TLS on the token endpoint): the same InsecureTransportError Authlib raises,
    for an origin that is not loopback; the loopback exception of RFC 8252 §7.3 stays."""
    from authlib.oauth2.rfc6749.errors import InsecureTransportError
    from django.test import RequestFactory

    from tokens.oauth.server import OAuth2Request

    settings.ALLOWED_HOSTS = ["auth.example.test", "127.0.0.1", "[::1]"]
    for host, refused in (("auth.example.test", True), ("127.0.0.1", False), ("[::1]", False)):
        request = RequestFactory().post("/token", SERVER_NAME=host, HTTP_HOST=host)
        if refused:
            with pytest.raises(InsecureTransportError):
                OAuth2Request(request)
        else:
            assert OAuth2Request(request).method == "POST"
