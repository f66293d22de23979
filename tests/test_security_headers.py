"""Headers, cookies and error pages that every response must get right."""

import pytest
from django.conf import settings
from django.test import Client

from tests.conftest import sign_in

pytestmark = pytest.mark.django_db


def test_pages_forbid_framing_and_inline_script(client):
    response = client.get("/login/")
    assert response["X-Frame-Options"] == "DENY"
    csp = response["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in csp
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "form-action 'self'" in csp and "object-src 'none'" in csp
    assert response["Referrer-Policy"] == "same-origin"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Cross-Origin-Opener-Policy"] == "same-origin"


def test_strict_transport_security_on_https(client):
    response = client.get("/login/", secure=True)
    assert response["Strict-Transport-Security"].startswith("max-age=31536000")


def test_cookies_are_secure_httponly_and_samesite_lax_when_debug_is_off(client, user):
    page = client.get("/login/")
    csrf = page.cookies["csrftoken"]
    response = sign_in(client, user.username)
    session = response.cookies["authserver_session"]
    for cookie in (csrf, session):
        assert cookie["secure"] is True
        assert cookie["httponly"] is True
        assert cookie["samesite"] == "Lax"


def test_the_login_form_refuses_a_post_without_its_csrf_token(user):
    client = Client(enforce_csrf_checks=True)
    response = sign_in(client, user.username)
    assert response.status_code == 403
    assert b"This form has expired" in response.content
    assert "authserver_session" not in response.cookies


def test_a_missing_page_gets_a_friendly_404(client):
    response = client.get("/no/such/page/")
    assert response.status_code == 404
    assert b"There is nothing here" in response.content


def test_a_bad_host_header_gets_a_friendly_400(client):
    response = client.get("/login/", HTTP_HOST="evil.example")
    assert response.status_code == 400
    assert b"Something in that request was not right" in response.content


def test_a_bug_gets_a_friendly_500_without_a_stack_trace(settings):
    settings.ROOT_URLCONF = "tests.urls_failing"
    client = Client(raise_request_exception=False)
    response = client.get("/explode/")
    assert response.status_code == 500
    body = response.content.decode()
    assert "Something went wrong on our side" in body
    assert "Traceback" not in body and "a bug" not in body


def test_a_staff_only_page_sends_people_to_sign_in_not_a_stack_trace(logged_in_client):
    assert logged_in_client.get("/admin/").status_code == 302


@pytest.mark.parametrize("path", ["/token", "/.well-known/openid-configuration"])
def test_protocol_endpoints_skip_browser_middleware_but_keep_its_guarantees(client, path):
    """authserver.middleware.ProtocolRouter: no session is read or written for a protocol
    endpoint, yet HSTS, nosniff and ALLOWED_HOSTS hold there as on every page."""
    client.cookies[settings.SESSION_COOKIE_NAME] = "some-browser-session"
    response = (
        client.post(
            path, "grant_type=client_credentials", "application/x-www-form-urlencoded", secure=True
        )
        if path == "/token"
        else client.get(path, secure=True)
    )
    assert response.status_code in (200, 400, 401)
    assert response["Strict-Transport-Security"].startswith("max-age=")
    assert response["X-Content-Type-Options"] == "nosniff"
    assert "Set-Cookie" not in response.headers
    assert client.get(path, secure=True, HTTP_HOST="evil.example").status_code == 400
