from django.core.management.base import BaseCommand

from accounts import services
from authserver.locks import advisory_lock


class Command(BaseCommand):
    help = "Delete expired and long-ended browser sessions (what the Celery job does), in batches."

    def add_arguments(self, parser):
        parser.add_argument("--batch-size", type=int, default=1000)
        parser.add_argument(
            "--dry-run", action="store_true", help="Count what would go; delete nothing."
        )

    def handle(self, *args, batch_size: int, dry_run: bool, **options):
        if dry_run:
            count = services.purgeable_sessions().count()
            self.stdout.write(f"{count} session row(s) would be deleted.")
            return
        with advisory_lock("accounts.purge_sessions") as acquired:
            if not acquired:
                self.stderr.write("Another purge is running; try again later.")
                raise SystemExit(1)
            total = 0
            while True:
                result = services.purge_sessions(batch_size=batch_size, max_batches=20)
                total += result.deleted
                if not result.remaining:
                    break
        self.stdout.write(self.style.SUCCESS(f"Deleted {total} session row(s)."))
