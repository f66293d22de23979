// The peer's configuration, shared by server.mjs and seed.mjs: node-oidc-provider as the bench
// measures it (bench/README.md, "The peer"). Everything not set here is the library's default:
// opaque access tokens, refresh tokens and client credentials tokens, stored through the adapter.
import { generateKeyPairSync, randomUUID } from 'node:crypto';

import Provider from 'oidc-provider';

export const ISSUER = process.env.ISSUER || 'https://auth.bench.test';
export const CLIENT = { id: 'bench-client', secret: 'bench-client-secret-0123456789-abcdefghij' };
export const RESOURCE_SERVER = {
  id: 'bench-resource-server',
  secret: 'bench-resource-secret-0123456789-abcdefghij',
};
export const CC_SCOPE = 'api:read'; // a scope of no resource server (no resource indicator)
export const REFRESH_SCOPE = 'openid offline_access';
export const REDIRECT_URI = 'https://client.bench.test/callback';
const DAY = 24 * 60 * 60;

function signingKeys() {
  // RS256, RSA-2048: ID tokens are signed with it (the library's default alg for them).
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = privateKey.export({ format: 'jwk' });
  return { keys: [{ ...jwk, kid: randomUUID(), alg: 'RS256', use: 'sig' }] };
}

export function makeProvider(adapter) {
  return new Provider(ISSUER, {
    adapter,
    clients: [
      {
        client_id: CLIENT.id,
        client_secret: CLIENT.secret,
        token_endpoint_auth_method: 'client_secret_basic',
        grant_types: ['authorization_code', 'refresh_token', 'client_credentials'],
        response_types: ['code'],
        redirect_uris: [REDIRECT_URI],
        scope: `${REFRESH_SCOPE} ${CC_SCOPE}`,
      },
      {
        client_id: RESOURCE_SERVER.id,
        client_secret: RESOURCE_SERVER.secret,
        token_endpoint_auth_method: 'client_secret_basic',
        grant_types: ['client_credentials'],
        response_types: [],
        redirect_uris: [],
        scope: CC_SCOPE,
      },
    ],
    scopes: ['openid', 'offline_access', CC_SCOPE],
    features: {
      clientCredentials: { enabled: true },
      // A confidential resource server may introspect any token (the default policy says so
      // too, with a warning asking for a policy of one's own).
      introspection: { enabled: true, allowedPolicy: () => true },
      devInteractions: { enabled: false },
    },
    rotateRefreshToken: true,
    // Ours: access tokens of an hour, refresh tokens idle for 7 days within a 30-day family.
    ttl: {
      AccessToken: 3600,
      ClientCredentials: 3600,
      IdToken: 3600,
      RefreshToken: 7 * DAY,
      Grant: 30 * DAY,
      Interaction: 3600,
      Session: DAY,
    },
    // The bench's one person, from memory: node-oidc-provider has no account store of its own.
    findAccount: (ctx, accountId) => ({ accountId, claims: () => ({ sub: accountId }) }),
    interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
    cookies: { keys: ['bench-only-cookie-key-0123456789-abcdefghijklmnop'] },
    jwks: signingKeys(),
    renderError: (ctx, out) => {
      ctx.type = 'json';
      ctx.body = out;
    },
  });
}
