"""The device authorization endpoint (RFC 8628 §3.1-§3.2) on Authlib's: the client authenticated
as at the token endpoint (a public one by its client_id), the scope checked as for any grant,
the codes made and kept by tokens/device_codes.py."""

from __future__ import annotations

from authlib.consts import default_json_headers
from authlib.oauth2.rfc6749.errors import UnauthorizedClientError
from authlib.oauth2.rfc8628 import DeviceAuthorizationEndpoint as BaseDeviceAuthorizationEndpoint
from authlib.oauth2.rfc8628 import DeviceCodeGrant
from django.conf import settings
from django.urls import reverse

from tokens import device_codes
from tokens.oauth.grants import KEY_METHODS, SECRET_METHODS, check_requested_scope


class DeviceAuthorizationEndpoint(BaseDeviceAuthorizationEndpoint):
    CLIENT_AUTH_METHODS = [*SECRET_METHODS, "none", *KEY_METHODS]

    def create_endpoint_response(self, request):
        client = self.authenticate_client(request)  # §3.1: client_id alone for public clients
        if not client.check_grant_type(DeviceCodeGrant.GRANT_TYPE):
            raise UnauthorizedClientError("This client may not use the device code grant.")
        check_requested_scope(request, self.server.scopes_supported)  # as for every grant
        scope = client.get_allowed_scope(request.payload.scope)
        body = device_codes.start(client, scope)
        verification_uri = settings.ISSUER + reverse("tokens:device")
        body["verification_uri"] = verification_uri
        # §3.3.1: the code in the link, so a person who scans it types nothing (and still
        # confirms on the page: §5.4).
        body["verification_uri_complete"] = f"{verification_uri}?user_code={body['user_code']}"
        return 200, body, default_json_headers
