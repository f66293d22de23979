"""The authorization endpoint: RFC 6749 §4.1.1-4.1.2, RFC 7636 (PKCE), RFC 9207 (iss), consent."""

import pytest
from django.test import Client as Browser

from tests.tokens.conftest import REDIRECT, authorize_url, get_code, pkce_pair, query
from tokens.clients import create_client
from tokens.models import AuthorizationCode, Client, Consent, token_digest

pytestmark = pytest.mark.django_db

ISSUER = "https://auth.example.test"


def test_signed_out_people_go_to_sign_in_and_come_back_to_the_same_request(confidential):
    url = authorize_url(confidential, challenge=pkce_pair()[1])
    response = Browser().get(url, secure=True)
    assert response.status_code == 302
    assert response["Location"].startswith("/login/?next=")
    continuation = query(response["Location"])["next"]
    assert continuation.startswith("/authorize?")
    assert query(continuation) == query(url)


def test_the_consent_page_names_the_client_and_the_scopes_in_plain_words(
    logged_in_client, confidential
):
    response = logged_in_client.get(
        authorize_url(confidential, scope="openid email", challenge=pkce_pair()[1]), secure=True
    )
    body = response.content.decode()
    assert response.status_code == 200
    assert (
        "Example App" in body
        and "See your email address" in body
        and "Sign you in with your account" in body
    )
    assert "app.example.com" in body
    assert "csrfmiddlewaretoken" in body
    # Its form posts back here and then redirects to the client: CSP form-action allows exactly that.
    assert "form-action 'self' https://app.example.com" in response["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in response["Content-Security-Policy"]


def test_allowing_redirects_with_a_code_the_state_and_the_issuer(logged_in_client, confidential):
    """RFC 6749 §4.1.2 and RFC 9207 §2."""
    url = authorize_url(confidential, state="s t&a=te", challenge=pkce_pair()[1])
    logged_in_client.get(url, secure=True)
    response = logged_in_client.post(url, {"decision": "allow"}, secure=True)
    assert response.status_code == 302
    assert response["Location"].startswith(REDIRECT + "?")
    params = query(response["Location"])
    assert params["state"] == "s t&a=te"
    assert params["iss"] == ISSUER
    code = AuthorizationCode.objects.get(code_digest=token_digest(params["code"]))
    lifetime = (code.expires - code.created).total_seconds()
    assert lifetime == 60  # RFC 6749 §4.1.2: short-lived; one minute by default
    assert code.used_at is None


def test_codes_are_stored_only_as_digests(logged_in_client, confidential):
    code, _ = get_code(logged_in_client, confidential)
    assert not AuthorizationCode.objects.filter(code_digest=code).exists()
    assert AuthorizationCode.objects.filter(code_digest=token_digest(code)).exists()


def test_denying_redirects_with_access_denied_state_and_issuer(logged_in_client, confidential):
    """RFC 6749 §4.1.2.1: access_denied."""
    url = authorize_url(confidential, challenge=pkce_pair()[1])
    response = logged_in_client.post(url, {"decision": "deny"}, secure=True)
    params = query(response["Location"])
    assert params == {"error": "access_denied", "state": "xyz", "iss": ISSUER} | (
        {"error_description": params["error_description"]} if "error_description" in params else {}
    )
    assert not AuthorizationCode.objects.exists()


def test_a_remembered_consent_is_not_asked_again(logged_in_client, confidential):
    get_code(logged_in_client, confidential, scope="openid profile")
    assert Consent.objects.get().scopes == ["openid", "profile"]
    response = logged_in_client.get(
        authorize_url(confidential, scope="openid", challenge=pkce_pair()[1]), secure=True
    )
    assert response.status_code == 302 and "code=" in response["Location"]


def test_asking_for_more_than_was_remembered_asks_again(logged_in_client, confidential):
    get_code(logged_in_client, confidential, scope="openid")
    response = logged_in_client.get(
        authorize_url(confidential, scope="openid email", challenge=pkce_pair()[1]), secure=True
    )
    assert response.status_code == 200 and b"See your email address" in response.content


def test_consent_policy_ask_asks_every_time(logged_in_client, confidential):
    Client.objects.filter(pk=confidential.client.pk).update(consent=Client.Consent.ASK)
    get_code(logged_in_client, confidential)
    response = logged_in_client.get(
        authorize_url(confidential, challenge=pkce_pair()[1]), secure=True
    )
    assert response.status_code == 200
    assert not Consent.objects.exists()


def test_a_first_party_client_skips_consent(logged_in_client, confidential):
    Client.objects.filter(pk=confidential.client.pk).update(consent=Client.Consent.SKIP)
    response = logged_in_client.get(
        authorize_url(confidential, challenge=pkce_pair()[1]), secure=True
    )
    assert response.status_code == 302 and "code=" in response["Location"]


def test_an_unknown_client_gets_an_error_page_and_no_redirect(logged_in_client):
    """RFC 6749 §4.1.2.1: MUST NOT automatically redirect the user-agent."""
    response = logged_in_client.get(
        "/authorize?response_type=code&client_id=nope&redirect_uri=https://evil.example/cb",
        secure=True,
    )
    assert response.status_code == 400
    assert b"This sign-in link does not work" in response.content
    assert "Location" not in response


@pytest.mark.parametrize(
    "redirect_uri",
    [
        "https://evil.example/callback",
        REDIRECT + "/",
        REDIRECT + "?x=1",
        REDIRECT.upper(),
        "https://app.example.com/callback#frag",
        "https://app.example.com/callback/../callback",
    ],
)
def test_the_redirect_uri_must_match_exactly_or_no_redirect_happens(
    logged_in_client, confidential, redirect_uri
):
    """RFC 9700 §4.1.3: exact string matching; a mismatch shows an error page (RFC 6749 §4.1.2.1)."""
    response = logged_in_client.get(
        authorize_url(confidential, redirect_uri=redirect_uri, challenge=pkce_pair()[1]),
        secure=True,
    )
    assert response.status_code == 400
    assert "Location" not in response


def test_the_single_registered_redirect_uri_is_used_when_none_is_sent(
    logged_in_client, confidential
):
    """RFC 6749 §3.1.2.3, for a plain OAuth request (OpenID Connect requires redirect_uri)."""
    url = authorize_url(confidential, scope="profile", challenge=pkce_pair()[1]).replace(
        "&redirect_uri=https%3A%2F%2Fapp.example.com%2Fcallback", ""
    )
    response = logged_in_client.post(url, {"decision": "allow"}, secure=True)
    assert response["Location"].startswith(REDIRECT + "?code=")


def test_with_several_registered_uris_one_must_be_named(logged_in_client):
    client, _ = create_client(name="Two", redirect_uris=[REDIRECT, "https://app.example.com/other"])
    response = logged_in_client.get(
        f"/authorize?response_type=code&client_id={client.client_id}", secure=True
    )
    assert response.status_code == 400 and "Location" not in response


def test_an_unsupported_response_type_goes_back_to_the_client(logged_in_client, confidential):
    """RFC 6749 §4.1.2.1: unsupported_response_type; no implicit grant."""
    url = authorize_url(confidential, response_type="token", challenge=pkce_pair()[1])
    response = logged_in_client.get(url, secure=True)
    params = query(response["Location"])
    assert (
        params["error"] == "unsupported_response_type"
        and params["state"] == "xyz"
        and params["iss"] == ISSUER
    )


@pytest.mark.parametrize("response_type", [None, ""], ids=["absent", "empty"])
def test_rfc6749_s4_1_2_1_a_missing_response_type_goes_back_to_the_client_as_invalid_request(
    logged_in_client, confidential, response_type
):
    """RFC 6749 §4.1.2.1 invalid_request: "missing a required parameter" (response_type,
    §4.1.1); not unsupported_response_type, since none was named. §3.1: empty is absent."""
    url = authorize_url(confidential, response_type=response_type, challenge=pkce_pair()[1])
    response = logged_in_client.get(url, secure=True)
    assert response.status_code == 302
    assert response["Location"].startswith(REDIRECT + "?")
    params = query(response["Location"])
    assert params["error"] == "invalid_request" and params["state"] == "xyz"
    assert params["iss"] == ISSUER and "code" not in params


@pytest.mark.parametrize(
    "redirect_uri", ["https://evil.example/cb", None], ids=["unregistered", "one-of-several"]
)
def test_rfc6749_s4_1_2_1_a_missing_response_type_never_redirects_to_an_unchecked_uri(
    logged_in_client, redirect_uri
):
    """RFC 6749 §4.1.2.1: with a redirect URI that is not registered (or not named when several
    are), the error is shown to the person; the user-agent is never redirected."""
    client, _ = create_client(name="Two", redirect_uris=[REDIRECT, "https://app.example.com/other"])
    url = f"/authorize?client_id={client.client_id}&state=s"
    if redirect_uri:
        url += f"&redirect_uri={redirect_uri}"
    response = logged_in_client.get(url, secure=True)
    assert response.status_code == 400 and "Location" not in response


def test_rfc6749_s4_1_2_1_a_missing_client_id_is_shown_to_the_person_not_redirected(
    logged_in_client,
):
    """RFC 6749 §4.1.2.1: "if the client identifier is missing or invalid ... MUST NOT
    automatically redirect"."""
    response = logged_in_client.get(
        f"/authorize?response_type=code&redirect_uri={REDIRECT}&state=s", secure=True
    )
    assert response.status_code == 400 and "Location" not in response


def test_an_unknown_or_disallowed_scope_is_invalid_scope(logged_in_client, confidential):
    """RFC 6749 §4.1.2.1: invalid_scope."""
    for scope in ("openid admin", "openid orders.write"):
        response = logged_in_client.get(
            authorize_url(confidential, scope=scope, challenge=pkce_pair()[1]), secure=True
        )
        assert query(response["Location"])["error"] == "invalid_scope"


def test_a_client_without_the_code_grant_is_unauthorized(logged_in_client):
    client, _ = create_client(
        name="Machine", redirect_uris=[REDIRECT], grant_types=["client_credentials"], scopes=[]
    )
    response = logged_in_client.get(
        f"/authorize?response_type=code&client_id={client.client_id}&redirect_uri={REDIRECT}&state=a",
        secure=True,
    )
    assert query(response["Location"])["error"] == "unauthorized_client"


def test_a_repeated_parameter_is_refused(logged_in_client, confidential):
    """RFC 6749 §3.1: parameters MUST NOT be included more than once."""
    url = authorize_url(confidential, challenge=pkce_pair()[1]) + "&scope=email"
    response = logged_in_client.get(url, secure=True)
    assert response.status_code == 400 and "Location" not in response


def test_public_clients_must_use_pkce(logged_in_client, public):
    """RFC 9700 §2.1.1: PKCE required for public clients."""
    response = logged_in_client.get(authorize_url(public), secure=True)
    params = query(response["Location"])
    assert params["error"] == "invalid_request" and "code_challenge" in params["error_description"]


def test_the_plain_pkce_method_is_refused(logged_in_client, public):
    """RFC 9700 §2.1.1: S256 only; 'plain' offers no protection if the request leaks."""
    url = authorize_url(public, code_challenge="x" * 43, code_challenge_method="plain")
    assert query(logged_in_client.get(url, secure=True)["Location"])["error"] == "invalid_request"
    url = authorize_url(public, code_challenge="x" * 43)  # no method means plain (RFC 7636 §4.3)
    assert query(logged_in_client.get(url, secure=True)["Location"])["error"] == "invalid_request"


def test_the_consent_form_needs_its_csrf_token(user, confidential):
    from tests.factories import PASSWORD

    browser = Browser(enforce_csrf_checks=True)
    token = browser.get("/login/").cookies["csrftoken"].value
    browser.post(
        "/login/", {"username": user.username, "password": PASSWORD, "csrfmiddlewaretoken": token}
    )
    url = authorize_url(confidential, challenge=pkce_pair()[1])
    response = browser.post(url, {"decision": "allow"}, secure=True)
    assert response.status_code == 403
    assert not AuthorizationCode.objects.exists()


def test_a_code_remembers_who_which_session_and_the_pkce_challenge(
    logged_in_client, confidential, user
):
    from tests.conftest import session_row

    code, _ = get_code(logged_in_client, confidential, scope="openid", nonce="n-0S6_WzA2Mj")
    row = AuthorizationCode.objects.get(code_digest=token_digest(code))
    assert row.user == user and row.client == confidential.client
    assert row.sid == session_row(logged_in_client).sid
    assert row.code_challenge_method == "S256" and len(row.code_challenge) == 43
    assert row.nonce == "n-0S6_WzA2Mj" and row.scope == "openid"
    assert row.auth_time is not None


def test_the_sign_in_page_lets_its_form_end_on_a_registered_client_only(confidential):
    """CSP form-action covers every redirect after a form submission: continuing a valid
    authorization request, the client's origin is allowed; anything else, only 'self'."""
    from urllib.parse import quote

    good = authorize_url(confidential, challenge=pkce_pair()[1])
    page = Browser().get("/login/?next=" + quote(good), secure=True)
    assert "form-action 'self' https://app.example.com;" in page["Content-Security-Policy"]
    forged = authorize_url(confidential, redirect_uri="https://evil.example/cb")
    page = Browser().get("/login/?next=" + quote(forged), secure=True)
    assert "form-action 'self';" in page["Content-Security-Policy"]
    page = Browser().get("/login/?next=" + quote("https://evil.example/"), secure=True)
    assert "form-action 'self';" in page["Content-Security-Policy"]
