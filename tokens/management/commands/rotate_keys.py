from django.core.management.base import BaseCommand

from authserver.locks import advisory_lock
from tokens import keys


class Command(BaseCommand):
    help = "Run the signing-key life cycle now (what the hourly job does)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--now",
            action="store_true",
            help="Promote the next key at once (a compromised key). Caches may miss the new key "
            "for up to five minutes.",
        )

    def handle(self, *args, now: bool, **options):
        with advisory_lock("tokens.rotate_signing_keys") as acquired:
            if not acquired:
                self.stderr.write("A rotation is running; try again in a moment.")
                raise SystemExit(1)
            report = keys.rotate(force=now)
        for label, kids in (
            ("published", report.published),
            ("promoted", report.promoted),
            ("retired", report.retired),
            ("deleted", report.deleted),
        ):
            self.stdout.write(f"{label}: {', '.join(kids) or '-'}")
