"""The rules about clients, codes, consents and refresh tokens. Views, grants, admin,
commands and jobs call these; nothing else writes those tables."""

from __future__ import annotations

import logging
import re
import secrets
from contextlib import contextmanager
from datetime import timedelta

import psycopg
from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.db.models import F, Q
from django.utils import timezone

from accounts.models import User, UserSession
from tokens import client_cache, revocation
from tokens.access_tokens import AccessToken
from tokens.models import (
    AuthorizationCode,
    Client,
    Consent,
    InitialAccessToken,
    RefreshToken,
    RevokedAccessToken,
    SessionClient,
    token_digest,
)

logger = logging.getLogger(__name__)

OFFLINE_ACCESS = "offline_access"


# --- clients ----------------------------------------------------------------------------------
def new_client_id() -> str:
    return secrets.token_urlsafe(18)


def create_client(
    *,
    name: str,
    redirect_uris: list[str] | None = None,
    public: bool = False,
    grant_types: list[str] | None = None,
    scopes: list[str] | None = None,
    **fields,
) -> tuple[Client, str | None]:
    """Register a client; return it and its secret (None for public clients), shown only now."""
    if grant_types is None:
        grant_types = ["authorization_code", "refresh_token"]
    client = Client(
        client_id=new_client_id(),
        name=name,
        client_type=Client.Type.PUBLIC if public else Client.Type.CONFIDENTIAL,
        token_endpoint_auth_method=fields.pop(
            "token_endpoint_auth_method",
            Client.AuthMethod.NONE if public else Client.AuthMethod.BASIC,
        ),
        redirect_uris=list(redirect_uris or []),
        grant_types=list(grant_types),
        allowed_scopes=list(
            scopes if scopes is not None else ["openid", "profile", "email", OFFLINE_ACCESS]
        ),
        **fields,
    )
    secret = client.set_new_secret()
    client.full_clean()
    client.save()
    return client, secret


def rotate_client_secret(client: Client) -> str:
    """A new secret for a confidential client; the old one stops working at once."""
    secret = client.set_new_secret()
    client.save(update_fields=["secret_digest", "updated"])
    return secret


_NO_CLIENT = "no-such-client"


def active_client(client_id: str | None) -> Client | None:
    """The active client with this id: from this process's memory (tokens/client_cache.py), else
    the shared cache, else the database. Every write to a client drops its copies everywhere
    (client_cache.invalidate, from the model), so a change takes effect on every host at once."""
    if not client_id or len(client_id) > 64 or "\x00" in client_id:
        return None  # PostgreSQL text cannot hold NUL; no client id has one
    local = client_cache.get(client_id)
    if local is not client_cache.UNKNOWN:
        return local
    seen = client_cache.generation()
    key = client_cache.shared_key(client_id)
    try:
        cached = cache.get(key)
    except Exception:
        cached = None
    if cached is not None:
        client = None if cached == _NO_CLIENT else cached
    else:
        client = Client.objects.filter(client_id=client_id, is_active=True).first()
        try:
            cache.set(key, client or _NO_CLIENT, client_cache.SHARED_SECONDS)
        except Exception:
            logger.warning("Could not cache client %s", client_id)
    client_cache.put(client_id, client, seen)
    return client


# --- dynamic registration ---------------------------------------------------------------------
def create_initial_access_token(*, note: str = "", days: int = 7, uses: int = 1) -> str:
    """A token that lets its holder register ``uses`` clients within ``days``; shown once."""
    value = secrets.token_urlsafe(32)
    InitialAccessToken.objects.create(
        token_digest=token_digest(value),
        note=note,
        expires=timezone.now() + timedelta(days=days),
        uses_left=uses,
    )
    return value


def use_initial_access_token(value: str):
    """Spend one use of an initial access token, atomically; None if unknown, expired or used up."""
    if not value or len(value) > 256:
        return None
    spent = InitialAccessToken.objects.live().filter(
        token_digest=token_digest(value), uses_left__gt=0
    )
    return "initial-access-token" if spent.update(uses_left=F("uses_left") - 1) else None


# --- consent ----------------------------------------------------------------------------------
def has_consent(user: User, client: Client, scopes: list[str]) -> bool:
    """True if the person need not be asked: a first-party client, or a remembered answer."""
    if client.consent == Client.Consent.SKIP:
        return True
    if client.consent == Client.Consent.ASK:
        return False
    consent = Consent.objects.live().filter(user=user, client=client).first()
    return consent is not None and consent.covers(scopes)


def remember_consent(user: User, client: Client, scopes: list[str]) -> None:
    if client.consent != Client.Consent.REMEMBER:
        return
    expires = timezone.now() + timedelta(days=settings.CONSENT_LIFETIME_DAYS)
    consent, created = Consent.objects.get_or_create(
        user=user, client=client, defaults={"scopes": sorted(set(scopes)), "expires": expires}
    )
    if not created:
        # An expired consent starts afresh; a live one grows to the union of what was granted.
        previous = consent.scopes if consent.expires > timezone.now() else []
        consent.scopes = sorted(set(previous) | set(scopes))
        consent.expires = expires
        consent.save(update_fields=["scopes", "expires"])


# --- authorization codes ----------------------------------------------------------------------
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
        created=now,
        expires=now + timedelta(seconds=settings.AUTHORIZATION_CODE_LIFETIME),
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


# --- refresh tokens ---------------------------------------------------------------------------
def store_refresh_token(
    value: str,
    *,
    client: Client,
    user: User,
    scope: str,
    sid: str,
    auth_time=None,
    access: AccessToken | None,
    parent: RefreshToken | None = None,
    code: AuthorizationCode | None = None,
) -> RefreshToken:
    """Keep the digest of a new refresh token: the first of a family, or the child of ``parent``.

    Tokens without ``offline_access`` are bound to the browser session that approved them and
    die with it (``sid``); the idle expiry never passes the family's absolute one.
    """
    now = timezone.now()
    if parent is not None:
        family, family_expires = parent.family, parent.family_expires
    else:
        family = None
        family_expires = now + timedelta(seconds=client.refresh_token_lifetime)
    bound_sid = "" if OFFLINE_ACCESS in scope.split() else sid
    row = RefreshToken(
        token_digest=token_digest(value),
        **({"family": family} if family else {}),
        parent=parent,
        authorization_code=code,
        client=client,
        user=user,
        sid=bound_sid,
        scope=scope,
        auth_time=auth_time,
        created=now,
        expires=min(now + timedelta(seconds=client.refresh_token_idle_lifetime), family_expires),
        family_expires=family_expires,
        access_jti=access.jti if access else "",
        access_expires=access.expires_at if access else None,
    )
    return _insert(row)


@contextmanager
def _hot_cursor(sql: str, params: list):
    """Run one of the hot path's statements as a server-side prepared statement.

    PostgreSQL spent four times longer planning these statements than running them (0.34 ms
    against 0.09 ms a query, measured with pgbench), on the core that also runs the server.
    Django's cursors bind parameters on the client, which rules out prepared statements, so
    these few fixed statements go through psycopg's own cursor, prepared once per pooled
    connection, inside Django's connection, transaction and error translation. Parameters are
    cast in the SQL so a statement keeps one type signature whatever the values (None included).
    """
    if connection.vendor != "postgresql":  # the quick start's SQLite
        with connection.cursor() as cursor:
            cursor.execute(re.sub(r"::[a-z]+\b", "", sql), params)  # casts are PostgreSQL's
            yield cursor
        return
    connection.ensure_connection()
    with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(sql, params, prepare=True)
        yield cursor


# The hot path's statements, written once from the models' own table and column names (PostgreSQL
# and SQLite both quote names with double quotes). Parameters carry casts: see _hot_cursor.
def _q(name: str) -> str:
    return f'"{name}"'


_INSERT_FIELDS = [field for field in RefreshToken._meta.concrete_fields if not field.primary_key]
_INSERT_SQL = (
    f"INSERT INTO {_q(RefreshToken._meta.db_table)} "  # noqa: S608 - names from the model
    f"({', '.join(_q(field.column) for field in _INSERT_FIELDS)}) "
    f"VALUES ({', '.join(['%s'] * len(_INSERT_FIELDS))}) RETURNING {_q('id')}"
)  # VALUES take their types from the columns: no casts needed
_FIND_COLUMNS = (
    "id", "family", "client_id", "user_id", "sid", "scope", "auth_time", "expires",
    "family_expires", "rotated_at", "revoked_at",
)  # fmt: skip
_FIND_SQL = (  # the token, its person and whether its session (if any) is alive
    f"SELECT {', '.join(f'r.{_q(name)}' for name in _FIND_COLUMNS)}, u.{_q('is_active')}, "  # noqa: S608
    f"(r.{_q('sid')} = '' OR EXISTS (SELECT 1 FROM {_q(UserSession._meta.db_table)} s "
    f"WHERE s.{_q('sid')} = r.{_q('sid')} AND s.{_q('revoked_at')} IS NULL "
    f"AND s.{_q('expire_date')} > %s::timestamptz)) "
    f"FROM {_q(RefreshToken._meta.db_table)} r JOIN {_q(User._meta.db_table)} u "
    f"ON u.{_q('id')} = r.{_q('user_id')} WHERE r.{_q('token_digest')} = %s::text"
)
_ROTATE_SQL = (  # compare-and-set: only an unused, unrevoked token is rotated
    f"UPDATE {_q(RefreshToken._meta.db_table)} SET {_q('rotated_at')} = %s::timestamptz "  # noqa: S608
    f"WHERE {_q('id')} = %s::bigint AND {_q('rotated_at')} IS NULL AND {_q('revoked_at')} IS NULL"
)
_ACCESS_LIVE_SQL = (  # denied?, session alive (or none)?, person active (or none)?
    f"SELECT EXISTS (SELECT 1 FROM {_q(RevokedAccessToken._meta.db_table)} "  # noqa: S608
    f"WHERE {_q('jti')} = %s::text), "
    f"(%s::text = '' OR EXISTS (SELECT 1 FROM {_q(UserSession._meta.db_table)} "
    f"WHERE {_q('sid')} = %s::text AND {_q('revoked_at')} IS NULL "
    f"AND {_q('expire_date')} > %s::timestamptz)), "
    f"(%s::bigint IS NULL OR EXISTS (SELECT 1 FROM {_q(User._meta.db_table)} "
    f"WHERE {_q('id')} = %s::bigint AND {_q('is_active')}))"
)


def _insert(row: RefreshToken) -> RefreshToken:
    """One INSERT without save()'s machinery (signals, field hooks, SQL compiled anew): this
    runs on every refresh and code exchange, and none of that applies to a token row."""
    if connection.vendor == "postgresql":
        # psycopg adapts these values as they are (aware datetimes, UUID, str, int, None), which
        # is all get_db_prep_save would do for PostgreSQL, at a tenth of its cost.
        values = [getattr(row, field.attname) for field in _INSERT_FIELDS]
    else:
        values = [
            field.get_db_prep_save(getattr(row, field.attname), connection)
            for field in _INSERT_FIELDS
        ]
    with _hot_cursor(_INSERT_SQL, values) as cursor:
        row.pk = cursor.fetchone()[0]
    row._state.adding = False
    return row


def _from_db(values: list) -> list:
    """The Python values of a raw row of _FIND_COLUMNS, as the ORM would give them. psycopg
    returns them so already; SQLite (the quick start) returns text for datetimes and UUIDs."""
    if connection.vendor == "postgresql":
        return values
    converted = []
    for name, value in zip(_FIND_COLUMNS, values, strict=True):
        field = RefreshToken._meta.get_field(name)
        column = field.get_col(RefreshToken._meta.db_table)
        for converter in connection.ops.get_db_converters(column) + field.get_db_converters(
            connection
        ):
            value = converter(value, column, connection)
        converted.append(value)
    return converted


def find_refresh_token(value: str, client: Client, *, request=None) -> RefreshToken | None:
    """The live refresh token ``value`` of ``client``, or None.

    A token that was already rotated (or revoked) is a replay: someone holds a copy. The whole
    family is revoked and the event recorded (RFC 9700 §4.14.2).
    """
    if not value or len(value) > 256:
        return None
    # One statement for the token, its person and its session (the ORM spent more building
    # three queries than PostgreSQL spends answering one).
    now = timezone.now()
    with _hot_cursor(_FIND_SQL, [now, token_digest(value)]) as cursor:
        found = cursor.fetchone()
    if found is None:
        return None
    *values, person_active, session_alive = found
    row = RefreshToken.from_db(connection.alias, list(_FIND_COLUMNS), _from_db(values))
    row.user = User.from_db(connection.alias, ["id", "is_active"], [row.user_id, person_active])
    if row.client_id != client.pk:
        return None
    if row.rotated_at is not None or row.revoked_at is not None:
        if row.rotated_at is not None:
            revocation.revoke_refresh_replay(row, client, request=request)
        return None
    if row.expires <= now or not person_active:
        return None
    if not session_alive:
        # Bound to a session that has ended: the cascade should have caught it; finish the job.
        revocation.revoke_family(
            row.family, reason=RefreshToken.Reason.SESSION_ENDED, request=request
        )
        return None
    return row


def rotate(row: RefreshToken) -> bool:
    """Mark ``row`` used, if nobody else has: one atomic compare-and-set.

    Of any number of concurrent refreshes with one token, exactly one gets True.
    """
    with _hot_cursor(_ROTATE_SQL, [timezone.now(), row.pk]) as cursor:
        return cursor.rowcount == 1


def live_refresh_tokens(now=None):
    now = now or timezone.now()
    return RefreshToken.objects.filter(
        Q(rotated_at__isnull=True) & Q(revoked_at__isnull=True), expires__gt=now
    )


def refresh_token_is_live(row: RefreshToken) -> bool:
    now = timezone.now()
    if row.rotated_at or row.revoked_at or row.expires <= now or not row.client.is_active:
        return False
    if not row.user.is_active:
        return False
    return not row.sid or UserSession.objects.active(now).filter(sid=row.sid).exists()


def access_token_is_live(claims: dict) -> bool:
    """Beyond signature and expiry (already checked): not deny-listed, client active, the person
    active, and the browser session it came from still alive. This is what makes revocation
    immediate for anyone who introspects. One prepared statement: the ORM took ten times longer
    to build it than PostgreSQL takes to answer it."""
    if active_client(claims["client_id"]) is None:
        return False
    subject, sid = claims.get("sub"), claims.get("sid") or ""
    person = None
    if subject != claims["client_id"]:
        if not str(subject).isdigit():
            return False
        person = int(subject)
    params = [claims["jti"], sid, sid, timezone.now(), person, person]
    with _hot_cursor(_ACCESS_LIVE_SQL, params) as cursor:
        denied, session_alive, person_active = cursor.fetchone()
    return not denied and bool(session_alive) and bool(person_active)
