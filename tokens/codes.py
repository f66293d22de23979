"""Authorization codes (RFC 6749 §4.1): saving one, finding it for the exchange (row-locked,
single use, a replay revokes what it produced), marking it used.

Who writes ``tokens_authorizationcode``: this module (insert, ``used_at`` and the access token
it produced); the janitor deletes expired ones (tokens/expiry.py). ``tokens_sessionclient``
(which clients got tokens in which browser session, for back-channel logout): this module, at
the exchange; the janitor deletes the rows of ended sessions.
"""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from accounts.models import User
from tokens import revocation
from tokens.access_tokens import AccessToken
from tokens.models import AuthorizationCode, Client, SessionClient, token_digest


def save_authorization_code(
    code: str,
    *,
    client: Client,
    user: User,
    sid: str,
    auth_time,
    redirect_uri: str,
    scope: str,
    nonce: str = "",
    code_challenge: str = "",
    code_challenge_method: str = "",
    amr: list[str] | None = None,
    dpop_jkt: str = "",
    acr: str = "",
) -> AuthorizationCode:
    now = timezone.now()
    return AuthorizationCode.objects.create(
        code_digest=token_digest(code),
        client=client,
        user=user,
        sid=sid,
        redirect_uri=redirect_uri,
        scope=scope,
        nonce=nonce,
        code_challenge=code_challenge,
        code_challenge_method=code_challenge_method if code_challenge else "",
        auth_time=auth_time,
        amr=amr or [],
        dpop_jkt=dpop_jkt,
        acr=acr,
        created=now,
        expires=now + timedelta(seconds=client.code_lifetime),
    )


def find_code_for_exchange(code: str, client: Client, *, request=None) -> AuthorizationCode | None:
    """The unused, unexpired code issued to ``client``, row-locked until the transaction ends.

    Must run inside ``transaction.atomic()`` (the token view is): a second, concurrent exchange
    of the same code waits on the lock, then finds it used. A code presented after it was used
    is a replay: RFC 6749 §4.1.2 says to deny it and revoke what it produced.
    """
    if not code or len(code) > 256:
        return None
    row = (
        AuthorizationCode.objects.select_for_update()
        .select_related("user")
        .filter(code_digest=token_digest(code))
        .first()
    )
    if row is None or row.client_id != client.pk:
        return None
    if row.used_at is not None:
        revocation.revoke_code_tokens(row, request=request)
        return None
    if row.expires <= timezone.now():
        return None
    return row


def mark_code_used(row: AuthorizationCode, access: AccessToken | None) -> None:
    """The exchange succeeded: keep the code, used, and remember that this client now holds
    tokens from this browser session (it will be told when the session ends)."""
    row.used_at = timezone.now()
    if access is not None:
        row.access_jti, row.access_expires = access.jti, access.expires_at
    row.save(update_fields=["used_at", "access_jti", "access_expires"])
    if row.sid:
        SessionClient.objects.bulk_create(
            [SessionClient(sid=row.sid, client_id=row.client_id, user_id=row.user_id)],
            ignore_conflicts=True,
        )
