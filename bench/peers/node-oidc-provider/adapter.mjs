// node-oidc-provider's storage in PostgreSQL: one table for every model, as the adapters in the
// library's example folder (example/adapters/knex.js, sequelize.js) keep them. The payload is
// JSONB; grant_id, user_code and uid are copied out of it for revokeByGrantId, findByUserCode
// and findByUid; consumed_at is set by consume() and read back as `consumed`.
import pg from 'pg';

export const SCHEMA = `
CREATE TABLE IF NOT EXISTS oidc_payloads (
  id text NOT NULL,
  type text NOT NULL,
  payload jsonb NOT NULL,
  grant_id text,
  user_code text,
  uid text,
  expires_at timestamptz,
  consumed_at timestamptz,
  PRIMARY KEY (id, type)
);
CREATE INDEX IF NOT EXISTS oidc_payloads_grant_id ON oidc_payloads (grant_id);
CREATE INDEX IF NOT EXISTS oidc_payloads_user_code ON oidc_payloads (user_code);
CREATE INDEX IF NOT EXISTS oidc_payloads_uid ON oidc_payloads (uid);
CREATE INDEX IF NOT EXISTS oidc_payloads_expires_at ON oidc_payloads (expires_at);
`;

const UPSERT = `
INSERT INTO oidc_payloads (id, type, payload, grant_id, user_code, uid, expires_at)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (id, type) DO UPDATE SET payload = excluded.payload, grant_id = excluded.grant_id,
  user_code = excluded.user_code, uid = excluded.uid, expires_at = excluded.expires_at`;

export function createPool(connectionString, max) {
  return new pg.Pool({ connectionString, ...(max ? { max } : {}) });
}

function expiresAt(expiresIn) {
  return expiresIn ? new Date(Date.now() + expiresIn * 1000) : null;
}

function row(id, type, payload, expiresIn) {
  return [id, type, payload, payload.grantId ?? null, payload.userCode ?? null,
    payload.uid ?? null, expiresAt(expiresIn)];
}

// The adapter class for `new Provider(issuer, { adapter })`: one instance per model name.
export function postgresAdapter(pool) {
  return class PostgresAdapter {
    constructor(name) {
      this.type = name;
    }

    async upsert(id, payload, expiresIn) {
      await pool.query(UPSERT, row(id, this.type, payload, expiresIn));
    }

    async findBy(column, value) {
      const { rows } = await pool.query(
        `SELECT payload, consumed_at FROM oidc_payloads WHERE ${column} = $1 AND type = $2 LIMIT 1`,
        [value, this.type],
      );
      if (rows.length === 0) return undefined;
      const [{ payload, consumed_at: consumedAt }] = rows;
      return consumedAt ? { ...payload, consumed: true } : payload;
    }

    find(id) {
      return this.findBy('id', id);
    }

    findByUserCode(userCode) {
      return this.findBy('user_code', userCode);
    }

    findByUid(uid) {
      return this.findBy('uid', uid);
    }

    async consume(id) {
      await pool.query(
        'UPDATE oidc_payloads SET consumed_at = now() WHERE id = $1 AND type = $2',
        [id, this.type],
      );
    }

    async destroy(id) {
      await pool.query('DELETE FROM oidc_payloads WHERE id = $1 AND type = $2', [id, this.type]);
    }

    async revokeByGrantId(grantId) {
      await pool.query(
        'DELETE FROM oidc_payloads WHERE grant_id = $1 AND type = $2',
        [grantId, this.type],
      );
    }
  };
}

// For the seeding script: the same rows, buffered and written in batches (one INSERT per
// `flush()`), so that 100,000 tokens made through the models take seconds, not minutes.
export function bufferingAdapter(buffer) {
  return class BufferingAdapter {
    constructor(name) {
      this.type = name;
    }

    async upsert(id, payload, expiresIn) {
      buffer.push(row(id, this.type, payload, expiresIn));
    }
  };
}

export async function flush(pool, buffer) {
  if (buffer.length === 0) return;
  const records = buffer.splice(0).map(([id, type, payload, grantId, userCode, uid, exp]) => ({
    id, type, payload, grant_id: grantId, user_code: userCode, uid, expires_at: exp,
  }));
  await pool.query(
    `INSERT INTO oidc_payloads (id, type, payload, grant_id, user_code, uid, expires_at)
     SELECT id, type, payload, grant_id, user_code, uid, expires_at
     FROM jsonb_to_recordset($1::jsonb) AS t(id text, type text, payload jsonb, grant_id text,
       user_code text, uid text, expires_at timestamptz)`,
    [JSON.stringify(records)],
  );
}
