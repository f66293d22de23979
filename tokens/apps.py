from django.apps import AppConfig

from authserver import health, janitor, request_signals


class TokensConfig(AppConfig):
    name = "tokens"
    verbose_name = "OAuth clients and tokens"

    def ready(self) -> None:
        # Imported here, not at the top: Django loads every app's models before ready(), and
        # these modules need them.
        from tokens import expiry, keys

        janitor.register(*expiry.KINDS)
        # Creates the first key on a fresh install; without one no token can be signed.
        health.register_check("signing_key", lambda: keys.signing_key(), critical=True)
        request_signals.drop_idle_receivers()
