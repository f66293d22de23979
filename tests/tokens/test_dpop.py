"""DPoP (RFC 9449) through HTTP: proofs at the token endpoint (§4.3, §5), bound access and
refresh tokens (§5, §6), dpop_jkt on the authorization request (§10), introspection (§6.2),
resource servers and userinfo (§7), server nonces (§8, §9), discovery and registration (§5.1,
§5.2).

The proofs are built here with joserfc from the spec's field list (§4.2), not with the server's
code, and the tokens the server issues are read here and their thumbprints computed by hand
(RFC 7638), so these tests hold the validator to the RFC rather than to itself.
"""

from __future__ import annotations

import http.client
import json
import time
from io import StringIO
from urllib.parse import urlsplit

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.test import Client as Browser
from django.test import override_settings
from joserfc.jwk import ECKey, OctKey, OKPKey, RSAKey

from authserver import env
from tests.factories import ClientFactory, Registered
from tests.tokens.conftest import authorize_url, endpoint, get_code, query, token_request
from tests.tokens.dpop_client import DROP, Holder, claims_of, unsigned
from tests.tokens.test_token_endpoint import assert_oauth_error
from tokens.models import AuthorizationCode, Client, RefreshToken

pytestmark = pytest.mark.django_db

ISSUER = "https://auth.example.test"  # the Makefile's test ISSUER
TOKEN_URL = f"{ISSUER}/token"
USERINFO_URL = f"{ISSUER}/userinfo"


def exchange(client, code: str, verifier: str, proof: str | None = None, *, auth="basic"):
    """The code exchange (RFC 6749 §4.1.3), with a DPoP header when ``proof`` is given."""
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": client.client.redirect_uris[0],
        "code_verifier": verifier,
    }
    return token_request(client, data, auth=auth, **_dpop_header(proof))


def refresh(client, refresh_token: str, proof: str | None = None, *, auth="basic"):
    data = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    return token_request(client, data, auth=auth, **_dpop_header(proof))


def _dpop_header(proof: str | None) -> dict:
    return {} if proof is None else {"HTTP_DPOP": proof}


def client_credentials(client, proof: str | None = None, **headers):
    if proof is not None:
        headers["HTTP_DPOP"] = proof
    return token_request(
        client, {"grant_type": "client_credentials", "scope": "profile"}, **headers
    )


def userinfo(token: str, proof: str | None = None, scheme: str = "DPoP", method: str = "get"):
    headers = {"HTTP_AUTHORIZATION": f"{scheme} {token}"}
    if proof is not None:
        headers["HTTP_DPOP"] = proof
    return getattr(Browser(), method)("/userinfo", secure=True, **headers)


@pytest.fixture
def holder() -> Holder:
    return Holder()


@pytest.fixture
def user_tokens(logged_in_client, confidential, holder):
    """A confidential client's code exchange with a proof: DPoP-bound tokens for the person."""
    code, verifier = get_code(logged_in_client, confidential, scope="openid profile")
    response = exchange(confidential, code, verifier, holder.proof())
    assert response.status_code == 200, response.content
    return response.json()


# --- §5: issuing bound tokens ---------------------------------------------------------------
def test_rfc9449_5_a_valid_proof_gets_a_dpop_token_bound_to_its_key(confidential, holder):
    response = client_credentials(confidential, holder.proof())
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["token_type"] == "DPoP"
    assert claims_of(body["access_token"])["cnf"] == {"jkt": holder.thumbprint}  # §6.1


@pytest.mark.parametrize(
    "key, alg",
    [
        (lambda: RSAKey.generate_key(2048), "RS256"),
        (lambda: RSAKey.generate_key(2048), "PS256"),
        (lambda: ECKey.generate_key("P-384"), "ES384"),
        (lambda: OKPKey.generate_key("Ed25519"), "EdDSA"),
        (lambda: OKPKey.generate_key("Ed25519"), "Ed25519"),
    ],
)
def test_rfc9449_4_2_every_advertised_asymmetric_algorithm_is_accepted(confidential, key, alg):
    other = Holder(key(), alg)
    response = client_credentials(confidential, other.proof())
    assert response.status_code == 200, response.content
    assert claims_of(response.json()["access_token"])["cnf"]["jkt"] == other.thumbprint


def test_rfc9449_5_without_a_proof_the_token_is_bearer_as_before(confidential):
    body = client_credentials(confidential).json()
    assert body["token_type"] == "Bearer"
    assert "cnf" not in claims_of(body["access_token"])


def test_rfc9449_4_3_htu_ignores_query_and_fragment_and_is_normalised(confidential, holder):
    """§4.3 step 9: the URI without query and fragment, compared after RFC 3986 §6.2.2 / §6.2.3
    normalisation (case of scheme and host, the default port, percent-encoding, dot segments)."""
    for htu in (
        f"{TOKEN_URL}?a=b#c",
        "HTTPS://Auth.Example.TEST:443/token",
        "https://auth.example.test/./x/../%74oken",
    ):
        assert client_credentials(confidential, holder.proof(htu=htu)).status_code == 200, htu


def test_rfc9449_4_3_htu_is_the_issuer_url_not_the_host_header(confidential, holder):
    """Behind a proxy the Host header is the proxy's business: htu names the public URL."""
    as_the_host_header_says = "https://localhost/token"
    response = client_credentials(
        confidential, holder.proof(htu=as_the_host_header_says), HTTP_HOST="localhost"
    )
    assert_oauth_error(response, "invalid_dpop_proof")
    response = client_credentials(confidential, holder.proof(), HTTP_HOST="localhost")
    assert response.status_code == 200, response.content


# --- §4.3: every way a proof can be wrong ---------------------------------------------------
def _private_jwk(holder):
    return {"jwk": holder.key.as_dict(private=True)}


BAD_PROOFS = {
    "wrong htu": lambda h: h.proof(htu=f"{ISSUER}/introspect"),
    "htu on another host": lambda h: h.proof(htu="https://evil.example/token"),
    "wrong htm": lambda h: h.proof(htm="GET"),
    "stale iat": lambda h: h.proof(claims={"iat": int(time.time()) - 600}),
    "future iat": lambda h: h.proof(claims={"iat": int(time.time()) + 600}),
    "iat not a number": lambda h: h.proof(claims={"iat": "now"}),
    "no iat": lambda h: h.proof(claims={"iat": DROP}),
    "no jti": lambda h: h.proof(claims={"jti": DROP}),
    "no htm": lambda h: h.proof(claims={"htm": DROP}),
    "missing typ": lambda h: h.proof(header={"typ": DROP}),
    "typ JWT": lambda h: h.proof(header={"typ": "JWT"}),
    "no jwk": lambda h: h.proof(header={"jwk": DROP}),
    "private key in jwk": lambda h: h.proof(header=_private_jwk(h)),
    "symmetric jwk": lambda h: h.proof(header={"jwk": {"kty": "oct", "k": "c2VjcmV0"}}),
    "alg none": lambda h: unsigned(
        {"typ": "dpop+jwt", "alg": "none", "jwk": h.public_jwk},
        {"jti": "x", "htm": "POST", "htu": TOKEN_URL, "iat": int(time.time())},
    ),
    "alg HS256": lambda h: h.proof(
        header={"alg": "HS256"}, signer=OctKey.import_key(b"0123456789abcdef0123456789abcdef")
    ),
    "signed by another key than its jwk": lambda h: h.proof(signer=Holder().key),
    "alg that does not fit the key": lambda h: h.proof(
        header={"alg": "RS256"}, signer=RSAKey.generate_key(2048)
    ),
    "not a JWS": lambda h: "not-a-proof",
    "two DPoP headers": lambda h: f"{h.proof()},{h.proof()}",
}


@pytest.mark.parametrize("name", list(BAD_PROOFS))
def test_rfc9449_4_3_a_bad_proof_is_invalid_dpop_proof(name, confidential, holder):
    """§4.3 / §5: the RFC 6749 §5.2 error invalid_dpop_proof, and no token."""
    response = client_credentials(confidential, BAD_PROOFS[name](holder))
    body = assert_oauth_error(response, "invalid_dpop_proof")
    assert "access_token" not in body


def test_rfc9449_11_1_a_replayed_proof_is_rejected(confidential, holder):
    proof = holder.proof()
    assert client_credentials(confidential, proof).status_code == 200
    assert_oauth_error(client_credentials(confidential, proof), "invalid_dpop_proof")


def test_rfc9449_11_1_with_the_replay_cache_down_proofs_are_refused(confidential, holder, settings):
    """Fail closed: a proof that cannot be recorded as used is not accepted."""
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",  # nothing listens on port 1
            "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
        }
    }
    response = client_credentials(confidential, holder.proof())
    assert_oauth_error(response, "temporarily_unavailable", status=503)
    assert response["Retry-After"]
    assert client_credentials(confidential).status_code == 200  # Bearer clients are unaffected


# --- §8: server nonces ----------------------------------------------------------------------
@pytest.fixture
def nonces(settings):
    settings.DPOP_NONCE = True


def test_rfc9449_8_a_proof_without_the_required_nonce_gets_use_dpop_nonce(
    nonces, confidential, holder
):
    response = client_credentials(confidential, holder.proof())
    assert_oauth_error(response, "use_dpop_nonce")
    nonce = response["DPoP-Nonce"]
    retry = client_credentials(confidential, holder.proof(nonce=nonce))
    assert retry.status_code == 200, retry.content
    assert retry["DPoP-Nonce"]  # §8.2: the nonce to use next


def test_rfc9449_8_a_wrong_nonce_gets_use_dpop_nonce(nonces, confidential, holder):
    response = client_credentials(confidential, holder.proof(nonce="made-up-nonce"))
    assert_oauth_error(response, "use_dpop_nonce")
    assert response["DPoP-Nonce"] != "made-up-nonce"


def test_rfc9449_8_nonces_rotate_and_expire(nonces, confidential, holder, settings, monkeypatch):
    nonce = client_credentials(confidential, holder.proof())["DPoP-Nonce"]
    start = time.time()
    later = start + settings.DPOP_NONCE_LIFETIME
    monkeypatch.setattr(time, "time", lambda: later)  # the next window: still accepted
    response = client_credentials(
        confidential, holder.proof(nonce=nonce, claims={"iat": int(later)})
    )
    assert response.status_code == 200, response.content
    assert response["DPoP-Nonce"] != nonce
    much_later = start + 3 * settings.DPOP_NONCE_LIFETIME
    monkeypatch.setattr(time, "time", lambda: much_later)
    response = client_credentials(
        confidential, holder.proof(nonce=nonce, claims={"iat": int(much_later)})
    )
    assert_oauth_error(response, "use_dpop_nonce")


# --- §5.2: clients that must use DPoP -------------------------------------------------------
def test_rfc9449_5_2_a_dpop_bound_client_without_a_proof_is_refused(confidential, holder):
    confidential.client.dpop_bound_access_tokens = True
    confidential.client.save()
    assert_oauth_error(client_credentials(confidential), "invalid_dpop_proof")
    assert client_credentials(confidential, holder.proof()).json()["token_type"] == "DPoP"


# --- §10: dpop_jkt on the authorization request ---------------------------------------------
def test_rfc9449_10_the_code_exchange_needs_a_proof_with_the_dpop_jkt_key(
    logged_in_client, confidential, holder
):
    code, verifier = get_code(
        logged_in_client, confidential, scope="openid profile", dpop_jkt=holder.thumbprint
    )
    assert AuthorizationCode.objects.get().dpop_jkt == holder.thumbprint
    assert_oauth_error(exchange(confidential, code, verifier), "invalid_grant")
    other = exchange(confidential, code, verifier, Holder().proof())
    assert_oauth_error(other, "invalid_grant")
    # Neither refusal used the code up: its holder, with the right key, still redeems it.
    response = exchange(confidential, code, verifier, holder.proof())
    assert response.status_code == 200, response.content
    assert claims_of(response.json()["access_token"])["cnf"]["jkt"] == holder.thumbprint


def test_rfc9449_10_a_malformed_dpop_jkt_is_invalid_request(logged_in_client, confidential):
    response = logged_in_client.get(
        authorize_url(confidential, dpop_jkt="not a thumbprint"), secure=True
    )
    assert response.status_code == 302
    assert query(response["Location"])["error"] == "invalid_request"


# --- §5: refresh tokens ---------------------------------------------------------------------
@pytest.fixture
def public_tokens(logged_in_client, public, holder):
    code, verifier = get_code(logged_in_client, public, scope="openid profile")
    response = exchange(public, code, verifier, holder.proof(), auth="none")
    assert response.status_code == 200, response.content
    return response.json()


def test_rfc9449_5_a_public_clients_refresh_token_is_bound_to_its_key(
    public, public_tokens, holder
):
    assert RefreshToken.objects.get().dpop_jkt == holder.thumbprint
    token = public_tokens["refresh_token"]
    assert_oauth_error(refresh(public, token, auth="none"), "invalid_grant")
    assert_oauth_error(refresh(public, token, Holder().proof(), auth="none"), "invalid_grant")
    assert RefreshToken.objects.get().rotated_at is None  # refused before it was used up
    response = refresh(public, token, holder.proof(), auth="none")
    assert response.status_code == 200, response.content
    assert response.json()["token_type"] == "DPoP"
    assert RefreshToken.objects.order_by("pk").last().dpop_jkt == holder.thumbprint


def test_rfc9449_5_a_confidential_clients_refresh_token_is_not_bound(
    confidential, user_tokens, holder
):
    """§5: confidential clients' refresh tokens are already bound to their credentials; the new
    access token is bound to whatever key the refresh request proves."""
    assert RefreshToken.objects.get().dpop_jkt == ""
    plain = refresh(confidential, user_tokens["refresh_token"])
    assert plain.status_code == 200 and plain.json()["token_type"] == "Bearer"
    other = Holder()
    bound = refresh(confidential, plain.json()["refresh_token"], other.proof())
    assert claims_of(bound.json()["access_token"])["cnf"]["jkt"] == other.thumbprint


# --- §6.2: introspection --------------------------------------------------------------------
def test_rfc9449_6_2_introspection_shows_the_binding(confidential, holder):
    value = client_credentials(confidential, holder.proof()).json()["access_token"]
    body = endpoint("/introspect", confidential, {"token": value}).json()
    assert body["active"] is True
    assert body["token_type"] == "DPoP" and body["cnf"] == {"jkt": holder.thumbprint}
    plain = client_credentials(confidential).json()["access_token"]
    body = endpoint("/introspect", confidential, {"token": plain}).json()
    assert body["token_type"] == "Bearer" and "cnf" not in body


# --- §7: resource servers (userinfo here; tests/urls_resource.py below) ---------------------
def test_rfc9449_7_userinfo_accepts_a_dpop_token_with_its_proof(user_tokens, holder, user):
    token = user_tokens["access_token"]
    response = userinfo(token, holder.proof("GET", USERINFO_URL, access_token=token))
    assert response.status_code == 200, response.content
    assert response.json()["sub"] == str(user.pk)
    post = holder.proof("POST", USERINFO_URL, access_token=token)
    assert userinfo(token, post, method="post").status_code == 200


def _dpop_challenge(response, error: str) -> None:
    assert response.status_code == 401, response.content
    challenge = response["WWW-Authenticate"]
    assert challenge.startswith("DPoP ") and f'error="{error}"' in challenge, challenge
    assert 'algs="' in challenge and "ES256" in challenge  # §7.1


BAD_RESOURCE_PROOFS = {
    "no proof": lambda h, t: None,
    "ath wrong": lambda h, t: h.proof("GET", USERINFO_URL, access_token=t + "x"),
    "no ath": lambda h, t: h.proof("GET", USERINFO_URL),
    "wrong htm": lambda h, t: h.proof("POST", USERINFO_URL, access_token=t),
    "wrong htu": lambda h, t: h.proof("GET", TOKEN_URL, access_token=t),
    "another key than cnf.jkt": lambda h, t: Holder().proof("GET", USERINFO_URL, access_token=t),
    "two DPoP headers": lambda h, t: ",".join(
        h.proof("GET", USERINFO_URL, access_token=t) for _ in range(2)
    ),
}


@pytest.mark.parametrize("name", list(BAD_RESOURCE_PROOFS))
def test_rfc9449_7_1_a_bad_proof_at_the_resource_is_invalid_dpop_proof(name, user_tokens, holder):
    token = user_tokens["access_token"]
    response = userinfo(token, BAD_RESOURCE_PROOFS[name](holder, token))
    _dpop_challenge(response, "invalid_dpop_proof")
    assert response.json()["error"] == "invalid_dpop_proof"


def test_rfc9449_7_a_replayed_proof_at_the_resource_is_rejected(user_tokens, holder):
    token = user_tokens["access_token"]
    proof = holder.proof("GET", USERINFO_URL, access_token=token)
    assert userinfo(token, proof).status_code == 200
    _dpop_challenge(userinfo(token, proof), "invalid_dpop_proof")


def test_rfc9449_7_2_a_bound_token_used_as_bearer_is_rejected(user_tokens, holder):
    token = user_tokens["access_token"]
    response = userinfo(token, scheme="Bearer")
    _dpop_challenge(response, "invalid_token")
    with_proof = userinfo(token, holder.proof("GET", USERINFO_URL, access_token=token), "Bearer")
    _dpop_challenge(with_proof, "invalid_token")


def test_rfc9449_7_an_unbound_token_under_the_dpop_scheme_is_rejected(
    logged_in_client, confidential, holder
):
    code, verifier = get_code(logged_in_client, confidential, scope="openid profile")
    token = exchange(confidential, code, verifier).json()["access_token"]
    response = userinfo(token, holder.proof("GET", USERINFO_URL, access_token=token))
    _dpop_challenge(response, "invalid_token")


def test_rfc9449_7_1_without_a_token_both_schemes_are_offered():
    response = Browser().get("/userinfo", secure=True)
    assert response.status_code == 401
    challenge = response["WWW-Authenticate"]
    assert challenge.startswith("Bearer ") and "error=" not in challenge
    assert 'DPoP realm="api", algs="' in challenge


def test_rfc9449_9_the_resource_asks_for_a_nonce(nonces, confidential, holder):
    first = client_credentials(confidential, holder.proof())
    nonce = first["DPoP-Nonce"]
    token = client_credentials(confidential, holder.proof(nonce=nonce)).json()["access_token"]
    url = f"{ISSUER}/plain/profile"
    browser = Browser()
    headers = {"HTTP_AUTHORIZATION": f"DPoP {token}"}

    def call(proof):
        return browser.get("/plain/profile", secure=True, HTTP_DPOP=proof, **headers)

    with override_settings(ROOT_URLCONF="tests.urls_resource"):
        response = call(holder.proof("GET", url, access_token=token))
        _dpop_challenge(response, "use_dpop_nonce")
        assert response["DPoP-Nonce"]
        wrong = call(holder.proof("GET", url, access_token=token, nonce="wrong"))
        _dpop_challenge(wrong, "use_dpop_nonce")
        fresh = response["DPoP-Nonce"]
        assert call(holder.proof("GET", url, access_token=token, nonce=fresh)).status_code == 200


@pytest.mark.parametrize("path", ["/api/profile", "/plain/profile"])
def test_rfc9449_7_drf_and_plain_views_accept_dpop(path, settings, confidential, holder):
    settings.ROOT_URLCONF = "tests.urls_resource"
    token = client_credentials(confidential, holder.proof()).json()["access_token"]
    url = ISSUER + path
    browser, auth = Browser(), {"HTTP_AUTHORIZATION": f"DPoP {token}"}
    ok = browser.get(
        path, secure=True, HTTP_DPOP=holder.proof("GET", url, access_token=token), **auth
    )
    assert ok.status_code == 200, ok.content
    stolen = Holder().proof("GET", url, access_token=token)
    _dpop_challenge(browser.get(path, secure=True, HTTP_DPOP=stolen, **auth), "invalid_dpop_proof")
    as_bearer = browser.get(path, secure=True, HTTP_AUTHORIZATION=f"Bearer {token}")
    _dpop_challenge(as_bearer, "invalid_token")


# --- discovery and registration -------------------------------------------------------------
def test_rfc9449_5_1_discovery_names_the_proof_algorithms():
    metadata = Browser().get("/.well-known/openid-configuration", secure=True).json()
    algs = metadata["dpop_signing_alg_values_supported"]
    assert "ES256" in algs and "RS256" in algs
    assert not {"none", "HS256", "HS384", "HS512"} & set(algs)


def test_rfc9449_5_2_registration_keeps_dpop_bound_access_tokens(settings):
    settings.OPEN_REGISTRATION = True
    metadata = {
        "redirect_uris": ["https://spa.example.com/cb"],
        "token_endpoint_auth_method": "none",
        "dpop_bound_access_tokens": True,
    }
    response = Browser().post(
        "/register", json.dumps(metadata), content_type="application/json", secure=True
    )
    assert response.status_code == 201, response.content
    assert response.json()["dpop_bound_access_tokens"] is True
    assert Client.objects.get(client_id=response.json()["client_id"]).dpop_bound_access_tokens
    bad = Browser().post(
        "/register",
        json.dumps({**metadata, "dpop_bound_access_tokens": "yes"}),
        content_type="application/json",
        secure=True,
    )
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_client_metadata"


# --- the whole life of a DPoP public client --------------------------------------------------
def test_rfc9449_a_public_client_lives_on_dpop_from_code_to_userinfo(
    logged_in_client, public, user
):
    """Code + PKCE with dpop_jkt (§10) → tokens with DPoP (§5) → a refresh with the same key
    (§5, the public client's refresh token is bound) → userinfo with Authorization: DPoP (§7)."""
    holder = Holder()
    code, verifier = get_code(
        logged_in_client, public, scope="openid profile", dpop_jkt=holder.thumbprint
    )
    first = exchange(public, code, verifier, holder.proof(), auth="none")
    assert first.status_code == 200, first.content
    assert first.json()["token_type"] == "DPoP"
    second = refresh(public, first.json()["refresh_token"], holder.proof(), auth="none")
    assert second.status_code == 200, second.content
    body = second.json()
    assert body["token_type"] == "DPoP"
    assert claims_of(body["access_token"])["cnf"] == {"jkt": holder.thumbprint}
    token = body["access_token"]
    info = userinfo(token, holder.proof("GET", USERINFO_URL, access_token=token))
    assert info.status_code == 200 and info.json()["sub"] == str(user.pk)
    # A thief holding the refresh token but not the key gets nothing.
    stolen = refresh(public, body["refresh_token"], Holder().proof(), auth="none")
    assert_oauth_error(stolen, "invalid_grant")


def test_rfc9449_4_3_htu_at_a_resource_elsewhere_is_its_own_url(settings, confidential, holder):
    """A resource server of another deployment names its own public URL (RESOURCE_SERVER_URL):
    a proof for the authorization server's host is then a proof for another resource."""
    settings.RESOURCE_SERVER_URL = "https://api.example.test"
    token = client_credentials(confidential, holder.proof()).json()["access_token"]
    with override_settings(ROOT_URLCONF="tests.urls_resource"):
        auth = {"HTTP_AUTHORIZATION": f"DPoP {token}"}
        ours = holder.proof("GET", "https://api.example.test/plain/profile", access_token=token)
        ok = Browser().get("/plain/profile", secure=True, HTTP_DPOP=ours, **auth)
        assert ok.status_code == 200, ok.content
        theirs = holder.proof("GET", f"{ISSUER}/plain/profile", access_token=token)
        wrong = Browser().get("/plain/profile", secure=True, HTTP_DPOP=theirs, **auth)
        _dpop_challenge(wrong, "invalid_dpop_proof")


# --- operators: admin, create_client, settings -----------------------------------------------
def test_rfc9449_5_2_admin_sets_dpop_bound_access_tokens(staff_client, confidential):
    page = staff_client.get(f"/admin/tokens/client/{confidential.client.pk}/change/")
    assert page.status_code == 200
    assert 'name="dpop_bound_access_tokens"' in page.content.decode()


def test_rfc9449_5_2_create_client_sets_dpop_bound_access_tokens():
    out = StringIO()
    call_command(
        "create_client",
        "--name",
        "DPoP SPA",
        "--public",
        "--redirect-uri",
        "https://spa.example.com/cb",
        "--dpop-bound-access-tokens",
        stdout=out,
    )
    printed = json.loads(out.getvalue())
    assert printed["dpop_bound_access_tokens"] is True
    assert Client.objects.get(client_id=printed["client_id"]).dpop_bound_access_tokens


@pytest.mark.parametrize(
    "name, value", [("DPOP_IAT_WINDOW", "0"), ("DPOP_IAT_WINDOW", "x"), ("DPOP_NONCE", "perhaps")]
)
def test_dpop_settings_are_checked_at_start_up(name, value):
    with pytest.raises(ImproperlyConfigured, match=name):
        env.load({"DEBUG": "true", name: value})


# --- over a real socket ------------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_rfc9449_4_3_two_dpop_headers_on_the_wire_are_refused(live_server):
    """A WSGI server joins repeated headers with commas (RFC 9110 §5.3); two DPoP headers sent
    as two header lines reach the check as one value, and are refused (§4.3 step 1)."""
    confidential = Registered.of(ClientFactory())
    holder = Holder()
    host, port = urlsplit(live_server.url).hostname, urlsplit(live_server.url).port

    def post(*proofs: str) -> tuple[int, dict]:
        conn = http.client.HTTPConnection(host, port, timeout=10)
        body = "grant_type=client_credentials&scope=profile"
        conn.putrequest("POST", "/token")
        for name, value in (
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Content-Length", str(len(body))),
            ("Authorization", confidential.basic()["HTTP_AUTHORIZATION"]),
            *(("DPoP", proof) for proof in proofs),
        ):
            conn.putheader(name, value)
        conn.endheaders(body.encode())
        response = conn.getresponse()
        answer = response.status, json.loads(response.read())
        conn.close()
        return answer

    status, body = post(holder.proof(), holder.proof())
    assert (status, body["error"]) == (400, "invalid_dpop_proof"), body
    status, body = post(holder.proof())
    assert status == 200 and body["token_type"] == "DPoP", body


def test_rfc9449_8_a_browser_client_may_send_dpop_and_read_the_nonce(nonces, public, holder):
    """A single-page app calls /token from its own origin: the preflight allows the DPoP
    header, and the answer lets the page read DPoP-Nonce (Fetch: exposed headers)."""
    origin = "http://127.0.0.1:8765"  # the origin of the public client's redirect URI
    preflight = Browser().options(
        "/token",
        secure=True,
        HTTP_ORIGIN=origin,
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS="dpop, content-type",
    )
    assert "DPoP" in preflight["Access-Control-Allow-Headers"]
    data = {"grant_type": "refresh_token", "refresh_token": "unknown"}
    response = token_request(
        public, data, auth="none", HTTP_ORIGIN=origin, HTTP_DPOP=holder.proof()
    )
    assert_oauth_error(response, "use_dpop_nonce")
    assert response["Access-Control-Allow-Origin"] == origin
    assert response["Access-Control-Expose-Headers"] == "DPoP-Nonce"
