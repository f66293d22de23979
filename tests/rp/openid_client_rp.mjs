// The relying party side of tests/rp/test_certified_rp.py, played by openid-client v6 (panva's
// OpenID-certified RP library), unmodified. It knows only the issuer URL and an RFC 7591 initial
// access token, and talks to the Python test in JSON lines: one object per line on stdout
// ({"step": ...}), and answers on stdin when it needs the browser (the test drives Chromium).
//
//   node openid_client_rp.mjs   with ISSUER, INITIAL_ACCESS_TOKEN, REDIRECT_URI,
//                               POST_LOGOUT_REDIRECT_URI, BACKCHANNEL_LOGOUT_URI in the environment
//
// Every check a certified RP makes is openid-client's own: issuer of the discovery document,
// state, iss in the authorization response (RFC 9207), PKCE, the ID token (signature against
// jwks_uri, iss, aud, exp, iat, nonce, azp), userinfo's sub against the ID token's. A failed check
// throws; the script then prints {"step": "error", ...} and exits 1, which fails the test.
import * as client from 'openid-client'

import { ask, env, expect, say } from './lines.mjs'

async function refused (promise) {
  try {
    await promise
  } catch (error) {
    return error
  }
  throw new Error('the server accepted what it had to refuse')
}

async function main () {
  const issuer = new URL(env('ISSUER'))
  const redirectUri = env('REDIRECT_URI')
  const postLogoutRedirectUri = env('POST_LOGOUT_REDIRECT_URI')

  // Discovery (OIDC Discovery 1.0 §4), then registration (RFC 7591 §3.1) WITHOUT `scope`, as the
  // library's users do. The issuer is http://127.0.0.1:PORT (the server runs with DEBUG off and
  // ALLOW_HTTP_ISSUER_ON_LOOPBACK): openid-client refuses plain http unless told, and
  // allowInsecureRequests is its documented switch for exactly this, a loopback test run.
  const config = await client.dynamicClientRegistration(
    issuer,
    {
      client_name: 'openid-client RP',
      redirect_uris: [redirectUri],
      post_logout_redirect_uris: [postLogoutRedirectUri],
      backchannel_logout_uri: env('BACKCHANNEL_LOGOUT_URI'),
      backchannel_logout_session_required: true,
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_post'
    },
    undefined, // ClientSecretPost with the issued client_secret: the library's default
    { initialAccessToken: env('INITIAL_ACCESS_TOKEN'), execute: [client.allowInsecureRequests], timeout: 10 }
  )
  const server = config.serverMetadata()
  const registered = config.clientMetadata()
  expect(server.issuer === issuer.href.replace(/\/$/, ''), 'issuer')
  expect(typeof registered.client_secret === 'string', 'a confidential client gets a secret')
  say('registered', {
    client_id: registered.client_id,
    client_secret: registered.client_secret,
    scope: registered.scope,
    token_endpoint_auth_method: registered.token_endpoint_auth_method
  })

  // Authorization code with PKCE (RFC 7636, S256), a nonce, and offline_access (OIDC Core §11),
  // which asks for consent (prompt=consent) as §11 requires.
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
    code_challenge_method: 'S256'
  })
  const { callback } = await ask('authorize', { url: authorizationUrl.href })

  const tokens = await client.authorizationCodeGrant(config, new URL(callback), {
    pkceCodeVerifier: verifier,
    expectedState: state,
    expectedNonce: nonce,
    idTokenExpected: true
  })
  const claims = tokens.claims()
  expect(tokens.token_type.toLowerCase() === 'bearer', 'token_type')
  expect(tokens.refresh_token, 'offline_access gave a refresh token')
  expect(tokens.scope.split(' ').includes('offline_access'), 'offline_access granted')
  say('tokens', { scope: tokens.scope, claims, expires_in: tokens.expires_in })

  // Refresh (RFC 6749 §6): a new refresh token each time (rotation), the ID token again.
  const refreshed = await client.refreshTokenGrant(config, tokens.refresh_token)
  expect(refreshed.refresh_token && refreshed.refresh_token !== tokens.refresh_token, 'rotated')
  expect(refreshed.access_token !== tokens.access_token, 'a new access token')
  const refreshedClaims = refreshed.claims()
  if (refreshedClaims) expect(refreshedClaims.sub === claims.sub, 'same sub after refresh')

  // UserInfo (OIDC Core §5.3): openid-client checks sub against the ID token's.
  const userinfo = await client.fetchUserInfo(config, refreshed.access_token, claims.sub)
  say('userinfo', { userinfo })

  // Introspection (RFC 7662) of the new access and refresh tokens, then revocation (RFC 7009).
  const access = await client.tokenIntrospection(config, refreshed.access_token)
  const refresh = await client.tokenIntrospection(config, refreshed.refresh_token)
  expect(access.active === true && access.sub === claims.sub && access.client_id === registered.client_id, 'access token active')
  expect(refresh.active === true, 'refresh token active')
  await client.tokenRevocation(config, refreshed.refresh_token, { token_type_hint: 'refresh_token' })
  const revoked = await client.tokenIntrospection(config, refreshed.refresh_token)
  expect(revoked.active === false, 'revoked refresh token inactive')
  const error = await refused(client.refreshTokenGrant(config, refreshed.refresh_token))
  expect(error.error === 'invalid_grant', `a revoked refresh token is invalid_grant, got ${error.error ?? error}`)
  say('introspected', { access, refresh, revoked, refresh_after_revocation: error.error })

  // RP-Initiated Logout 1.0 §2 with the ID token as hint; the state comes back (§3).
  const logoutState = client.randomState()
  const endSession = client.buildEndSessionUrl(config, {
    id_token_hint: tokens.id_token,
    post_logout_redirect_uri: postLogoutRedirectUri,
    state: logoutState
  })
  const { landed } = await ask('logout', { url: endSession.href })
  const back = new URL(landed)
  expect(`${back.origin}${back.pathname}` === postLogoutRedirectUri, 'back on the post-logout URI')
  expect(back.searchParams.get('state') === logoutState, 'logout state returned')

  // After logout the session's access token is dead for anyone who introspects.
  const after = await client.tokenIntrospection(config, refreshed.access_token)
  expect(after.active === false, 'access token inactive after logout')
  say('done', { after_logout: after })
}

main().then(
  () => process.exit(0),
  (error) => {
    say('error', { message: String(error?.stack ?? error), error: error?.error, cause: String(error?.cause ?? '') })
    process.exit(1)
  }
)
