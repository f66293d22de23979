from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from accounts.models import User
from tokens.models import Client, _secret_digest

DEMO_USERNAME = "demo"
DEMO_EMAIL = "demo@example.com"
DEMO_PASSWORD = "demo-password"
DEMO_REDIRECT = "http://127.0.0.1:8765/callback"
CONFIDENTIAL = ("demo-confidential", "demo-secret")
PUBLIC = "demo-public"


class Command(BaseCommand):
    help = "Create the quick start's demo user and clients (idempotent). Refuses to run when DEBUG is off."

    def handle(self, *args, **options):
        if not settings.DEBUG:
            raise CommandError(
                "seed_demo creates accounts with published passwords; it runs only with DEBUG on."
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
        scopes = list(settings.OAUTH_SCOPES)
        Client.objects.update_or_create(
            client_id=CONFIDENTIAL[0],
            defaults={
                "name": "Demo confidential client",
                "client_type": Client.Type.CONFIDENTIAL,
                "token_endpoint_auth_method": Client.AuthMethod.BASIC,
                # A published secret is acceptable only here, in DEBUG, for the walkthrough.
                "secret_digest": _secret_digest(CONFIDENTIAL[1], settings.SECRET_KEY),
                "redirect_uris": [DEMO_REDIRECT],
                "grant_types": ["authorization_code", "refresh_token", "client_credentials"],
                "allowed_scopes": scopes,
                "is_active": True,
            },
        )
        Client.objects.update_or_create(
            client_id=PUBLIC,
            defaults={
                "name": "Demo public client",
                "client_type": Client.Type.PUBLIC,
                "token_endpoint_auth_method": Client.AuthMethod.NONE,
                "secret_digest": "",
                "redirect_uris": [DEMO_REDIRECT],
                "grant_types": ["authorization_code", "refresh_token"],
                "allowed_scopes": scopes,
                "is_active": True,
            },
        )
        issuer = settings.ISSUER
        self.stdout.write(
            f"""
  Demo user (an administrator too):  {DEMO_USERNAME} / {DEMO_PASSWORD}
  Sign in at {issuer}/login/  ·  admin at {issuer}/admin/

  Demo clients:  {CONFIDENTIAL[0]} / {CONFIDENTIAL[1]} (confidential)  ·  {PUBLIC} (public, PKCE)
  Try it:
    curl -s -u {CONFIDENTIAL[0]}:{CONFIDENTIAL[1]} -d grant_type=client_credentials -d scope=profile {issuer}/token
    Open {issuer}/authorize?response_type=code&client_id={CONFIDENTIAL[0]}&redirect_uri={DEMO_REDIRECT}&scope=openid%20profile%20offline_access&state=xyz&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256
    sign in, allow, copy the code from the address bar ({DEMO_REDIRECT}?code=...), then:
    curl -s -u {CONFIDENTIAL[0]}:{CONFIDENTIAL[1]} -d grant_type=authorization_code -d redirect_uri={DEMO_REDIRECT} \\
         -d code_verifier=dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk -d code=CODE {issuer}/token
"""
        )
