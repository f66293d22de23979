from django.contrib.auth.signals import user_logged_in
from django.dispatch import receiver

from accounts import services


@receiver(user_logged_in, dispatch_uid="accounts.start_session")
def start_session(sender, request, user, **kwargs) -> None:
    # Every login() (the sign-in page, and any future path) names and stamps its session.
    if request is not None and hasattr(request, "session"):
        services.start_session(request, user)
