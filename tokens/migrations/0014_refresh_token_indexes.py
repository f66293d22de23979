"""Refresh tokens: only the indexes a query needs, and a rotation that writes no index.

Every rotation INSERTs a row, and every INSERT writes every index of the table: it had 13.
Now 9 (pkey, digest, family, parent, client, user, expires, sid, the sealed-answer one) for a
rotation's successor, and the partial ones only for the rows they serve:

- token_digest: the unique constraint stays (same name); its varchar_pattern_ops twin for LIKE
  goes (unique=True made it; nothing searches a digest by prefix).
- sid: only non-empty ones (offline_access tokens have none; revocation asks for given sids),
  without the LIKE twin.
- authorization_code: only the first token of a family has one (revoke_code_tokens).
- revoked_at: only revoked rows (the janitor's "revoked a day ago").
- family_expires: none. expires <= family_expires always, so the janitor finds families past
  their absolute lifetime through the index on expires (tokens/expiry.py).
- The sealed retry answers: the partial index read ``retry_response IS NOT NULL``, so the
  rotation, which wipes the answer, changed a column an index reads and could never be a HOT
  update: it wrote a new entry in every index. The janitor now finds them by ``retry_sealed``,
  set by the INSERT and left alone by the rotation.

Safe on a big table, hence ``atomic = False``: the indexes are built and dropped CONCURRENTLY
(no lock that blocks reads or writes; each waits for the transactions running when it starts).
Adding the column takes an ACCESS EXCLUSIVE lock for a moment (no table rewrite: a constant
default is stored in the catalog), and flagging the answers already sealed updates only those
rows (found through the old index, dropped after). An answer sealed by a process of the old
release still running after this migration (a rolling deploy) is not flagged: it is wiped when
its token is used or revoked, not by the janitor; the UPDATE below, run again once the old
release is gone, flags it.
"""

import django.db.models.deletion
from django.db import migrations, models

TABLE = "tokens_refreshtoken"


def create(name: str, definition: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(forward, backward) SQL for one index built without blocking writes."""
    return (
        f'DROP INDEX CONCURRENTLY IF EXISTS "{name}"',  # an invalid one left by a failed build
        f'CREATE INDEX CONCURRENTLY "{name}" ON "{TABLE}" {definition}',
    ), (f'DROP INDEX CONCURRENTLY IF EXISTS "{name}"',)


def drop(name: str, definition: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(forward, backward) SQL for dropping an index without blocking writes."""
    forward, backward = create(name, definition)
    return backward, forward


STEPS = [
    # (forward statements, backward statements), run in this order (backward: reversed)
    (
        (f'ALTER TABLE "{TABLE}" ADD COLUMN "retry_sealed" boolean DEFAULT false NOT NULL',),
        (f'ALTER TABLE "{TABLE}" DROP COLUMN "retry_sealed"',),
    ),
    (
        (
            f'UPDATE "{TABLE}" SET "retry_sealed" = true'  # noqa: S608 - no input
            ' WHERE "retry_response" IS NOT NULL AND NOT "retry_sealed"',
        ),
        (),
    ),
    create("tokens_rt_retry_sealed_idx", '("created") WHERE "retry_sealed"'),
    drop("tokens_rt_retry_answer_idx", '("created") WHERE "retry_response" IS NOT NULL'),
    drop("tokens_refreshtoken_token_digest_c4859b40_like", '("token_digest" varchar_pattern_ops)'),
    create("tokens_rt_sid_idx", """("sid") WHERE NOT ("sid" = '')"""),
    drop("tokens_refreshtoken_sid_c74d622a", '("sid")'),
    drop("tokens_refreshtoken_sid_c74d622a_like", '("sid" varchar_pattern_ops)'),
    create(
        "tokens_rt_code_idx",
        '("authorization_code_id") WHERE "authorization_code_id" IS NOT NULL',
    ),
    drop("tokens_refreshtoken_authorization_code_id_bc01053d", '("authorization_code_id")'),
    create("tokens_rt_revoked_idx", '("revoked_at") WHERE "revoked_at" IS NOT NULL'),
    drop("tokens_refreshtoken_revoked_at_6128ced0", '("revoked_at")'),
    drop("tokens_refreshtoken_family_expires_a276d50d", '("family_expires")'),
]


class OnPostgreSQL(migrations.RunSQL):
    """The SQL above, for PostgreSQL only."""

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            super().database_forwards(app_label, schema_editor, from_state, to_state)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            super().database_backwards(app_label, schema_editor, from_state, to_state)


class Elsewhere(migrations.SeparateDatabaseAndState):
    """The state operations as Django runs them, on any other database (SQLite, the quick
    start: no table there is big)."""

    def __init__(self, operations):
        super().__init__(database_operations=operations, state_operations=[])

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor != "postgresql":
            super().database_forwards(app_label, schema_editor, from_state, to_state)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor != "postgresql":
            super().database_backwards(app_label, schema_editor, from_state, to_state)


def state() -> list:
    """The model's new state (a fresh list each time: operations are not shared)."""
    return [
        migrations.RemoveIndex(model_name="refreshtoken", name="tokens_rt_retry_answer_idx"),
        migrations.AddField(
            model_name="refreshtoken",
            name="retry_sealed",
            field=models.BooleanField(db_default=False, default=False, editable=False),
        ),
        migrations.AlterField(
            model_name="refreshtoken",
            name="authorization_code",
            field=models.ForeignKey(
                blank=True,
                db_constraint=False,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.DO_NOTHING,
                related_name="+",
                to="tokens.authorizationcode",
            ),
        ),
        migrations.AlterField(
            model_name="refreshtoken",
            name="family_expires",
            field=models.DateTimeField(help_text="Absolute expiry of the whole family."),
        ),
        migrations.AlterField(
            model_name="refreshtoken",
            name="revoked_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AlterField(
            model_name="refreshtoken",
            name="sid",
            field=models.CharField(
                blank=True,
                help_text="Bound browser session; empty for offline_access.",
                max_length=64,
            ),
        ),
        migrations.AlterField(
            model_name="refreshtoken",
            name="token_digest",
            field=models.CharField(max_length=64),
        ),
        migrations.AddIndex(
            model_name="refreshtoken",
            index=models.Index(
                condition=models.Q(("sid", ""), _negated=True),
                fields=["sid"],
                name="tokens_rt_sid_idx",
            ),
        ),
        migrations.AddIndex(
            model_name="refreshtoken",
            index=models.Index(
                condition=models.Q(("authorization_code__isnull", False)),
                fields=["authorization_code"],
                name="tokens_rt_code_idx",
            ),
        ),
        migrations.AddIndex(
            model_name="refreshtoken",
            index=models.Index(
                condition=models.Q(("revoked_at__isnull", False)),
                fields=["revoked_at"],
                name="tokens_rt_revoked_idx",
            ),
        ),
        migrations.AddIndex(
            model_name="refreshtoken",
            index=models.Index(
                condition=models.Q(("retry_sealed", True)),
                fields=["created"],
                name="tokens_rt_retry_sealed_idx",
            ),
        ),
        migrations.AddConstraint(
            model_name="refreshtoken",
            constraint=models.UniqueConstraint(
                fields=("token_digest",), name="tokens_refreshtoken_token_digest_key"
            ),
        ),
    ]


class Migration(migrations.Migration):
    atomic = False  # CREATE / DROP INDEX CONCURRENTLY cannot run in a transaction

    dependencies = [
        ("tokens", "0013_client_fapi2_profile"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[
                *(
                    OnPostgreSQL(
                        list(forward), reverse_sql=list(backward) or migrations.RunSQL.noop
                    )
                    for forward, backward in STEPS
                ),
                Elsewhere(state()),
            ],
            state_operations=state(),
        )
    ]
