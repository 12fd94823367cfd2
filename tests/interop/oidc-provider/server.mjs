// Test OpenID Provider for unigate's interop tests, built on the certified
// `oidc-provider` package. A Rust integration test starts it as a child
// process (`node server.mjs`), reads one `ISSUER http://127.0.0.1:<port>` line
// from stdout and then drives a browser-like login against it.
//
// Everything is configured through environment variables:
//
//   OP_CLIENT_ID                  client_id of the single registered client (required)
//   OP_CLIENT_SECRET              its secret, used with client_secret_basic (required)
//   OP_REDIRECT_URIS              comma-separated redirect_uris (required)
//   OP_POST_LOGOUT_REDIRECT_URIS  comma-separated post_logout_redirect_uris (optional)
//   OP_BACKCHANNEL_LOGOUT_URI     backchannel_logout_uri (optional)
//   OP_CLAIMS_IN_ID_TOKEN         "1": put the scope claims (email, name, groups...)
//                                 into the ID token too (conformIdTokenClaims: false).
//                                 Otherwise oidc-provider's default: with the code
//                                 flow they are only served by the UserInfo endpoint.
//   OP_ACCESS_TOKEN_TTL           access token lifetime in seconds (default 3600)
//   OP_ROTATE_REFRESH_TOKEN       "1": rotate the refresh token on every use,
//                                 "0": never; unset: oidc-provider's default (for a
//                                 confidential client: only once 70% of its TTL passed)
//
// Test-only endpoint, served on the same origin before oidc-provider sees the
// request:
//
//   POST /__test/groups?user=alice   body: JSON array of strings
//     replaces that user's `groups` claim for every later ID token, refresh
//     and UserInfo response. Answers 204.
//
// The process exits when its stdin reaches EOF, so a parent that dies (and so
// closes the pipe) does not leave the OP running. The parent must therefore
// give it a piped stdin and keep it open (not /dev/null).
//
// Browser flow (see check_flow.py): GET /auth?... -> 303 /interaction/<uid>
// -> 200 login form; POST /interaction/<uid> with prompt=login, login=<user>,
// password=<anything> -> 303 /auth/<uid> -> 303 <redirect_uri>?code&state&iss.
// Consent is granted automatically (see loadExistingGrant). Logout: GET
// /session/end?id_token_hint&post_logout_redirect_uri&state -> 200 form;
// POST /session/end/confirm with xsrf=<hidden value>&logout=yes -> 303
// <post_logout_redirect_uri>?state, after the back-channel logout POST.
//
// This is a test fixture only: in-memory storage, generated signing keys,
// devInteractions (the library's built-in login/consent pages that accept any
// password), plain HTTP on loopback.

import crypto from 'node:crypto';
import http from 'node:http';

import Provider from 'oidc-provider';

// ---------------------------------------------------------------------------
// Environment

function required(name) {
  const value = process.env[name];
  if (!value) {
    process.stderr.write(`server.mjs: environment variable ${name} is required\n`);
    process.exit(2);
  }
  return value;
}

function list(name) {
  return (process.env[name] || '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
}

const clientId = required('OP_CLIENT_ID');
const clientSecret = required('OP_CLIENT_SECRET');
const redirectUris = list('OP_REDIRECT_URIS');
if (redirectUris.length === 0) required('OP_REDIRECT_URIS');
const postLogoutRedirectUris = list('OP_POST_LOGOUT_REDIRECT_URIS');
const backchannelLogoutUri = process.env.OP_BACKCHANNEL_LOGOUT_URI || undefined;
const claimsInIdToken = process.env.OP_CLAIMS_IN_ID_TOKEN === '1';
const accessTokenTtl = Number.parseInt(process.env.OP_ACCESS_TOKEN_TTL || '3600', 10);
if (!Number.isSafeInteger(accessTokenTtl) || accessTokenTtl <= 0) {
  process.stderr.write('server.mjs: OP_ACCESS_TOKEN_TTL must be a positive integer\n');
  process.exit(2);
}
const rotateSetting = process.env.OP_ROTATE_REFRESH_TOKEN;

// ---------------------------------------------------------------------------
// Accounts. `groups` is mutable through POST /__test/groups; every claims()
// call reads the current value, so refreshed tokens and UserInfo see changes.

const accounts = new Map([
  ['alice', {
    sub: 'alice',
    email: 'alice@example.com',
    email_verified: true,
    name: 'Alice Adams',
    preferred_username: 'alice',
    groups: ['portal-users', 'staff'],
  }],
  ['bob', {
    sub: 'bob',
    email: 'bob@example.com',
    name: 'Bob Brown',
    preferred_username: 'bob',
    groups: ['staff'],
  }],
]);

// findAccount: returning undefined means "no such account". A login with an
// unknown name is turned into access_denied by the submit hook below.
async function findAccount(ctx, id) {
  const record = accounts.get(id);
  if (!record) return undefined;
  return {
    accountId: id,
    // oidc-provider filters this down to what the granted scopes / requested
    // claims allow for the given use ('id_token' or 'userinfo').
    async claims() {
      return { ...record, groups: [...record.groups] };
    },
  };
}

// ---------------------------------------------------------------------------
// Client metadata

const client = {
  client_id: clientId,
  client_secret: clientSecret,
  token_endpoint_auth_method: 'client_secret_basic',
  grant_types: ['authorization_code', 'refresh_token'],
  response_types: ['code'],
  redirect_uris: redirectUris,
  post_logout_redirect_uris: postLogoutRedirectUris,
  id_token_signed_response_alg: 'RS256',
  ...(backchannelLogoutUri ? {
    backchannel_logout_uri: backchannelLogoutUri,
    backchannel_logout_session_required: true,
  } : {}),
};

// ---------------------------------------------------------------------------
// Provider configuration

const scopes = ['openid', 'offline_access', 'email', 'profile', 'groups'];

function buildConfiguration() {
  const configuration = {
    clients: [client],
    findAccount,

    scopes,
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name', 'preferred_username'],
      groups: ['groups'],
    },

    // false: scope-derived claims are put into the ID token as well.
    // true (library default): with a code flow the ID token carries only sub
    // and protocol claims; the rest comes from UserInfo.
    conformIdTokenClaims: !claimsInIdToken,

    ttl: {
      AccessToken: accessTokenTtl,
    },

    // Every requester must use PKCE (the RP sends S256; plain is not offered).
    pkce: {
      required: () => true,
    },

    features: {
      devInteractions: { enabled: true }, // built-in login + consent pages
      rpInitiatedLogout: { enabled: true }, // end_session_endpoint
      backchannelLogout: { enabled: true },
      revocation: { enabled: true },
      introspection: { enabled: true },
    },

    // Refresh tokens: issue one at every authorization code exchange whenever
    // the client is allowed the refresh_token grant, without requiring the
    // offline_access scope (and thus prompt=consent). Such tokens expire with
    // the OP session (library default for non-offline_access grants), so an
    // RP-initiated logout also invalidates them.
    async issueRefreshToken(ctx, c) {
      return c.grantTypeAllowed('refresh_token');
    },

    // Skip the consent page: auto-grant every OIDC scope and claim this
    // client requests, so an authorization needs only the login form (and
    // none at all while the OP session lives).
    async loadExistingGrant(ctx) {
      const { oidc } = ctx;
      const grantId = oidc.result?.consent?.grantId
        || oidc.session.grantIdFor(oidc.client.clientId);

      let grant = grantId ? await oidc.provider.Grant.find(grantId) : undefined;
      if (!grant) {
        grant = new oidc.provider.Grant({
          clientId: oidc.client.clientId,
          accountId: oidc.session.accountId,
        });
      }
      grant.addOIDCScope([...oidc.requestParamOIDCScopes].join(' '));
      if (oidc.requestParamClaims.size) {
        grant.addOIDCClaims([...oidc.requestParamClaims]);
      }
      await grant.save();
      return grant;
    },

    // oidc-provider makes outgoing requests (here: the back-channel logout
    // POST) through an SSRF-protected dispatcher that refuses loopback and
    // private addresses. The test RP listens on loopback, so use plain fetch.
    fetch(url, options) {
      const plainOptions = { ...options };
      delete plainOptions.dispatcher;
      return globalThis.fetch(url, plainOptions);
    },

    // Random per-process cookie signing keys (cookies are signed).
    cookies: {
      keys: [crypto.randomBytes(32).toString('base64url')],
    },
  };

  if (rotateSetting === '1') configuration.rotateRefreshToken = true;
  if (rotateSetting === '0') configuration.rotateRefreshToken = false;

  return configuration;
}

// ---------------------------------------------------------------------------
// Test-only hooks handled before oidc-provider

function readBody(req, limit = 64 * 1024) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size > limit) {
        reject(new Error('body too large'));
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function plain(res, status, text) {
  res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8' });
  res.end(text ? `${text}\n` : undefined);
}

// POST /__test/groups?user=<id> with a JSON array body.
async function handleSetGroups(req, res, url) {
  if (req.method !== 'POST') return plain(res, 405, 'use POST');
  const record = accounts.get(url.searchParams.get('user') || '');
  if (!record) return plain(res, 404, 'unknown user');
  let groups;
  try {
    groups = JSON.parse(await readBody(req));
  } catch {
    return plain(res, 400, 'body must be JSON');
  }
  if (!Array.isArray(groups) || !groups.every((g) => typeof g === 'string')) {
    return plain(res, 400, 'body must be a JSON array of strings');
  }
  record.groups = groups;
  res.writeHead(204);
  return res.end();
}

// The devInteractions login form posts to /interaction/<uid> and the
// library's own handler accepts any login name. For a pending login prompt
// this hook finishes the interaction itself: a known name logs in (any
// password), an unknown one ends the authorization with access_denied
// (redirected to the RP) instead of a session for a non-existent account.
// Anything else (e.g. a consent submit) goes to oidc-provider unchanged:
// interactionDetails() only reads the cookie, not the request body.
async function handleInteractionSubmit(provider, callback, req, res) {
  let details;
  try {
    details = await provider.interactionDetails(req, res);
  } catch {
    details = undefined; // let oidc-provider render its own error
  }
  if (details?.prompt?.name !== 'login') {
    callback(req, res);
    return;
  }
  const body = new URLSearchParams(await readBody(req));
  const login = body.get('login') || '';
  if (accounts.has(login)) {
    await provider.interactionFinished(req, res, {
      login: { accountId: login },
    }, { mergeWithLastSubmission: false });
  } else {
    await provider.interactionFinished(req, res, {
      error: 'access_denied',
      error_description: 'unknown user or wrong password',
    }, { mergeWithLastSubmission: false });
  }
}

// ---------------------------------------------------------------------------
// Startup: bind first (port 0), then build the provider with the real issuer.

const server = http.createServer();

server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;
  const provider = new Provider(issuer, buildConfiguration());
  const callback = provider.callback();

  provider.on('backchannel.error', (ctx, err) => {
    process.stderr.write(`backchannel logout failed: ${err.message}\n`);
  });
  provider.on('server_error', (ctx, err) => {
    process.stderr.write(`server_error: ${err.stack || err}\n`);
  });

  server.on('request', (req, res) => {
    const url = new URL(req.url, issuer);
    let hook;
    if (url.pathname === '/__test/groups') {
      hook = handleSetGroups(req, res, url);
    } else if (req.method === 'POST' && /^\/interaction\/[^/]+$/.test(url.pathname)) {
      hook = handleInteractionSubmit(provider, callback, req, res);
    } else {
      callback(req, res);
      return;
    }
    hook.catch((err) => {
      process.stderr.write(`test hook failed: ${err.stack || err}\n`);
      if (!res.headersSent) plain(res, 400, err.message);
      else res.end();
    });
  });

  process.stdout.write(`ISSUER ${issuer}\n`);
});

// ---------------------------------------------------------------------------
// Exit when the parent goes away (stdin EOF) or on the usual signals.

function shutdown() {
  server.close();
  process.exit(0);
}
process.stdin.on('end', shutdown);
process.stdin.on('close', shutdown);
process.stdin.resume();
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
