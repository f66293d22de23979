"""How the tokens app hears that sessions and people have gone."""

from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from accounts.services import sessions_ended, user_deactivated
from tokens import cors, logout, revocation, services
from tokens.models import Client, RefreshToken


@receiver(sessions_ended, dispatch_uid="tokens.revoke_for_sessions")
def revoke_for_sessions(sender, sids, reason, **kwargs) -> None:
    revocation.revoke_for_sessions(sids)
    logout.schedule(sids)


@receiver(user_deactivated, dispatch_uid="tokens.revoke_for_user")
def revoke_for_user(sender, user, actor, actor_user=None, **kwargs) -> None:
    revocation.revoke_refresh_tokens(
        RefreshToken.objects.filter(user=user),
        reason=RefreshToken.Reason.USER,
        actor=actor,
        actor_user=actor_user,
    )


@receiver([post_save, post_delete], sender=Client, dispatch_uid="tokens.forget_cached_client")
def forget_cached_client(sender, instance, **kwargs) -> None:
    services.forget_clients([instance.client_id])
    cors.forget()
