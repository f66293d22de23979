"""The management commands: create_client (for operators) and seed_demo (the quick start)."""

import base64
import hashlib
import json
import re
import shlex
from io import StringIO
from urllib.parse import urlencode, urlsplit

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client as Browser

from accounts.models import User
from tests.conftest import sign_in
from tests.tokens.conftest import Registered, query, token_request
from tokens.models import Client

pytestmark = pytest.mark.django_db


def run(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


# --- create_client ----------------------------------------------------------------------------
def test_create_client_prints_the_client_id_and_a_secret_that_works():
    args = [
        "--name", "Reports",
        "--redirect-uri", "https://reports.example.com/callback",
        "--grant-type", "authorization_code",
        "--grant-type", "client_credentials",
        "--scope", "openid",
        "--scope", "profile",
    ]  # fmt: skip
    printed = json.loads(run("create_client", *args))
    client = Client.objects.get(client_id=printed["client_id"])
    assert printed["client_secret"]
    assert printed["client_type"] == "confidential"
    assert printed["token_endpoint_auth_method"] == "client_secret_basic"
    assert printed["redirect_uris"] == ["https://reports.example.com/callback"]
    assert printed["grant_types"] == ["authorization_code", "client_credentials"]
    assert printed["scope"] == "openid profile"
    assert client.name == "Reports"
    assert client.secret_digest != printed["client_secret"]

    answer = token_request(
        Registered(client, printed["client_secret"]),
        {"grant_type": "client_credentials", "scope": "profile"},
    )
    assert answer.status_code == 200, answer.content
    assert answer.json()["scope"] == "profile"


def test_create_client_with_client_secret_post():
    args = [
        "--name", "Poster",
        "--grant-type", "client_credentials",
        "--auth-method", "client_secret_post",
    ]  # fmt: skip
    printed = json.loads(run("create_client", *args))
    assert printed["token_endpoint_auth_method"] == "client_secret_post"
    client = Client.objects.get(client_id=printed["client_id"])
    registered = Registered(client, printed["client_secret"])
    data = {"grant_type": "client_credentials"}
    assert token_request(registered, data, auth="post").status_code == 200
    assert token_request(registered, data, auth="basic").status_code == 401


def test_create_client_without_a_grant_type_that_allows_it_gets_no_client_credentials_token():
    printed = json.loads(
        run("create_client", "--name", "Web", "--redirect-uri", "https://web.example.com/cb")
    )
    assert printed["grant_types"] == ["authorization_code", "refresh_token"]
    client = Client.objects.get(client_id=printed["client_id"])
    answer = token_request(
        Registered(client, printed["client_secret"]), {"grant_type": "client_credentials"}
    )
    assert answer.status_code == 400
    assert answer.json()["error"] == "unauthorized_client"


def test_create_client_public_prints_no_secret_and_the_none_method():
    args = [
        "--name", "Mobile",
        "--public",
        "--redirect-uri", "com.example.mobile:/callback",
    ]  # fmt: skip
    printed = json.loads(run("create_client", *args))
    assert printed["client_secret"] is None
    assert printed["client_type"] == "public"
    assert printed["token_endpoint_auth_method"] == "none"
    client = Client.objects.get(client_id=printed["client_id"])
    assert client.is_public and client.secret_digest == ""


@pytest.mark.parametrize(
    ("args", "scope"),
    [
        ([], "openid profile email offline_access"),
        (["--grant-type", "authorization_code"], "openid profile email"),
        (["--grant-type", "client_credentials"], ""),
    ],
    ids=["default-grants", "code-only", "client-credentials"],
)
def test_create_client_without_scope_gets_the_scopes_its_grant_types_can_use(args, scope):
    """The rule of dynamic registration (RFC 7591 §2, OIDC Core §11), here: tokens/scopes.py."""
    if "client_credentials" not in args:
        args = [*args, "--redirect-uri", "https://web.example.com/cb"]
    printed = json.loads(run("create_client", "--name", "Defaults", *args))
    assert printed["scope"] == scope
    assert Client.objects.get(client_id=printed["client_id"]).allowed_scopes == scope.split()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--redirect-uri", "https://app.example.com/cb#fragment"],
            "redirect_uris: https://app.example.com/cb#fragment: must not contain a fragment",
        ),
        (
            ["--redirect-uri", "http://app.example.com/cb"],
            "redirect_uris: http://app.example.com/cb: http is only for loopback",
        ),
        ([], "redirect_uris: The authorization code grant needs a redirect URI."),
        (
            ["--public", "--grant-type", "client_credentials"],
            "grant_types: A public client cannot use client_credentials.",
        ),
        (
            ["--redirect-uri", "https://app.example.com/cb", "--scope", "admin"],
            "allowed_scopes: Unknown scopes: admin.",
        ),
    ],
    ids=["fragment", "plain-http", "no-redirect-uri", "public-client-credentials", "scope"],
)
def test_create_client_refuses_a_bad_client_with_a_readable_message(args, message):
    with pytest.raises(CommandError) as raised:
        run("create_client", "--name", "Bad", *args)
    assert message in str(raised.value)
    assert "ValidationError" not in str(raised.value) and "[" not in str(raised.value)
    assert not Client.objects.exists()


@pytest.mark.parametrize(
    "uri",
    [
        pytest.param("https://app.example.com/cb ", id="trailing-space"),
        pytest.param(" https://app.example.com/cb", id="leading-space"),
        pytest.param("https://app.example.com/c\tb", id="tab"),
        pytest.param("https://app.example.com:bad/cb", id="bad-port"),
        pytest.param("com.example.app://evil.example/cb", id="private-scheme-with-authority"),
    ],
)
def test_create_client_refuses_a_redirect_uri_that_could_never_match(uri):
    """urlsplit() drops whitespace and never reads the port; matching is exact (RFC 9700 §4.1.3),
    so such a URI would silently never match. RFC 8252 §7.1: private schemes take one slash."""
    with pytest.raises(CommandError, match="redirect_uris"):
        run("create_client", "--name", "Sloppy", "--redirect-uri", uri)


# --- seed_demo --------------------------------------------------------------------------------
def test_seed_demo_refuses_to_run_without_debug(settings):
    settings.DEBUG = False
    with pytest.raises(CommandError, match="DEBUG"):
        run("seed_demo")
    assert not User.objects.filter(username="demo").exists()
    assert not Client.objects.exists()


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def curl_commands(printed: str) -> list[list[str]]:
    """Each printed curl command, continuation lines joined, split as a shell would."""
    joined = printed.replace("\\\n", " ")
    return [shlex.split(line.strip()) for line in joined.splitlines() if "curl " in line]


def run_curl(argv: list[str], **replace: str):
    """Send what ``curl -s -u id:secret -d k=v ... URL`` sends, through the test client."""
    assert argv[:2] == ["curl", "-s"], argv
    headers, body, url = {}, {}, None
    args = iter(argv[2:])
    for arg in args:
        if arg == "-u":
            raw = next(args).encode()
            headers["HTTP_AUTHORIZATION"] = "Basic " + base64.b64encode(raw).decode()
        elif arg == "-d":
            name, _, value = next(args).partition("=")
            body[name] = replace.get(value, value)
        else:
            url = arg
    parts = urlsplit(url)
    assert parts.scheme == "https", url
    return Browser().post(
        parts.path,
        urlencode(body),
        content_type="application/x-www-form-urlencoded",
        secure=True,
        **headers,
    )


def test_seed_demo_creates_the_demo_user_and_clients_and_can_run_twice(settings):
    settings.DEBUG = True
    run("seed_demo")
    run("seed_demo")
    assert User.objects.filter(username="demo").count() == 1
    demo = User.objects.get(username="demo")
    assert demo.is_active and demo.is_staff and demo.check_password("demo-password")
    assert set(Client.objects.values_list("client_id", flat=True)) == {
        "demo-confidential",
        "demo-public",
    }
    confidential = Client.objects.get(client_id="demo-confidential")
    public = Client.objects.get(client_id="demo-public")
    assert confidential.check_client_secret("demo-secret")
    assert public.is_public and public.token_endpoint_auth_method == "none"
    assert public.secret_digest == ""
    for client in (confidential, public):
        client.full_clean()  # what seed_demo writes obeys the rules the admin enforces


def test_seed_demo_printed_pkce_pair_is_an_s256_pair(settings):
    settings.DEBUG = True
    printed = run("seed_demo")
    challenge = re.search(r"code_challenge=([\w-]+)", printed).group(1)
    method = re.search(r"code_challenge_method=(\w+)", printed).group(1)
    verifier = re.search(r"code_verifier=([\w-]+)", printed).group(1)
    assert method == "S256"
    assert 43 <= len(verifier) <= 128  # RFC 7636 §4.1
    assert s256(verifier) == challenge


def test_seed_demo_printed_client_credentials_curl_works(settings):
    settings.DEBUG = True
    printed = run("seed_demo")
    first_curl = curl_commands(printed)[0]
    assert "grant_type=client_credentials" in first_curl
    answer = run_curl(first_curl)
    assert answer.status_code == 200, answer.content
    assert answer.json()["scope"] == "profile"
    assert (
        token_request(
            Registered(Client.objects.get(client_id="demo-confidential"), "demo-secret"),
            {"grant_type": "client_credentials"},
        ).json()["token_type"]
        == "Bearer"
    )


def test_seed_demo_printed_walkthrough_gets_tokens_through_the_code_flow(settings):
    settings.DEBUG = True
    run("seed_demo")  # a second run must not break the walkthrough
    printed = run("seed_demo")
    authorize = urlsplit(re.search(r"Open (\S+)", printed).group(1))
    assert f"{authorize.scheme}://{authorize.netloc}" == settings.ISSUER
    url = f"{authorize.path}?{authorize.query}"

    browser = Browser()
    assert sign_in(browser, "demo", "demo-password").status_code == 302
    response = browser.get(url, secure=True)
    if response.status_code == 200:  # the consent page
        response = browser.post(url, {"decision": "allow"}, secure=True)
    assert response.status_code == 302, response.content.decode()[-900:]
    location = response["Location"]
    assert location.startswith("http://127.0.0.1:8765/callback?")
    params = query(location)
    assert params["state"] == "xyz" and "code" in params

    exchange_curl = curl_commands(printed)[1]
    assert "grant_type=authorization_code" in exchange_curl
    answer = run_curl(exchange_curl, CODE=params["code"])
    assert answer.status_code == 200, answer.content
    tokens = answer.json()
    assert {"access_token", "refresh_token"} <= set(tokens)
    assert set(tokens["scope"].split()) == {"openid", "profile", "offline_access"}
