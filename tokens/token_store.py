"""The hot path's statements, and nothing else: find a refresh token (with its person and
whether its session is alive), rotate it (compare-and-set) and insert its successor (one
statement), insert the first token of a family, and check an access token's client, deny-list
entry, session and person. The token endpoint and introspection run
them on every request; tokens/refresh_tokens.py and tokens/access_tokens.py hold the rules.

On PostgreSQL the statements are fixed SQL written once from the models' own table and column
names. How they are prepared is one setting, ``server_side_binding`` in the database OPTIONS:

* off (the default): hand-prepared. Django's cursors bind parameters on the client, which rules
  out prepared statements, so these statements go through psycopg's own cursor with
  ``prepare=True`` (planned once per pooled connection), inside Django's connection,
  transaction and error translation. PostgreSQL spent four times longer planning them than
  running them (0.34 ms against 0.09 ms a query, measured with pgbench).
* on: Django binds every query on the server and psycopg prepares any statement a connection
  has run ``prepare_threshold`` times (authserver/env.py sets 5); these statements then run
  through Django's ordinary cursor like every other query.

Parameters carry casts so a statement keeps one type signature whatever the values (None
included). On SQLite (the quick start) the same operations are ordinary ORM queries.
"""

from __future__ import annotations

import functools
from contextlib import contextmanager
from datetime import datetime

import psycopg
from django.db import connection, transaction
from django.db.models import (
    BooleanField,
    CharField,
    Exists,
    ExpressionWrapper,
    JSONField,
    OuterRef,
    Q,
    TextField,
)

from accounts.models import User, UserSession
from tokens.models import Client, RefreshToken, RevokedAccessToken

# The columns find() reads: everything the refresh grant and the rules need, nothing more.
FIND_COLUMNS = (
    "id", "family", "client_id", "user_id", "sid", "scope", "auth_time", "acr", "amr", "expires",
    "family_expires", "rotated_at", "revoked_at", "dpop_jkt",
)  # fmt: skip


# What find() reads of the person: whether they are active, and what an ID token re-issued on
# refresh says about them (tokens/oauth/oidc.py), so that costs no query of its own.
_PERSON = {"is_active", "username", "first_name", "last_name", "email", "email_verified"}
# In the model's field order, which Model.from_db expects.
PERSON_COLUMNS = tuple(f.attname for f in User._meta.concrete_fields if f.attname in _PERSON)


def hand_prepared() -> bool:
    """True when these statements are prepared here rather than by Django and psycopg."""
    return not connection.settings_dict["OPTIONS"].get("server_side_binding", False)


@contextmanager
def _cursor(sql: str, params: list):
    if hand_prepared():
        connection.ensure_connection()
        with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
            cursor.execute(sql, params, prepare=True)
            yield cursor
    else:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            yield cursor


def _q(name: str) -> str:
    return f'"{name}"'


_INSERT_FIELDS = [field for field in RefreshToken._meta.concrete_fields if not field.primary_key]
_JSON_FIELDS = [field for field in _INSERT_FIELDS if isinstance(field, JSONField)]
_INSERT_SQL = (
    f"INSERT INTO {_q(RefreshToken._meta.db_table)} "  # noqa: S608 - names from the model
    f"({', '.join(_q(field.column) for field in _INSERT_FIELDS)}) "
    f"VALUES ({', '.join(['%s'] * len(_INSERT_FIELDS))}) RETURNING {_q('id')}"
)  # VALUES take their types from the columns: no casts needed
_FIND_SQL = (  # the token, its person and whether its session (if any) is alive
    f"SELECT {', '.join(f'r.{_q(name)}' for name in FIND_COLUMNS)}, "  # noqa: S608
    f"{', '.join(f'u.{_q(name)}' for name in PERSON_COLUMNS)}, "
    f"(r.{_q('sid')} = '' OR EXISTS (SELECT 1 FROM {_q(UserSession._meta.db_table)} s "
    f"WHERE s.{_q('sid')} = r.{_q('sid')} AND s.{_q('revoked_at')} IS NULL "
    f"AND s.{_q('expire_date')} > %s::timestamptz)) "
    f"FROM {_q(RefreshToken._meta.db_table)} r JOIN {_q(User._meta.db_table)} u "
    f"ON u.{_q('id')} = r.{_q('user_id')} WHERE r.{_q('token_digest')} = %s::text"
)
_ROTATE_SQL = (  # compare-and-set: only an unused, unrevoked token is rotated; the answer
    # that delivered it (refresh retry window) is wiped in the same statement
    f"UPDATE {_q(RefreshToken._meta.db_table)} SET {_q('rotated_at')} = %s::timestamptz, "  # noqa: S608
    f"{_q('retry_response')} = NULL WHERE {_q('id')} = %s::bigint "
    f"AND {_q('rotated_at')} IS NULL AND {_q('revoked_at')} IS NULL"
)


def _cast(field) -> str:
    # text, not varchar(n): an explicit cast to varchar(n) would cut a long value silently,
    # where the assignment to the column refuses it (as the plain INSERT does).
    return "text" if isinstance(field, CharField | TextField) else field.db_type(connection)


@functools.cache
def _rotate_insert_sql() -> str:
    """The rotation and the successor's INSERT as one statement: the successor is written only
    if the compare-and-set rotated its parent (a SELECT from the UPDATE's rows). One statement
    is atomic on its own, so the refresh grant needs no transaction (BEGIN, COMMIT: two round
    trips fewer)."""
    values = ", ".join(f"%s::{_cast(field)}" for field in _INSERT_FIELDS)
    return (
        f"WITH rotated AS ({_ROTATE_SQL} RETURNING {_q('id')}) "  # noqa: S608 - names from the model
        f"INSERT INTO {_q(RefreshToken._meta.db_table)} "
        f"({', '.join(_q(field.column) for field in _INSERT_FIELDS)}) "
        f"SELECT {values} FROM rotated RETURNING {_q('id')}"
    )


_ACCESS_LIVE_SQL = (  # client active?, denied?, the live session's expiry?, person active?
    f"SELECT EXISTS (SELECT 1 FROM {_q(Client._meta.db_table)} "  # noqa: S608
    f"WHERE {_q('client_id')} = %s::text AND {_q('is_active')}), "
    f"EXISTS (SELECT 1 FROM {_q(RevokedAccessToken._meta.db_table)} "
    f"WHERE {_q('jti')} = %s::text), "
    f"(SELECT {_q('expire_date')} FROM {_q(UserSession._meta.db_table)} "
    f"WHERE {_q('sid')} = %s::text AND {_q('revoked_at')} IS NULL "
    f"AND {_q('expire_date')} > %s::timestamptz), "
    f"(%s::bigint IS NULL OR EXISTS (SELECT 1 FROM {_q(User._meta.db_table)} "
    f"WHERE {_q('id')} = %s::bigint AND {_q('is_active')}))"
)


def _postgresql() -> bool:
    return connection.vendor == "postgresql"


def _values(row: RefreshToken) -> list:
    # psycopg adapts these values as they are (aware datetimes, UUID, str, int, None), which is
    # all get_db_prep_save would do, at a tenth of its cost.
    return [
        field.get_db_prep_save(getattr(row, field.attname), connection)
        if field in _JSON_FIELDS  # a list would be adapted as an array, not as JSON
        else getattr(row, field.attname)
        for field in _INSERT_FIELDS
    ]


def insert(row: RefreshToken) -> RefreshToken:
    """Write a new refresh token row. On PostgreSQL one INSERT without save()'s machinery
    (signals, field hooks, SQL compiled anew)."""
    if not _postgresql():
        row.save(force_insert=True)
        return row
    with _cursor(_INSERT_SQL, _values(row)) as cursor:
        row.pk = cursor.fetchone()[0]
    row._state.adding = False
    return row


def rotate_and_insert(parent: int, now: datetime, row: RefreshToken) -> bool:
    """Mark the token ``parent`` used at ``now`` unless it already is (or is revoked), and
    only then write its successor ``row``: True for exactly one of any number of concurrent
    callers; nothing is written for the others. Atomic without a transaction around it."""
    if not _postgresql():
        with transaction.atomic():
            if not rotate(parent, now):
                return False
            insert(row)
            return True
    with _cursor(_rotate_insert_sql(), [now, parent, *_values(row)]) as cursor:
        found = cursor.fetchone()
    if found is None:
        return False
    row.pk = found[0]
    row._state.adding = False
    return True


def find(digest: str, now: datetime) -> tuple[RefreshToken, bool] | None:
    """The refresh token with this digest, its ``user`` holding PERSON_COLUMNS, and whether
    the browser session it is bound to (if any) is alive at ``now``; None if unknown."""
    if not _postgresql():
        return _find_orm(digest, now)
    with _cursor(_FIND_SQL, [now, digest]) as cursor:
        found = cursor.fetchone()
    if found is None:
        return None
    values, person, session_alive = (
        found[: len(FIND_COLUMNS)],
        found[len(FIND_COLUMNS) : -1],
        found[-1],
    )
    row = RefreshToken.from_db(connection.alias, list(FIND_COLUMNS), list(values))
    row.user = User.from_db(connection.alias, ["id", *PERSON_COLUMNS], [row.user_id, *person])
    return row, bool(session_alive)


def _find_orm(digest: str, now: datetime) -> tuple[RefreshToken, bool] | None:
    alive = UserSession.objects.filter(
        sid=OuterRef("sid"), revoked_at__isnull=True, expire_date__gt=now
    )
    row = (
        RefreshToken.objects.filter(token_digest=digest)
        .select_related("user")
        .only(
            *(name for name in FIND_COLUMNS if name != "id"),
            "user__id",
            *(f"user__{name}" for name in PERSON_COLUMNS),
        )
        .annotate(
            session_alive=ExpressionWrapper(Q(sid="") | Exists(alive), output_field=BooleanField())
        )
        .first()
    )
    return None if row is None else (row, bool(row.session_alive))


def rotate(pk: int, now: datetime) -> bool:
    """Mark the token used at ``now`` unless it already is (or is revoked): True for exactly
    one of any number of concurrent callers."""
    if not _postgresql():
        return (
            RefreshToken.objects.filter(
                pk=pk, rotated_at__isnull=True, revoked_at__isnull=True
            ).update(rotated_at=now, retry_response=None)
            == 1
        )
    with _cursor(_ROTATE_SQL, [now, pk]) as cursor:
        return cursor.rowcount == 1


def access_live(
    client_id: str, jti: str, sid: str, person: int | None, now: datetime
) -> tuple[bool, bool, datetime | None, bool]:
    """(client active, deny-listed, when the live session ``sid`` expires (None: no such live
    session, or no sid), person active or none) for one access token: the rows themselves."""
    if not _postgresql():
        return (
            Client.objects.filter(client_id=client_id, is_active=True).exists(),
            RevokedAccessToken.objects.filter(jti=jti).exists(),
            UserSession.objects.active(now)
            .filter(sid=sid)
            .values_list("expire_date", flat=True)
            .first()
            if sid
            else None,
            person is None or User.objects.filter(pk=person, is_active=True).exists(),
        )
    params = [client_id, jti, sid, now, person, person]
    with _cursor(_ACCESS_LIVE_SQL, params) as cursor:
        client_active, denied, session_expires, person_active = cursor.fetchone()
    return bool(client_active), bool(denied), session_expires, bool(person_active)
