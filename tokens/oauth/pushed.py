"""The pushed authorization request endpoint (RFC 9126 §2), on Authlib's client authentication
and authorization grant: a pushed request is checked exactly as /authorize checks one, then
kept by tokens/pushed_requests.py."""

from __future__ import annotations

from authlib.consts import default_json_headers
from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749.errors import InvalidRequestError
from django.http import QueryDict

from tokens import pushed_requests
from tokens.oauth import request_objects, required
from tokens.oauth.grants import KEY_METHODS, SECRET_METHODS
from tokens.oauth.oidc import read_oidc_parameters

# §2.1: "relied upon only for client authentication and ... not germane to the authorization
# request itself": never stored with it.
CLIENT_CREDENTIALS = ("client_secret", "client_assertion", "client_assertion_type")


class PushedRequestRequiredError(InvalidRequestError):
    """RFC 9126 §5/§6: this client (or every client) must push its authorization requests."""

    description = (
        "This client must send its authorization requests to the pushed authorization "
        "request endpoint (RFC 9126)."
    )


class PushedAuthorizationEndpoint:
    """POST /par: authenticate the client as at the token endpoint (§2), validate the
    authorization request as /authorize would (§2.1), answer 201 with a request_uri (§2.2) or
    an error as JSON (§2.3)."""

    ENDPOINT_NAME = "pushed_authorization"
    # §2: the token endpoint's client authentication, public clients by their client_id.
    CLIENT_AUTH_METHODS = [*SECRET_METHODS, "none", *KEY_METHODS]

    def __init__(self, server):
        self.server = server

    def create_endpoint_request(self, request):
        return self.server.create_oauth2_request(request)

    def __call__(self, request):
        try:
            return self.create_endpoint_response(request)
        except OAuth2Error as error:
            # §2.3: errors go back in this response, never to a redirect URI.
            error.redirect_uri = None
            error.state = None
            raise

    def create_endpoint_response(self, request):
        data = request.payload.data
        if problem := required.missing(data, ("client_id",)):
            raise problem  # §2.1: required here as in any authorization request
        client = self.server.authenticate_client(
            request, self.CLIENT_AUTH_METHODS, self.ENDPOINT_NAME
        )
        if data["client_id"] != client.client_id:
            raise InvalidRequestError("'client_id' is not the client that authenticated.")
        if "request_uri" in data:
            raise InvalidRequestError("'request_uri' must not be pushed (RFC 9126 §2.1).")
        if "request" in data:
            # §3: a request object (RFC 9101) pushed, checked as /authorize checks one; from
            # here on the request is what it says.
            request = self._with_parameters(request, request_objects.resolve(data, client))
            data = request.payload.data
        if problem := required.openid_redirect_uri_problem(data):
            raise InvalidRequestError(problem)
        # Authlib's checks of an authorization request, as at /authorize: response_type, the
        # redirect URI matched exactly against the registered ones (§2.4: no unregistered
        # redirect URIs, for any client), scope, PKCE, nonce.
        grant = self.server.get_authorization_grant(request)
        grant.validate_no_multiple_request_parameter(request)
        grant.validate_consent_request()
        read_oidc_parameters(data, None)  # prompt, max_age, id_token_hint
        parameters = {name: value for name, value in data.items() if name not in CLIENT_CREDENTIALS}
        request_uri, expires_in = pushed_requests.push(client, parameters)
        return 201, {"request_uri": request_uri, "expires_in": expires_in}, default_json_headers

    def _with_parameters(self, request, parameters: dict[str, str]):
        """Authlib's request for the same HTTP request, carrying ``parameters`` as its form."""
        django_request = request.django_request
        form = QueryDict(mutable=True)
        form.update(parameters)
        django_request.POST = form
        return self.server.create_oauth2_request(django_request)
