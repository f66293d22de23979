"""Token exchange (RFC 8693) at /token: impersonation and delegation, the client's policy,
subject and actor tokens that are our access tokens or ID tokens, and the errors of §2.2.2.

The attacks (escalation past the policy, an actor from a revoked session, another client's ID
token) are in tests/attacks/test_catalogue.py, built on the helpers here."""

import time
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.test import Client as Browser
from django.utils import timezone
from joserfc import jwt

from accounts.models import SecurityEvent, UserSession
from tests.conftest import session_row
from tests.factories import ClientFactory, Registered
from tests.fuzz import spec
from tests.tokens.conftest import endpoint, exchange, get_code, token_request
from tests.tokens.test_token_endpoint import assert_oauth_error
from tokens import access_tokens, keys
from tokens.models import TOKEN_EXCHANGE_GRANT, Client

pytestmark = pytest.mark.django_db

ACCESS = "urn:ietf:params:oauth:token-type:access_token"
ID_TOKEN = "urn:ietf:params:oauth:token-type:id_token"
BILLING = "https://billing.example.com"
LEDGER = "https://ledger.example.com"


def exchange_client(**fields) -> Registered:
    """A back-end service an operator allowed to exchange tokens for billing and the ledger."""
    fields = {
        "name": "Orders API",
        "grant_types": ["authorization_code", "client_credentials", TOKEN_EXCHANGE_GRANT],
        "token_exchange_audiences": [BILLING, LEDGER],
        "token_exchange_scopes": ["openid", "profile"],
        **fields,
    }
    return Registered.of(ClientFactory(**fields))


def token_exchange(client: Registered, subject: str, subject_type: str = ACCESS, **params):
    return token_request(
        client,
        {
            "grant_type": TOKEN_EXCHANGE_GRANT,
            "subject_token": subject,
            "subject_token_type": subject_type,
            **params,
        },
    )


def client_token(client: Registered) -> str:
    response = token_request(client, {"grant_type": "client_credentials"})
    assert response.status_code == 200, response.content
    return response.json()["access_token"]


@pytest.fixture
def service() -> Registered:
    return exchange_client()


@pytest.fixture
def person_tokens(logged_in_client, confidential):
    """What the person's app (the confidential example client) got in the code flow."""

    def obtain(client: Registered = confidential, scope="openid profile email") -> dict:
        code, verifier = get_code(logged_in_client, client, scope=scope)
        response = exchange(client, code, verifier)
        assert response.status_code == 200, response.content
        return response.json()

    return obtain


# --- §2.1, §2.2.1: impersonation ---------------------------------------------------------------
def test_rfc8693_2_2_1_impersonation_issues_an_access_token_for_the_subject(
    service, person_tokens, user
):
    subject = person_tokens()
    response = token_exchange(service, subject["access_token"])
    assert response.status_code == 200, response.content
    assert response["Cache-Control"] == "no-store"
    spec.check(response)
    body = response.json()
    assert body["issued_token_type"] == ACCESS and body["token_type"] == "Bearer"
    assert "refresh_token" not in body and body["expires_in"] > 0
    # Without `scope`: what both the subject token and the policy allow (email is not allowed).
    assert body["scope"] == "openid profile"
    claims = access_tokens.read(body["access_token"])
    original = access_tokens.read(subject["access_token"])
    assert claims["sub"] == str(user.pk) == original["sub"]
    assert claims["client_id"] == service.client_id
    assert claims["aud"] == [BILLING, LEDGER]  # without audience: all of the policy's
    assert claims["sid"] == original["sid"] and "act" not in claims
    assert claims["jti"] != original["jti"]
    event = SecurityEvent.objects.get(kind="token_exchanged")
    assert (event.user, event.detail["mode"], event.detail["jti"]) == (
        user,
        "impersonation",
        claims["jti"],
    )
    assert event.detail["client_id"] == service.client_id
    assert subject["access_token"] not in str(event.detail)


def test_rfc8693_2_1_audience_and_resource_narrow_the_aud(service, person_tokens):
    subject = person_tokens()["access_token"]
    one = token_exchange(service, subject, audience=BILLING).json()
    assert access_tokens.read(one["access_token"])["aud"] == BILLING
    both = token_request(
        service,
        {
            "grant_type": TOKEN_EXCHANGE_GRANT,
            "subject_token": subject,
            "subject_token_type": ACCESS,
            "audience": BILLING,
            "resource": LEDGER,  # RFC 8707 §2
        },
    ).json()
    assert access_tokens.read(both["access_token"])["aud"] == [BILLING, LEDGER]
    repeated = Browser().post(
        "/token",
        f"grant_type={TOKEN_EXCHANGE_GRANT}&subject_token={subject}&subject_token_type={ACCESS}"
        f"&audience={BILLING}&audience={LEDGER}",
        content_type="application/x-www-form-urlencoded",
        secure=True,
        **service.basic(),
    )
    assert repeated.status_code == 200, repeated.content  # §2.1: audience may be repeated


def test_rfc8693_2_2_2_an_audience_outside_the_policy_is_invalid_target(service, person_tokens):
    subject = person_tokens()["access_token"]
    for params in ({"audience": "https://payroll.example.com"}, {"resource": BILLING + "/"}):
        response = token_exchange(service, subject, **params)
        assert_oauth_error(response, "invalid_target")
        spec.check(response)
    assert not SecurityEvent.objects.filter(kind="token_exchanged").exists()


def test_rfc8693_2_1_scope_is_narrowed_never_widened(service, person_tokens):
    subject = person_tokens(scope="openid profile email")["access_token"]
    narrowed = token_exchange(service, subject, scope="profile").json()
    assert narrowed["scope"] == "profile"
    assert access_tokens.read(narrowed["access_token"])["scope"] == "profile"
    # email: in the subject token, not in the policy; offline_access: in neither.
    for scope in ("profile email", "offline_access"):
        assert_oauth_error(token_exchange(service, subject, scope=scope), "invalid_scope")


def test_rfc8693_2_1_a_scope_beyond_the_subject_tokens_is_refused(service, person_tokens):
    subject = person_tokens(scope="openid")["access_token"]
    assert_oauth_error(token_exchange(service, subject, scope="openid profile"), "invalid_scope")
    assert token_exchange(service, subject).json()["scope"] == "openid"


# --- §4.1: delegation and the act claim -----------------------------------------------------------
def test_rfc8693_4_1_delegation_names_the_actor_in_act(service, person_tokens, user):
    subject = person_tokens()["access_token"]
    response = token_exchange(
        service, subject, actor_token=client_token(service), actor_token_type=ACCESS
    )
    assert response.status_code == 200, response.content
    claims = access_tokens.read(response.json()["access_token"])
    assert claims["sub"] == str(user.pk)
    assert claims["act"] == {"sub": service.client_id, "client_id": service.client_id}
    assert SecurityEvent.objects.get(kind="token_exchanged").detail["mode"] == "delegation"
    introspected = endpoint("/introspect", service, {"token": response.json()["access_token"]})
    spec.check(introspected)
    assert introspected.json()["active"] and introspected.json()["act"] == claims["act"]


def test_rfc8693_4_1_a_delegated_subject_token_nests_the_prior_actor(service, person_tokens):
    first_hop = token_exchange(
        service,
        person_tokens()["access_token"],
        actor_token=client_token(service),
        actor_token_type=ACCESS,
    ).json()["access_token"]
    billing = exchange_client(name="Billing")
    second_hop = token_exchange(
        billing, first_hop, actor_token=client_token(billing), actor_token_type=ACCESS
    )
    assert second_hop.status_code == 200, second_hop.content
    assert access_tokens.read(second_hop.json()["access_token"])["act"] == {
        "sub": billing.client_id,
        "client_id": billing.client_id,
        "act": {"sub": service.client_id, "client_id": service.client_id},
    }


def _reissued(person_token: str, **kwargs) -> str:
    """An access token of ours like ``person_token``, with other claims or lifetime."""
    claims = access_tokens.read(person_token)
    client = Client.objects.get(client_id=claims["client_id"])
    person = UserSession.objects.get(sid=claims["sid"]).user
    return access_tokens.issue(
        client=client, user=person, scope=claims["scope"], sid=claims["sid"], **kwargs
    ).value


def _token_with_may_act(person_token: str, may_act: dict) -> str:
    """An access token of ours whose subject says who may act for it (RFC 8693 §4.4)."""
    return _reissued(person_token, extra_claims={"may_act": may_act})


def test_an_exchanged_token_never_outlives_its_subject_token(service, person_tokens):
    """Exchanging again and again must not extend what a stolen token can do."""
    short_lived = _reissued(person_tokens()["access_token"], lifetime=90)
    body = token_exchange(service, short_lived).json()
    assert body["expires_in"] <= 90
    assert access_tokens.read(body["access_token"])["exp"] <= access_tokens.read(short_lived)["exp"]


def test_rfc8693_4_4_may_act_in_the_subject_token_is_honoured(service, person_tokens):
    person_token = person_tokens()["access_token"]
    actor = client_token(service)
    allowed = _token_with_may_act(person_token, {"sub": service.client_id})
    response = token_exchange(service, allowed, actor_token=actor, actor_token_type=ACCESS)
    assert response.status_code == 200, response.content
    someone_else = _token_with_may_act(person_token, {"sub": "another-service"})
    assert_oauth_error(
        token_exchange(service, someone_else, actor_token=actor, actor_token_type=ACCESS),
        "invalid_request",
    )
    assert_oauth_error(token_exchange(service, someone_else), "invalid_request")


# --- subject and actor tokens ----------------------------------------------------------------------
def test_rfc8693_2_2_2_a_revoked_subject_token_cannot_be_exchanged(
    service, person_tokens, confidential
):
    subject = person_tokens()["access_token"]
    assert endpoint("/revoke", confidential, {"token": subject}).status_code == 200
    assert_oauth_error(token_exchange(service, subject), "invalid_request")


def test_rfc8693_2_2_2_a_subject_token_of_an_ended_session_cannot_be_exchanged(
    service, person_tokens, logged_in_client
):
    subject = person_tokens()["access_token"]
    logged_in_client.post("/logout/")
    assert_oauth_error(token_exchange(service, subject), "invalid_request")


def test_an_exchanged_token_dies_with_the_subjects_session(
    service, person_tokens, logged_in_client
):
    issued = token_exchange(service, person_tokens()["access_token"]).json()["access_token"]
    assert endpoint("/introspect", service, {"token": issued}).json()["active"]
    logged_in_client.post("/logout/")
    assert endpoint("/introspect", service, {"token": issued}).json() == {"active": False}


def test_rfc8693_2_2_2_tokens_that_are_not_ours_or_not_tokens_are_invalid_request(
    service, person_tokens
):
    subject = person_tokens()
    for value, kind in (
        ("not-a-token", ACCESS),
        (subject["access_token"][:-4] + "AAAA", ACCESS),  # tampered
        (subject["id_token"], ACCESS),  # an ID token is not an access token (RFC 9068 §4)
        (subject["access_token"], ID_TOKEN),  # nor the reverse
        (subject["refresh_token"], "urn:ietf:params:oauth:token-type:refresh_token"),
        (subject["access_token"], "urn:ietf:params:oauth:token-type:jwt"),
    ):
        assert_oauth_error(token_exchange(service, value, kind), "invalid_request")


def test_rfc8693_2_2_2_a_client_credentials_token_as_subject_names_no_person(service):
    assert_oauth_error(token_exchange(service, client_token(service)), "invalid_request")


def test_rfc8693_3_our_own_id_token_is_a_subject_and_buys_at_most_openid(
    logged_in_client, person_tokens, user
):
    app = exchange_client(name="Full-stack app")
    subject = person_tokens(app, scope="openid profile")
    response = token_exchange(app, subject["id_token"], ID_TOKEN, audience=LEDGER)
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["scope"] == "openid"
    claims = access_tokens.read(body["access_token"])
    assert (claims["sub"], claims["aud"]) == (str(user.pk), LEDGER)
    assert_oauth_error(
        token_exchange(app, subject["id_token"], ID_TOKEN, scope="profile"), "invalid_scope"
    )


def test_rfc8693_2_2_2_an_expired_id_token_cannot_be_exchanged(person_tokens, user):
    app = exchange_client(name="Full-stack app")
    subject = person_tokens(app, scope="openid")
    claims = access_tokens.read(subject["access_token"])
    kid, key = keys.signing_key("RS256")

    now = int(time.time())

    def id_token(exp: int) -> str:
        header = {"alg": "RS256", "kid": kid, "typ": "JWT"}
        body = {"iss": claims["iss"], "sub": str(user.pk), "aud": app.client_id, "exp": exp,
                "iat": now - 7200, "sid": claims["sid"]}  # fmt: skip
        return jwt.encode(header, body, key)

    assert token_exchange(app, id_token(now + 600), ID_TOKEN).status_code == 200
    assert_oauth_error(token_exchange(app, id_token(now - 3600), ID_TOKEN), "invalid_request")


def test_rfc8693_2_1_actor_token_and_its_type_go_together(service, person_tokens):
    subject = person_tokens()["access_token"]
    assert_oauth_error(
        token_exchange(service, subject, actor_token=client_token(service)), "invalid_request"
    )
    assert_oauth_error(token_exchange(service, subject, actor_token_type=ACCESS), "invalid_request")


def test_rfc8693_2_2_2_only_access_tokens_are_issued(service, person_tokens):
    subject = person_tokens()["access_token"]
    for kind in ("urn:ietf:params:oauth:token-type:refresh_token", ID_TOKEN, "jwt"):
        response = token_exchange(service, subject, requested_token_type=kind)
        assert_oauth_error(response, "invalid_request")
    ok = token_exchange(service, subject, requested_token_type=ACCESS)
    assert ok.status_code == 200


def test_rfc8693_2_1_subject_token_and_its_type_are_required(service, person_tokens):
    subject = person_tokens()["access_token"]
    for params in ({"subject_token_type": ACCESS}, {"subject_token": subject}):
        response = token_request(service, {"grant_type": TOKEN_EXCHANGE_GRANT, **params})
        assert_oauth_error(response, "invalid_request")


# --- who may exchange ------------------------------------------------------------------------------
def test_token_exchange_is_off_by_default(confidential, person_tokens):
    """ClientFactory's confidential app has neither the grant type nor a policy."""
    response = token_exchange(confidential, person_tokens()["access_token"])
    assert_oauth_error(response, "unauthorized_client")
    no_policy = exchange_client(name="No policy", token_exchange_audiences=[])
    assert_oauth_error(
        token_exchange(no_policy, person_tokens()["access_token"]), "unauthorized_client"
    )


def test_public_clients_cannot_be_given_token_exchange(db):
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError, match="public client cannot use token exchange"):
        ClientFactory(public=True, grant_types=["authorization_code", TOKEN_EXCHANGE_GRANT])


def test_rfc8414_discovery_lists_the_token_exchange_grant():
    metadata = Browser().get("/.well-known/openid-configuration", secure=True).json()
    assert TOKEN_EXCHANGE_GRANT in metadata["grant_types_supported"]


def test_create_client_sets_the_exchange_policy_and_the_retry_window(capsys):
    call_command(
        "create_client", "--name", "Gateway", "--grant-type", "client_credentials",
        "--grant-type", TOKEN_EXCHANGE_GRANT, "--exchange-audience", BILLING,
        "--exchange-scope", "profile", "--scope", "profile", "--refresh-retry-window", "10",
    )  # fmt: skip
    client = Client.objects.get(name="Gateway")
    assert client.token_exchange_audiences == [BILLING]
    assert client.token_exchange_scopes == ["profile"]
    assert client.refresh_retry_window == 10
    assert TOKEN_EXCHANGE_GRANT in client.grant_types


def test_the_admin_form_edits_the_exchange_policy_and_the_retry_window(staff_client, service):
    url = f"/admin/tokens/client/{service.client.pk}/change/"
    page = staff_client.get(url)
    assert page.status_code == 200
    assert b"token_exchange_audiences" in page.content and b"refresh_retry_window" in page.content
    form = page.context["adminform"].form
    data = {
        name: value
        for name, value in form.initial.items()
        if value is not None and not isinstance(value, list)
    }
    data.update(
        grant_types=service.client.grant_types,
        allowed_scopes=service.client.allowed_scopes,
        token_exchange_scopes=["profile"],
        token_exchange_audiences=f"{LEDGER}\n",
        refresh_retry_window="5",
        redirect_uris="\n".join(service.client.redirect_uris),
    )
    response = staff_client.post(url, data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    service.client.refresh_from_db()
    assert service.client.token_exchange_audiences == [LEDGER]
    assert service.client.token_exchange_scopes == ["profile"]
    assert service.client.refresh_retry_window == 5


def test_rfc7591_registration_cannot_grant_itself_token_exchange(settings):
    import json

    settings.OPEN_REGISTRATION = True
    response = Browser().post(
        "/register",
        json.dumps(
            {
                "client_name": "Sneaky",
                "grant_types": ["client_credentials", TOKEN_EXCHANGE_GRANT],
                "response_types": [],
            }
        ),
        content_type="application/json",
        secure=True,
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_client_metadata"


def test_an_id_token_of_an_ended_session_cannot_be_exchanged(logged_in_client, person_tokens):
    app = exchange_client(name="Full-stack app")
    subject = person_tokens(app, scope="openid")
    UserSession.objects.filter(pk=session_row(logged_in_client).pk).update(
        revoked_at=timezone.now() - timedelta(seconds=1)
    )
    assert_oauth_error(token_exchange(app, subject["id_token"], ID_TOKEN), "invalid_request")
