"""``private_key_jwt`` client authentication (RFC 7523 §2.2 and §3, OIDC Core §9) on Authlib's
client assertion class, registered with the one server (tokens/oauth/server.py) so that every
client-authenticated endpoint (token, introspection, revocation, and whatever else asks the
server to authenticate a client) accepts it.

It runs only when a request carries ``client_assertion``: a client authenticating with a
secret costs nothing here (it is tried after the secret methods, and returns at once).
"""

from __future__ import annotations

import logging
import time

from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749.errors import InvalidClientError
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from django.conf import settings
from django.urls import reverse
from joserfc.errors import JoseError

from tokens import client_keys

logger = logging.getLogger(__name__)

METHOD = "private_key_jwt"
# RFC 7523 §2.2: the one value of client_assertion_type.
ASSERTION_TYPE = JWTBearerClientAssertion.CLIENT_ASSERTION_TYPE


class TemporarilyUnavailableError(OAuth2Error):
    """The replay check cannot run (the shared cache is down): try again shortly."""

    error = "temporarily_unavailable"
    status_code = 503

    def get_headers(self):
        return [*super().get_headers(), ("Retry-After", "5")]


def audiences() -> list[str]:
    """RFC 7523 §3 item 3: the audience must identify this server. Accepted: the issuer
    identifier (what RFC 7523bis and OIDC Core §9 recommend, and what ``oidcc-ensure-client-
    assertion-with-iss-aud-succeeds`` sends) and the URL of each endpoint that authenticates
    clients (OIDC Core §9 names the token endpoint; libraries such as Authlib put the URL they
    post to). Every one of them is this server's own."""
    endpoints = (
        "tokens:token",
        "tokens:introspect",
        "tokens:revoke",
        "tokens:par",  # RFC 9126 §2: the issuer is what it recommends; the URL works too
        "tokens:device_authorization",
    )
    return [settings.ISSUER, *(settings.ISSUER + reverse(name) for name in endpoints)]


class PrivateKeyJWT(JWTBearerClientAssertion):
    CLIENT_AUTH_METHOD = METHOD

    def __init__(self):
        super().__init__(validate_jti=True, leeway=settings.CLIENT_ASSERTION_LEEWAY)

    def __call__(self, query_client, request):
        data = request.form
        if data.get("client_assertion_type") != ASSERTION_TYPE or not data.get("client_assertion"):
            return None
        try:
            return self._authenticate(query_client, data)
        except InvalidClientError as error:
            # RFC 6749 §5.2: invalid_client; 401 as for a failed Basic authentication.
            error.status_code = 401
            raise

    def _authenticate(self, query_client, data):
        _, unverified = self.extract_assertion(data["client_assertion"])
        client_id = unverified.get("sub")
        if not isinstance(client_id, str) or not client_id:
            raise InvalidClientError(description="The assertion needs sub, the client_id.")
        if data.get("client_id") not in (None, client_id):
            # RFC 7521 §4.2: a client_id sent alongside must name the same client.
            raise InvalidClientError(description="client_id and the assertion's sub differ.")
        client = query_client(client_id)
        if client is None:
            raise InvalidClientError(description="The client does not exist on this server.")
        if not client.check_endpoint_auth_method(METHOD, "token"):
            # Before any key is looked at: a secret-based client has none to fetch.
            raise InvalidClientError(
                description="This client does not authenticate with private_key_jwt."
            )
        algorithms = client_keys.allowed_algorithms(client, client.token_endpoint_auth_signing_alg)
        try:
            token = client_keys.decode(client, data["client_assertion"], algorithms)
        except client_keys.KeysUnavailable as error:
            raise InvalidClientError(description=str(error)) from None
        except JoseError as error:
            logger.info("Client assertion of %s refused: %s", client_id, error.error)
            raise InvalidClientError(
                description="The assertion's signature does not verify with the client's keys."
            ) from None
        self.verify_claims(token.claims)
        if client.fapi2 and token.claims["aud"] != settings.ISSUER:
            # FAPI 2.0 §5.3.2.1: only the issuer identifier, as a string, is the audience (an
            # endpoint URL as audience is what the audience injection attack exploits).
            raise InvalidClientError(description="aud must be the issuer identifier, a string.")
        return client

    def verify_claims(self, claims) -> None:
        exp = claims.get("exp")
        if isinstance(exp, int | float) and exp > time.time() + (
            settings.CLIENT_ASSERTION_MAX_LIFETIME + self.leeway
        ):
            # RFC 7523 §3 item 4 lets the server bound how far ahead exp may be: an assertion
            # that lives long is one that can be stolen and kept.
            raise InvalidClientError(
                description=f"exp is more than {settings.CLIENT_ASSERTION_MAX_LIFETIME} s ahead."
            )
        try:
            super().verify_claims(claims)  # iss, sub, aud, exp, nbf, iat; iss == sub; jti
        except client_keys.ReplayCheckUnavailable:
            raise TemporarilyUnavailableError(
                "Client assertions cannot be checked right now; try again shortly."
            ) from None

    def get_audiences(self) -> list[str]:
        return audiences()

    def validate_jti(self, claims, jti) -> bool:
        if not isinstance(jti, str) or not jti or len(jti) > 256:
            return False
        return client_keys.remember_assertion_id(claims["sub"], jti, float(claims["exp"]))
