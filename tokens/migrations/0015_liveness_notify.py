"""PostgreSQL announces every change that can end an access token (tokens/liveness.py).

Triggers on the four tables that decide whether an access token is live send
``NOTIFY authserver_liveness`` from the transaction that makes the change; PostgreSQL delivers it
to every listening process when that transaction commits, and folds repeats within one
transaction into one. Only changes that can end a token fire: a session ended, its expiry
brought forward, its sid changed or the row deleted; a person or client deactivated, renamed or
deleted; a token deny-listed; any TRUNCATE. Logins, session refreshes and the janitor's deletes
of expired deny-list entries do not. Nothing on SQLite (the quick start keeps no memory).
"""

from django.db import migrations

CHANNEL = "authserver_liveness"
FUNCTION = "authserver_liveness_changed"

# (table, name, WHEN condition for UPDATE or None for no UPDATE trigger, fire on INSERT)
TABLES = (
    (
        "accounts_usersession",
        "session",
        "OLD.revoked_at IS DISTINCT FROM NEW.revoked_at OR NEW.expire_date < OLD.expire_date "
        "OR OLD.sid IS DISTINCT FROM NEW.sid",
        False,
    ),
    (
        "accounts_user",
        "user",
        "OLD.is_active IS DISTINCT FROM NEW.is_active OR OLD.id IS DISTINCT FROM NEW.id",
        False,
    ),
    (
        "tokens_client",
        "client",
        "OLD.is_active IS DISTINCT FROM NEW.is_active "
        "OR OLD.client_id IS DISTINCT FROM NEW.client_id",
        False,
    ),
    ("tokens_revokedaccesstoken", "denied", "OLD.jti IS DISTINCT FROM NEW.jti", True),
)


def _statements():
    yield (
        f"CREATE OR REPLACE FUNCTION {FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$ "
        f"BEGIN PERFORM pg_notify('{CHANNEL}', ''); RETURN NULL; END $$"
    )
    for table, name, changed, on_insert in TABLES:
        prefix = f"authserver_liveness_{name}"
        yield (
            f"CREATE TRIGGER {prefix}_update AFTER UPDATE ON {table} FOR EACH ROW "
            f"WHEN ({changed}) EXECUTE FUNCTION {FUNCTION}()"
        )
        # The revocation is the insert of a deny-list entry; elsewhere the delete of a row
        # (deleting an expired deny-list entry makes nothing live that was not).
        event = "INSERT" if on_insert else "DELETE"
        yield (
            f"CREATE TRIGGER {prefix}_{event.lower()} AFTER {event} ON {table} FOR EACH ROW "
            f"EXECUTE FUNCTION {FUNCTION}()"
        )
        yield (
            f"CREATE TRIGGER {prefix}_truncate AFTER TRUNCATE ON {table} FOR EACH STATEMENT "
            f"EXECUTE FUNCTION {FUNCTION}()"
        )


def _drop_statements():
    for table, name, _changed, on_insert in TABLES:
        prefix = f"authserver_liveness_{name}"
        event = "insert" if on_insert else "delete"
        for suffix in ("update", event, "truncate"):
            yield f"DROP TRIGGER IF EXISTS {prefix}_{suffix} ON {table}"
    yield f"DROP FUNCTION IF EXISTS {FUNCTION}()"


def create_triggers(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for statement in _statements():
        schema_editor.execute(statement)


def drop_triggers(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for statement in _drop_statements():
        schema_editor.execute(statement)


class Migration(migrations.Migration):
    dependencies = [
        ("tokens", "0014_refresh_token_indexes"),
        ("accounts", "0006_token_exchange_events"),
    ]

    operations = [migrations.RunPython(create_triggers, drop_triggers)]
