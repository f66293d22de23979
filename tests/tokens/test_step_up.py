"""Step-up: acr_values, an essential acr claim and a client's own requirement select the factors
a sign-in needs (OIDC Core §3.1.2.1, §5.5.1.1); ID tokens and access tokens tell the truth in
``acr`` (OIDC Core §2) and ``amr`` (RFC 8176), and so do the tokens a refresh brings."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from django.test import Client as Browser

from tests.accounts.test_factors import code_at, enrol_through_the_page, enrolled, password_step
from tests.conftest import session_row
from tests.factories import PASSWORD
from tests.tokens.conftest import (
    authorize_url,
    endpoint,
    exchange,
    get_code,
    pkce_pair,
    query,
    refresh,
)
from tests.tokens.test_oidc_core import code_flow, decode_id_token, provider_metadata
from tests.tokens.test_registration import issue_initial_token, register
from tokens import access_tokens
from tokens.models import Client

pytestmark = pytest.mark.django_db


def tokens_of(body: dict, client) -> tuple[dict, dict]:
    """(ID token claims, access token claims) of a token response."""
    return decode_id_token(body["id_token"], client).claims, access_tokens.verify(
        body["access_token"]
    )


def mfa_browser(user) -> Browser:
    """A browser signed in with password and TOTP."""
    secret = enrolled(user)
    browser = Browser()
    password_step(browser, user)
    assert browser.post("/login/verify/", {"code": code_at(secret)}).status_code == 302
    browser.totp_secret = secret
    return browser


def test_oidc_core_2_a_password_sign_in_has_acr_pwd_and_amr_pwd_in_both_tokens(
    logged_in_client, confidential
):
    body = code_flow(logged_in_client, confidential, "openid")
    id_token, access = tokens_of(body, confidential)
    assert (id_token["acr"], id_token["amr"]) == ("pwd", ["pwd"])
    assert (access["acr"], access["amr"]) == ("pwd", ["pwd"])  # RFC 9068 §2.2.1
    introspected = endpoint("/introspect", confidential, {"token": body["access_token"]}).json()
    assert (introspected["acr"], introspected["amr"]) == ("pwd", ["pwd"])


def test_rfc8176_a_password_and_totp_sign_in_has_amr_pwd_otp_mfa_and_acr_mfa(user, confidential):
    browser = mfa_browser(user)
    body = code_flow(browser, confidential, "openid offline_access")
    id_token, access = tokens_of(body, confidential)
    assert id_token["amr"] == access["amr"] == ["pwd", "otp", "mfa"]
    assert id_token["acr"] == access["acr"] == "mfa"
    # A refresh brings access tokens that say the same: the sign-in did not change.
    refreshed = refresh(confidential, body["refresh_token"]).json()
    claims = access_tokens.verify(refreshed["access_token"])
    assert (claims["acr"], claims["amr"]) == ("mfa", ["pwd", "otp", "mfa"])
    assert (
        access_tokens.verify(
            refresh(confidential, refreshed["refresh_token"]).json()["access_token"]
        )["acr"]
        == "mfa"
    )


def test_oidc_core_3_1_2_1_acr_values_mfa_asks_a_password_session_for_the_second_factor(
    user, confidential
):
    secret = enrolled(user)
    browser = Browser()
    # A password-only session of a person who has a second factor (signed in before enrolling).
    browser.force_login(user)
    session = browser.session
    session["_amr"], session["_sid"], session["_auth_time"] = ["pwd"], "sid-1", 1
    session.save()
    verifier, challenge = pkce_pair()
    url = authorize_url(confidential, challenge=challenge, scope="openid", acr_values="mfa")
    response = browser.get(url, secure=True)
    assert response.status_code == 302
    step = urlsplit(response["Location"])
    assert step.path == "/login/verify/"  # the missing factor, not a new sign-in
    assert parse_qs(step.query)["acr"] == ["mfa"]
    back = browser.post(response["Location"], {"code": code_at(secret)})
    assert back.status_code == 302 and back["Location"] == url
    answer = browser.get(url, secure=True)
    if answer.status_code == 200:
        answer = browser.post(url, {"decision": "allow"}, secure=True)
    code = query(answer["Location"])["code"]
    id_token, access = tokens_of(exchange(confidential, code, verifier).json(), confidential)
    assert id_token["acr"] == access["acr"] == "mfa"
    assert id_token["amr"] == ["pwd", "otp", "mfa"]
    assert session_row(browser).amr == ["pwd", "otp", "mfa"]


def test_oidc_core_3_1_2_1_voluntary_acr_values_that_cannot_be_met_give_the_best_achieved(
    logged_in_client, confidential
):
    body = code_flow(logged_in_client, confidential, "openid", acr_values="phr mfa")
    id_token, _ = tokens_of(body, confidential)
    assert id_token["acr"] == "pwd"  # the person has no second factor: told truthfully


def test_oidc_core_3_1_2_1_the_first_requested_level_met_is_the_acr(user, confidential):
    body = code_flow(mfa_browser(user), confidential, "openid", acr_values="pwd mfa")
    assert tokens_of(body, confidential)[0]["acr"] == "pwd"
    body = code_flow(mfa_browser(user), confidential, "openid", acr_values="phr mfa")
    assert tokens_of(body, confidential)[0]["acr"] == "mfa"  # no passkey: mfa met, phr not


def test_oidc_core_5_5_1_1_an_essential_acr_that_cannot_be_met_is_an_error(
    logged_in_client, confidential
):
    claims = json.dumps({"id_token": {"acr": {"essential": True, "values": ["mfa"]}}})
    url = authorize_url(confidential, scope="openid", claims=claims)
    response = logged_in_client.get(url, secure=True)
    assert response.status_code == 302
    answer = query(response["Location"])
    assert answer["error"] == "unmet_authentication_requirements"
    assert answer["state"] == "xyz" and "iss" in answer


def test_oidc_core_5_5_1_1_an_essential_acr_the_person_can_reach_asks_for_it(user, confidential):
    enrolled(user)
    browser = Browser()
    sign_in_without_factor(browser, user)
    claims = json.dumps({"id_token": {"acr": {"essential": True, "value": "mfa"}}})
    response = browser.get(authorize_url(confidential, scope="openid", claims=claims), secure=True)
    assert urlsplit(response["Location"]).path == "/login/verify/"


def sign_in_without_factor(browser: Browser, user) -> None:
    browser.force_login(user)
    session = browser.session
    session["_amr"], session["_sid"], session["_auth_time"] = ["pwd"], "sid-2", 1
    session.save()


def test_oidc_core_3_1_2_6_prompt_none_with_a_missing_factor_is_interaction_required(
    user, confidential
):
    enrolled(user)
    browser = Browser()
    sign_in_without_factor(browser, user)
    url = authorize_url(confidential, scope="openid", acr_values="mfa", prompt="none")
    answer = query(browser.get(url, secure=True)["Location"])
    assert answer["error"] == "interaction_required"


def test_a_client_that_requires_mfa_refuses_a_person_without_a_second_factor(
    logged_in_client, confidential
):
    Client.objects.filter(pk=confidential.client.pk).update(required_acr="mfa")
    response = logged_in_client.get(authorize_url(confidential, scope="openid"), secure=True)
    assert query(response["Location"])["error"] == "unmet_authentication_requirements"


def test_a_client_that_requires_mfa_asks_for_the_factor_and_gets_acr_mfa(user, confidential):
    Client.objects.filter(pk=confidential.client.pk).update(required_acr="mfa")
    # A request asking for less (acr_values=pwd) still gets the client's minimum.
    browser = mfa_browser(user)
    body = code_flow(browser, confidential, "openid", acr_values="pwd")
    assert tokens_of(body, confidential)[0]["acr"] == "mfa"


def test_oidc_registration_2_default_acr_values_apply_when_a_request_names_none(user, confidential):
    Client.objects.filter(pk=confidential.client.pk).update(default_acr_values=["mfa"])
    enrolled(user)
    browser = Browser()
    sign_in_without_factor(browser, user)
    response = browser.get(authorize_url(confidential, scope="openid"), secure=True)
    assert urlsplit(response["Location"]).path == "/login/verify/"


def test_clients_that_ask_for_nothing_are_not_asked_for_a_factor(user, confidential):
    enrolled(user)
    browser = Browser()
    sign_in_without_factor(browser, user)
    code, _ = get_code(browser, confidential, scope="openid")
    assert code


def test_max_age_with_a_second_factor_asks_for_password_and_factor_again(user, confidential):
    browser = mfa_browser(user)
    url = authorize_url(confidential, scope="openid", max_age="0")
    response = browser.get(url, secure=True)
    assert urlsplit(response["Location"]).path == "/login/"
    next_url = parse_qs(urlsplit(response["Location"]).query)["next"][0]
    response = browser.post(
        "/login/?reauth=1", {"username": user.username, "password": PASSWORD, "next": next_url}
    )
    assert response["Location"] == "/login/verify/"  # the password alone is not enough
    back = browser.post("/login/verify/", {"code": code_at(browser.totp_secret, 1)})
    assert back["Location"] == next_url


def test_discovery_lists_acr_values_supported():
    assert provider_metadata()["acr_values_supported"] == ["pwd", "mfa", "phr"]


def test_oidc_registration_2_default_acr_values_are_registered_and_unknown_ones_refused():
    token = issue_initial_token("--uses", "2")["initial_access_token"]
    metadata = {"redirect_uris": ["https://rp.example/cb"], "client_name": "RP"}
    response = register({**metadata, "default_acr_values": ["mfa"]}, token)
    assert response.status_code == 201, response.content
    assert response.json()["default_acr_values"] == ["mfa"]
    assert Client.objects.get(client_id=response.json()["client_id"]).default_acr_values == ["mfa"]
    refused = register({**metadata, "default_acr_values": ["urn:unknown"]}, token)
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_client_metadata"


def test_a_person_without_a_factor_enrols_one_from_the_step_and_continues(user, confidential):
    """The factor step links to enrolment; confirming the app's first code is a use of it, so
    the step is then met and the person goes on to the authorization request."""
    browser = Browser()
    sign_in_without_factor(browser, user)
    url = authorize_url(confidential, scope="openid", acr_values="mfa")
    step = f"/login/verify/?{urlencode({'acr': 'mfa', 'next': url})}"
    page = browser.get(step).content.decode()
    assert "You have no second factor yet" in page and "/account/factors/totp/?next=" in page
    enrol_through_the_page(browser)
    assert browser.get(step)["Location"] == url
    assert session_row(browser).amr == ["pwd", "otp", "mfa"]
