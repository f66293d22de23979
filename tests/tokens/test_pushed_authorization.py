"""Pushed authorization requests (RFC 9126) through HTTP: /par, then /authorize with the
request_uri, sign-in and consent, the code exchange; and every way a request_uri is refused."""

from __future__ import annotations

import json
import re
import threading
import time
from datetime import timedelta
from io import StringIO
from urllib.parse import urlencode, urlsplit

import pytest
from django.core.management import call_command
from django.db import connection
from django.test import Client as Browser
from django.utils import timezone

from authserver import janitor
from tests.conftest import sign_in
from tests.factories import PASSWORD, ClientFactory, Registered, UserFactory
from tests.tokens.client_side import ISSUER, assertion_form, new_key, public_jwks, sign
from tests.tokens.conftest import endpoint, exchange, pkce_pair, query
from tokens import pushed_requests
from tokens.models import AuthorizationCode, Client, PushedAuthorizationRequest, token_digest

pytestmark = pytest.mark.django_db

URN = "urn:ietf:params:oauth:request_uri:"


def pushed_parameters(client: Registered, challenge: str | None = None, **extra) -> dict:
    params = {
        "response_type": "code",
        "client_id": client.client_id,
        "redirect_uri": client.client.redirect_uris[0],
        "scope": "openid profile",
        "state": "pushed-state",
        "nonce": "pushed-nonce",
    }
    if challenge:
        params.update(code_challenge=challenge, code_challenge_method="S256")
    params.update(extra)
    return {k: v for k, v in params.items() if v is not None}


def push(client: Registered, data: dict, *, auth: str = "basic"):
    return endpoint("/par", client, data, auth=auth)


def pushed(client: Registered, *, auth: str | None = None, **extra) -> tuple[str, str]:
    """Push a valid request; return (request_uri, PKCE verifier)."""
    verifier, challenge = pkce_pair()
    auth = auth or ("none" if client.client.is_public else "basic")
    response = push(client, pushed_parameters(client, challenge, **extra), auth=auth)
    assert response.status_code == 201, response.content
    return response.json()["request_uri"], verifier


def authorize_path(client_id: str, request_uri: str, **extra) -> str:
    return "/authorize?" + urlencode({"client_id": client_id, "request_uri": request_uri, **extra})


def allow(browser: Browser, path: str):
    """The browser's part once signed in: open the request, press Allow if asked."""
    response = browser.get(path, secure=True)
    if response.status_code == 200 and b'name="decision"' in response.content:
        response = browser.post(path, {"decision": "allow"}, secure=True)
    return response


def sign_in_and_continue(browser: Browser, username: str, next_url: str):
    response = browser.post(
        "/login/", {"username": username, "password": PASSWORD, "next": next_url}, secure=True
    )
    assert response.status_code == 302 and response["Location"] == next_url, response
    return response


def error_page_text(response) -> str:
    return re.sub(r"<[^>]+>|\s+", " ", response.content.decode())


# --- §2.1 client authentication ---------------------------------------------------------------
def test_rfc9126_2_1_client_authentication_is_required(confidential):
    _, challenge = pkce_pair()
    data = pushed_parameters(confidential, challenge)

    anonymous = push(None, data)
    wrong_secret = endpoint(
        "/par", Registered(confidential.client, "not-the-secret"), data, auth="basic"
    )
    only_client_id = push(confidential, data, auth="none")

    for response in (anonymous, wrong_secret, only_client_id):
        assert response.status_code in (400, 401), response.content
        assert response.json()["error"] == "invalid_client"
        assert response["Cache-Control"] == "no-store"
    assert wrong_secret.status_code == 401
    assert PushedAuthorizationRequest.objects.count() == 0


def test_rfc9126_2_1_client_secret_post_is_the_token_endpoints_method_too(db):
    client = Registered.of(ClientFactory(token_endpoint_auth_method="client_secret_post"))
    _, challenge = pkce_pair()
    data = pushed_parameters(client, challenge)

    by_post = endpoint("/par", None, {**data, "client_secret": client.secret})
    by_basic = push(client, data)

    assert by_post.status_code == 201, by_post.content
    assert by_basic.status_code == 401  # §2: the registered method, as at /token
    row = PushedAuthorizationRequest.objects.get()
    assert "client_secret" not in row.parameters  # §2.1: only for client authentication


def test_rfc9126_2_1_a_public_client_authenticates_with_its_client_id(public):
    _, challenge = pkce_pair()
    response = push(public, pushed_parameters(public, challenge), auth="none")
    assert response.status_code == 201, response.content


def test_rfc9126_2_1_client_id_is_required_and_must_be_the_authenticated_client(confidential):
    other = Registered.of(ClientFactory())
    _, challenge = pkce_pair()

    missing = push(confidential, pushed_parameters(confidential, challenge, client_id=None))
    mismatched = push(
        confidential, pushed_parameters(confidential, challenge, client_id=other.client_id)
    )

    assert missing.status_code == 400 and missing.json()["error"] == "invalid_request"
    assert mismatched.status_code == 400 and mismatched.json()["error"] == "invalid_request"


def test_rfc9126_2_1_request_uri_must_not_be_pushed(confidential):
    response = push(confidential, pushed_parameters(confidential, request_uri=URN + "x" * 43))
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


# --- §2.2 the response --------------------------------------------------------------------------
def test_rfc9126_2_2_created_with_a_request_uri_and_its_lifetime(confidential, settings):
    settings.PUSHED_AUTHORIZATION_REQUEST_LIFETIME = 75
    _, challenge = pkce_pair()

    response = push(confidential, pushed_parameters(confidential, challenge))

    assert response.status_code == 201
    assert response["Content-Type"] == "application/json"
    assert response["Cache-Control"] == "no-store"
    body = response.json()
    assert set(body) == {"request_uri", "expires_in"}
    assert body["expires_in"] == 75
    assert body["request_uri"].startswith(URN)
    row = PushedAuthorizationRequest.objects.get()
    assert row.client == confidential.client
    assert row.parameters["state"] == "pushed-state"
    assert 74 <= (row.expires - timezone.now()).total_seconds() <= 75


# --- §2.3 errors: as /authorize would find them, as JSON ---------------------------------------
@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"response_type": None}, "invalid_request"),
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"redirect_uri": "https://app.example.com/elsewhere"}, "invalid_request"),
        ({"redirect_uri": None}, "invalid_request"),  # OIDC Core §3.1.2.1 with openid
        ({"scope": "openid admin"}, "invalid_scope"),
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"prompt": "none login"}, "invalid_request"),
        ({"max_age": "soon"}, "invalid_request"),
        ({"id_token_hint": "not-a-token"}, "invalid_request"),
        # §3: a pushed request object is checked as at /authorize (this one is not a JWT)
        ({"request": "not-a-request-object"}, "invalid_request_object"),
    ],
)
def test_rfc9126_2_3_an_invalid_request_gets_a_json_error(confidential, change, error):
    _, challenge = pkce_pair()
    response = push(confidential, pushed_parameters(confidential, challenge, **change))

    assert response.status_code == 400, response.content
    assert response.json()["error"] == error
    assert "Location" not in response  # §2.3: never redirected
    assert response["Cache-Control"] == "no-store"
    assert PushedAuthorizationRequest.objects.count() == 0


def test_rfc9126_2_3_a_public_client_without_pkce_is_refused_as_at_authorize(public):
    response = push(public, pushed_parameters(public), auth="none")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert "code_challenge" in response.json()["error_description"]


def test_rfc9126_2_3_a_client_without_the_code_grant_is_unauthorized(db):
    service = Registered.of(
        ClientFactory(grant_types=["client_credentials"], redirect_uris=["https://x.example/cb"])
    )
    response = push(service, pushed_parameters(service))
    assert response.status_code == 400
    assert response.json()["error"] == "unauthorized_client"


def test_rfc9126_2_3_only_post_with_a_form_body(confidential):
    browser = Browser()
    get = browser.get("/par", secure=True)
    in_query = browser.post(
        "/par?" + urlencode(pushed_parameters(confidential)), secure=True, **confidential.basic()
    )
    as_json = browser.post(
        "/par", pushed_parameters(confidential), content_type="application/json", secure=True
    )

    assert get.status_code == 405 and get["Allow"] == "POST"
    assert in_query.status_code == 400 and in_query.json()["error"] == "invalid_request"
    assert as_json.status_code == 400 and as_json.json()["error"] == "invalid_request"


def test_rfc9126_2_4_an_unregistered_redirect_uri_is_refused_even_for_a_confidential_client(
    confidential,
):
    """§2.4 lets a server accept unregistered redirect URIs from authenticated confidential
    clients. This one does not: redirect URIs match the registered ones exactly, always."""
    _, challenge = pkce_pair()
    response = push(
        confidential,
        pushed_parameters(confidential, challenge, redirect_uri="https://app.example.com/other"),
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


# --- §4 the authorization request -----------------------------------------------------------------
def test_rfc9126_4_request_uri_at_authorize_gives_a_code_that_exchanges_with_pkce(
    confidential, logged_in_client
):
    request_uri, verifier = pushed(confidential)

    response = allow(logged_in_client, authorize_path(confidential.client_id, request_uri))

    assert response.status_code == 302, response.content
    answer = query(response["Location"])
    assert response["Location"].startswith(confidential.client.redirect_uris[0] + "?")
    assert answer["state"] == "pushed-state"
    token = exchange(confidential, answer["code"], verifier)
    assert token.status_code == 200, token.content
    assert token.json()["scope"] == "openid profile"
    code = AuthorizationCode.objects.get()
    assert code.nonce == "pushed-nonce"


def test_rfc9126_4_other_query_parameters_are_ignored(confidential, logged_in_client):
    request_uri, verifier = pushed(confidential)
    path = authorize_path(
        confidential.client_id,
        request_uri,
        scope="openid profile email offline_access",
        state="from-the-query",
        redirect_uri="https://evil.example/cb",
        code_challenge="A" * 43,
    )

    response = allow(logged_in_client, path)

    answer = query(response["Location"])
    assert response["Location"].startswith(confidential.client.redirect_uris[0] + "?")
    assert answer["state"] == "pushed-state"
    assert AuthorizationCode.objects.get().scope == "openid profile"
    assert exchange(confidential, answer["code"], verifier).status_code == 200


def test_rfc9126_4_the_consent_form_cannot_change_the_pushed_parameters(
    confidential, logged_in_client
):
    request_uri, _ = pushed(confidential)
    path = authorize_path(confidential.client_id, request_uri)
    assert logged_in_client.get(path, secure=True).status_code == 200  # the consent page

    response = logged_in_client.post(
        path,
        {"decision": "allow", "scope": "openid email", "code_challenge": "", "state": "posted"},
        secure=True,
    )

    answer = query(response["Location"])
    assert answer["state"] == "pushed-state"
    code = AuthorizationCode.objects.get()
    assert code.scope == "openid profile" and code.code_challenge
    assert exchange(confidential, answer["code"], None).status_code == 400  # PKCE still binds


def test_rfc9126_4_the_request_survives_sign_in_and_consent(confidential, user):
    """Signed out: to the sign-in page and back to the same request_uri (the pushed parameters
    never appear in the browser's URLs), then consent, then the code."""
    request_uri, verifier = pushed(confidential)
    path = authorize_path(confidential.client_id, request_uri)
    browser = Browser()

    to_sign_in = browser.get(path, secure=True)
    assert to_sign_in.status_code == 302
    next_url = query(to_sign_in["Location"])["next"]
    assert next_url == path
    assert "pushed-state" not in to_sign_in["Location"]
    signed_in = sign_in_and_continue(browser, user.username, next_url)
    response = allow(browser, signed_in["Location"])

    assert response.status_code == 302, response.content
    answer = query(response["Location"])
    assert answer["state"] == "pushed-state"
    assert exchange(confidential, answer["code"], verifier).status_code == 200


def test_rfc9126_4_prompt_login_asks_once_and_then_goes_on(confidential, logged_in_client, user):
    request_uri, verifier = pushed(confidential, prompt="login", max_age="0")
    path = authorize_path(confidential.client_id, request_uri)

    again = logged_in_client.get(path, secure=True)
    assert again.status_code == 302 and again["Location"].startswith("/login/")
    assert query(again["Location"])["reauth"] == "1"
    signed_in = sign_in_and_continue(logged_in_client, user.username, path)
    response = allow(logged_in_client, signed_in["Location"])

    assert response.status_code == 302 and "code=" in response["Location"], response
    assert exchange(confidential, query(response["Location"])["code"], verifier).status_code == 200


def test_rfc9126_4_a_used_request_uri_is_refused(confidential, logged_in_client):
    request_uri, _ = pushed(confidential)
    path = authorize_path(confidential.client_id, request_uri)
    assert "code=" in allow(logged_in_client, path)["Location"]

    same_browser = logged_in_client.get(path, secure=True)
    other_browser = Browser().get(path, secure=True)

    for response in (same_browser, other_browser):
        assert response.status_code == 400
        assert "already been used" in error_page_text(response)
        assert "Location" not in response
    assert AuthorizationCode.objects.count() == 1


def test_rfc9126_4_a_request_uri_claimed_by_one_browser_is_refused_to_another(
    confidential, logged_in_client
):
    """Single use from the first presentation: the browser that opened it may go through
    sign-in and consent with it; a second browser with the same request_uri gets nothing."""
    request_uri, _ = pushed(confidential)
    path = authorize_path(confidential.client_id, request_uri)
    assert Browser().get(path, secure=True).status_code == 302  # the first browser: to sign in

    attacker = logged_in_client.get(path, secure=True)

    assert attacker.status_code == 400
    assert "already been used" in error_page_text(attacker)


def test_rfc9126_4_a_denial_spends_the_request_uri(confidential, logged_in_client):
    request_uri, _ = pushed(confidential)
    path = authorize_path(confidential.client_id, request_uri)
    logged_in_client.get(path, secure=True)
    denied = logged_in_client.post(path, {"decision": "deny"}, secure=True)
    assert query(denied["Location"])["error"] == "access_denied"
    assert logged_in_client.get(path, secure=True).status_code == 400


def test_rfc9126_4_a_request_uri_from_another_client_is_refused(confidential, logged_in_client):
    other = Registered.of(ClientFactory())
    request_uri, _ = pushed(confidential)

    response = logged_in_client.get(authorize_path(other.client_id, request_uri), secure=True)
    without_client_id = logged_in_client.get(
        "/authorize?" + urlencode({"request_uri": request_uri}), secure=True
    )

    assert response.status_code == 400
    assert "another application" in error_page_text(response)
    assert without_client_id.status_code == 400
    assert "Location" not in response
    # Still good for its own client: the refusal did not claim it.
    assert (
        "code="
        in allow(logged_in_client, authorize_path(confidential.client_id, request_uri))["Location"]
    )


def test_rfc9126_4_an_expired_request_uri_is_refused(confidential, logged_in_client):
    request_uri, _ = pushed(confidential)
    PushedAuthorizationRequest.objects.update(expires=timezone.now() - timedelta(seconds=1))

    response = logged_in_client.get(
        authorize_path(confidential.client_id, request_uri), secure=True
    )

    assert response.status_code == 400
    assert "expired" in error_page_text(response)


def test_rfc9126_4_a_claimed_request_gets_time_to_sign_in(confidential, settings):
    settings.PUSHED_AUTHORIZATION_REQUEST_LIFETIME = 10
    request_uri, _ = pushed(confidential)
    Browser().get(authorize_path(confidential.client_id, request_uri), secure=True)
    row = PushedAuthorizationRequest.objects.get()
    assert row.claimed_at is not None and row.browser_digest
    remaining = (row.expires - timezone.now()).total_seconds()
    assert settings.PUSHED_AUTHORIZATION_SIGN_IN_TIME - 5 < remaining


def test_oidc_core_6_2_a_remote_request_uri_the_client_never_registered_is_refused(
    confidential, logged_in_client
):
    """Not one of our URNs (RFC 9126 §4), so OIDC Core §6.2's remote request_uri: fetched only
    when the client registered it (require_request_uri_registration); this one it did not."""
    response = logged_in_client.get(
        authorize_path(
            confidential.client_id,
            "https://app.example.com/request.jwt",
            response_type="code",
            redirect_uri=confidential.client.redirect_uris[0],
        ),
        secure=True,
    )
    assert query(response["Location"])["error"] == "invalid_request_uri"


@pytest.mark.django_db(transaction=True)
def test_rfc9126_4_one_browser_submitting_consent_twice_at_once_gets_one_code(db):
    confidential = Registered.of(ClientFactory())
    user = UserFactory()
    browser = Browser()
    assert sign_in(browser, user.username, secure=True).status_code == 302
    request_uri, _ = pushed(confidential)
    path = authorize_path(confidential.client_id, request_uri)
    assert browser.get(path, secure=True).status_code == 200
    cookies = browser.cookies
    results: list[int] = []
    barrier = threading.Barrier(4)

    def submit() -> None:
        twin = Browser()
        twin.cookies = cookies
        barrier.wait()
        try:
            results.append(twin.post(path, {"decision": "allow"}, secure=True).status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=submit) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(results) == [302, 400, 400, 400]
    assert AuthorizationCode.objects.count() == 1


# --- §5 / §6 PAR required ------------------------------------------------------------------------
def test_rfc9126_6_a_client_registered_to_require_par_is_refused_without_it(db, logged_in_client):
    client = Registered.of(ClientFactory(require_pushed_authorization_requests=True))
    _, challenge = pkce_pair()
    plain = "/authorize?" + urlencode(pushed_parameters(client, challenge))

    refused = logged_in_client.get(plain, secure=True)

    assert refused.status_code == 302
    answer = query(refused["Location"])
    assert answer["error"] == "invalid_request" and answer["state"] == "pushed-state"
    assert "pushed authorization request" in answer["error_description"]
    request_uri, verifier = pushed(client)
    response = allow(logged_in_client, authorize_path(client.client_id, request_uri))
    assert exchange(client, query(response["Location"])["code"], verifier).status_code == 200


def test_rfc9126_5_par_required_by_the_server_for_every_client(
    confidential, logged_in_client, settings
):
    settings.REQUIRE_PUSHED_AUTHORIZATION_REQUESTS = True
    _, challenge = pkce_pair()

    refused = logged_in_client.get(
        "/authorize?" + urlencode(pushed_parameters(confidential, challenge)), secure=True
    )
    metadata = Browser().get("/.well-known/oauth-authorization-server", secure=True).json()

    assert query(refused["Location"])["error"] == "invalid_request"
    assert metadata["require_pushed_authorization_requests"] is True
    request_uri, _ = pushed(confidential)
    assert (
        "code="
        in allow(logged_in_client, authorize_path(confidential.client_id, request_uri))["Location"]
    )


def test_rfc9126_5_discovery_names_the_endpoint(db, settings):
    for path in ("/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"):
        metadata = Browser().get(path, secure=True).json()
        assert metadata["pushed_authorization_request_endpoint"] == settings.ISSUER + "/par"
        assert metadata["require_pushed_authorization_requests"] is False


def test_rfc9126_6_registration_metadata_sets_the_client_flag(db, settings):
    settings.OPEN_REGISTRATION = True
    body = {
        "redirect_uris": ["https://app.example.com/cb"],
        "require_pushed_authorization_requests": True,
    }
    registered = Browser().post("/register", body, content_type="application/json", secure=True)
    wrong_type = Browser().post(
        "/register",
        {**body, "require_pushed_authorization_requests": "yes"},
        content_type="application/json",
        secure=True,
    )

    assert registered.status_code == 201, registered.content
    assert registered.json()["require_pushed_authorization_requests"] is True
    client = Client.objects.get(client_id=registered.json()["client_id"])
    assert client.require_pushed_authorization_requests is True
    assert wrong_type.status_code == 400
    assert wrong_type.json()["error"] == "invalid_client_metadata"


# --- §7.3 request_uri cannot be guessed -------------------------------------------------------------
def test_rfc9126_7_3_request_uri_cannot_be_guessed_and_is_kept_only_as_a_digest(
    confidential, logged_in_client
):
    first, _ = pushed(confidential)
    second, _ = pushed(confidential)
    references = [uri[len(URN) :] for uri in (first, second)]

    assert first != second
    assert all(len(reference) >= 43 for reference in references)  # 256 random bits
    stored = set(PushedAuthorizationRequest.objects.values_list("reference_digest", flat=True))
    assert stored == {token_digest(reference) for reference in references}
    for row in PushedAuthorizationRequest.objects.values():
        assert not any(reference in str(row) for reference in references)
    guessed = logged_in_client.get(
        authorize_path(confidential.client_id, URN + "A" * 43), secure=True
    )
    assert guessed.status_code == 400


# --- the janitor ------------------------------------------------------------------------------------
def test_expired_pushed_requests_are_purged_by_the_janitor_and_live_ones_stay(confidential):
    live, _ = pushed(confidential)
    stale, _ = pushed(confidential)
    PushedAuthorizationRequest.objects.filter(
        reference_digest=token_digest(stale[len(URN) :])
    ).update(expires=timezone.now() - timedelta(seconds=1))

    result = janitor.purge(janitor.kinds()["pushed_authorization_requests"])

    assert result.deleted == 1
    assert list(PushedAuthorizationRequest.objects.values_list("reference_digest", flat=True)) == [
        token_digest(live[len(URN) :])
    ]
    assert pushed_requests.is_pushed_reference(live)


def test_the_cookie_binding_the_browser_is_http_only_and_scoped_to_authorize(
    confidential, settings
):
    request_uri, _ = pushed(confidential)
    response = Browser().get(authorize_path(confidential.client_id, request_uri), secure=True)
    cookie = response.cookies[pushed_requests.BROWSER_COOKIE]
    assert cookie["httponly"] and cookie["path"] == "/authorize"
    assert cookie["samesite"] == "Lax"
    assert bool(cookie["secure"]) is settings.SESSION_COOKIE_SECURE
    assert urlsplit(response["Location"]).path == "/login/"


# --- operators ---------------------------------------------------------------------------------------
def test_rfc9126_6_operators_set_the_flag_in_admin_and_with_create_client(staff_client, db):
    client = ClientFactory()
    page = staff_client.get(f"/admin/tokens/client/{client.pk}/change/")
    assert b'name="require_pushed_authorization_requests"' in page.content

    out = StringIO()
    call_command(
        "create_client", "--name", "Bank", "--redirect-uri", "https://bank.example/cb",
        "--require-par", stdout=out,
    )  # fmt: skip

    printed = json.loads(out.getvalue())
    assert printed["require_pushed_authorization_requests"] is True
    made = Client.objects.get(client_id=printed["client_id"])
    assert made.require_pushed_authorization_requests is True


# --- §3 a request object pushed (RFC 9101 JAR through PAR) ----------------------------------------
def key_signer(key) -> Registered:
    """A confidential client that authenticates with private_key_jwt and signs request objects
    with the same registered key."""
    return Registered.of(
        ClientFactory(
            token_endpoint_auth_method=Client.AuthMethod.PRIVATE_KEY_JWT, jwks=public_jwks(key)
        )
    )


def request_object_claims(client: Registered, **overrides) -> dict:
    claims = {
        "iss": client.client_id,
        "aud": ISSUER,
        "exp": int(time.time()) + 300,
        "client_id": client.client_id,
        "response_type": "code",
        "redirect_uri": client.client.redirect_uris[0],
        "scope": "openid profile",
        "state": "in-the-object",
        "nonce": "object-nonce",
        "code_challenge": pkce_pair()[1],
        "code_challenge_method": "S256",
    }
    claims.update(overrides)
    return claims


def push_object(client: Registered, key, request_object: str, **body):
    """RFC 9126 §3: the pushed body carries the request object and the client's assertion."""
    data = {"client_id": client.client_id, "request": request_object, **body}
    alg = "ES256" if key.key_type == "EC" else "PS256"
    data.update(assertion_form(client.client_id, key, alg, aud=ISSUER))
    return push(client, data, auth="key")


def json_refusal(response, error: str) -> dict:
    assert response.status_code == 400, response.content
    assert response["Content-Type"].startswith("application/json")
    assert "Location" not in response
    body = response.json()
    assert body["error"] == error, body
    return body


def test_rfc9126_3_a_signed_request_object_pushed_gives_its_parameters(db):
    key = new_key("PS256")
    client = key_signer(key)
    claims = request_object_claims(client)

    response = push_object(
        client, key, sign(claims, key, "PS256"), response_type="code", scope="openid",
        state="outside-the-object",
    )  # fmt: skip

    assert response.status_code == 201, response.content
    stored = PushedAuthorizationRequest.objects.get().parameters
    for name in ("state", "nonce", "scope", "redirect_uri", "code_challenge"):
        assert stored[name] == claims[name], name  # RFC 9101 §6.3: the object's win
    assert not {"request", "client_assertion", "client_assertion_type"} & set(stored)


def test_rfc9126_3_a_plain_oauth_request_object_is_all_that_counts(db):
    key = new_key("ES256")
    client = key_signer(key)
    claims = request_object_claims(client, scope="profile", nonce=None)
    claims = {k: v for k, v in claims.items() if v is not None}

    response = push_object(client, key, sign(claims, key, "ES256"), prompt="login")

    assert response.status_code == 201, response.content
    stored = PushedAuthorizationRequest.objects.get().parameters
    assert stored["scope"] == "profile" and stored["state"] == "in-the-object"
    assert "prompt" not in stored  # RFC 9101 §5: only the object's parameters


def test_rfc9126_3_a_request_object_signed_with_another_key_is_invalid_request_object(db):
    key = new_key("PS256")
    client = key_signer(key)
    forged = sign(request_object_claims(client), new_key("PS256"), "PS256")

    json_refusal(push_object(client, key, forged, response_type="code", scope="openid"),
                 "invalid_request_object")  # fmt: skip
    assert not PushedAuthorizationRequest.objects.exists()


def test_rfc9126_3_the_objects_client_id_must_be_the_authenticated_client(db):
    key = new_key("PS256")
    client, other = key_signer(key), key_signer(key)
    claims = request_object_claims(client, client_id=other.client_id, iss=other.client_id)

    response = push_object(client, key, sign(claims, key, "PS256"), response_type="code")

    json_refusal(response, "invalid_request")
    assert not PushedAuthorizationRequest.objects.exists()


def test_rfc9126_2_1_request_uri_in_the_body_is_refused_with_a_request_object(db):
    key = new_key("PS256")
    client = key_signer(key)
    signed = sign(request_object_claims(client), key, "PS256")

    response = push_object(client, key, signed, request_uri=URN + "x" * 43)

    json_refusal(response, "invalid_request")
    assert not PushedAuthorizationRequest.objects.exists()
