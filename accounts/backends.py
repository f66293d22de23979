from django.contrib.auth.backends import ModelBackend

from accounts.models import User


class UsernameOrEmailBackend(ModelBackend):
    """Sign in with a username or an email address, in any letter case."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if username is None:
            username = kwargs.get(User.USERNAME_FIELD)
        if not username or password is None:
            return None
        user = User.objects.find_for_login(username)
        if user is None:
            # Hash anyway, so an unknown name costs what a wrong password costs (Django #20760):
            # response time must not tell whether an account exists.
            User().set_password(password)
            return None
        if user.check_password(password) and self.user_can_authenticate(user):
            return user
        return None
