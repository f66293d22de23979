"""Signing-key rotation (tokens/keys.py): "tokens signed before a rotation still validate until they
expire; new tokens use the new key; the JWKS never drops a key that a live token needs".

A key is published as ``next`` before it signs, becomes ``active``, then ``retired``: still
published until everything it signed has expired (OIDC Core §10.1.1: the JWK Set "SHOULD retain
recently decommissioned signing keys for a reasonable period of time"; RFC 7517 §5). Checked
through HTTP (the JWKS, /introspect, /userinfo, /authorize) and with joserfc against the
published keys, never with our verification code.
"""

import base64
import dataclasses
import json
import time
from datetime import timedelta
from io import StringIO

import pytest
from django.conf import settings
from django.core.management import call_command
from django.test import Client as Browser
from django.utils import timezone
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet, RSAKey

from authserver.celery import app
from tests.conftest import another_machine_holds
from tests.tokens.conftest import (
    REDIRECT,
    authorize_url,
    endpoint,
    exchange,
    get_code,
    pkce_pair,
    query,
    token_request,
)
from tokens import keys, tasks
from tokens.clients import create_client
from tokens.models import Client, SigningKey

pytestmark = pytest.mark.django_db

ISSUER = "https://auth.example.test"
PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}  # RFC 7518 §6.2.2, §6.3.2, §6.4
RETENTION_MARGIN = 600  # seconds a retired key outlives the longest token (tokens/keys.py)


# --- helpers ----------------------------------------------------------------------------------
def jwks_document() -> dict:
    response = Browser().get("/.well-known/jwks.json", secure=True)
    assert response.status_code == 200
    return response.json()


def published_kids() -> set[str]:
    return {key["kid"] for key in jwks_document()["keys"]}


def published_keys() -> KeySet:
    return KeySet.import_key_set(jwks_document())


def header(token: str) -> dict:
    part = token.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def client_token(client) -> str:
    response = token_request(client, {"grant_type": "client_credentials", "scope": "profile"})
    assert response.status_code == 200, response.content
    return response.json()["access_token"]


def code_flow(browser, client, scope: str = "openid profile", **extra) -> dict:
    code, verifier = get_code(browser, client, scope=scope, **extra)
    response = exchange(client, code, verifier)
    assert response.status_code == 200, response.content
    return response.json()


def verifies(token: str, alg: str) -> bool:
    """A third party's check: the signature against the JWKS published right now."""
    try:
        jwt.decode(token, published_keys(), algorithms=[alg])
    except (JoseError, ValueError):
        return False
    return True


def introspects_active(client, token: str) -> bool:
    response = endpoint("/introspect", client, {"token": token})
    assert response.status_code == 200, response.content
    return response.json()["active"]


def key(kid: str) -> SigningKey:
    return SigningKey.objects.get(kid=kid)


def states(algorithm: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for row in SigningKey.objects.filter(algorithm=algorithm).order_by("created"):
        found.setdefault(row.state, []).append(row.kid)
    return found


def due_at():
    """A moment by which both SIGNING_KEY_PUBLISH_AHEAD and SIGNING_KEY_ROTATE_AFTER have passed."""
    wait = max(settings.SIGNING_KEY_PUBLISH_AHEAD, settings.SIGNING_KEY_ROTATE_AFTER) + 1
    return timezone.now() + timedelta(seconds=wait)


def run_command(*args) -> str:
    out = StringIO()
    call_command("rotate_keys", *args, stdout=out)
    return out.getvalue()


def another_run_holds_the_lock():
    return another_machine_holds("tokens.rotate_signing_keys")


# --- the life cycle ---------------------------------------------------------------------------
def test_a_fresh_install_creates_an_active_key_for_each_algorithm_on_first_use(
    logged_in_client, confidential
):
    assert not SigningKey.objects.exists()
    assert [key["alg"] for key in jwks_document()["keys"]] == ["ES256"]  # the JWKS asks first
    assert states("ES256") == {"active": [header(client_token(confidential))["kid"]]}
    id_token = code_flow(logged_in_client, confidential, "openid")["id_token"]
    assert states("RS256") == {"active": [header(id_token)["kid"]]}
    assert published_kids() == set(SigningKey.objects.values_list("kid", flat=True))
    assert not SigningKey.objects.filter(state="next").exists()


def test_rotate_publishes_a_next_key_that_is_in_the_jwks_but_signs_nothing_yet(confidential):
    active = header(client_token(confidential))["kid"]
    report = keys.rotate()
    assert len(report.published) == 1
    assert report.promoted == report.retired == report.deleted == []
    upcoming = report.published[0]
    assert key(upcoming).state == "next" and key(upcoming).algorithm == "ES256"
    keys.forget()
    assert published_kids() == {active, upcoming}  # relying parties can cache it already
    assert header(client_token(confidential))["kid"] == active  # it signs nothing yet
    again = keys.rotate()  # idempotent: still one next key, nothing promoted
    assert again.published == again.promoted == again.retired == again.deleted == []
    assert states("ES256") == {"active": [active], "next": [upcoming]}


def test_the_rotate_keys_command_runs_the_same_step():
    keys.signing_key("ES256")
    active = states("ES256")["active"][0]
    printed = run_command()
    upcoming = states("ES256")["next"][0]
    assert printed.splitlines() == [
        f"published: {upcoming}",
        "promoted: -",
        "retired: -",
        "deleted: -",
    ]
    assert states("ES256") == {"active": [active], "next": [upcoming]}


def test_once_due_the_next_key_signs_and_tokens_signed_before_still_validate(confidential):
    """The issue's words: tokens signed before a rotation still validate until they expire; new
    tokens use the new key. Checked against the JWKS (RFC 7517) and at /introspect (RFC 7662)."""
    before = client_token(confidential)
    old = header(before)["kid"]
    upcoming = keys.rotate().published[0]
    published_early = client_token(confidential)  # after publication, before promotion
    assert header(published_early)["kid"] == old

    report = keys.rotate(now=due_at())
    assert report.promoted == [upcoming] and report.retired == [old]
    assert len(report.published) == 1 and report.deleted == []
    following = report.published[0]
    assert states("ES256") == {"retired": [old], "active": [upcoming], "next": [following]}
    keys.forget()

    assert published_kids() == {old, upcoming, following}
    for token in (before, published_early):
        assert verifies(token, "ES256")
        assert introspects_active(confidential, token)
    after = client_token(confidential)
    assert header(after)["kid"] == upcoming
    assert verifies(after, "ES256") and introspects_active(confidential, after)


def test_promotion_waits_for_both_the_publish_ahead_and_the_rotate_after_periods(
    confidential, settings
):
    """A key signs only once caches have had SIGNING_KEY_PUBLISH_AHEAD to learn it, and only
    once the active key has signed for SIGNING_KEY_ROTATE_AFTER. Uses rotate() without ``now``,
    as the hourly job does, with small settings and back-dated rows."""
    settings.SIGNING_KEY_PUBLISH_AHEAD = 3600
    settings.SIGNING_KEY_ROTATE_AFTER = 7200
    old = header(client_token(confidential))["kid"]
    upcoming = keys.rotate().published[0]
    now = timezone.now()

    def backdate(*, published: int, activated: int) -> None:
        SigningKey.objects.filter(kid=upcoming).update(created=now - timedelta(seconds=published))
        SigningKey.objects.filter(kid=old).update(activated_at=now - timedelta(seconds=activated))
        keys.forget()

    backdate(published=3500, activated=7300)  # the next key is too new
    assert keys.rotate().promoted == []
    backdate(published=3700, activated=7100)  # the active key is too young
    assert keys.rotate().promoted == []
    backdate(published=3700, activated=7300)  # both waits are over
    report = tasks.rotate_signing_keys()
    assert report["promoted"] == [upcoming] and report["retired"] == [old]
    keys.forget()
    assert header(client_token(confidential))["kid"] == upcoming


def test_id_token_keys_rotate_too_and_an_id_token_signed_before_still_validates(
    logged_in_client, confidential
):
    """Both algorithms rotate in one step: ES256 (access tokens) and RS256 (ID tokens). An ID
    token signed before still validates for a relying party (OIDC Core §3.1.3.7 step 6) and is
    still accepted here as an id_token_hint (§3.1.2.1); an access token signed before still
    opens /userinfo (§5.3)."""
    first = code_flow(logged_in_client, confidential, "openid profile")
    old_rs, old_es = header(first["id_token"])["kid"], header(first["access_token"])["kid"]
    keys.rotate()
    new_rs, new_es = states("RS256")["next"][0], states("ES256")["next"][0]

    report = keys.rotate(now=due_at())
    assert set(report.promoted) == {new_rs, new_es}
    assert set(report.retired) == {old_rs, old_es}
    assert states("RS256")["retired"] == [old_rs] and states("RS256")["active"] == [new_rs]
    keys.forget()

    assert {old_rs, old_es, new_rs, new_es} <= published_kids()
    assert verifies(first["id_token"], "RS256")
    assert verifies(first["access_token"], "ES256")
    info = Browser().get(
        "/userinfo", secure=True, HTTP_AUTHORIZATION=f"Bearer {first['access_token']}"
    )
    assert info.status_code == 200, info.content
    hinted = authorize_url(
        confidential,
        scope="openid profile",
        challenge=pkce_pair()[1],
        prompt="none",
        id_token_hint=first["id_token"],
    )
    response = logged_in_client.get(hinted, secure=True)
    assert response.status_code == 302 and response["Location"].startswith(REDIRECT)
    assert "code" in query(response["Location"]), response["Location"]

    second = code_flow(logged_in_client, confidential, "openid profile")
    assert header(second["id_token"])["kid"] == new_rs
    assert header(second["access_token"])["kid"] == new_es
    assert verifies(second["id_token"], "RS256")


def test_a_retired_key_stays_published_until_the_longest_token_lifetime_and_margin_have_passed(
    confidential,
):
    """The JWKS never drops a key a live token needs: a retired key is deleted only once the
    longest-lived token it can have signed (any client's access token lifetime, the ID token
    and logout token lifetimes) has expired, plus a margin for caches and clock skew."""
    create_client(
        name="Long tokens", grant_types=["client_credentials"], access_token_lifetime=7200
    )
    longest = keys.longest_token_lifetime()
    assert longest >= max(7200, settings.ID_TOKEN_LIFETIME, settings.LOGOUT_TOKEN_LIFETIME)
    before = client_token(confidential)
    old = header(before)["kid"]
    keys.rotate()
    retired_at = due_at()
    assert keys.rotate(now=retired_at).retired == [old]
    assert key(old).retired_at == retired_at

    report = keys.rotate(now=retired_at + timedelta(seconds=longest + RETENTION_MARGIN))
    assert report.deleted == [] and report.promoted == []
    keys.forget()
    assert old in published_kids()
    assert verifies(before, "ES256")

    report = keys.rotate(now=retired_at + timedelta(seconds=longest + RETENTION_MARGIN + 1))
    assert report.deleted == [old]
    keys.forget()
    assert old not in published_kids()
    assert not SigningKey.objects.filter(kid=old).exists()
    assert set(states("ES256")) == {"active", "next"}  # only the retired key went


def test_lowering_a_clients_token_lifetime_does_not_unpublish_a_key_its_tokens_still_need(
    confidential, settings
):
    """The issue's invariant, when an operator shortens a client's access token lifetime in
    admin: tokens issued before keep their exp (RFC 7519 §4.1.4), so their key must stay."""
    settings.SIGNING_KEY_PUBLISH_AHEAD = 0
    settings.SIGNING_KEY_ROTATE_AFTER = 0
    Client.objects.filter(pk=confidential.client.pk).update(access_token_lifetime=7200)
    long_lived = client_token(confidential)
    issued = timezone.now()
    old = header(long_lived)["kid"]
    assert keys.rotate(now=issued + timedelta(seconds=1)).retired == [old]
    Client.objects.filter(pk=confidential.client.pk).update(access_token_lifetime=600)

    # An hour and a quarter later the token still has 45 minutes to live...
    later = issued + timedelta(seconds=4500)
    assert jwt.decode(long_lived, published_keys()).claims["exp"] > later.timestamp()
    keys.rotate(now=later)
    keys.forget()
    assert old in published_kids()  # ...but its key was deleted after the ID token lifetime


def test_rotate_keys_now_promotes_at_once(confidential):
    """For a compromised key: no waiting for the publish-ahead or rotate-after periods."""
    before = client_token(confidential)
    old = header(before)["kid"]
    printed = run_command("--now")
    upcoming = states("ES256")["active"][0]
    following = states("ES256")["next"][0]
    assert upcoming != old and states("ES256")["retired"] == [old]
    assert f"promoted: {upcoming}" in printed and f"retired: {old}" in printed
    assert following in printed.splitlines()[0]  # published: the new key and the one after it
    after = client_token(confidential)
    assert header(after)["kid"] == upcoming
    assert verifies(before, "ES256") and verifies(after, "ES256")
    assert introspects_active(confidential, before) and introspects_active(confidential, after)


def test_rotate_keys_refuses_while_another_run_holds_the_lock():
    keys.signing_key("ES256")
    err = StringIO()
    with another_run_holds_the_lock():
        with pytest.raises(SystemExit) as exit_:
            call_command("rotate_keys", "--now", stdout=StringIO(), stderr=err)
    assert exit_.value.code == 1
    assert "A rotation is running" in err.getvalue()
    assert set(states("ES256")) == {"active"}


# --- the hourly job ---------------------------------------------------------------------------
def test_the_hourly_beat_entry_runs_the_rotation_task():
    app.loader.import_default_modules()
    entries = [
        entry
        for entry in app.conf.beat_schedule.values()
        if entry["task"] == "tokens.rotate_signing_keys"
    ]
    assert len(entries) == 1
    entry = entries[0]
    assert entry["task"] in app.tasks
    schedule = entry["schedule"]
    assert schedule.hour == set(range(24)) and len(schedule.minute) == 1  # once an hour
    assert 0 < entry["options"]["expires"] <= 3600


def test_the_task_skips_when_another_run_holds_the_lock(confidential):
    active = header(client_token(confidential))["kid"]
    with another_run_holds_the_lock():
        assert tasks.rotate_signing_keys() == {}
        assert states("ES256") == {"active": [active]}
    report = tasks.rotate_signing_keys()
    assert len(report["published"]) == 1
    assert states("ES256") == {"active": [active], "next": report["published"]}


# --- what is published ------------------------------------------------------------------------
def test_the_jwks_never_contains_private_parts_in_any_state(logged_in_client, confidential):
    """RFC 7517 §4 / RFC 7518 §6: public members only, for next, active and retired keys of both
    algorithms; each kid is the key's RFC 7638 thumbprint; use "sig" (RFC 7517 §4.2)."""
    code_flow(logged_in_client, confidential, "openid")  # ES256 and RS256 keys
    keys.rotate()
    keys.rotate(now=due_at())
    keys.forget()
    assert {row.state for row in SigningKey.objects.all()} == {"next", "active", "retired"}
    document = jwks_document()
    assert len(document["keys"]) == SigningKey.objects.count() == 6
    kids = [jwk["kid"] for jwk in document["keys"]]
    assert len(set(kids)) == len(kids)
    for jwk in document["keys"]:
        assert not (PRIVATE_MEMBERS & set(jwk)), jwk["kid"]
        assert jwk["use"] == "sig" and jwk["alg"] in ("ES256", "RS256")
        key_class = ECKey if jwk["alg"] == "ES256" else RSAKey
        assert jwk["kty"] == ("EC" if jwk["alg"] == "ES256" else "RSA")
        public = key_class.import_key(jwk)
        assert not public.is_private
        assert public.thumbprint() == jwk["kid"]


def test_caches_learn_a_next_key_before_it_signs_and_keep_a_retired_one_while_it_verifies():
    """The JWKS HTTP cache lifetime, plus this process's key cache, fits inside the publish-ahead
    period and inside the retention margin, so a cached JWKS always holds the signing key."""
    response = Browser().get("/.well-known/jwks.json", secure=True)
    max_age = int(response["Cache-Control"].split("max-age=")[1].split(",")[0])
    assert max_age + keys.CACHE_SECONDS < settings.SIGNING_KEY_PUBLISH_AHEAD
    assert max_age + keys.CACHE_SECONDS < RETENTION_MARGIN


def test_a_key_another_process_just_created_is_picked_up_at_once(confidential):
    """A process whose key cache predates a new key reloads on an unknown kid (rate-limited)."""
    from tokens import access_tokens

    value = token_request(confidential, {"grant_type": "client_credentials"}).json()["access_token"]
    keys.forget()
    keys._cached = keys._Keys(signing={}, verifying=keys.KeySet([]), jwks={"keys": []}, loaded=0)
    assert access_tokens.read(value) is not None  # stale, old enough: reloaded and verified
    keys._cached = keys._Keys(
        signing={}, verifying=keys.KeySet([]), jwks={"keys": []}, loaded=time.monotonic()
    )
    assert (
        access_tokens.read(value) is None
    )  # just reloaded: an unknown kid does not hit the database again


def test_the_minutely_reload_keeps_the_keys_it_imported_and_picks_up_a_rotation(
    logged_in_client, confidential
):
    """Each process re-reads the keys every CACHE_SECONDS. A kid names one key's material for
    good (its RFC 7638 thumbprint), so the reload imports only keys it has not seen: importing
    an RSA private key takes tens of milliseconds, a stall for the requests behind it. A
    rotation made by another process still reaches this one at the next reload."""
    client_token(confidential)
    code_flow(logged_in_client, confidential, "openid")  # the RS256 key, for ID tokens
    before = keys._keys()
    stale = keys._cached = dataclasses.replace(
        before, loaded=before.loaded - keys.CACHE_SECONDS - 1
    )
    reloaded = keys._keys()
    assert reloaded is not stale
    for algorithm in ("ES256", "RS256"):
        assert reloaded.signing[algorithm][1] is before.signing[algorithm][1]
    assert reloaded.verifying is before.verifying

    rotated = keys.rotate(force=True)  # as on another machine: this process's copy is put back
    keys._cached = dataclasses.replace(reloaded, loaded=reloaded.loaded - keys.CACHE_SECONDS - 1)
    after = keys._keys()
    for algorithm in ("ES256", "RS256"):
        kid, key = after.signing[algorithm]
        assert kid in rotated.promoted and key is not before.signing[algorithm][1]
        assert key.thumbprint() == kid
    assert set(rotated.published) <= after.kids and after.verifying is not before.verifying
    assert header(client_token(confidential))["kid"] in rotated.promoted
