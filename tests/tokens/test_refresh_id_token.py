"""ID tokens re-issued on refresh (OpenID Connect Core 1.0 §12.2), per client (Client.id_token_on_refresh).

§12.2: "Upon successful validation of the Refresh Token, the response body is the Token Response
of Section 3.1.3.3 except that it might not contain an id_token. If an ID Token is returned as a
result of a token refresh request, the following requirements apply to it: its iss Claim Value
MUST be the same as in the ID Token issued when the original authentication occurred, its sub
Claim Value MUST be the same ..., its iat Claim MUST represent the time that the new ID Token is
issued, its aud Claim Value MUST be the same ..., if the ID Token contains an auth_time Claim,
its value MUST represent the time of the original authentication - not the time that the new ID
token is issued, its azp Claim Value MUST be the same ..., it SHOULD NOT have a nonce Claim
Value, even when the original ID Token issued contained a nonce ... Otherwise, the same rules
apply as apply when issuing an ID Token at the time of the original authentication."
"""

import time

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests.tokens.conftest import past_the_retry_window, refresh
from tests.tokens.test_oidc_core import code_flow, decode_id_token, left_half_hash
from tokens.models import Client

pytestmark = pytest.mark.django_db

SAME = ("iss", "sub", "aud", "azp", "auth_time", "acr", "amr", "sid")


def test_oidc_core_12_2_the_refreshed_id_token_keeps_the_original_authentication(
    logged_in_client, confidential
):
    first = code_flow(logged_in_client, confidential, "openid profile email", nonce="n-0S6_WzA2Mj")
    original = decode_id_token(first["id_token"], confidential).claims
    assert original["nonce"] == "n-0S6_WzA2Mj" and original["amr"] and original["sid"]
    time.sleep(1.1)  # so that a new iat is visibly new

    response = refresh(confidential, first["refresh_token"])
    assert response.status_code == 200
    body = response.json()
    renewed = decode_id_token(body["id_token"], confidential).claims
    for claim in SAME:
        assert renewed[claim] == original[claim], claim
    assert renewed["iat"] > original["iat"]  # "the time that the new ID Token is issued"
    assert renewed["exp"] > original["exp"]
    assert "nonce" not in renewed  # "SHOULD NOT have a nonce Claim Value"
    # "the same rules apply as ... at the time of the original authentication": at_hash of the
    # new access token (§3.1.3.6), and the claims the scope releases.
    assert renewed["at_hash"] == left_half_hash(body["access_token"])
    assert renewed["at_hash"] != original["at_hash"]
    assert renewed["email"] == original["email"]
    assert renewed["preferred_username"] == original["preferred_username"]


def test_oidc_core_12_2_the_next_refresh_in_the_family_still_carries_the_original(
    logged_in_client, confidential
):
    first = code_flow(logged_in_client, confidential, "openid profile")
    original = decode_id_token(first["id_token"], confidential).claims
    second = refresh(confidential, first["refresh_token"]).json()
    third = refresh(confidential, second["refresh_token"]).json()
    renewed = decode_id_token(third["id_token"], confidential).claims
    for claim in SAME:
        assert renewed[claim] == original[claim], claim


def test_a_grant_without_openid_gets_no_id_token_on_refresh(logged_in_client, confidential):
    first = code_flow(logged_in_client, confidential, "profile")
    assert "id_token" not in first
    body = refresh(confidential, first["refresh_token"]).json()
    assert "refresh_token" in body and "id_token" not in body


def test_a_client_that_turned_it_off_gets_no_id_token_on_refresh(logged_in_client, confidential):
    """§12.2: the response "might not contain an id_token"; the client chooses."""
    Client.objects.filter(pk=confidential.client.pk).update(id_token_on_refresh=False)
    first = code_flow(logged_in_client, confidential, "openid profile")
    assert "id_token" in first
    body = refresh(confidential, first["refresh_token"]).json()
    assert "refresh_token" in body and "id_token" not in body


def test_a_refresh_that_narrows_the_scope_away_from_openid_gets_no_id_token(
    logged_in_client, confidential
):
    first = code_flow(logged_in_client, confidential, "openid profile")
    body = refresh(confidential, first["refresh_token"], scope="profile").json()
    assert body["scope"] == "profile" and "id_token" not in body


def test_a_refused_refresh_gets_no_id_token(logged_in_client, confidential):
    first = code_flow(logged_in_client, confidential, "openid profile")
    assert refresh(confidential, first["refresh_token"]).status_code == 200
    past_the_retry_window()
    replay = refresh(confidential, first["refresh_token"])  # rotated: a replay
    assert replay.status_code == 400 and "id_token" not in replay.json()


def test_the_setting_is_on_by_default_and_create_client_can_turn_it_off(capsys):
    call_command("create_client", "--name", "Default", "--redirect-uri", "https://a.test/cb")
    call_command(
        "create_client", "--name", "Off", "--redirect-uri", "https://b.test/cb",
        "--no-id-token-on-refresh",
    )  # fmt: skip
    assert Client.objects.get(name="Default").id_token_on_refresh is True
    assert Client.objects.get(name="Off").id_token_on_refresh is False


def test_the_setting_is_in_the_client_admin(staff_client, confidential):
    response = staff_client.get(f"/admin/tokens/client/{confidential.client.pk}/change/")
    assert response.status_code == 200
    assert b'name="id_token_on_refresh"' in response.content


def test_re_issuing_the_id_token_costs_no_query(logged_in_client, confidential):
    """The person's claims come with the refresh token's own lookup (tokens/token_store.py)."""
    counts = []
    for on in (True, False):
        Client.objects.filter(pk=confidential.client.pk).update(id_token_on_refresh=on)
        first = code_flow(logged_in_client, confidential, "openid profile email")
        with CaptureQueriesContext(connection) as queries:
            body = refresh(confidential, first["refresh_token"]).json()
        assert ("id_token" in body) is on
        counts.append(len(queries))
    assert counts[0] == counts[1]
