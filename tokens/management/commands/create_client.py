import json

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from tokens import clients
from tokens.models import CLIENT_SIGNING_ALGORITHMS, TOKEN_EXCHANGE_GRANT, Client
from tokens.scopes import UnknownScopes, client_scopes

DEFAULT_GRANT_TYPES = ["authorization_code", "refresh_token"]
SIGNING_OPTIONS = (
    "token_endpoint_auth_signing_alg",
    "request_object_signing_alg",
    "userinfo_signed_response_alg",
)


class Command(BaseCommand):
    help = "Register an OAuth client and print its client_id and secret (shown only now) as JSON."

    def add_arguments(self, parser):
        parser.add_argument("--name", required=True)
        parser.add_argument("--redirect-uri", action="append", default=[], dest="redirect_uris")
        parser.add_argument(
            "--public", action="store_true", help="No secret; PKCE required (SPAs, mobile)."
        )
        parser.add_argument(
            "--grant-type", action="append", dest="grant_types", choices=Client.GrantType.values,
            help="Repeat for several (default: authorization_code and refresh_token).",
        )  # fmt: skip
        parser.add_argument(
            "--scope", action="append", dest="scopes",
            help="Allowed scope; repeat for several (default: what the grant types can use, "
            "see tokens/scopes.py).",
        )  # fmt: skip
        parser.add_argument(
            "--consent", choices=Client.Consent.values, default=Client.Consent.REMEMBER
        )
        parser.add_argument(
            "--require-par", action="store_true", dest="require_par",
            help="Authorization requests only through /par (RFC 9126 §6).",
        )  # fmt: skip
        parser.add_argument(
            "--dpop-bound-access-tokens", action="store_true",
            help="RFC 9449 §5.2: refuse this client's token requests without a DPoP proof.",
        )  # fmt: skip
        parser.add_argument(
            "--refresh-retry-window", type=int, metavar="SECONDS",
            help="Seconds a rotated refresh token may be retried for the same answer (0: off; "
            "default: the REFRESH_RETRY_WINDOW setting; never for public clients).",
        )  # fmt: skip
        parser.add_argument(
            "--exchange-audience", action="append", default=[], dest="exchange_audiences",
            help="Token exchange (RFC 8693): an audience or resource URI this client may get "
            "tokens for; repeat for several. Also needs --grant-type " + TOKEN_EXCHANGE_GRANT,
        )  # fmt: skip
        parser.add_argument(
            "--exchange-scope", action="append", default=[], dest="exchange_scopes",
            help="A scope an exchanged token may carry; repeat for several.",
        )  # fmt: skip
        parser.add_argument(
            "--auth-method",
            choices=["client_secret_basic", "client_secret_post", "private_key_jwt"],
        )
        parser.add_argument(
            "--jwks", type=json.loads, help="The client's public keys, a JWK Set as JSON."
        )
        parser.add_argument("--jwks-uri", help="Where the client publishes its public keys.")
        parser.add_argument(
            "--profile", choices=["fapi2"],
            help="fapi2: hold the client to the FAPI 2.0 Security Profile (needs "
            "--auth-method private_key_jwt and --jwks or --jwks-uri).",
        )  # fmt: skip
        parser.add_argument("--token-endpoint-auth-signing-alg", choices=CLIENT_SIGNING_ALGORITHMS)
        parser.add_argument(
            "--request-object-signing-alg", choices=[*CLIENT_SIGNING_ALGORITHMS, "none"]
        )
        parser.add_argument("--request-uri", action="append", default=[], dest="request_uris")
        parser.add_argument("--userinfo-signed-response-alg", choices=["RS256", "ES256"])
        parser.add_argument(
            "--no-id-token-on-refresh", action="store_false", dest="id_token_on_refresh",
            help="Refreshing an openid grant returns no new ID token (OIDC Core §12.2; on by "
            "default).",
        )  # fmt: skip

    def handle(
        self,
        *args,
        name,
        redirect_uris,
        public,
        grant_types,
        scopes,
        consent,
        auth_method,
        require_par=False,
        dpop_bound_access_tokens=False,
        refresh_retry_window=None,
        exchange_audiences=(),
        exchange_scopes=(),
        id_token_on_refresh=True,
        **options,
    ):
        extra = {"token_endpoint_auth_method": auth_method} if auth_method and not public else {}
        extra.update(
            refresh_retry_window=refresh_retry_window,
            token_exchange_audiences=list(exchange_audiences),
            token_exchange_scopes=list(exchange_scopes),
        )
        if require_par:
            extra["require_pushed_authorization_requests"] = True
        if options.get("profile") == "fapi2":
            extra["fapi2"] = True
        keys = {
            "jwks": options["jwks"] or {},
            "jwks_uri": options["jwks_uri"] or "",
            "request_uris": options["request_uris"],
            **{name: options[name] or "" for name in SIGNING_OPTIONS},
        }
        extra.update({name: value for name, value in keys.items() if value})
        grant_types = grant_types or DEFAULT_GRANT_TYPES
        try:
            # The same rule as dynamic registration and admin (tokens/scopes.py).
            scopes = client_scopes(grant_types, scopes)
        except UnknownScopes as error:
            raise CommandError(f"allowed_scopes: {error}") from None
        try:
            client, secret = clients.create_client(
                name=name,
                redirect_uris=redirect_uris,
                public=public,
                grant_types=grant_types,
                scopes=scopes,
                consent=consent,
                dpop_bound_access_tokens=dpop_bound_access_tokens,
                id_token_on_refresh=id_token_on_refresh,
                **extra,
            )
        except ValidationError as error:
            problems = "; ".join(
                f"{field}: {' '.join(messages)}" for field, messages in error.message_dict.items()
            )
            raise CommandError(problems) from None
        self.stdout.write(
            json.dumps(
                {
                    "client_id": client.client_id,
                    "client_secret": secret,
                    "client_type": client.client_type,
                    "token_endpoint_auth_method": client.token_endpoint_auth_method,
                    **({"jwks_uri": client.jwks_uri} if client.jwks_uri else {}),
                    "redirect_uris": client.redirect_uris,
                    "grant_types": client.grant_types,
                    "scope": " ".join(client.allowed_scopes),
                    "require_pushed_authorization_requests": (
                        client.require_pushed_authorization_requests
                    ),
                    "dpop_bound_access_tokens": client.dpop_bound_access_tokens,
                    "fapi2": client.fapi2,
                    "refresh_retry_window": client.refresh_retry_window,
                    "token_exchange_audiences": client.token_exchange_audiences,
                    "token_exchange_scopes": client.token_exchange_scopes,
                },
                indent=2,
            )
        )
