import base64
from dataclasses import dataclass

import factory
from factory.django import DjangoModelFactory, Password

from accounts.models import User
from tokens.clients import create_client
from tokens.models import Client

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


REDIRECT = "https://app.example.com/callback"


class ClientFactory(DjangoModelFactory):
    """A registered client, made the way the server registers one (``create_client``: its
    validation, a server-made secret). The secret, shown once, is on ``client.issued_secret``
    (None for a public client). ``ClientFactory()`` is the confidential example app;
    ``ClientFactory(public=True)`` the example single-page app; any field can be given."""

    class Meta:
        model = Client

    name = "Example App"
    redirect_uris = factory.LazyFunction(lambda: [REDIRECT])
    grant_types = factory.LazyFunction(
        lambda: ["authorization_code", "refresh_token", "client_credentials"]
    )
    scopes = factory.LazyFunction(lambda: ["openid", "profile", "email", "offline_access"])
    is_public = False

    class Params:
        confidential = factory.Trait(is_public=False)
        public = factory.Trait(
            is_public=True,
            name="Example SPA",
            redirect_uris=factory.LazyFunction(lambda: ["http://127.0.0.1:8765/cb"]),
            grant_types=factory.LazyFunction(lambda: ["authorization_code", "refresh_token"]),
            scopes=factory.LazyFunction(lambda: ["openid", "profile"]),
        )

    @classmethod
    def _create(cls, model_class, *args, is_public: bool = False, **fields) -> Client:
        client, secret = create_client(public=is_public, **fields)
        client.issued_secret = secret
        return client


@dataclass
class Registered:
    """A client as the application holding it sees it: the record and its secret."""

    client: object
    secret: str | None

    @classmethod
    def of(cls, client) -> "Registered":
        """A client from ClientFactory, with the secret it was issued."""
        return cls(client, client.issued_secret)

    @property
    def client_id(self) -> str:
        return self.client.client_id

    def basic(self) -> dict:
        raw = f"{self.client_id}:{self.secret}".encode()
        return {"HTTP_AUTHORIZATION": "Basic " + base64.b64encode(raw).decode()}
