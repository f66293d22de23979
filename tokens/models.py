"""OAuth clients, and the grants and tokens issued to them.

Every secret the server hands out (client secrets, authorization codes, refresh tokens) is
stored only as a digest and looked up by it; the value itself is shown once and never again.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from datetime import datetime
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone
from django.utils.crypto import salted_hmac
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from tokens import client_cache
from tokens.scopes import UnknownScopes, unknown_scopes

TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
# The most a client's refresh retry window may be (seconds); the janitor wipes stored answers
# older than this (tokens/expiry.py).
MAX_REFRESH_RETRY_WINDOW = 300


def token_digest(value: str) -> str:
    """SHA-256 of a server-generated, high-entropy token: what the database keeps."""
    return hashlib.sha256(value.encode()).hexdigest()


# What a client may sign its assertions and request objects with: asymmetric only (never
# none or HS*: a client secret is not a signing key here). EdDSA is left out: RFC 9864
# deprecates it in favour of the fully specified Ed25519.
CLIENT_SIGNING_ALGORITHMS = ("RS256", "PS256", "ES256", "Ed25519")
# FAPI 2.0 Security Profile §5.4 (cryptography): PS256, ES256 or EdDSA with Ed25519 (RS256 is not allowed).
FAPI2_SIGNING_ALGORITHMS = ("PS256", "ES256", "Ed25519")
# FAPI 2.0 Security Profile §5.3.2.1: authorization codes live at most 60 seconds.
FAPI2_MAX_CODE_LIFETIME = 60


def _secret_digest(secret: str, key: str) -> str:
    return salted_hmac("tokens.Client.secret", secret, secret=key, algorithm="sha256").hexdigest()


class ExpiringQuerySet(models.QuerySet):
    def live(self, now: datetime | None = None):
        return self.filter(expires__gt=now or timezone.now())

    def expired(self, before: datetime | None = None):
        return self.filter(expires__lte=before or timezone.now())


class ClientQuerySet(models.QuerySet):
    """Every write to a client, one row or many, drops its cached copies everywhere (here and
    in ``Client.save``/``delete``: the one place tokens/client_cache.invalidate is called), so a
    client deactivated or changed by any path takes effect on every host at once."""

    def update(self, **fields) -> int:
        client_ids = list(self.values_list("client_id", flat=True))
        count = super().update(**fields)
        client_cache.invalidate(client_ids)
        return count

    def delete(self):
        client_ids = list(self.values_list("client_id", flat=True))
        result = super().delete()
        client_cache.invalidate(client_ids)
        return result


class Client(models.Model):
    """An application that asks for tokens."""

    class Type(models.TextChoices):
        CONFIDENTIAL = "confidential", "confidential (has a secret; runs on a server)"
        PUBLIC = "public", "public (no secret; browser or mobile app, PKCE required)"

    class AuthMethod(models.TextChoices):
        BASIC = "client_secret_basic", "client_secret_basic (HTTP Basic)"
        POST = "client_secret_post", "client_secret_post (form body)"
        NONE = "none", "none (public client)"
        PRIVATE_KEY_JWT = "private_key_jwt", "private_key_jwt (a JWT signed with the client's key)"

    class GrantType(models.TextChoices):
        AUTHORIZATION_CODE = "authorization_code", "authorization code"
        REFRESH_TOKEN = "refresh_token", "refresh token"
        CLIENT_CREDENTIALS = "client_credentials", "client credentials"
        DEVICE_CODE = "urn:ietf:params:oauth:grant-type:device_code", "device code (RFC 8628)"
        TOKEN_EXCHANGE = TOKEN_EXCHANGE_GRANT, "token exchange (RFC 8693)"

    class Consent(models.TextChoices):
        ASK = "ask", "ask every time"
        REMEMBER = "remember", "ask once, remember the answer"
        SKIP = "skip", "never ask (first-party application)"

    client_id = models.CharField(max_length=64, unique=True, editable=False)
    name = models.CharField(max_length=100, help_text="Shown to people on the consent page.")
    client_type = models.CharField(max_length=16, choices=Type.choices, default=Type.CONFIDENTIAL)
    secret_digest = models.CharField(max_length=64, blank=True, editable=False)
    token_endpoint_auth_method = models.CharField(
        max_length=32, choices=AuthMethod.choices, default=AuthMethod.BASIC
    )
    redirect_uris = models.JSONField(
        default=list, blank=True, help_text="Exact redirect URIs, one per line. No wildcards."
    )
    grant_types = models.JSONField(
        default=list, help_text="authorization_code, refresh_token, client_credentials"
    )
    allowed_scopes = models.JSONField(
        default=list, blank=True, help_text="Scopes this client may ask for."
    )
    consent = models.CharField(max_length=16, choices=Consent.choices, default=Consent.REMEMBER)
    access_token_lifetime = models.PositiveIntegerField(
        default=600,
        validators=[MinValueValidator(60), MaxValueValidator(86_400)],
        help_text="Seconds an access token lives (60 to 86400).",
    )
    refresh_token_lifetime = models.PositiveIntegerField(
        default=30 * 86_400,
        help_text="Seconds a refresh token family lives, however often it is used.",
    )
    refresh_token_idle_lifetime = models.PositiveIntegerField(
        default=7 * 86_400, help_text="Seconds a refresh token lives unused."
    )
    refresh_retry_window = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MaxValueValidator(MAX_REFRESH_RETRY_WINDOW)],
        help_text="Seconds after a refresh during which presenting the same refresh token again "
        "returns the same new tokens (a lost response retried) instead of revoking them all. "
        "Empty: the REFRESH_RETRY_WINDOW setting; 0: off. Never for public clients.",
    )
    # RFC 8693 token exchange: off unless the grant type is ticked and an audience listed.
    token_exchange_audiences = models.JSONField(
        default=list,
        blank=True,
        help_text="Audiences (or RFC 8707 resources) this client may exchange tokens for.",
    )
    token_exchange_scopes = models.JSONField(
        default=list,
        blank=True,
        help_text="Scopes an exchanged token may carry (also within the subject token's).",
    )
    is_active = models.BooleanField(
        default=True, help_text="Inactive clients get no tokens, and their tokens stop working."
    )
    # --- OpenID Connect ---
    id_token_signed_response_alg = models.CharField(
        "ID token algorithm",
        max_length=8,
        choices=[("RS256", "RS256"), ("ES256", "ES256")],
        default="RS256",
    )
    post_logout_redirect_uris = models.JSONField(
        default=list, blank=True, help_text="Exact URIs the client may be sent to after logout."
    )
    backchannel_logout_uri = models.URLField(
        blank=True, max_length=500, help_text="Receives a logout_token when a session it used ends."
    )
    backchannel_logout_session_required = models.BooleanField(default=True)
    # --- RFC 9126 ---
    require_pushed_authorization_requests = models.BooleanField(
        "require pushed authorization requests",
        default=False,
        help_text="Accept authorization requests from this client only through the pushed "
        "authorization request endpoint (/par, RFC 9126 §6).",
    )
    # --- DPoP (RFC 9449) ---
    # db_default on the DPoP columns: rows inserted by raw SQL (bench/, jobs) need not name them.
    dpop_bound_access_tokens = models.BooleanField(
        "DPoP-bound access tokens",
        default=False,
        db_default=False,
        help_text="RFC 9449 §5.2: every token request of this client must carry a DPoP proof.",
    )
    # --- FAPI 2.0 Security Profile ---
    fapi2 = models.BooleanField(
        "FAPI 2.0 profile",
        default=False,
        db_default=False,
        help_text="Enforce the FAPI 2.0 Security Profile: pushed authorization requests, PKCE "
        "S256, DPoP-bound tokens, private_key_jwt only, PS256/ES256/Ed25519 only, https "
        "redirect URIs, codes that live at most 60 s.",
    )
    # --- Sign-in strength (accounts/assurance.py: pwd < mfa < phr) ---
    default_acr_values = models.JSONField(
        "default acr values",
        default=list,
        blank=True,
        help_text="OIDC Registration §2: levels asked for when a request names none "
        '(e.g. ["mfa"]); people without such a factor still get in, at the level they reach.',
    )
    required_acr = models.CharField(
        "require",
        max_length=8,
        blank=True,
        choices=[
            ("", "a password is enough"),
            ("mfa", "two factors (mfa)"),
            ("phr", "a passkey (phr, phishing-resistant)"),
        ],
        help_text="Never give this client a weaker sign-in: people without the factor are "
        "refused (unmet_authentication_requirements).",
    )
    userinfo_signed_response_alg = models.CharField(
        "UserInfo algorithm",
        max_length=8,
        blank=True,
        choices=[("RS256", "RS256"), ("ES256", "ES256")],
        help_text="Empty: UserInfo answers plain JSON. Set: a JWT signed with this algorithm "
        "(OIDC Core §5.3.2).",
    )
    # --- the client's own keys: private_key_jwt (RFC 7523) and signed request objects ---
    jwks = models.JSONField(
        "JWKS",
        default=dict,
        blank=True,
        help_text='The client\'s public keys as a JWK Set {"keys": [...]}; or use the JWKS URI.',
    )
    jwks_uri = models.URLField(
        "JWKS URI",
        blank=True,
        max_length=500,
        help_text="Where the client publishes its public keys (https); fetched and cached.",
    )
    token_endpoint_auth_signing_alg = models.CharField(
        max_length=8,
        blank=True,
        choices=[(alg, alg) for alg in CLIENT_SIGNING_ALGORITHMS],
        help_text="Empty: any of RS256, PS256, ES256, Ed25519 signs its client assertions.",
    )
    request_object_signing_alg = models.CharField(
        max_length=8,
        blank=True,
        choices=[(alg, alg) for alg in (*CLIENT_SIGNING_ALGORITHMS, "none")],
        help_text="Empty: request objects signed with any supported algorithm, or unsigned "
        "(OpenID Registration §2). 'none': unsigned only.",
    )
    request_uris = models.JSONField(
        default=list,
        blank=True,
        help_text="Exact https URLs of request objects this client may pass as request_uri.",
    )
    id_token_on_refresh = models.BooleanField(
        "ID token on refresh",
        default=True,
        help_text="A refresh of a grant that had the openid scope returns a new ID token "
        "(OpenID Connect Core §12.2).",
    )
    metadata = models.JSONField(
        default=dict,
        blank=True,
        help_text="Other registered metadata (RFC 7591): client_uri, logo_uri, contacts...",
    )
    # RFC 7592: the registration access token, as a digest; after a rotation the one it replaced
    # keeps working until registration_token_previous_expires, so a lost response does not lock
    # the client out of its own registration.
    registration_token_digest = models.CharField(max_length=64, blank=True, editable=False)
    registration_token_previous_digest = models.CharField(max_length=64, blank=True, editable=False)
    registration_token_previous_expires = models.DateTimeField(
        null=True, blank=True, editable=False
    )
    created = models.DateTimeField(default=timezone.now, editable=False)
    updated = models.DateTimeField(auto_now=True)

    objects = ClientQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.client_id})"

    def save(self, *args, **kwargs) -> None:
        super().save(*args, **kwargs)
        client_cache.invalidate([self.client_id])

    def delete(self, *args, **kwargs):
        result = super().delete(*args, **kwargs)
        client_cache.invalidate([self.client_id])
        return result

    # --- secrets ---------------------------------------------------------------------------
    def set_new_secret(self) -> str | None:
        """Generate a secret (confidential clients), keep its keyed digest, return it once."""
        if self.client_type == self.Type.PUBLIC or self.uses_keys:
            self.secret_digest = ""  # private_key_jwt: the client's key, never a secret
            return None
        secret = secrets.token_urlsafe(32)
        self.secret_digest = _secret_digest(secret, settings.SECRET_KEY)
        return secret

    def check_client_secret(self, client_secret: str) -> bool:
        """Constant-time check against the keyed SHA-256 (and SECRET_KEY_FALLBACKS, so a key
        rotation does not lock clients out). A fast hash is right here: secrets are 256 random
        bits generated by the server, so there is nothing for a slow KDF to protect."""
        if not self.secret_digest or not client_secret:
            return False
        for key in (settings.SECRET_KEY, *settings.SECRET_KEY_FALLBACKS):
            if hmac.compare_digest(self.secret_digest, _secret_digest(client_secret, key)):
                return True
        return False

    def registration_token_state(self, token: str, now: datetime | None = None) -> str | None:
        """Whether ``token`` is this client's registration access token: "current", "previous"
        (the one replaced by the last rotation, within its overlap), or None. Digests are
        compared in constant time."""
        digest = token_digest(token)
        if self.registration_token_digest and hmac.compare_digest(
            digest, self.registration_token_digest
        ):
            return "current"
        expires = self.registration_token_previous_expires
        if (
            self.registration_token_previous_digest
            and expires is not None
            and (now or timezone.now()) < expires
            and hmac.compare_digest(digest, self.registration_token_previous_digest)
        ):
            return "previous"
        return None

    # --- Authlib's ClientMixin -------------------------------------------------------------
    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str | None:
        # RFC 6749 §3.1.2.3: only a single registered URI may be implied.
        return self.redirect_uris[0] if len(self.redirect_uris) == 1 else None

    def get_allowed_scope(self, scope: str | None) -> str:
        if not scope:
            return ""
        allowed = set(self.allowed_scopes)
        return " ".join(s for s in dict.fromkeys(scope.split()) if s in allowed)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        # RFC 9700 §4.1.1 / §2.1: exact string matching, nothing looser. Compared as bytes:
        # compare_digest refuses non-ASCII str, and this is whatever the request carried.
        candidate = redirect_uri.encode("utf-8", "surrogatepass")
        return any(
            hmac.compare_digest(candidate, uri.encode("utf-8", "surrogatepass"))
            for uri in self.redirect_uris
        )

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        if endpoint == "token":
            return method == self.token_endpoint_auth_method
        # Revocation and introspection accept the client's own method.
        return method == self.token_endpoint_auth_method

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code" and self.GrantType.AUTHORIZATION_CODE in self.grant_types

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in self.grant_types

    @property
    def is_public(self) -> bool:
        return self.client_type == self.Type.PUBLIC

    @property
    def uses_keys(self) -> bool:
        """Authenticates with a JWT signed by its own key (RFC 7523 §2.2), not a secret."""
        return self.token_endpoint_auth_method == self.AuthMethod.PRIVATE_KEY_JWT

    @property
    def client_metadata(self) -> dict:
        """What Authlib's OIDC endpoints read of a client's registration."""
        return {"post_logout_redirect_uris": self.post_logout_redirect_uris}

    def clean(self) -> None:
        errors: dict[str, list[str]] = {}
        if self.is_public and self.token_endpoint_auth_method != self.AuthMethod.NONE:
            errors.setdefault("token_endpoint_auth_method", []).append(
                "A public client authenticates with 'none'."
            )
        if not self.is_public and self.token_endpoint_auth_method == self.AuthMethod.NONE:
            errors.setdefault("token_endpoint_auth_method", []).append(
                "A confidential client needs a secret method."
            )
        if self.uses_keys and not (self.jwks or self.jwks_uri):
            errors.setdefault("jwks", []).append("private_key_jwt needs a JWKS or a JWKS URI.")
        if self.jwks and self.jwks_uri:
            errors.setdefault("jwks_uri", []).append("Register a JWKS or a JWKS URI, not both.")
        if self.jwks and (problem := public_jwks_problem(self.jwks)):
            errors.setdefault("jwks", []).append(problem)
        if self.jwks_uri and (problem := fetched_uri_problem(self.jwks_uri)):
            errors.setdefault("jwks_uri", []).append(problem)
        if not isinstance(self.request_uris, list):
            errors.setdefault("request_uris", []).append("A list of URLs.")
        else:
            for uri in self.request_uris:
                problem = (
                    fetched_uri_problem(uri, fragment_allowed=True)
                    if isinstance(uri, str)
                    else "not a string"
                )
                if problem:
                    errors.setdefault("request_uris", []).append(f"{uri}: {problem}")
        if self.is_public and self.GrantType.CLIENT_CREDENTIALS in self.grant_types:
            errors.setdefault("grant_types", []).append(
                "A public client cannot use client_credentials."
            )
        if self.is_public and self.GrantType.TOKEN_EXCHANGE in self.grant_types:
            errors.setdefault("grant_types", []).append(
                "A public client cannot use token exchange."
            )
        if any(
            not isinstance(a, str) or not a or len(a) > 500 for a in self.token_exchange_audiences
        ):
            errors.setdefault("token_exchange_audiences", []).append(
                "Each audience is a non-empty string of at most 500 characters."
            )
        if unknown := unknown_scopes(self.token_exchange_scopes):
            errors.setdefault("token_exchange_scopes", []).append(str(UnknownScopes(unknown)))
        unknown = set(self.grant_types) - set(self.GrantType.values)
        if unknown:
            errors.setdefault("grant_types", []).append(
                f"Unknown grant types: {', '.join(sorted(unknown))}."
            )
        for field in ("redirect_uris", "post_logout_redirect_uris"):
            for uri in getattr(self, field):
                problem = redirect_uri_problem(uri) if isinstance(uri, str) else "not a string"
                if problem:
                    errors.setdefault(field, []).append(f"{uri}: {problem}")
        if self.backchannel_logout_uri:
            problem = redirect_uri_problem(self.backchannel_logout_uri)
            if problem or urlsplit(self.backchannel_logout_uri).scheme not in ("https", "http"):
                errors.setdefault("backchannel_logout_uri", []).append(problem or "use https")
        if self.GrantType.AUTHORIZATION_CODE in self.grant_types and not self.redirect_uris:
            errors.setdefault("redirect_uris", []).append(
                "The authorization code grant needs a redirect URI."
            )
        if unknown := unknown_scopes(self.allowed_scopes):
            errors.setdefault("allowed_scopes", []).append(str(UnknownScopes(unknown)))
        if self.fapi2:
            for field, problem in self._fapi2_problems():
                errors.setdefault(field, []).append(problem)
        if errors:
            raise ValidationError(errors)

    def _fapi2_problems(self) -> list[tuple[str, str]]:
        """What a client must register to be held to the FAPI 2.0 Security Profile (§5.3.2)."""
        problems = []
        if not self.uses_keys:
            # §5.3.2.1: confidential clients only, authenticated by private_key_jwt (or mTLS).
            problems.append(("token_endpoint_auth_method", "FAPI 2.0 needs private_key_jwt."))
        for field in ("token_endpoint_auth_signing_alg", "request_object_signing_alg"):
            if getattr(self, field) not in ("", *FAPI2_SIGNING_ALGORITHMS):
                problems.append((field, "FAPI 2.0 allows PS256, ES256 or Ed25519 only (5.4)."))
        for uri in self.redirect_uris:
            if isinstance(uri, str) and urlsplit(uri).scheme != "https":
                # §5.3.2.1: redirect URIs use https.
                problems.append(("redirect_uris", f"{uri}: FAPI 2.0 needs https."))
        if self.request_uris:
            # §5.3.2.1: request_uri only from our PAR endpoint, so none is ever fetched.
            problems.append(("request_uris", "FAPI 2.0 takes request_uri only from PAR."))
        return problems

    @property
    def sender_constrained(self) -> bool:
        """RFC 9449 §5.2 / FAPI 2.0 §5.3.2.1: every token request carries a DPoP proof."""
        return self.dpop_bound_access_tokens or self.fapi2

    @property
    def code_lifetime(self) -> int:
        if self.fapi2:
            return min(settings.AUTHORIZATION_CODE_LIFETIME, FAPI2_MAX_CODE_LIFETIME)
        return settings.AUTHORIZATION_CODE_LIFETIME


# RFC 7517 §6.3 / §6.4: the private members of RSA, EC and OKP keys, and "k" of a symmetric
# key. A client publishes public keys only.
PRIVATE_JWK_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")


def public_jwks_problem(jwks) -> str | None:
    """Why ``jwks`` is not a set of public signing keys a client may register, or None."""
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list) or not jwks["keys"]:
        return "A JWK Set is an object with a keys array holding at least one key."
    for key in jwks["keys"]:
        if not isinstance(key, dict) or key.get("kty") not in ("RSA", "EC", "OKP"):
            return "Every key needs kty RSA, EC or OKP."
        if private := [name for name in PRIVATE_JWK_MEMBERS if name in key]:
            return f"Publish public keys only; this one has private members: {', '.join(private)}."
    try:
        KeySet.import_key_set(jwks)
    except (JoseError, ValueError, TypeError, KeyError):
        return "Not a valid JWK Set."
    return None


def fetched_uri_problem(uri: str, *, fragment_allowed: bool = False) -> str | None:
    """Why this server could not fetch ``uri`` (a jwks_uri or request_uri), or None: https, or
    http on loopback only, as for redirect URIs (tokens/outbound.py guards the address). A
    request_uri may carry a fragment (OpenID Registration §2: a hash of its content)."""
    if fragment_allowed:
        uri = uri.partition("#")[0]
    problem = redirect_uri_problem(uri)
    if problem is None and urlsplit(uri).scheme not in ("https", "http"):
        problem = "use https"
    return problem


def redirect_uri_problem(uri: str) -> str | None:
    """Why a redirect URI cannot be registered, or None (RFC 6749 §3.1.2, RFC 8252 §7)."""
    # urlsplit() quietly drops spaces, tabs and newlines; matching is exact, so a URI carrying
    # any of them could never match what a client sends.
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in uri):
        return "must not contain spaces or control characters"
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError:
        return "not a URL"
    if parts.fragment or "#" in uri:
        return "must not contain a fragment (RFC 6749 §3.1.2)"
    if parts.scheme == "https":
        return None if parts.netloc else "needs a host"
    if parts.scheme == "http":
        # Loopback redirects for native apps (RFC 8252 §7.3); anything else must use TLS.
        return (
            None
            if parts.hostname in ("127.0.0.1", "[::1]", "::1", "localhost")
            else "http is only for loopback"
        )
    if "." in parts.scheme and not parts.netloc and parts.path.startswith("/"):
        return None  # a private-use scheme for native apps (RFC 8252 §7.1): com.example.app:/cb
    return "use https, a loopback http URL, or a reverse-domain private scheme"


class AuthorizationCode(models.Model):
    """A single-use code from the authorization endpoint (RFC 6749 §4.1.2), stored as a digest."""

    code_digest = models.CharField(max_length=64, unique=True)
    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="+")
    user = models.ForeignKey("accounts.User", on_delete=models.CASCADE, related_name="+")
    sid = models.CharField(max_length=64, help_text="The browser session that approved it.")
    redirect_uri = models.TextField()
    scope = models.TextField(blank=True)
    nonce = models.CharField(max_length=255, blank=True)
    code_challenge = models.CharField(max_length=128, blank=True)
    code_challenge_method = models.CharField(max_length=10, blank=True)
    auth_time = models.DateTimeField(null=True)
    amr = models.JSONField(default=list, blank=True)
    dpop_jkt = models.CharField(
        max_length=64,
        blank=True,
        default="",
        db_default="",
        help_text="RFC 9449 §10: the thumbprint of the key the exchange's DPoP proof must use.",
    )
    acr = models.CharField(
        max_length=8, blank=True, db_default="", help_text="The level the sign-in reached."
    )
    created = models.DateTimeField(default=timezone.now)
    expires = models.DateTimeField(db_index=True)
    used_at = models.DateTimeField(null=True, blank=True)
    access_jti = models.CharField(
        max_length=64, blank=True, help_text="The access token issued for it."
    )
    access_expires = models.DateTimeField(null=True, blank=True)

    objects = ExpiringQuerySet.as_manager()

    def __str__(self) -> str:
        return f"authorization code {self.pk} for {self.client_id}"

    # --- Authlib's AuthorizationCodeMixin / OIDC -------------------------------------------
    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str | None:
        return self.nonce or None

    def get_auth_time(self) -> int | None:
        return int(self.auth_time.timestamp()) if self.auth_time else None

    def get_acr(self) -> str | None:
        return self.acr or None

    def get_amr(self) -> list[str] | None:
        return self.amr or None


class PushedAuthorizationRequest(models.Model):
    """An authorization request a client pushed (RFC 9126), waiting for its browser.

    Its ``request_uri`` is stored only as a digest. The first browser to present it at
    /authorize claims it (``browser_digest``, a cookie's digest); only that browser may continue
    with it, through sign-in and consent, until ``completed_at``: then it is spent.
    """

    reference_digest = models.CharField(max_length=64, unique=True)
    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="+")
    parameters = models.JSONField(help_text="The authorization request parameters, as pushed.")
    created = models.DateTimeField(default=timezone.now)
    expires = models.DateTimeField(
        db_index=True,
        help_text="Until claimed: the request_uri's expires_in; once claimed: the time the "
        "browser has to sign in and consent.",
    )
    browser_digest = models.CharField(max_length=64, blank=True, editable=False)
    claimed_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(
        null=True, blank=True, help_text="When /authorize answered the client (code or error)."
    )

    objects = ExpiringQuerySet.as_manager()

    def __str__(self) -> str:
        return f"pushed authorization request {self.pk} of {self.client_id}"


class DeviceAuthorization(models.Model):
    """A device's request to be signed in (RFC 8628 §3.1-§3.2), and what the person answered.

    Both codes are stored only as digests: the device code as a SHA-256 (256 random bits), the
    user code, short enough to type, as a keyed HMAC (tokens/device_codes.py), since 8 letters
    could be recovered from a plain hash by trying them all.
    """

    class Status(models.TextChoices):
        PENDING = "pending", "waiting for the person"
        APPROVED = "approved", "approved, token not yet collected"
        DENIED = "denied", "denied by the person"
        ISSUED = "issued", "token issued to the device"

    device_code_digest = models.CharField(max_length=64, unique=True)
    user_code_digest = models.CharField(max_length=64, unique=True)
    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="+")
    scope = models.TextField(blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    interval = models.PositiveIntegerField(
        default=5, help_text="Seconds the device must wait between polls (RFC 8628 §3.5)."
    )
    last_polled_at = models.DateTimeField(null=True, blank=True)
    user = models.ForeignKey(
        "accounts.User", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    sid = models.CharField(
        max_length=64, blank=True, help_text="The browser session that approved."
    )
    auth_time = models.DateTimeField(null=True, blank=True)
    # How that session signed in (accounts/assurance.py), as on refresh tokens: space-separated.
    acr = models.CharField(max_length=8, blank=True, db_default="")
    amr = models.CharField(max_length=64, blank=True, db_default="")
    created = models.DateTimeField(default=timezone.now)
    expires = models.DateTimeField(db_index=True)
    decided_at = models.DateTimeField(null=True, blank=True)
    issued_at = models.DateTimeField(null=True, blank=True)

    objects = ExpiringQuerySet.as_manager()

    def __str__(self) -> str:
        return f"device authorization {self.pk} of {self.client_id}: {self.status}"

    # Authlib's DeviceCredentialMixin (the user code itself is not kept: nothing asks for it).
    def get_client_id(self) -> str:
        return self.client.client_id

    def get_scope(self) -> str:
        return self.scope

    def is_expired(self) -> bool:
        return self.expires <= timezone.now()


class Consent(models.Model):
    """A person's remembered "allow" for a client and a set of scopes."""

    user = models.ForeignKey("accounts.User", on_delete=models.CASCADE, related_name="consents")
    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="consents")
    scopes = models.JSONField(default=list)
    created = models.DateTimeField(default=timezone.now)
    expires = models.DateTimeField(db_index=True)

    objects = ExpiringQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "client"], name="tokens_consent_unique")
        ]

    def __str__(self) -> str:
        return f"consent of {self.user_id} to {self.client_id}"

    def covers(self, scopes: list[str]) -> bool:
        return set(scopes) <= set(self.scopes) and self.expires > timezone.now()


class RefreshToken(models.Model):
    """One opaque refresh token. Rotation makes a child in the same family (one per grant)."""

    class Reason(models.TextChoices):
        REPLAY = "replay", "a rotated token was presented again"
        CODE_REPLAY = "code_replay", "its authorization code was redeemed twice"
        REVOKED = "revoked", "revoked by the client (RFC 7009)"
        SESSION_ENDED = "session_ended", "its browser session ended"
        USER = "user", "the user was deactivated"
        CLIENT = "client", "the client was deactivated"
        OPERATOR = "operator", "revoked by an operator"

    # Unique through Meta.constraints, not unique=True: that would add a varchar_pattern_ops
    # index for LIKE, which nothing asks of a digest, written by every INSERT all the same.
    token_digest = models.CharField(max_length=64)
    family = models.UUIDField(default=uuid.uuid4, db_index=True)
    # No database constraint on these two: the janitor deletes old rows in plain batches, and a
    # dangling id is harmless (the family column, not these, is what revocation follows).
    parent = models.OneToOneField(
        "self",
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="child",
    )
    authorization_code = models.ForeignKey(
        AuthorizationCode,
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        db_index=False,  # Meta.indexes: only the first token of a family has one
        related_name="+",
    )
    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="refresh_tokens")
    user = models.ForeignKey(
        "accounts.User", on_delete=models.CASCADE, related_name="refresh_tokens"
    )
    sid = models.CharField(
        max_length=64,
        blank=True,
        help_text="Bound browser session; empty for offline_access.",
    )  # indexed in Meta.indexes, without the empty ones
    scope = models.TextField(blank=True)
    auth_time = models.DateTimeField(null=True, blank=True)
    # db_default on both: the bench and fault scripts seed rows with SQL of their own.
    acr = models.CharField(
        max_length=8, blank=True, db_default="", help_text="Of the sign-in it came from."
    )
    # Space-separated, not JSON: the hot path's hand-prepared SELECT reads it without converters.
    amr = models.CharField(
        max_length=64, blank=True, db_default="", help_text="Of the sign-in it came from."
    )
    created = models.DateTimeField(default=timezone.now)
    # expires <= family_expires always (store_refresh_token): the janitor finds families past
    # their absolute lifetime through the index on expires (tokens/expiry.py).
    expires = models.DateTimeField(db_index=True, help_text="Idle expiry, never past the family's.")
    family_expires = models.DateTimeField(help_text="Absolute expiry of the whole family.")
    # Not indexed, and neither is retry_response: the rotation sets the one and wipes the
    # other, and an UPDATE that changes no indexed column (nor one an index's WHERE reads)
    # can be a HOT update, which writes no index at all.
    rotated_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)  # indexed when set: Meta.indexes
    revoke_reason = models.CharField(max_length=32, choices=Reason.choices, blank=True)
    access_jti = models.CharField(max_length=64, blank=True)
    access_expires = models.DateTimeField(null=True, blank=True)
    dpop_jkt = models.CharField(
        max_length=64,
        blank=True,
        default="",
        db_default="",
        help_text="RFC 9449 §5: bound to this DPoP key (public clients); empty if not bound.",
    )
    # The token response that delivered this token, sealed (tokens/sealing.py) with a key that
    # only the parent token's value opens: how a retry of the parent within its client's window
    # gets this same token back. Wiped when this token is used or revoked, and by the janitor
    # once the longest window has passed.
    retry_response = models.BinaryField(null=True, blank=True, editable=False)
    # True from the INSERT that sealed an answer until the janitor or a revocation clears it:
    # how the janitor finds answers to wipe (an index reading retry_response itself would make
    # every rotation, which wipes the answer, rewrite every index). Also set on rows whose
    # answer a rotation already wiped, until the janitor passes.
    retry_sealed = models.BooleanField(default=False, db_default=False, editable=False)

    objects = ExpiringQuerySet.as_manager()

    class Meta:
        constraints = [
            # The name PostgreSQL gave the unique=True constraint it replaces.
            models.UniqueConstraint(
                fields=["token_digest"], name="tokens_refreshtoken_token_digest_key"
            )
        ]
        # Every index is written by every INSERT (each rotation makes one): only what a query
        # needs, and partial where the query only ever asks for some rows.
        indexes = [
            # Revoking by session (tokens/revocation.py): offline_access tokens have none.
            models.Index(fields=["sid"], condition=~models.Q(sid=""), name="tokens_rt_sid_idx"),
            # A code redeemed twice (revoke_code_tokens): only a family's first token has one.
            models.Index(
                fields=["authorization_code"],
                condition=models.Q(authorization_code__isnull=False),
                name="tokens_rt_code_idx",
            ),
            # The janitor's "revoked a day ago".
            models.Index(
                fields=["revoked_at"],
                condition=models.Q(revoked_at__isnull=False),
                name="tokens_rt_revoked_idx",
            ),
            # The janitor's sealed answers past the window.
            models.Index(
                fields=["created"],
                condition=models.Q(retry_sealed=True),
                name="tokens_rt_retry_sealed_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"refresh token {self.pk} of {self.client_id} for {self.user_id}"

    @property
    def state(self) -> str:
        if self.revoked_at:
            return "revoked"
        if self.rotated_at:
            return "rotated"
        return "expired" if self.expires <= timezone.now() else "active"

    # Authlib's TokenMixin, for the introspection and revocation endpoints.
    def check_client(self, client: Client) -> bool:
        return self.client_id == client.pk

    # The original authentication, as Authlib's OpenIDToken reads it from a code: the ID token
    # re-issued on refresh carries its auth_time, acr and amr (OIDC Core §12.2), and no nonce.
    def get_nonce(self) -> None:
        return None

    def get_auth_time(self) -> int | None:
        return int(self.auth_time.timestamp()) if self.auth_time else None

    def get_acr(self) -> str | None:
        return self.acr or None  # as AuthorizationCode.get_acr

    def get_amr(self) -> list[str] | None:
        return self.amr.split() or None  # space-separated here (see the field)

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return max(0, int((self.expires - timezone.now()).total_seconds()))

    def is_expired(self) -> bool:
        return self.expires <= timezone.now()

    def is_revoked(self) -> bool:
        return self.revoked_at is not None or self.rotated_at is not None


class SigningKey(models.Model):
    """A key the server signs with. Its private half never leaves the server.

    States: next (published in the JWKS, not yet signing) → active (signing) → retired
    (published until every token it signed has expired).
    """

    class State(models.TextChoices):
        NEXT = "next"
        ACTIVE = "active"
        RETIRED = "retired"

    kid = models.CharField(max_length=64, unique=True)
    algorithm = models.CharField(max_length=8, default="ES256")
    private_jwk = models.JSONField()
    public_jwk = models.JSONField()
    state = models.CharField(max_length=8, choices=State.choices, default=State.NEXT, db_index=True)
    created = models.DateTimeField(default=timezone.now)
    activated_at = models.DateTimeField(null=True, blank=True)
    retired_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["algorithm"],
                condition=models.Q(state="active"),
                name="tokens_one_active_key_per_algorithm",
            ),
            models.UniqueConstraint(
                fields=["algorithm"],
                condition=models.Q(state="next"),
                name="tokens_one_next_key_per_algorithm",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.algorithm} key {self.kid} ({self.state})"


class RevokedAccessToken(models.Model):
    """The deny list for revoked JWT access tokens, kept until the token would have expired."""

    jti = models.CharField(max_length=64, primary_key=True)
    expires = models.DateTimeField(db_index=True)
    revoked_at = models.DateTimeField(default=timezone.now)

    objects = ExpiringQuerySet.as_manager()

    def __str__(self) -> str:
        return f"revoked access token {self.jti}"


class SessionClient(models.Model):
    """A client that received tokens in a browser session: who to tell when the session ends."""

    sid = models.CharField(max_length=64, db_index=True)
    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="+")
    user = models.ForeignKey("accounts.User", on_delete=models.CASCADE, related_name="+")
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["sid", "client"], name="tokens_session_client_unique")
        ]

    def __str__(self) -> str:
        return f"{self.client_id} in session {self.sid}"


class BackchannelLogout(models.Model):
    """One logout_token owed to one client for one ended session (OIDC Back-Channel Logout 1.0)."""

    class Status(models.TextChoices):
        PENDING = "pending"
        SENDING = "sending"
        DELIVERED = "delivered"
        FAILED = "failed", "failed (will retry)"
        ABANDONED = "abandoned", "abandoned after retries"

    sid = models.CharField(max_length=64)
    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="+")
    user = models.ForeignKey(
        "accounts.User", null=True, on_delete=models.SET_NULL, related_name="+"
    )
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True
    )
    attempts = models.PositiveSmallIntegerField(default=0)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=300, blank=True)
    created = models.DateTimeField(default=timezone.now, db_index=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["sid", "client"], name="tokens_backchannel_once")
        ]

    def __str__(self) -> str:
        return f"logout of {self.sid} to {self.client_id}: {self.status}"


class InitialAccessToken(models.Model):
    """Lets one party register clients (RFC 7591 §3), stored as a digest, shown once."""

    token_digest = models.CharField(max_length=64, unique=True)
    note = models.CharField(max_length=200, blank=True, help_text="Who it is for.")
    created = models.DateTimeField(default=timezone.now)
    expires = models.DateTimeField(db_index=True)
    uses_left = models.PositiveIntegerField(default=1)

    objects = ExpiringQuerySet.as_manager()

    def __str__(self) -> str:
        return f"initial access token {self.pk} ({self.note or 'no note'})"
