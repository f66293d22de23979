import json

from django.conf import settings
from django.core.management.base import BaseCommand
from django.urls import reverse

from tokens import clients


class Command(BaseCommand):
    help = "Issue a token that lets its holder register OAuth clients (RFC 7591). Printed once."

    def add_arguments(self, parser):
        parser.add_argument("--note", default="", help="Who it is for.")
        parser.add_argument("--days", type=int, default=7, choices=range(1, 366), metavar="1..365")
        parser.add_argument(
            "--uses", type=int, default=1, choices=range(1, 10_001), metavar="1..10000"
        )

    def handle(self, *args, note: str, days: int, uses: int, **options):
        token = clients.create_initial_access_token(note=note, days=days, uses=uses)
        self.stdout.write(
            json.dumps(
                {
                    "initial_access_token": token,
                    "registration_endpoint": settings.ISSUER + reverse("tokens:register"),
                    "expires_in_days": days,
                    "uses": uses,
                },
                indent=2,
            )
        )
