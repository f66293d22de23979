// Creates the peer's table and seeds it through the provider's own models (Grant, RefreshToken,
// AccessToken, .save()): N refresh tokens rt-1 ... rt-N, each of its own grant (openid
// offline_access, so a refresh re-issues an ID token), and one access token for introspection.
// Prints JSON for bench/tokens.py: the clients' Basic credentials, the scope, the access token.
//   DATABASE_URL=postgres://... node seed.mjs <N>
import { SCHEMA, bufferingAdapter, createPool, flush } from './adapter.mjs';
import {
  CC_SCOPE, CLIENT, REFRESH_SCOPE, RESOURCE_SERVER, makeProvider,
} from './provider.mjs';

const count = Number(process.argv[2]);
const url = process.env.DATABASE_URL;
if (!Number.isInteger(count) || count < 1 || !url) {
  console.error('usage: DATABASE_URL=postgres://... node seed.mjs <N>');
  process.exit(2);
}
const ACCOUNT = 'bench-user';
const BATCH = 2000;

const pool = createPool(url, 2);
const buffer = [];
const provider = makeProvider(bufferingAdapter(buffer));
const client = await provider.Client.find(CLIENT.id);

async function grant() {
  const made = new provider.Grant({ accountId: ACCOUNT, clientId: CLIENT.id });
  made.addOIDCScope(REFRESH_SCOPE);
  return made.save();
}

await pool.query(SCHEMA);
const started = Date.now();
const authTime = Math.floor(started / 1000);
for (let i = 1; i <= count; i += 1) {
  const token = new provider.RefreshToken({
    jti: `rt-${i}`, // the name refresh.lua sends, as ours are seeded
    accountId: ACCOUNT,
    client,
    grantId: await grant(),
    gty: 'authorization_code',
    scope: REFRESH_SCOPE,
    authTime,
    amr: ['pwd'],
    rotations: 0,
    expiresWithSession: false,
  });
  await token.save();
  if (buffer.length >= BATCH) await flush(pool, buffer);
}
const accessToken = await new provider.AccessToken({
  accountId: ACCOUNT,
  client,
  grantId: await grant(),
  gty: 'authorization_code refresh_token',
  scope: REFRESH_SCOPE,
  expiresWithSession: false,
}).save();
await flush(pool, buffer);
await pool.query('VACUUM ANALYZE oidc_payloads');
await pool.query('CHECKPOINT');
await pool.end();

const basic = ({ id, secret }) => Buffer.from(`${id}:${secret}`).toString('base64');
process.stdout.write(`${JSON.stringify({
  client_id: CLIENT.id,
  client_basic: basic(CLIENT),
  resource_basic: basic(RESOURCE_SERVER),
  account: ACCOUNT,
  cc_scope: CC_SCOPE,
  refresh_scope: REFRESH_SCOPE,
  tokens: count,
  access_token: accessToken,
  seconds: (Date.now() - started) / 1000,
})}\n`);
