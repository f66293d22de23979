from django.apps import AppConfig

from authserver import janitor


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Accounts and sessions"

    def ready(self) -> None:
        # Imported here, not at the top: Django loads every app's models before ready(), and
        # these modules need them.
        from accounts import expiry, signals  # noqa: F401 - signals connects its receivers

        janitor.register(*expiry.KINDS)
