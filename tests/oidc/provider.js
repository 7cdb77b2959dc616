// A REAL OpenID Provider (npm oidc-provider 9) for authgate's integration tests and the local
// demo stack. Started by tests/suite/support/oidc.rs and scripts/run-local.sh:
//
//   PORT=0 CLIENTS='[{"client_id":"authgate","client_secret":"s3cret",
//                     "redirect_uris":["http://127.0.0.1:8080/authgate/callback"],
//                     "post_logout_redirect_uris":["http://127.0.0.1:8080/"],
//                     "backchannel_logout_uri":"http://127.0.0.1:8080/authgate/backchannel-logout"}]' \
//     node tests/oidc/provider.js
//
// Environment:
//   PORT          port on 127.0.0.1 (0 = any free port). Prints `READY {"issuer":...}` when listening.
//   HOST          bind address (default 127.0.0.1)
//   ISSUER        issuer override (default http://127.0.0.1:PORT). A path (…/dex) is served too.
//   CLIENTS       JSON array of clients: client_id, client_secret, redirect_uris,
//                 post_logout_redirect_uris, backchannel_logout_uri (optional); any other
//                 oidc-provider client metadata passes through (e.g. token_endpoint_auth_method).
//   ID_TOKEN_TTL  seconds (default 3600); also the access token TTL.
//   SESSION_TTL   seconds of the OP's login session (default 86400).
//   REFRESH_TOKEN_TTL seconds (default 86400).
//   TOKEN_ENDPOINT_AUTH_METHOD  default for every client: client_secret_basic (default) or
//                 client_secret_post (oidc-provider allows exactly one method per client).
//   USERINFO_ONLY_CLAIMS=1  ID tokens carry only sub (+ sid, nonce…); email, name and groups
//                 come from the userinfo endpoint (oidc-provider's spec-conform default).
//   NO_REFRESH_TOKENS=1  never issue a refresh token (a provider or client configured so).
//   ROTATE_REFRESH_TOKENS=1  every refresh returns a new refresh token and consumes the old one,
//                 as Dex does by default; a consumed one used again revokes the whole grant.
//   EXTRA_USERS   JSON array of more accounts, for hostile claims: {"sub", "login", "password",
//                 "claims": {...}}; `claims` replaces the released claims of that name (email,
//                 email_verified, name, groups), and a claim set to null is not released at all.
//
// Users: see USERS below. Login is a real form (ids login, password, submit); consent is granted
// automatically. Test control endpoints (loopback clients only): GET /test/health,
// POST /test/rotate-keys, POST /test/end-session?sub=<sub or email>,
// POST /test/logout-token?sub=<sub>&sid=<sid> (a signed logout token, returned, not sent),
// POST /test/remove-account?sub=<sub or email> (the account is gone: its grants refuse to refresh),
// POST /test/set-groups?sub=<sub or email>&groups=a,b (what the account's groups claim says),
// POST /test/token-errors?status=500&error=invalid_request (the token endpoint answers that,
// as Dex does when its storage or a connector fails; status=0 ends it).
// Logs go to stderr; stdout carries only the READY line.

import http from 'node:http';
import crypto from 'node:crypto';

import Provider from 'oidc-provider';

import { Adapter, destroySession, sessionsOf } from './store.js';

const log = (...args) => console.error(new Date().toISOString(), '[oidc]', ...args);

// ---- users ------------------------------------------------------------------------------------

const USERS = [
  { sub: 'user-alice', email: 'alice@example.com', password: 'alice-password', name: 'Alice', groups: ['kubeflow-users', 'team-a'] },
  { sub: 'user-bob', email: 'bob@example.com', password: 'bob-password', name: 'Bob', groups: ['kubeflow-users'] },
  { sub: 'user-nogroups', email: 'nogroups@example.com', password: 'nogroups-password', name: 'No Groups', groups: [] },
  { sub: 'user-mallory', email: 'mallory@evil.example', password: 'mallory-password', name: 'Mallory', groups: ['kubeflow-users'] },
];

function extraUsers() {
  let raw;
  try {
    raw = JSON.parse(process.env.EXTRA_USERS || '[]');
  } catch (err) {
    log(`EXTRA_USERS is not valid JSON: ${err.message}`);
    process.exit(2);
  }
  return raw.map((u) => ({ sub: u.sub, email: u.login, password: u.password, name: u.sub, groups: [], claims: u.claims ?? {} }));
}
USERS.push(...extraUsers());

const userBySub = (sub) => USERS.find((u) => u.sub === sub);
const userByEmail = (email) => USERS.find((u) => u.email.toLowerCase() === String(email).trim().toLowerCase());

function checkPassword(login, password) {
  const user = userByEmail(login);
  if (!user) return undefined;
  const a = Buffer.from(String(password));
  const b = Buffer.from(user.password);
  return a.length === b.length && crypto.timingSafeEqual(a, b) ? user : undefined;
}

// ---- configuration ----------------------------------------------------------------------------

function intEnv(name, fallback) {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0) {
    log(`${name} must be a non-negative integer, got ${JSON.stringify(raw)}`);
    process.exit(2);
  }
  return n;
}

const PORT = intEnv('PORT', 0);
const HOST = process.env.HOST || '127.0.0.1';
const ID_TOKEN_TTL = intEnv('ID_TOKEN_TTL', 3600);
const SESSION_TTL = intEnv('SESSION_TTL', 86400);
const REFRESH_TOKEN_TTL = intEnv('REFRESH_TOKEN_TTL', 86400);
const USERINFO_ONLY_CLAIMS = process.env.USERINFO_ONLY_CLAIMS === '1';
const NO_REFRESH_TOKENS = process.env.NO_REFRESH_TOKENS === '1';
const ROTATE_REFRESH_TOKENS = process.env.ROTATE_REFRESH_TOKENS === '1';

function parseClients() {
  let raw;
  try {
    raw = JSON.parse(process.env.CLIENTS || '[]');
  } catch (err) {
    log(`CLIENTS is not valid JSON: ${err.message}`);
    process.exit(2);
  }
  if (!Array.isArray(raw)) {
    log('CLIENTS must be a JSON array');
    process.exit(2);
  }
  return raw.map((c) => ({
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: process.env.TOKEN_ENDPOINT_AUTH_METHOD || 'client_secret_basic',
    post_logout_redirect_uris: [],
    // With a back-channel URI, put `sid` in ID and logout tokens so an RP can end one session.
    ...(c.backchannel_logout_uri ? { backchannel_logout_session_required: true } : {}),
    ...Object.fromEntries(Object.entries(c).filter(([, v]) => v !== null)),
  }));
}

const CLIENTS = parseClients();

// Cookie signing keys and the storage (store.js) outlive Provider instances, so sessions and
// interactions survive a key rotation.
const COOKIE_KEYS = [crypto.randomBytes(32).toString('base64url')];

let signingKey; // current private JWK (RS256)

function newSigningKey() {
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = privateKey.export({ format: 'jwk' });
  return { ...jwk, kid: `rs256-${crypto.randomBytes(6).toString('hex')}`, alg: 'RS256', use: 'sig' };
}

// ---- the provider -----------------------------------------------------------------------------

let issuer; // set once the port is known
let mountPath = ''; // path part of the issuer ("" or e.g. "/dex")
let provider;
let handler;

function buildProvider() {
  const p = new Provider(issuer, {
    adapter: Adapter,
    clients: CLIENTS,
    jwks: { keys: [signingKey] },
    cookies: { keys: COOKIE_KEYS },
    findAccount: async (_ctx, sub) => {
      const user = userBySub(sub);
      if (!user) return undefined;
      return {
        accountId: user.sub,
        claims: async () => {
          const claims = {
            sub: user.sub,
            email: user.email,
            email_verified: true,
            name: user.name,
            groups: user.groups,
            ...(user.claims ?? {}),
          };
          for (const [k, v] of Object.entries(claims)) if (v === null) delete claims[k];
          return claims;
        },
      };
    },
    // oidc-provider's outgoing fetch (back-channel logout) refuses special-use addresses such as
    // 127.0.0.1 (SSRF protection: "hostname resolves to a special-use IP address"); our RPs are
    // all on loopback, so drop its guarding dispatcher.
    fetch: (url, options) => {
      const { dispatcher: _ssrfGuard, ...rest } = options;
      return globalThis.fetch(url, rest);
    },
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name'],
      groups: ['groups'],
    },
    scopes: ['openid', 'offline_access', 'email', 'profile', 'groups'],
    // Dex-like: scope claims go into the ID token too, not only to userinfo.
    conformIdTokenClaims: USERINFO_ONLY_CLAIMS,
    pkce: { required: () => true }, // oidc-provider 9 only knows S256
    // oidc-provider's default: a refresh token for a grant with offline_access.
    ...(NO_REFRESH_TOKENS ? { issueRefreshToken: async () => false } : {}),
    // oidc-provider's default rotates only near the end of a refresh token's life.
    ...(ROTATE_REFRESH_TOKENS ? { rotateRefreshToken: () => true } : {}),
    ttl: {
      IdToken: ID_TOKEN_TTL,
      AccessToken: ID_TOKEN_TTL,
      AuthorizationCode: 60,
      Session: SESSION_TTL,
      Interaction: 600,
      Grant: Math.max(SESSION_TTL, REFRESH_TOKEN_TTL),
      RefreshToken: REFRESH_TOKEN_TTL,
    },
    interactions: {
      url: (_ctx, interaction) => `${mountPath}/interaction/${interaction.uid}`,
    },
    features: {
      devInteractions: { enabled: false },
      revocation: { enabled: true },
      introspection: { enabled: true },
      userinfo: { enabled: true },
      backchannelLogout: { enabled: true },
      rpInitiatedLogout: {
        // NO_RP_LOGOUT=1: no end_session_endpoint, like Dex (Kubeflow's default provider).
        enabled: process.env.NO_RP_LOGOUT !== '1',
        // No "do you want to sign out?" click: the page submits itself (logout=yes ends the
        // whole OP session). tests/suite/support/oidc.rs submits forms marked data-autosubmit the
        // same way.
        logoutSource: async (ctx, form) => {
          const withLogout = form.replace('</form>', '<input type="hidden" name="logout" value="yes"/></form>')
            .replace('<form ', '<form data-autosubmit ');
          ctx.body = page('Signing out', `<p>Signing out…</p>${withLogout}
            <noscript><button type="submit" form="op.logoutForm">Sign out</button></noscript>
            <script>document.forms[0].submit()</script>`);
        },
        postLogoutSuccessSource: async (ctx) => {
          ctx.body = page('Signed out', '<h1>Signed out</h1><p id="signed-out">You are signed out of the test provider.</p>');
        },
      },
    },
    renderError: async (ctx, out, error) => {
      log('error page:', out.error, out.error_description, error?.message ?? '');
      ctx.type = 'html';
      ctx.body = page('Error', `<h1>OIDC error</h1><p id="error">${esc(out.error)}: ${esc(out.error_description)}</p>`);
    },
  });
  p.proxy = true; // honour X-Forwarded-Proto/Host when the demo stack puts it behind Envoy
  for (const event of ['server_error', 'backchannel.error', 'grant.error', 'end_session.error']) {
    p.on(event, (_ctx, err) => log(event, err?.message ?? err));
  }
  p.on('backchannel.success', (_ctx, client, accountId, sid) => log('backchannel logout sent', client.clientId, accountId, sid));
  p.on('end_session.success', () => log('end_session success'));
  p.on('grant.success', (ctx) => log('token issued for', ctx.oidc.client?.clientId));
  return p;
}

// ---- HTML -------------------------------------------------------------------------------------

function esc(s) {
  return String(s ?? '').replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
}

function page(title, body) {
  return `<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>${esc(title)}</title><link rel="icon" href="data:,">
<style>body{font-family:sans-serif;max-width:26em;margin:3em auto}label,input,button{display:block;margin:.3em 0}
input{width:100%;padding:.3em}.error{color:#b00}.hint{color:#666;font-size:.85em}</style></head>
<body>${body}</body></html>`;
}

function loginPage(uid, clientId, { login = '', error } = {}) {
  return page('Sign in', `<h1>Sign in to the test provider</h1>
<p>for <code>${esc(clientId)}</code></p>
${error ? `<p class="error" id="error">${esc(error)}</p>` : ''}
<form id="login-form" method="post" action="${mountPath}/interaction/${esc(uid)}/login">
  <label for="login">Email</label><input id="login" name="login" type="email" autocomplete="username" value="${esc(login)}" autofocus>
  <label for="password">Password</label><input id="password" name="password" type="password" autocomplete="current-password">
  <button id="submit" type="submit">Sign in</button>
</form>
<p class="hint">Demo users: ${USERS.map((u) => `${esc(u.email)} / ${esc(u.password)}`).join(', ')}</p>`);
}

function send(res, status, type, body, headers = {}) {
  res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store', ...headers });
  res.end(body);
}
const sendJson = (res, status, obj) => send(res, status, 'application/json', `${JSON.stringify(obj)}\n`);
const sendHtml = (res, status, html) => send(res, status, 'text/html; charset=utf-8', html);

async function readForm(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > 64 * 1024) throw new Error('body too large');
    chunks.push(chunk);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

// ---- interactions (login form, automatic consent) ---------------------------------------------

// A grant for everything the client asked for: no consent page for our own clients.
async function grantAll(details, accountId) {
  const { params, prompt } = details;
  let grant;
  if (details.grantId) {
    grant = await provider.Grant.find(details.grantId);
    if (grant && grant.accountId !== accountId) grant = undefined; // another user's grant
  }
  grant ??= new provider.Grant({ accountId, clientId: params.client_id });
  if (params.scope) grant.addOIDCScope(params.scope);
  const missing = prompt.details ?? {};
  if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
  for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes ?? {})) {
    grant.addResourceScope(indicator, scopes.join(' '));
  }
  return grant.save();
}

async function interaction(req, res, uid, action) {
  let details;
  try {
    details = await provider.interactionDetails(req, res);
  } catch (err) {
    log('interaction not found:', err.message);
    return sendHtml(res, 400, page('Error', '<h1>Login expired</h1><p id="error">This login attempt is unknown or expired. Start again from the application.</p>'));
  }
  if (details.uid !== uid) {
    return sendHtml(res, 400, page('Error', '<h1>Login mismatch</h1><p id="error">interaction id mismatch</p>'));
  }
  const clientId = details.params.client_id;

  if (action === undefined && req.method === 'GET') {
    if (details.prompt.name === 'login') return sendHtml(res, 200, loginPage(uid, clientId));
    // consent (or anything else): granted without asking
    const grantId = await grantAll(details, details.session.accountId);
    log('auto-consent for', details.session.accountId, clientId);
    return provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
  }

  if (action === 'login' && req.method === 'POST') {
    const form = await readForm(req);
    const login = form.get('login') ?? '';
    const user = checkPassword(login, form.get('password') ?? '');
    if (!user) {
      log('login failed for', JSON.stringify(login));
      return sendHtml(res, 401, loginPage(uid, clientId, { login, error: 'Invalid email or password.' }));
    }
    log('login ok:', user.email);
    const grantId = await grantAll(details, user.sub);
    return provider.interactionFinished(req, res, {
      login: { accountId: user.sub },
      consent: { grantId },
    }, { mergeWithLastSubmission: false });
  }

  return sendJson(res, 405, { error: 'method_not_allowed' });
}

// ---- test control endpoints -------------------------------------------------------------------

async function logoutTokenFor(client, sub, sid) {
  const token = new provider.IdToken({ sub }, { client });
  token.mask = { sub: null };
  token.set('events', { 'http://schemas.openid.net/event/backchannel-logout': {} });
  token.set('jti', crypto.randomUUID());
  if (sid) token.set('sid', sid);
  return token.issue({ use: 'logout' });
}

async function backchannelLogout(client, sub, sid) {
  const logoutToken = await logoutTokenFor(client, sub, sid);
  const out = { client_id: client.clientId, uri: client.backchannelLogoutUri, sid: sid ?? null };
  try {
    const r = await fetch(client.backchannelLogoutUri, {
      method: 'POST',
      redirect: 'manual',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ logout_token: logoutToken }),
      signal: AbortSignal.timeout(5000),
    });
    out.status = r.status;
  } catch (err) {
    out.error = err.cause?.message ?? err.message;
  }
  log('test back-channel logout', JSON.stringify(out));
  return out;
}

async function testEndpoint(req, res, path, query) {
  if (path === '/test/health') {
    return sendJson(res, 200, { ok: true, issuer, kid: signingKey.kid });
  }
  if (req.method !== 'POST') return sendJson(res, 405, { error: 'use POST' });

  if (path === '/test/rotate-keys') {
    const previous = signingKey.kid;
    signingKey = newSigningKey();
    provider = buildProvider();
    handler = provider.callback();
    log('signing key rotated:', previous, '->', signingKey.kid);
    return sendJson(res, 200, { kid: signingKey.kid, previous_kid: previous });
  }

  if (path === '/test/logout-token') {
    // A signed logout token for the first back-channel client, returned instead of sent: for
    // replaying it.
    const client = CLIENTS.find((c) => c.backchannel_logout_uri);
    if (!client) return sendJson(res, 404, { error: 'no client with a back-channel URI' });
    const model = await provider.Client.find(client.client_id);
    const token = await logoutTokenFor(model, query.get('sub') ?? undefined, query.get('sid') ?? undefined);
    return sendJson(res, 200, { logout_token: token });
  }

  if (path === '/test/remove-account' || path === '/test/set-groups') {
    const who = query.get('sub') ?? query.get('email') ?? '';
    const user = userBySub(who) ?? userByEmail(who);
    if (!user) return sendJson(res, 404, { error: `unknown user ${who}` });
    if (path === '/test/remove-account') {
      USERS.splice(USERS.indexOf(user), 1);
      log('account removed:', user.sub);
      return sendJson(res, 200, { removed: user.sub });
    }
    user.groups = (query.get('groups') ?? '').split(',').filter(Boolean);
    log('groups of', user.sub, 'now', user.groups.join(','));
    return sendJson(res, 200, { sub: user.sub, groups: user.groups });
  }

  if (path === '/test/token-errors') {
    const status = Number(query.get('status') ?? '0');
    tokenErrors = status ? { status, error: query.get('error') ?? 'server_error' } : null;
    log('token endpoint errors:', JSON.stringify(tokenErrors));
    return sendJson(res, 200, { token_errors: tokenErrors });
  }

  if (path === '/test/end-session') {
    const who = query.get('sub') ?? query.get('email') ?? '';
    const user = userBySub(who) ?? userByEmail(who);
    if (!user) return sendJson(res, 404, { error: `unknown user ${who}` });
    const sessions = sessionsOf(user.sub);
    const logouts = [];
    for (const client of CLIENTS.filter((c) => c.backchannel_logout_uri)) {
      const model = await provider.Client.find(client.client_id);
      const sids = sessions.map((s) => s.payload.authorizations?.[client.client_id]?.sid).filter(Boolean);
      // No session of this user with that client: still tell it (a sub-only logout token).
      for (const sid of sids.length ? sids : [undefined]) {
        logouts.push(await backchannelLogout(model, user.sub, sid));
      }
    }
    for (const s of sessions) destroySession(s.id, s.payload);
    return sendJson(res, 200, { sub: user.sub, sessions_ended: sessions.length, logouts });
  }

  return sendJson(res, 404, { error: 'unknown test endpoint' });
}

// ---- HTTP server ------------------------------------------------------------------------------

// What the token endpoint answers instead of its work (POST /test/token-errors), or null.
let tokenErrors = null;

const isLoopback = (addr) => addr === '127.0.0.1' || addr === '::1' || addr === '::ffff:127.0.0.1';

async function handle(req, res) {
  // Serve the issuer's path (e.g. /dex) the way express mounting does: strip it, keep originalUrl.
  if (mountPath) {
    if (req.url !== mountPath && !req.url.startsWith(`${mountPath}/`) && !req.url.startsWith(`${mountPath}?`)) {
      return sendJson(res, 404, { error: 'not under the issuer path' });
    }
    req.originalUrl = req.url;
    req.url = req.url.slice(mountPath.length) || '/';
  }
  const url = new URL(req.url, 'http://op.invalid');
  const path = url.pathname;

  if (path.startsWith('/test/')) {
    if (!isLoopback(req.socket.remoteAddress)) return sendJson(res, 403, { error: 'loopback only' });
    return testEndpoint(req, res, path, url.searchParams);
  }

  if (tokenErrors && path === '/token') {
    return sendJson(res, tokenErrors.status, { error: tokenErrors.error, error_description: 'test: the token endpoint fails' });
  }

  const m = path.match(/^\/interaction\/([\w-]+)(?:\/(login))?$/);
  if (m) return interaction(req, res, m[1], m[2]);

  // oidc-provider drops offline_access unless the request has prompt=consent. Dex and most
  // providers issue a refresh token for offline_access without it, so add the prompt (the
  // consent is then granted automatically in the interaction).
  if (req.method === 'GET' && path === '/auth') {
    const scope = url.searchParams.get('scope') ?? '';
    if (scope.split(' ').includes('offline_access') && !url.searchParams.has('prompt')) {
      url.searchParams.set('prompt', 'consent');
      const rewritten = `${url.pathname}${url.search}`;
      if (req.originalUrl) req.originalUrl = mountPath + rewritten;
      req.url = rewritten;
    }
  }

  return handler(req, res);
}

const server = http.createServer((req, res) => {
  handle(req, res).catch((err) => {
    log('unhandled error:', err?.stack ?? err);
    if (!res.headersSent) sendJson(res, 500, { error: 'server_error', error_description: String(err?.message ?? err) });
    else res.destroy();
  });
});
server.on('clientError', (_err, socket) => socket.destroy());

server.listen(PORT, HOST, () => {
  const { port } = server.address();
  issuer = (process.env.ISSUER || `http://127.0.0.1:${port}`).replace(/\/+$/, ''); // no trailing slash
  mountPath = new URL(issuer).pathname.replace(/\/+$/, '');
  signingKey = newSigningKey();
  try {
    provider = buildProvider();
  } catch (err) {
    log('invalid configuration:', err.message);
    process.exit(2);
  }
  handler = provider.callback();
  log(`listening on ${HOST}:${port}, issuer ${issuer}, clients ${CLIENTS.map((c) => c.client_id).join(', ') || '(none)'}`);
  process.stdout.write(`READY ${JSON.stringify({ issuer })}\n`);
});
server.on('error', (err) => {
  log('cannot listen:', err.message);
  process.exit(1);
});

for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
process.on('unhandledRejection', (err) => log('unhandled rejection:', err?.stack ?? err));
process.on('uncaughtException', (err) => log('uncaught exception:', err?.stack ?? err));

