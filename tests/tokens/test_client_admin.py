"""Operators in Django admin: register clients, see a secret once, rotate it, deactivate a client,
revoke refresh token families, and look at signing keys without ever seeing a private key."""

import re

import pytest
from django.test import Client as Browser

from accounts.models import SecurityEvent
from tests.conftest import sign_in
from tests.tokens.conftest import (
    REDIRECT,
    Registered,
    authorize_url,
    endpoint,
    exchange,
    get_code,
    refresh,
    token_request,
)
from tokens.models import Client, RefreshToken, SigningKey
from tokens.services import create_client

pytestmark = pytest.mark.django_db

ADD_URL = "/admin/tokens/client/add/"
LIST_URL = "/admin/tokens/client/"
CLIENT_CREDENTIALS = {"grant_type": "client_credentials", "scope": "profile"}


def change_url(client: Client) -> str:
    return f"/admin/tokens/client/{client.pk}/change/"


def add_form(**overrides) -> dict:
    """What an operator fills in on the add page (checkbox lists are lists of values)."""
    data = {
        "name": "Billing",
        "client_type": "confidential",
        "token_endpoint_auth_method": "client_secret_basic",
        "redirect_uris": "https://billing.example.com/callback\r\nhttp://127.0.0.1:9000/cb",
        "grant_types": ["authorization_code", "refresh_token", "client_credentials"],
        "allowed_scopes": ["openid", "profile", "offline_access"],
        "consent": "remember",
        "id_token_signed_response_alg": "RS256",
        "access_token_lifetime": "600",
        "refresh_token_lifetime": str(30 * 86_400),
        "refresh_token_idle_lifetime": str(7 * 86_400),
        "is_active": "on",
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def change_form(client: Client, **overrides) -> dict:
    """The change form as it comes back from the page, unchanged unless overridden."""
    data = {
        "name": client.name,
        "client_type": client.client_type,
        "token_endpoint_auth_method": client.token_endpoint_auth_method,
        "redirect_uris": "\r\n".join(client.redirect_uris),
        "grant_types": list(client.grant_types),
        "allowed_scopes": list(client.allowed_scopes),
        "consent": client.consent,
        "id_token_signed_response_alg": client.id_token_signed_response_alg,
        "access_token_lifetime": str(client.access_token_lifetime),
        "refresh_token_lifetime": str(client.refresh_token_lifetime),
        "refresh_token_idle_lifetime": str(client.refresh_token_idle_lifetime),
        "is_active": "on" if client.is_active else None,
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def shown(page, element_id: str) -> str:
    match = re.search(rf'<code id="{element_id}">([^<]*)</code>', page.content.decode())
    assert match, f"no #{element_id} on the page"
    return match.group(1)


def never_cached(response) -> bool:
    return "no-store" in response.get("Cache-Control", "")


def introspects_as_active(resource_server: Registered, token: str) -> bool:
    answer = endpoint("/introspect", resource_server, {"token": token})
    assert answer.status_code == 200, answer.content
    return answer.json()["active"]


def form_errors(response) -> dict:
    assert response.status_code == 200, response.status_code
    return response.context["adminform"].form.errors


def browser_for(user) -> Browser:
    browser = Browser()
    assert sign_in(browser, user.username).status_code == 302
    return browser


def tokens_through_the_code_flow(browser: Browser, client: Registered) -> dict:
    code, verifier = get_code(browser, client)
    response = exchange(client, code, verifier)
    assert response.status_code == 200, response.content
    return response.json()


# --- registering a client ---------------------------------------------------------------------
def test_registering_a_client_shows_its_id_and_secret_once_and_stores_only_a_digest(
    staff_client,
):
    response = staff_client.post(ADD_URL, add_form())
    assert response.status_code == 200, form_errors(response) if response.context else ""
    body = response.content.decode()
    client_id, secret = shown(response, "client-id"), shown(response, "client-secret")
    assert body.count(secret) == 1
    assert "Copy the secret now" in body
    assert never_cached(response)

    client = Client.objects.get(client_id=client_id)
    assert client.name == "Billing"
    assert client.client_type == "confidential"
    assert client.token_endpoint_auth_method == "client_secret_basic"
    assert client.redirect_uris == [
        "https://billing.example.com/callback",
        "http://127.0.0.1:9000/cb",
    ]
    assert client.grant_types == ["authorization_code", "refresh_token", "client_credentials"]
    assert client.allowed_scopes == ["openid", "profile", "offline_access"]
    assert client.is_active
    assert client.secret_digest and client.secret_digest != secret
    assert client.check_client_secret(secret)
    stored = {f.attname: getattr(client, f.attname) for f in Client._meta.concrete_fields}
    assert not any(secret in str(value) for value in stored.values())


def test_a_secret_made_in_admin_works_at_the_token_endpoint(staff_client):
    response = staff_client.post(ADD_URL, add_form())
    client = Client.objects.get(client_id=shown(response, "client-id"))
    registered = Registered(client, shown(response, "client-secret"))
    answer = token_request(registered, CLIENT_CREDENTIALS)
    assert answer.status_code == 200, answer.content
    assert answer.json()["token_type"] == "Bearer"
    assert "refresh_token" not in answer.json()


def test_the_change_page_of_a_client_never_shows_its_secret(staff_client):
    response = staff_client.post(ADD_URL, add_form())
    secret = shown(response, "client-secret")
    client = Client.objects.get(client_id=shown(response, "client-id"))
    page = staff_client.get(change_url(client))
    body = page.content.decode()
    assert page.status_code == 200
    assert client.client_id in body  # it is the right page
    assert secret not in body
    assert client.secret_digest not in body
    listing = staff_client.get(LIST_URL).content.decode()
    assert client.client_id in listing and secret not in listing


def test_registering_a_public_client_shows_no_secret(staff_client):
    response = staff_client.post(
        ADD_URL,
        add_form(
            name="SPA",
            client_type="public",
            token_endpoint_auth_method="none",
            grant_types=["authorization_code", "refresh_token"],
        ),
    )
    assert response.status_code == 200
    assert 'id="client-secret"' not in response.content.decode()
    client = Client.objects.get(client_id=shown(response, "client-id"))
    assert client.is_public and client.secret_digest == ""


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        (
            {"redirect_uris": "https://billing.example.com/callback#done"},
            "redirect_uris",
            "fragment",
        ),
        (
            {"redirect_uris": "http://billing.example.com/callback"},
            "redirect_uris",
            "http is only for loopback",
        ),
        (
            {
                "client_type": "public",
                "grant_types": ["authorization_code", "refresh_token"],
            },
            "token_endpoint_auth_method",
            "public client authenticates with 'none'",
        ),
    ],
    ids=["fragment", "plain-http-on-a-real-host", "public-client-with-a-secret-method"],
)
def test_a_client_that_breaks_the_rules_is_refused_with_a_form_error(
    staff_client, overrides, field, message
):
    response = staff_client.post(ADD_URL, add_form(**overrides))
    errors = form_errors(response)
    assert message in " ".join(errors.get(field, [])), errors
    assert 'id="client-secret"' not in response.content.decode()
    assert not Client.objects.exists()


@pytest.mark.parametrize(
    ("grant_types", "scopes"),
    [
        (["authorization_code"], ["openid", "profile", "email"]),
        (["authorization_code", "refresh_token"], ["openid", "profile", "email", "offline_access"]),
        (["client_credentials"], []),
    ],
    ids=["code", "code-and-refresh", "client-credentials"],
)
def test_a_client_added_with_no_scope_ticked_gets_the_scopes_its_grant_types_can_use(
    staff_client, grant_types, scopes
):
    """The rule of dynamic registration (RFC 7591 §2, OIDC Core §11), in admin: tokens/scopes.py."""
    response = staff_client.post(ADD_URL, add_form(grant_types=grant_types, allowed_scopes=[]))
    assert response.status_code == 200, form_errors(response) if response.context else ""
    assert Client.objects.get(client_id=shown(response, "client-id")).allowed_scopes == scopes


def test_a_scope_the_server_does_not_offer_is_refused_in_admin(staff_client):
    response = staff_client.post(ADD_URL, add_form(allowed_scopes=["openid", "admin"]))
    assert "allowed_scopes" in form_errors(response)
    assert not Client.objects.exists()


# --- rotating a secret ------------------------------------------------------------------------
def test_rotating_the_secret_shows_a_new_one_and_the_old_one_stops_working_at_once(
    staff_client, confidential
):
    assert token_request(confidential, CLIENT_CREDENTIALS).status_code == 200
    response = staff_client.post(
        LIST_URL, {"action": "rotate_secret", "_selected_action": [confidential.client.pk]}
    )
    assert response.status_code == 200
    assert shown(response, "client-id") == confidential.client_id
    new_secret = shown(response, "client-secret")
    assert new_secret != confidential.secret
    assert response.content.decode().count(new_secret) == 1
    assert never_cached(response)

    old = token_request(confidential, CLIENT_CREDENTIALS)
    assert old.status_code == 401, old.content
    assert old.json()["error"] == "invalid_client"
    assert old.has_header("WWW-Authenticate")
    assert old["WWW-Authenticate"].startswith("Basic")

    new = token_request(Registered(confidential.client, new_secret), CLIENT_CREDENTIALS)
    assert new.status_code == 200, new.content
    assert new_secret not in staff_client.get(change_url(confidential.client)).content.decode()


def test_rotating_asks_for_exactly_one_confidential_client(staff_client, confidential, public):
    second_client, second_secret = create_client(
        name="Second App", grant_types=["client_credentials"], scopes=["profile"]
    )
    second = Registered(second_client, second_secret)
    for selection in ([confidential.client.pk, second_client.pk], [public.client.pk]):
        response = staff_client.post(
            LIST_URL, {"action": "rotate_secret", "_selected_action": selection}, follow=True
        )
        assert b"Choose exactly one confidential client." in response.content
        assert b'id="client-secret"' not in response.content
    assert token_request(confidential, CLIENT_CREDENTIALS).status_code == 200
    assert token_request(second, CLIENT_CREDENTIALS).status_code == 200


# --- deactivating a client --------------------------------------------------------------------
def test_deactivating_a_client_in_its_change_form_revokes_its_tokens_and_nothing_else(
    staff_client, staff_user, user, confidential
):
    other_client, other_secret = create_client(
        name="Other App",
        redirect_uris=[REDIRECT],
        grant_types=["authorization_code", "refresh_token", "client_credentials"],
    )
    other = Registered(other_client, other_secret)
    browser = browser_for(user)
    mine = tokens_through_the_code_flow(browser, confidential)
    theirs = tokens_through_the_code_flow(browser, other)
    assert RefreshToken.objects.filter(client=confidential.client, revoked_at=None).count() == 1
    assert introspects_as_active(other, mine["access_token"])

    response = staff_client.post(
        change_url(confidential.client), change_form(confidential.client, is_active=None)
    )
    assert response.status_code == 302, form_errors(response)

    confidential.client.refresh_from_db()
    assert not confidential.client.is_active
    rows = RefreshToken.objects.filter(client=confidential.client)
    assert rows.exists()
    assert all(row.revoked_at and row.revoke_reason == "client" for row in rows)
    event = SecurityEvent.objects.get(kind="client_deactivated")
    assert (event.actor, event.actor_user) == ("operator", staff_user)
    assert event.detail["client_id"] == confidential.client_id

    for answer in (
        token_request(confidential, CLIENT_CREDENTIALS),
        refresh(confidential, mine["refresh_token"]),
    ):
        assert answer.status_code in (400, 401), answer.content
        assert answer.json()["error"] == "invalid_client"
    assert not introspects_as_active(other, mine["access_token"])
    refused = browser.get(authorize_url(confidential), secure=True)
    assert refused.status_code == 400  # an unknown client: an error page, never a redirect

    # The other client, and the same person's grant to it, are untouched.
    assert not RefreshToken.objects.filter(client=other_client, revoked_at__isnull=False).exists()
    assert token_request(other, CLIENT_CREDENTIALS).status_code == 200
    assert introspects_as_active(other, theirs["access_token"])
    assert refresh(other, theirs["refresh_token"]).status_code == 200


def test_saving_a_client_without_deactivating_it_revokes_nothing(staff_client, user, confidential):
    tokens = tokens_through_the_code_flow(browser_for(user), confidential)
    response = staff_client.post(
        change_url(confidential.client), change_form(confidential.client, name="Renamed")
    )
    assert response.status_code == 302, form_errors(response)
    assert not SecurityEvent.objects.filter(kind="client_deactivated").exists()
    assert refresh(confidential, tokens["refresh_token"]).status_code == 200


# --- refresh tokens ---------------------------------------------------------------------------
def test_revoking_families_revokes_the_children_of_a_rotated_token_too(
    staff_client, staff_user, user, confidential
):
    browser = browser_for(user)
    first = tokens_through_the_code_flow(browser, confidential)
    rotated = refresh(confidential, first["refresh_token"])
    assert rotated.status_code == 200, rotated.content
    child_value = rotated.json()["refresh_token"]
    child_access = rotated.json()["access_token"]
    assert introspects_as_active(confidential, child_access)
    bystander = tokens_through_the_code_flow(browser, confidential)  # another family

    parent = RefreshToken.objects.get(child__isnull=False)
    family = list(RefreshToken.objects.filter(family=parent.family))
    assert len(family) == 2
    response = staff_client.post(
        "/admin/tokens/refreshtoken/",
        {"action": "revoke_families", "_selected_action": [parent.pk]},
        follow=True,
    )
    assert b"Revoked 2 refresh token(s)." in response.content

    for row in family:
        row.refresh_from_db()
        assert row.revoked_at and row.revoke_reason == "operator"
    answer = refresh(confidential, child_value)
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_grant"
    assert not introspects_as_active(confidential, child_access)
    event = SecurityEvent.objects.get(kind="tokens_revoked", user=user)
    assert (event.actor, event.actor_user) == ("operator", staff_user)
    assert event.detail["families"] == [str(parent.family)]
    assert refresh(confidential, bystander["refresh_token"]).status_code == 200


def test_the_refresh_token_pages_show_no_digest_and_cannot_add(staff_client, user, confidential):
    tokens_through_the_code_flow(browser_for(user), confidential)
    row = RefreshToken.objects.get()
    listing = staff_client.get("/admin/tokens/refreshtoken/")
    assert listing.status_code == 200
    assert user.username in listing.content.decode()
    assert row.token_digest not in listing.content.decode()
    detail = staff_client.get(f"/admin/tokens/refreshtoken/{row.pk}/change/")
    assert detail.status_code == 200
    assert row.token_digest not in detail.content.decode()
    for q in (user.username, confidential.client_id, str(row.family), row.sid):
        found = staff_client.get("/admin/tokens/refreshtoken/", {"q": q})
        assert found.status_code == 200
        assert found.context["cl"].result_count == 1, q
    assert staff_client.get("/admin/tokens/refreshtoken/add/").status_code == 403
    assert staff_client.post("/admin/tokens/refreshtoken/add/", {}).status_code == 403
    assert RefreshToken.objects.count() == 1


# --- signing keys -----------------------------------------------------------------------------
def test_the_signing_key_pages_never_show_the_private_key(staff_client, confidential):
    assert token_request(confidential, CLIENT_CREDENTIALS).status_code == 200
    key = SigningKey.objects.get(state="active")
    private = key.private_jwk["d"]
    assert private and private not in str(key.public_jwk)
    detail = staff_client.get(f"/admin/tokens/signingkey/{key.pk}/change/")
    assert detail.status_code == 200
    body = detail.content.decode()
    assert key.public_jwk["x"] in body  # the public half is there
    assert private not in body
    listing = staff_client.get("/admin/tokens/signingkey/").content.decode()
    assert key.kid in listing and private not in listing
    assert staff_client.get("/admin/tokens/signingkey/add/").status_code == 403


def test_changing_a_client_to_public_drops_its_secret_and_back_gives_a_fresh_one(staff_client):
    from tokens.services import create_client

    client, secret = create_client(name="Switcher", redirect_uris=["https://app.example.com/cb"])
    change_url = f"/admin/tokens/client/{client.pk}/change/"
    form = {
        "name": "Switcher",
        "client_type": "public",
        "token_endpoint_auth_method": "none",
        "redirect_uris": "https://app.example.com/cb",
        "grant_types": ["authorization_code", "refresh_token"],
        "allowed_scopes": ["openid"],
        "consent": "remember",
        "id_token_signed_response_alg": "RS256",
        "access_token_lifetime": 600,
        "refresh_token_lifetime": 86400,
        "refresh_token_idle_lifetime": 3600,
        "is_active": "on",
    }
    staff_client.post(change_url, form)
    client.refresh_from_db()
    assert client.secret_digest == "" and not client.check_client_secret(secret)
    page = staff_client.post(
        change_url,
        {
            **form,
            "client_type": "confidential",
            "token_endpoint_auth_method": "client_secret_basic",
        },
    )
    client.refresh_from_db()
    assert page.status_code == 200 and b"client-secret" in page.content
    assert client.secret_digest and not client.check_client_secret(secret)
