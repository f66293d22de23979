// DPoP (RFC 9449) interop, the relying party played by openid-client v6 (panva's OpenID-certified
// RP library, whose DPoP is oauth4webapi's), unmodified: a public client registered with
// dpop_bound_access_tokens, code + PKCE with dpop_jkt (§10), tokens with a DPoP proof (§5),
// a refresh with the same key (its refresh token is bound), userinfo with Authorization: DPoP
// (§7). Spoken to by tests/rp/test_certified_rp.py in JSON lines, like openid_client_rp.mjs.
//
//   node openid_client_dpop.mjs   with ISSUER, INITIAL_ACCESS_TOKEN, REDIRECT_URI in the environment
import * as client from 'openid-client'

import { ask, env, expect, say } from './lines.mjs'

async function main () {
  const issuer = new URL(env('ISSUER'))
  const redirectUri = env('REDIRECT_URI')
  const config = await client.dynamicClientRegistration(
    issuer,
    {
      client_name: 'openid-client DPoP SPA',
      redirect_uris: [redirectUri],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
      dpop_bound_access_tokens: true
    },
    client.None(),
    { initialAccessToken: env('INITIAL_ACCESS_TOKEN'), execute: [client.allowInsecureRequests], timeout: 10 }
  )
  const server = config.serverMetadata()
  expect(server.dpop_signing_alg_values_supported.includes('ES256'), 'DPoP advertised (§5.1)')
  const registered = config.clientMetadata()
  expect(registered.dpop_bound_access_tokens === true, 'dpop_bound_access_tokens registered')

  const DPoP = client.getDPoPHandle(config, await client.randomDPoPKeyPair('ES256'))
  const jkt = await DPoP.calculateThumbprint()
  say('registered', { client_id: registered.client_id, jkt })

  const verifier = client.randomPKCECodeVerifier()
  const state = client.randomState()
  const nonce = client.randomNonce()
  const authorizationUrl = client.buildAuthorizationUrl(config, {
    redirect_uri: redirectUri,
    scope: 'openid profile email offline_access',
    prompt: 'consent',
    state,
    nonce,
    code_challenge: await client.calculatePKCECodeChallenge(verifier),
    code_challenge_method: 'S256',
    dpop_jkt: jkt
  })
  const { callback } = await ask('authorize', { url: authorizationUrl.href })

  const tokens = await client.authorizationCodeGrant(
    config,
    new URL(callback),
    { pkceCodeVerifier: verifier, expectedState: state, expectedNonce: nonce, idTokenExpected: true },
    undefined,
    { DPoP }
  )
  expect(tokens.token_type.toLowerCase() === 'dpop', `token_type DPoP, got ${tokens.token_type}`)
  const claims = tokens.claims()
  say('tokens', { token_type: tokens.token_type, access_token: tokens.access_token, sub: claims.sub })

  const refreshed = await client.refreshTokenGrant(config, tokens.refresh_token, undefined, { DPoP })
  expect(refreshed.token_type.toLowerCase() === 'dpop', 'refreshed token_type DPoP')
  expect(refreshed.refresh_token && refreshed.refresh_token !== tokens.refresh_token, 'rotated')

  const userinfo = await client.fetchUserInfo(config, refreshed.access_token, claims.sub, { DPoP })
  say('userinfo', { userinfo, access_token: refreshed.access_token })

  // Without a proof the refresh is refused: this client registered dpop_bound_access_tokens
  // (§5.2), and its refresh token is bound to the key besides (§5).
  let refusal
  try {
    await client.refreshTokenGrant(config, refreshed.refresh_token)
  } catch (error) {
    refusal = error
  }
  expect(refusal?.error === 'invalid_dpop_proof', `a refresh without a proof is invalid_dpop_proof, got ${refusal?.error ?? refusal}`)
  say('done', { refresh_without_the_key: refusal.error })
}

main().then(
  () => process.exit(0),
  (error) => {
    say('error', { message: String(error?.stack ?? error), error: error?.error, cause: String(error?.cause ?? '') })
    process.exit(1)
  }
)
