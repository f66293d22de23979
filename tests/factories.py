import factory
from factory.django import DjangoModelFactory, Password

from accounts.models import User

PASSWORD = "correct horse battery staple"


class UserFactory(DjangoModelFactory):
    class Meta:
        model = User
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"person{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")
    first_name = "Ada"
    last_name = "Lovelace"
    password = Password(PASSWORD)

    class Params:
        staff = factory.Trait(is_staff=True, is_superuser=True)
        inactive = factory.Trait(is_active=False)
