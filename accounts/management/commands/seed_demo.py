from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from accounts.models import User

DEMO_USERNAME = "demo"
DEMO_EMAIL = "demo@example.com"
DEMO_PASSWORD = "demo-password"


class Command(BaseCommand):
    help = "Create the quick start's demo user (idempotent). Refuses to run when DEBUG is off."

    def handle(self, *args, **options):
        if not settings.DEBUG:
            raise CommandError(
                "seed_demo creates a user with a published password; it runs only with DEBUG on."
            )
        user = User.objects.find_for_login(DEMO_USERNAME)
        if user is None:
            user = User(
                username=DEMO_USERNAME, email=DEMO_EMAIL, first_name="Demo", last_name="User"
            )
            user.is_staff = user.is_superuser = True
        user.set_password(DEMO_PASSWORD)
        user.is_active = True
        user.save()
        self.stdout.write(
            f"\n  Demo user (an administrator too):  {DEMO_USERNAME} / {DEMO_PASSWORD}\n"
            f"  Sign in at {settings.ISSUER}/login/  ·  admin at {settings.ISSUER}/admin/\n"
        )
