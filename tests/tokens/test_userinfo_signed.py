"""Signed UserInfo responses (OIDC Core §5.3.2, OpenID Registration §2
userinfo_signed_response_alg), checked the way a relying party checks them."""

import pytest
from joserfc import jwt

from tests.tokens.test_oidc_core import (
    ISSUER,
    code_flow,
    decode_id_token,
    published_keys,
    userinfo,
)
from tokens.models import Client
from tokens.oauth.metadata import provider_metadata

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("alg", provider_metadata()["userinfo_signing_alg_values_supported"])
def test_oidc_core_5_3_2_a_client_that_registered_an_algorithm_gets_a_signed_jwt(
    logged_in_client, confidential, alg
):
    """oidcc-userinfo-rs256: application/jwt, signed with our published key and the registered
    algorithm, with iss and aud; the same claims as the plain answer, sub equal to the ID
    token's."""
    Client.objects.filter(pk=confidential.client.pk).update(userinfo_signed_response_alg=alg)
    body = code_flow(logged_in_client, confidential, "openid profile email")
    response = userinfo(body["access_token"])
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "application/jwt"
    assert "no-store" in response["Cache-Control"] or "no-cache" in response["Cache-Control"]
    token = jwt.decode(response.content.decode(), published_keys(), algorithms=[alg])
    assert token.header["alg"] == alg and token.header["kid"]
    jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": ISSUER},
        aud={"essential": True, "value": confidential.client_id},
        sub={"essential": True},
    ).validate(token.claims)
    assert token.claims["sub"] == decode_id_token(body["id_token"], confidential).claims["sub"]
    assert {"email", "name"} <= set(token.claims)


def test_oidc_core_5_3_2_without_the_registration_the_answer_stays_json(
    logged_in_client, confidential
):
    body = code_flow(logged_in_client, confidential, "openid")
    response = userinfo(body["access_token"])
    assert response["Content-Type"] == "application/json"
    assert set(response.json()) == {"sub"}


def test_rs256_is_advertised_as_the_suite_requires():
    """OIDC Discovery §3 userinfo_signing_alg_values_supported; oidcc-userinfo-rs256 fails
    without RS256 in it."""
    assert "RS256" in provider_metadata()["userinfo_signing_alg_values_supported"]
