"""OpenID Foundation conformance-suite modules that no other test covered (docs/conformance.md).

Each test is named after the module it stands for and cites the spec section the module checks;
the request is the one the module sends (openid-certification/conformance-suite,
src/main/java/net/openid/conformance/openid/OIDCC*.java), over HTTP to the real endpoints.
"""

import json
import re
from urllib.parse import urlencode

import pytest
from django.test import Client as Browser
from joserfc import jwt

from tests.fuzz import spec
from tests.tokens.client_side import (
    ISSUER,
    TOKEN_ENDPOINT,
    KeyHost,
    assertion_form,
    new_key,
    public_jwks,
    sign,
    unsigned,
)
from tests.tokens.conftest import (
    REDIRECT,
    Registered,
    authorize_url,
    exchange,
    get_code,
    pkce_pair,
    query,
    token_request,
)
from tests.tokens.test_logout import (
    CONFIRM,
    LOGGED_OUT,
    ORIGIN,
    csrf_enforcing,
    end_session,
    hidden_fields,
    signed_in,
    tokens_for,
)
from tests.tokens.test_oidc_core import (
    decode_id_token,
    provider_metadata,
    published_keys,
    userinfo,
)
from tokens.clients import create_initial_access_token
from tokens.models import Client

pytestmark = pytest.mark.django_db


def code_and_id_token(browser: Browser, client: Registered, **params) -> dict:
    code, verifier = get_code(browser, client, **params)
    response = exchange(client, code, verifier)
    assert response.status_code == 200, response.content
    body = response.json()
    body["claims"] = decode_id_token(body["id_token"], client).claims
    return body


# === Basic OP (oidcc-basic-certification-test-plan) ===========================================
def test_oidcc_response_type_missing_rfc6749_3_1_1_is_an_error_and_never_a_code(
    logged_in_client, confidential
):
    """RFC 6749 §3.1.1: response_type is REQUIRED. The module accepts an error page or an error
    redirect (invalid_request or unsupported_response_type); never a code."""
    url = authorize_url(confidential, scope="openid", challenge=pkce_pair()[1])
    response = logged_in_client.get(url.replace("response_type=code&", ""), secure=True)
    if response.status_code == 302:
        params = query(response["Location"])
        assert params["error"] in ("invalid_request", "unsupported_response_type"), params
        assert "code" not in params and params["state"] == "xyz"
    else:
        assert response.status_code == 400 and "Location" not in response


def test_oidcc_ensure_other_scope_order_succeeds_rfc6749_3_3(logged_in_client, confidential, user):
    """RFC 6749 §3.3: scope is a space-delimited, order-independent list ("email openid")."""
    body = code_and_id_token(logged_in_client, confidential, scope="email openid")
    assert set(body["scope"].split()) == {"openid", "email"}
    assert userinfo(body["access_token"]).json()["email"] == user.email


@pytest.mark.parametrize(
    ("module", "parameter"),
    [
        ("oidcc-display-page", {"display": "page"}),
        ("oidcc-display-popup", {"display": "popup"}),
        ("oidcc-ui-locales", {"ui_locales": "se"}),
        ("oidcc-claims-locales", {"claims_locales": "se"}),
        ("oidcc-ensure-request-with-acr-values-succeeds", {"acr_values": "1 2"}),
        ("oidcc-ensure-request-with-unknown-parameter-succeeds", {"extra": "foobar"}),
        (
            "oidcc-claims-essential",
            {"claims": json.dumps({"userinfo": {"name": {"essential": True}}})},
        ),
    ],
)
def test_optional_authentication_request_parameters_oidc_core_3_1_2_1_succeed(
    logged_in_client, confidential, module, parameter
):
    """OIDC Core §3.1.2.1 (display, ui_locales, claims_locales, acr_values: OPTIONAL, an OP may
    ignore them), RFC 6749 §3.1 ("The authorization server MUST ignore unrecognized request
    parameters") and §5.5 (claims_parameter_supported is false, so the claims parameter is
    ignored): the request succeeds with a code and a valid ID token."""
    body = code_and_id_token(logged_in_client, confidential, scope="openid", **parameter)
    assert body["claims"]["sub"]


def test_oidcc_max_age_10000_oidc_core_3_1_2_1_needs_no_new_sign_in(logged_in_client, confidential):
    """§3.1.2.1 max_age: a sign-in younger than max_age is enough; §2: auth_time is then
    REQUIRED in the ID token."""
    first = code_and_id_token(logged_in_client, confidential, scope="openid")
    url = authorize_url(confidential, scope="openid", challenge=pkce_pair()[1], max_age="10000")
    response = logged_in_client.get(url, secure=True)
    assert response.status_code == 302, "no sign-in page, and consent is remembered"
    assert "code" in query(response["Location"])
    again = code_and_id_token(logged_in_client, confidential, scope="openid", max_age="10000")
    assert again["claims"]["auth_time"] == first["claims"]["auth_time"]


def test_oidcc_id_token_hint_oidc_core_3_1_2_1_with_prompt_none_answers_with_a_code(
    logged_in_client, confidential
):
    """§3.1.2.1 id_token_hint: the module sends the first ID token back with prompt=none."""
    first = code_and_id_token(logged_in_client, confidential, scope="openid")
    url = authorize_url(
        confidential,
        scope="openid",
        challenge=pkce_pair()[1],
        prompt="none",
        id_token_hint=first["id_token"],
    )
    response = logged_in_client.get(url, secure=True)
    assert response.status_code == 302
    assert "code" in query(response["Location"]), query(response["Location"])


def posted_request(confidential: Registered, challenge: str) -> dict[str, str]:
    return {
        "response_type": "code",
        "client_id": confidential.client_id,
        "redirect_uri": REDIRECT,
        "scope": "openid",
        "state": "posted",
        "nonce": "n-post",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }


def csrf_token(page) -> str:
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode())
    assert match, "no CSRF token on the page"
    return match.group(1)


def form(data: dict) -> dict:
    """What a browser sends for a plain HTML form: application/x-www-form-urlencoded."""
    return {"data": urlencode(data), "content_type": "application/x-www-form-urlencoded"}


def test_oidcc_ensure_post_request_succeeds_oidc_core_3_1_2_1(logged_in_client, confidential):
    """§3.1.2.1: "Authorization Servers MUST support the use of the HTTP GET and POST methods";
    the relying party's page POSTs the request form-serialized, without a CSRF token of ours.
    It continues as the same request by GET: consent, then the code at the redirect URI."""
    browser = csrf_enforcing(logged_in_client)
    verifier, challenge = pkce_pair()
    posted = browser.post(
        "/authorize", **form(posted_request(confidential, challenge)), secure=True,
        HTTP_ORIGIN="https://app.example.com",
    )  # fmt: skip
    assert posted.status_code == 303
    spec.check(posted)  # as /openapi.yaml describes it
    assert query(posted["Location"]) == posted_request(confidential, challenge)
    consent = browser.get(posted["Location"], secure=True)
    assert consent.status_code == 200 and b"Allow" in consent.content
    answer = browser.post(
        posted["Location"], {"decision": "allow", "csrfmiddlewaretoken": csrf_token(consent)},
        secure=True, HTTP_ORIGIN="https://testserver",
    )  # fmt: skip
    assert answer.status_code == 302, answer.content[-300:]
    result = query(answer["Location"])
    assert answer["Location"].startswith(REDIRECT + "?") and result["state"] == "posted"
    response = exchange(confidential, result["code"], verifier)
    assert response.status_code == 200, response.content
    assert decode_id_token(response.json()["id_token"], confidential).claims["nonce"] == "n-post"


def test_a_posted_authorization_request_survives_the_sign_in(db, confidential):
    """Signed out: the POSTed request becomes the GET one, which the sign-in page comes back to."""
    browser = Browser(enforce_csrf_checks=True)
    posted = browser.post(
        "/authorize", **form(posted_request(confidential, pkce_pair()[1])), secure=True
    )
    assert posted.status_code == 303, posted.content.decode()
    login = browser.get(posted["Location"], secure=True)
    assert login.status_code == 302 and login["Location"].startswith("/login/?next=")
    assert query(query(login["Location"])["next"])["state"] == "posted"


def test_a_posted_authorization_request_keeps_the_consent_forms_csrf_check(
    logged_in_client, confidential
):
    """The consent form posts to the request's own URL: that POST still needs its CSRF token."""
    url = authorize_url(confidential, scope="openid", challenge=pkce_pair()[1])
    assert logged_in_client.get(url, secure=True).status_code == 200
    logged_in_client.handler.enforce_csrf_checks = True
    refused = logged_in_client.post(url, {"decision": "allow"}, secure=True)
    assert refused.status_code == 403 and "Location" not in refused


def test_oidcc_long_state_is_returned_unchanged_rfc6749_4_1_2(logged_in_client, confidential):
    """The logout modules use a 128-character state to check the OP does not corrupt it."""
    state = "s" * 64 + "-._~" * 16
    code, _ = get_code(logged_in_client, confidential, scope="openid", state=state)
    assert code


# === Dynamic OP (oidcc-dynamic-certification-test-plan) =======================================
def test_oidcc_ensure_redirect_uri_in_authorization_request_oidc_core_3_1_2_1(
    logged_in_client, confidential
):
    """§3.1.2.1: redirect_uri is REQUIRED in an OpenID Connect request, even with one URI
    registered. Nowhere to send the error: an error page, no redirect."""
    url = authorize_url(confidential, scope="openid", challenge=pkce_pair()[1])
    url = url.replace("&redirect_uri=https%3A%2F%2Fapp.example.com%2Fcallback", "")
    assert "redirect_uri" not in url
    response = logged_in_client.get(url, secure=True)
    assert response.status_code == 400 and "Location" not in response
    assert b"redirect_uri" in response.content


def registered_web_app(**metadata) -> tuple[int, dict]:
    body = {
        "client_name": "Conformance RP",
        "redirect_uris": [REDIRECT],
        "grant_types": ["authorization_code"],
        **metadata,
    }
    response = Browser().post(
        "/register",
        json.dumps(body),
        content_type="application/json",
        secure=True,
        HTTP_AUTHORIZATION=f"Bearer {create_initial_access_token()}",
    )
    return response.status_code, response.json()


QUERY_URI = "https://app.example.com/callback?foo=bar"


def test_oidcc_redirect_uri_query_ok_rfc6749_3_1_2(logged_in_client):
    """RFC 6749 §3.1.2: a redirect URI MAY have a query; sent exactly, it works, and the
    response parameters are added to it (§4.1.2), the query kept."""
    status, registration = registered_web_app(redirect_uris=[QUERY_URI])
    assert status == 201, registration
    client = Registered(Client.objects.get(client_id=registration["client_id"]), None)
    url = authorize_url(client, redirect_uri=QUERY_URI, scope="openid", challenge=pkce_pair()[1])
    response = logged_in_client.post(url, {"decision": "allow"}, secure=True)
    assert response.status_code == 302
    assert response["Location"].startswith(QUERY_URI + "&")
    assert {"foo", "code", "state", "iss"} <= set(query(response["Location"]))


@pytest.mark.parametrize(
    ("registered", "sent"),
    [
        (
            QUERY_URI,
            "https://app.example.com/callback?foo=baz",
        ),  # oidcc-redirect-uri-query-mismatch
        (REDIRECT, REDIRECT + "?foo=bar"),  # oidcc-redirect-uri-query-added
    ],
    ids=["oidcc-redirect-uri-query-mismatch", "oidcc-redirect-uri-query-added"],
)
def test_a_redirect_uri_whose_query_differs_is_refused_rfc6749_3_1_2_3(
    logged_in_client, registered, sent
):
    """RFC 6749 §3.1.2.3 and OIDC Core §3.1.2.1: exact match, query included; §4.1.2.1: an
    invalid redirect URI is never redirected to."""
    status, registration = registered_web_app(redirect_uris=[registered])
    assert status == 201, registration
    client = Registered(Client.objects.get(client_id=registration["client_id"]), None)
    url = authorize_url(client, redirect_uri=sent, scope="openid", challenge=pkce_pair()[1])
    response = logged_in_client.get(url, secure=True)
    assert response.status_code == 400 and "Location" not in response


def test_oidcc_redirect_uri_regfrag_rfc6749_3_1_2_is_refused_at_registration(db):
    """RFC 6749 §3.1.2: "The endpoint URI MUST NOT include a fragment component"."""
    status, body = registered_web_app(redirect_uris=[REDIRECT + "#foo"])
    assert (status, body["error"]) == (400, "invalid_redirect_uri")


@pytest.mark.parametrize("name", ["logo_uri", "policy_uri", "tos_uri"])
def test_oidcc_registration_logo_policy_tos_uri_openid_registration_2(db, name):
    """OpenID Connect Dynamic Client Registration 1.0 §2: logo_uri, policy_uri, tos_uri are
    registered and returned (§3.2)."""
    uri = f"https://app.example.com/{name}.html"
    status, body = registered_web_app(**{name: uri})
    assert status == 201, body
    assert body[name] == uri


# === RP-Initiated Logout OP (oidcc-rp-initiated-logout-certification-test-plan) ===============
def test_oidcc_rp_initiated_logout_no_id_token_hint_rp_initiated_logout_3_never_redirects(
    logged_in_client, rp_client
):
    """§3: without an id_token_hint (and, as the module sends it, without client_id) the OP
    MUST NOT redirect to post_logout_redirect_uri; it asks the person, and after they confirm
    shows its own signed-out page."""
    tokens_for(logged_in_client, rp_client)
    browser = csrf_enforcing(logged_in_client)
    page = end_session(browser, post_logout_redirect_uri=LOGGED_OUT, state="st")
    assert page.status_code == 200 and b"Sign out?" in page.content and "Location" not in page
    assert signed_in(browser)
    response = browser.post(CONFIRM, hidden_fields(page), secure=True, HTTP_ORIGIN=ORIGIN)
    assert response.status_code == 200 and "Location" not in response
    assert b"You are signed out" in response.content
    assert not signed_in(browser)


@pytest.mark.parametrize(
    "params",
    [{}, {"state": "only-state"}],
    ids=["oidcc-rp-initiated-logout-no-params", "oidcc-rp-initiated-logout-only-state"],
)
def test_logout_without_hint_or_redirect_rp_initiated_logout_2_asks_then_signs_out(
    logged_in_client, rp_client, params
):
    """§2: every parameter is optional; the OP asks (nothing ties the request to the session),
    then signs the person out and shows its own page: no redirect, no state to return."""
    tokens_for(logged_in_client, rp_client)
    browser = csrf_enforcing(logged_in_client)
    page = end_session(browser, **params)
    assert page.status_code == 200 and b"Sign out?" in page.content
    response = browser.post(CONFIRM, hidden_fields(page), secure=True, HTTP_ORIGIN=ORIGIN)
    assert response.status_code == 200 and "Location" not in response
    assert b"You are signed out" in response.content
    assert not signed_in(browser)


def test_oidcc_rp_initiated_logout_no_post_logout_redirect_uri_rp_initiated_logout_2(
    logged_in_client, rp_client
):
    """§2: a valid hint and no post_logout_redirect_uri: signed out at once, the OP's own page."""
    hint = tokens_for(logged_in_client, rp_client)["id_token"]
    response = end_session(logged_in_client, id_token_hint=hint, state="st")
    assert response.status_code == 200 and "Location" not in response
    assert b"You are signed out" in response.content
    assert not signed_in(logged_in_client)


def test_oidcc_rp_initiated_logout_no_state_rp_initiated_logout_3(logged_in_client, rp_client):
    """§3: state is added to the redirect only if it was sent."""
    hint = tokens_for(logged_in_client, rp_client)["id_token"]
    response = end_session(
        logged_in_client, id_token_hint=hint, post_logout_redirect_uri=LOGGED_OUT
    )
    assert response.status_code == 302 and response["Location"] == LOGGED_OUT
    assert not signed_in(logged_in_client)


@pytest.fixture
def rp_client(confidential) -> Registered:
    confidential.client.post_logout_redirect_uris = [LOGGED_OUT]
    confidential.client.save()
    return confidential


# === Back-Channel Logout OP (oidcc-backchannel-rp-initiated-logout-certification-test-plan) ====
def test_oidcc_backchannel_logout_discovery_endpoint_verification_backchannel_logout_2_1():
    """Back-Channel Logout 1.0 §2.1: backchannel_logout_supported and
    backchannel_logout_session_supported are advertised (true: logout tokens carry sid)."""
    metadata = provider_metadata()
    assert metadata["backchannel_logout_supported"] is True
    assert metadata["backchannel_logout_session_supported"] is True
    assert metadata["end_session_endpoint"].startswith("https://")


def test_oidcc_refresh_token_rfc6749_a_17_only_allowed_characters(logged_in_client, confidential):
    """RFC 6749 Appendix A.17: refresh-token = 1*VSCHAR (printable ASCII, %x20-7E)."""
    code, verifier = get_code(
        logged_in_client, confidential, scope="openid offline_access", prompt="consent"
    )
    body = exchange(confidential, code, verifier).json()
    assert body["refresh_token"] and all(0x20 <= ord(c) <= 0x7E for c in body["refresh_token"])


def test_oidcc_userinfo_post_body_rfc6750_2_2_is_refused_cleanly(logged_in_client, confidential):
    """RFC 6750 §2.2 (the token in a form body) is optional and not offered here; the module
    ends with a warning on any HTTP error. It gets RFC 6750 §3.1's 401 with a Bearer challenge,
    never a 500; the Authorization header form (§2.1) works, GET and POST."""
    body = code_and_id_token(logged_in_client, confidential, scope="openid")
    refused = Browser().post(
        "/userinfo",
        urlencode({"access_token": body["access_token"]}),
        content_type="application/x-www-form-urlencoded",
        secure=True,
    )
    assert refused.status_code == 401 and refused["WWW-Authenticate"].startswith("Bearer")
    assert userinfo(body["access_token"], "post").status_code == 200


# === Dynamic OP: private_key_jwt (the plan's client authentication), request objects =========
@pytest.fixture
def rp_host(settings):
    """The suite's own web server: it serves the RP's jwks_uri and request_uri documents."""
    settings.CLIENT_FETCH_ALLOW_PRIVATE_NETWORKS = True  # a loopback server in this test
    server = KeyHost()
    yield server
    server.stop()


def key_registered(**metadata) -> Registered:
    """Dynamic registration as the plan does it (client_auth_type=private_key_jwt)."""
    status, body = registered_web_app(token_endpoint_auth_method="private_key_jwt", **metadata)
    assert status == 201, body
    assert "client_secret" not in body
    return Registered(Client.objects.get(client_id=body["client_id"]), None)


def exchange_with_assertion(client: Registered, code: str, verifier: str, key, **claims):
    response = exchange(
        client, code, verifier, auth="", **assertion_form(client.client_id, key, **claims)
    )
    assert response.status_code == 200, response.content
    return response.json()


@pytest.mark.parametrize(
    "aud",
    [TOKEN_ENDPOINT, ISSUER],
    ids=["oidcc-server", "oidcc-ensure-client-assertion-with-iss-aud-succeeds"],
)
def test_oidcc_server_with_private_key_jwt_oidc_core_9(logged_in_client, aud):
    """The Dynamic plan's setup for nearly every module: register with private_key_jwt and an
    inline jwks (RFC 7591 §2), run the code flow, authenticate at the token endpoint with an
    RFC 7523 assertion. The second: the assertion's aud is the issuer (RFC 7523bis §3, OIDC
    Core §9), not the token endpoint URL."""
    key = new_key("RS256")
    client = key_registered(jwks=public_jwks(key))
    code, verifier = get_code(logged_in_client, client, scope="openid")
    body = exchange_with_assertion(client, code, verifier, key, aud=aud)
    assert decode_id_token(body["id_token"], client).claims["aud"] == client.client_id


def test_oidcc_registration_jwks_uri_rfc7591_2(logged_in_client, rp_host):
    """oidcc-registration-jwks-uri: the RP registers a jwks_uri instead of jwks; the server
    fetches it to check the assertion."""
    key = new_key("RS256")
    client = key_registered(jwks_uri=rp_host.publish_jwks(key))
    code, verifier = get_code(logged_in_client, client, scope="openid")
    exchange_with_assertion(client, code, verifier, key)
    assert rp_host.hits["/jwks"] == 1


def test_oidcc_refresh_token_rp_key_rotation_oidc_core_10_1_1(logged_in_client, rp_host):
    """oidcc-refresh-token-rp-key-rotation: after the first tokens the RP puts a new key with a
    new kid in its jwks_uri (the old one gone) and refreshes with an assertion signed by it; the
    unknown kid makes the server fetch the JWKS again."""
    first = new_key("RS256", kid="first")
    client = key_registered(
        jwks_uri=rp_host.publish_jwks(first), grant_types=["authorization_code", "refresh_token"]
    )
    code, verifier = get_code(
        logged_in_client, client, scope="openid offline_access", prompt="consent"
    )
    tokens = exchange_with_assertion(client, code, verifier, first)
    rotated = new_key("RS256", kid="second")
    rp_host.publish_jwks(rotated)
    form = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    response = token_request(None, {**form, **assertion_form(client.client_id, rotated)})
    assert response.status_code == 200, response.content
    assert response.json()["refresh_token"] != tokens["refresh_token"]
    assert rp_host.hits["/jwks"] == 2


def request_object_claims(client: Registered, challenge: str, **extra) -> dict:
    """ConvertAuthorizationEndpointRequestToRequestObject: the whole request, as claims."""
    return {
        "client_id": client.client_id,
        "response_type": "code",
        "scope": "openid",
        "redirect_uri": REDIRECT,
        "state": "ro-state",
        "nonce": "ro-nonce",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        **extra,
    }


def by_reference(browser: Browser, client: Registered, request_uri: str):
    location = "/authorize?" + urlencode(
        {
            "client_id": client.client_id,
            "response_type": "code",
            "scope": "openid",
            "request_uri": request_uri,
        }
    )
    response = browser.get(location, secure=True)
    if response.status_code == 200:
        response = browser.post(location, {"decision": "allow"}, secure=True)
    assert response.status_code == 302, response.content.decode()[-500:]
    return query(response["Location"])


def test_oidcc_request_uri_unsigned_oidc_core_6_2(logged_in_client, rp_host):
    """oidcc-request-uri-unsigned: registers request_uris (no request_object_signing_alg) and
    passes a request_uri to an alg none request object, served as application/jose."""
    key = new_key("RS256")
    verifier, challenge = pkce_pair()
    path = "/requests/" + "a" * 16
    request_uri = rp_host.url(path)
    client = key_registered(jwks=public_jwks(key), request_uris=[request_uri])
    rp_host.publish(path, unsigned(request_object_claims(client, challenge)), "application/jose")
    params = by_reference(logged_in_client, client, request_uri)
    assert params["state"] == "ro-state" and params["iss"] == ISSUER
    exchange_with_assertion(client, params["code"], verifier, key)


def test_oidcc_request_uri_signed_rs256_oidc_core_6_2(logged_in_client, rp_host):
    """oidcc-request-uri-signed-rs256: request_object_signing_alg RS256 registered, the object
    signed with the RP's key, carrying iss and aud (AddIssToRequestObject, AddAudToRequestObject);
    discovery must list RS256 in request_object_signing_alg_values_supported."""
    assert "RS256" in provider_metadata()["request_object_signing_alg_values_supported"]
    assert provider_metadata()["request_uri_parameter_supported"] is True
    key = new_key("RS256")
    verifier, challenge = pkce_pair()
    request_uri = rp_host.url("/requests/signed")
    client = key_registered(
        jwks=public_jwks(key), request_uris=[request_uri], request_object_signing_alg="RS256"
    )
    claims = request_object_claims(client, challenge, iss=client.client_id, aud=ISSUER)
    rp_host.publish("/requests/signed", sign(claims, key), "application/jose")
    params = by_reference(logged_in_client, client, request_uri)
    exchange_with_assertion(client, params["code"], verifier, key)


@pytest.mark.parametrize(
    "query_redirect_uri",
    [None, "https://app.example.com/not-registered"],
    ids=[
        "oidcc-unsigned-request-object-supported-correctly-or-rejected-as-unsupported",
        "oidcc-ensure-request-object-with-redirect-uri",
    ],
)
def test_oidcc_request_object_by_value_oidc_core_6_1(
    logged_in_client, confidential, query_redirect_uri
):
    """An unsigned request object by value (SerializeRequestObjectWithNullAlgorithm) with iss and
    aud, from a client that registered no request_object_signing_alg; the second module also
    puts an unregistered redirect_uri in the query: the object's takes precedence (OIDC Core
    §6.3.3, RFC 9101 §6.3)."""
    verifier, challenge = pkce_pair()
    claims = request_object_claims(confidential, challenge, iss=confidential.client_id, aud=ISSUER)
    params = {
        "client_id": confidential.client_id,
        "response_type": "code",
        "scope": "openid",
        "request": unsigned(claims),
        "redirect_uri": query_redirect_uri,
    }
    location = "/authorize?" + urlencode({k: v for k, v in params.items() if v})
    response = logged_in_client.get(location, secure=True)
    if response.status_code == 200:
        response = logged_in_client.post(location, {"decision": "allow"}, secure=True)
    assert response.status_code == 302 and response["Location"].startswith(REDIRECT + "?")
    answer = query(response["Location"])
    assert answer["state"] == "ro-state"
    assert exchange(confidential, answer["code"], verifier).status_code == 200


def test_oidcc_request_uri_unsigned_supported_correctly_oidc_core_6_2(
    logged_in_client, confidential, rp_host
):
    """oidcc-request-uri-unsigned-supported-correctly-or-rejected-as-unsupported, Basic plan
    (static client): with request_uris registered by the operator it is supported correctly."""
    verifier, challenge = pkce_pair()
    request_uri = rp_host.publish(
        "/static.jwt", unsigned(request_object_claims(confidential, challenge))
    )
    Client.objects.filter(pk=confidential.client.pk).update(request_uris=[request_uri])
    answer = by_reference(logged_in_client, confidential, request_uri)
    assert exchange(confidential, answer["code"], verifier).status_code == 200


def test_oidcc_userinfo_rs256_oidc_core_5_3_2(logged_in_client):
    """oidcc-userinfo-rs256: registers userinfo_signed_response_alg RS256; UserInfo answers
    application/jwt signed RS256 with our key, iss and aud."""
    key = new_key("RS256")
    client = key_registered(jwks=public_jwks(key), userinfo_signed_response_alg="RS256")
    code, verifier = get_code(logged_in_client, client, scope="openid")
    body = exchange_with_assertion(client, code, verifier, key)
    response = userinfo(body["access_token"])
    assert response["Content-Type"] == "application/jwt"
    token = jwt.decode(response.content.decode(), published_keys(), algorithms=["RS256"])
    assert token.claims["iss"] == ISSUER and token.claims["aud"] == client.client_id


def test_oidcc_registration_logo_policy_tos_uri_are_shown_on_the_consent_page(logged_in_client):
    """oidcc-registration-logo-uri / -policy-uri / -tos-uri ask for a screenshot of the page
    showing them (OpenID Registration §2: "SHOULD display"): the logo as an image, allowed by
    this page's CSP img-src and nowhere else, and links to the policy and terms."""
    status, body = registered_web_app(
        logo_uri="https://cdn.example.com/logo.png",
        policy_uri="https://app.example.com/privacy",
        tos_uri="https://app.example.com/terms",
    )
    assert status == 201, body
    client = Registered(Client.objects.get(client_id=body["client_id"]), body["client_secret"])
    page = logged_in_client.get(
        authorize_url(client, scope="openid", challenge=pkce_pair()[1]), secure=True
    )
    assert page.status_code == 200
    html = page.content.decode()
    assert '<img class="client-logo" src="https://cdn.example.com/logo.png"' in html
    assert (
        'href="https://app.example.com/privacy"' in html
        and 'href="https://app.example.com/terms"' in html
    )
    policy = page["Content-Security-Policy"]
    assert "img-src 'self' data: https://cdn.example.com;" in policy
    assert "default-src 'self'" in policy and "script-src 'self';" in policy


def test_a_logo_that_is_not_https_is_not_shown(logged_in_client, confidential):
    Client.objects.filter(pk=confidential.client.pk).update(
        metadata={"logo_uri": "http://cdn.example.com/logo.png", "tos_uri": "javascript:alert(1)"}
    )
    page = logged_in_client.get(
        authorize_url(confidential, scope="openid", challenge=pkce_pair()[1]), secure=True
    )
    html = page.content.decode()
    assert "client-logo" not in html and "javascript:" not in html
    assert "img-src 'self' data:;" in page["Content-Security-Policy"]
