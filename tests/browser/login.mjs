// Drives a REAL headless Chromium (Debian's /usr/bin/chromium) through an OIDC login:
//
//   node tests/browser/login.mjs <start-url> <user> <password> <screenshot.png> [<click>]
//
// Opens <start-url>, waits for the test provider's login form (tests/oidc/provider.js: fields
// #login, #password, button #submit), fills and submits it, waits until the browser has left the
// provider again, and prints ONE JSON line on stdout:
//   {"url": <final URL>, "status": <HTTP status of the final document>, "text": <page innerText>}
// and saves a full-page screenshot. With <click> (a CSS selector), the page the login lands on
// is first asked for that element, which is clicked, and the page it leads to is the final one
// (a confirmation button: `authgate login`'s token page). Exit 1 with a message on stderr on any failure (a screenshot
// of the page at that moment is still written).
//
// playwright-core comes from tests/oidc/node_modules (scripts/setup-test-peers.sh); it downloads
// no browser. CHROMIUM_BIN overrides the browser path. BROWSER_TIMEOUT_MS (default 20000).

import { createRequire } from 'node:module';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const SETUP = 'run scripts/setup-test-peers.sh (installs chromium and tests/oidc/node_modules)';

function fail(msg) {
  process.stderr.write(`login.mjs: ${msg}\n`);
  process.exit(1);
}

const [startUrl, user, password, screenshot, click] = process.argv.slice(2);
if (!startUrl || !user || password === undefined || !screenshot) {
  fail('usage: node tests/browser/login.mjs <start-url> <user> <password> <screenshot.png>');
}

const require = createRequire(new URL('../oidc/package.json', import.meta.url));
let chromium;
try {
  ({ chromium } = require('playwright-core'));
} catch (err) {
  fail(`playwright-core is not installed in tests/oidc/node_modules: ${SETUP} (${err.message})`);
}

const executablePath = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
if (!fs.existsSync(executablePath)) fail(`no Chromium at ${executablePath}: ${SETUP}`);
const timeout = Number(process.env.BROWSER_TIMEOUT_MS || 20000);

const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'authgate-chromium-'));
let context;
let page;
let exitCode = 0;
try {
  // A persistent context is the way to give Chromium its own fresh --user-data-dir.
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath,
    headless: true,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
    viewport: { width: 1000, height: 700 },
    timeout,
  });
  context.setDefaultTimeout(timeout);
  page = context.pages()[0] ?? await context.newPage();
  page.on('console', (m) => process.stderr.write(`[page console] ${m.text()}\n`));

  await page.goto(startUrl, { waitUntil: 'load' });
  await page.waitForSelector('#login');
  const loginUrl = page.url();
  process.stderr.write(`login form at ${loginUrl}\n`);
  await page.fill('#login', user);
  await page.fill('#password', password);

  // Submit, then wait until we are off the login page (redirects back to the start origin).
  let lastDocument;
  page.on('response', (r) => {
    if (r.request().isNavigationRequest() && r.request().frame() === page.mainFrame()) lastDocument = r;
  });
  // ...or fail fast when the provider re-renders the form with an error (wrong password).
  const left = page.waitForURL((u) => !u.href.startsWith(loginUrl.split('?')[0]), { waitUntil: 'load' });
  const refused = page.waitForSelector('#error').then(async (el) => {
    throw new Error(`the provider refused the login: ${await el.innerText()}`);
  });
  refused.catch(() => {}); // settles after `left` wins; avoid an unhandled rejection
  await page.click('#submit');
  await Promise.race([left, refused]);
  await page.waitForLoadState('networkidle').catch(() => {});
  if (click) {
    await page.waitForSelector(click);
    process.stderr.write(`clicking ${click} at ${page.url()}\n`);
    await Promise.all([page.waitForNavigation({ waitUntil: 'load' }), page.click(click)]);
    await page.waitForLoadState('networkidle').catch(() => {});
  }

  const text = await page.evaluate(() => document.body?.innerText ?? '');
  process.stdout.write(`${JSON.stringify({ url: page.url(), status: lastDocument?.status() ?? null, text })}\n`);
} catch (err) {
  exitCode = 1;
  const where = page ? ` (at ${page.url()})` : '';
  process.stderr.write(`login.mjs: ${err.message}${where}\n`);
  if (page) {
    const text = await page.evaluate(() => document.body?.innerText ?? '').catch(() => '');
    process.stderr.write(`page text: ${text.slice(0, 2000)}\n`);
  }
} finally {
  if (page) await page.screenshot({ path: screenshot, fullPage: true }).catch((e) => process.stderr.write(`screenshot failed: ${e.message}\n`));
  if (context) await context.close().catch(() => {});
  fs.rmSync(userDataDir, { recursive: true, force: true });
}
process.exit(exitCode);
