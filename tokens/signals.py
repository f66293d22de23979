"""Safety net: the client caches follow every save and delete of a client row, whatever
path made it. Revocation needs no signal: every path calls tokens/revocation.py directly."""

from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from tokens import cors, services
from tokens.models import Client


@receiver([post_save, post_delete], sender=Client, dispatch_uid="tokens.forget_cached_client")
def forget_cached_client(sender, instance, **kwargs) -> None:
    services.forget_clients([instance.client_id])
    cors.forget()
