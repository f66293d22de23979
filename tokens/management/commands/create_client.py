import json

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from tokens import clients
from tokens.models import Client
from tokens.scopes import UnknownScopes, client_scopes

DEFAULT_GRANT_TYPES = ["authorization_code", "refresh_token"]


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
        parser.add_argument("--auth-method", choices=["client_secret_basic", "client_secret_post"])
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
        id_token_on_refresh=True,
        **options,
    ):
        extra = {"token_endpoint_auth_method": auth_method} if auth_method and not public else {}
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
                    "redirect_uris": client.redirect_uris,
                    "grant_types": client.grant_types,
                    "scope": " ".join(client.allowed_scopes),
                },
                indent=2,
            )
        )
