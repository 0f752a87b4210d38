// The console in a real browser: Debian's headless Chromium driven by
// playwright-core (no browser download). Run by tests/console.rs, which
// starts the release binary and passes, in the environment:
//   CONSOLE_URL      http://127.0.0.1:<api port>
//   ADMIN_NAME, ADMIN_PASSWORD, ADMIN_TOKEN   the first admin (CLI-made)
//   SHOTS            where the screenshots go (created)
// Exits 0 when every check passed, 1 with the failures otherwise.
//
// What it shows (issue 14 acceptance 1, 3, 4):
//   sign in as admin; make business unit east (queue support), manager mia
//   and viewer vic through the API; as mia schedule a callback and see it
//   in the list, then cancel it; pause and resume agent alice; switch
//   registration off for queue support (left off: tests/console.rs then
//   calls with sipp and hears "unable"); as vic no cancel button and no schedule
//   form, and a direct POST with the right CSRF token is refused 403; a
//   cross-origin POST is refused 403 (from a page of another origin in the
//   browser, and with a forged Origin and a live cookie from node);
//   document.cookie never shows the session cookie; no request leaves
//   127.0.0.1/localhost.

import { chromium } from 'playwright-core';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import http from 'node:http';

const base = process.env.CONSOLE_URL;
const admin = { name: process.env.ADMIN_NAME, password: process.env.ADMIN_PASSWORD };
const adminToken = process.env.ADMIN_TOKEN;
const shots = process.env.SHOTS;
if (!base || !admin.name || !admin.password || !adminToken || !shots) {
  console.error('console.mjs: CONSOLE_URL, ADMIN_NAME, ADMIN_PASSWORD, ADMIN_TOKEN and SHOTS are required');
  process.exit(2);
}
mkdirSync(shots, { recursive: true });
const port = new URL(base).port;
const manager = { name: 'mia', password: 'mia-password-1' };
const viewer = { name: 'vic', password: 'vic-password-1' };

const failures = [];
function check(ok, what) {
  if (ok) {
    console.log(`ok   ${what}`);
  } else {
    console.log(`FAIL ${what}`);
    failures.push(what);
  }
}

/** One request to the admin API as the admin (from node, not the page). */
async function api(method, path, body) {
  const r = await fetch(base + path, {
    method,
    headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  return { status: r.status, json: text ? JSON.parse(text) : null };
}

/** A raw POST from node with any headers (fetch would not forge Origin). */
function rawPost(path, headers, body) {
  return new Promise((resolve, reject) => {
    const req = http.request(base + path, { method: 'POST', headers }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode));
    });
    req.on('error', reject);
    req.end(body);
  });
}

function isLocal(url) {
  const u = new URL(url);
  if (['data:', 'blob:', 'about:'].includes(u.protocol)) return true;
  return u.hostname === '127.0.0.1' || u.hostname === 'localhost';
}

const profile = mkdtempSync(join(tmpdir(), 'callbackd-console-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: '/usr/bin/chromium',
  headless: true,
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ],
  viewport: { width: 1280, height: 800 },
});
const foreign = [];
context.on('request', (request) => {
  if (!isLocal(request.url())) foreign.push(request.url());
});

const page = context.pages()[0] ?? (await context.newPage());

async function signIn(who) {
  await page.goto(base + '/sign-in');
  await page.getByLabel('User name').fill(who.name);
  await page.getByLabel('Password').fill(who.password);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.waitForURL(base + '/');
}

async function signOut() {
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.waitForURL(base + '/sign-in');
}

async function shot(name) {
  await page.screenshot({ path: join(shots, name), fullPage: true });
}

/** The session's CSRF token, as a page script could read it. */
function csrfOfPage() {
  return page.locator('input[name=csrf]').first().inputValue();
}

/** `YYYY-MM-DDTHH:MM` for tomorrow at `hh`:00 (the input's own format). */
function tomorrowAt(hh) {
  const d = new Date(Date.now() + 24 * 3600 * 1000);
  const pad = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(hh)}:00`;
}

async function schedule(number) {
  await page.goto(base + '/callbacks');
  await page.locator('summary', { hasText: 'Schedule a callback' }).click();
  await page.getByLabel('Queue', { exact: true }).first().selectOption('support');
  await page.getByLabel('Number', { exact: true }).first().fill(number);
  await page.locator('#new-when').fill(tomorrowAt(10));
  await page.getByRole('button', { name: 'Schedule' }).click();
  await page.waitForURL(/\/callbacks\/\d+\?done=created$/);
  return Number(new URL(page.url()).pathname.split('/').pop());
}

try {
  // --- Sign-in page, wrong password ---------------------------------------
  await page.goto(base + '/');
  check(page.url() === base + '/sign-in', 'an anonymous visit goes to the sign-in page');
  await shot('sign-in.png');
  await page.getByLabel('User name').fill(admin.name);
  await page.getByLabel('Password').fill('not the password');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.waitForLoadState();
  check(await page.getByRole('alert').textContent() === 'Wrong user name or password.',
    'a wrong password gets the form again with a message');

  // --- Admin: dashboard, live updates, the cookie -------------------------
  await signIn(admin);
  check(await page.getByRole('heading', { name: 'Dashboard' }).isVisible(), 'the admin sees the dashboard');
  check(await page.getByRole('heading', { name: 'Queue support' }).isVisible(), 'the dashboard shows queue support');
  const live = await page.waitForResponse((r) => r.url() === base + '/dashboard/live', { timeout: 15000 });
  check(live.status() === 200, 'the dashboard fetches its live part by itself (htmx polling)');
  await page.waitForLoadState('networkidle');
  await shot('dashboard.png');
  const visible = await page.evaluate(() => document.cookie);
  check(!visible.includes('cbd_session'), `document.cookie does not show the session cookie (${JSON.stringify(visible)})`);
  const cookie = (await context.cookies(base)).find((c) => c.name === 'cbd_session');
  check(cookie && cookie.httpOnly && cookie.sameSite === 'Strict' && cookie.path === '/',
    'the session cookie is HttpOnly, SameSite=Strict, Path=/');

  // --- Accounts through the API (no Users page yet) ------------------------
  check((await api('POST', '/v1/units', { name: 'east', queues: ['support'] })).status === 201, 'unit east made');
  for (const [who, role] of [[manager, 'manager'], [viewer, 'viewer']]) {
    const made = await api('POST', '/v1/users', { name: who.name, role, units: ['east'] });
    check(made.status === 201, `${role} ${who.name} made`);
    const pw = await api('PUT', `/v1/users/${who.name}/password`, { password: who.password });
    check(pw.status === 204, `${who.name}'s password set`);
  }
  await signOut();

  // --- Manager: schedule, list, cancel -------------------------------------
  await signIn(manager);
  const first = await schedule('3125550188');
  check(await page.getByRole('status').textContent() === 'Callback scheduled.', `callback ${first} scheduled`);
  check(await page.getByTestId('status').textContent() === 'pending', 'it is pending');
  await shot('callback.png');
  await page.goto(base + '/callbacks');
  const row = page.locator(`tr[data-id="${first}"]`);
  check(await row.isVisible(), 'the manager sees it in the list');
  check((await row.textContent()).includes('3125550188'), 'with its number');
  await shot('callbacks.png');
  await page.goto(base + '/callbacks?status=pending&number=3125550188');
  check(await page.locator(`tr[data-id="${first}"]`).isVisible(), 'the filters find it');
  await page.goto(base + '/callbacks?status=cancelled');
  check(!(await page.locator(`tr[data-id="${first}"]`).isVisible()), 'the status filter leaves it out');
  await page.goto(base + '/callbacks');
  await row.getByRole('button', { name: `Cancel callback ${first}` }).click();
  await page.waitForURL(`${base}/callbacks/${first}?done=cancelled`);
  check(await page.getByTestId('status').textContent() === 'cancelled', 'the manager cancelled it');
  const stored = await api('GET', `/v1/callbacks/${first}`);
  check(stored.json.status === 'cancelled', 'the API sees it cancelled');

  const second = await schedule('3125550199');
  const managerCsrf = await csrfOfPage();

  // --- Agents and On/Off as the manager ---------------------------------------
  await page.goto(base + '/agents');
  await page.getByRole('button', { name: 'Pause alice' }).click();
  await page.waitForURL(base + '/agents?done=paused');
  check(await page.locator('tr[data-id="alice"] [data-testid="agent-state"]').textContent() === 'paused',
    'the manager paused agent alice');
  await shot('agents.png');
  await page.getByRole('button', { name: 'Resume alice' }).click();
  await page.waitForURL(base + '/agents?done=resumed');
  check(await page.locator('tr[data-id="alice"] [data-testid="agent-state"]').textContent() === 'available',
    'and resumed her');
  await page.goto(base + '/switches');
  check(await page.getByRole('button', { name: /Switch organisation/ }).count() === 0,
    'a manager has no organisation switch');
  await page.getByRole('button', { name: 'Switch queue support registration off' }).click();
  await page.waitForURL(base + '/switches?done=switched');
  check(await page.getByRole('button', { name: 'Switch queue support registration on' }).isVisible(),
    'the manager switched registration off for queue support');
  await shot('switches.png');
  const switches = await fetch(base + '/v1/org/switches', { headers: { authorization: `Bearer ${adminToken}` } })
    .then((r) => r.json());
  check(switches.queues.support.registration_enabled === false, 'the API sees it off');

  // --- Cross-origin POSTs ----------------------------------------------------
  // A page of another origin (localhost, not 127.0.0.1: still this machine)
  // whose form posts to the console. Playwright serves it; nothing leaves.
  const evil = `http://localhost:${port}/evil`;
  await page.route(evil, (route) => route.fulfill({
    contentType: 'text/html',
    body: `<!doctype html><form id=f method=post action="${base}/callbacks/${second}/cancel">`
      + `<input name=csrf value="${managerCsrf}"></form>`,
  }));
  await page.goto(evil);
  const [crossAnswer] = await Promise.all([
    page.waitForResponse((r) => r.url() === `${base}/callbacks/${second}/cancel`),
    page.evaluate(() => document.getElementById('f').submit()),
  ]);
  check(crossAnswer.status() === 403, `a POST from a page of another origin is refused (${crossAnswer.status()})`);
  await page.waitForLoadState();
  await shot('cross-origin-refused.png');
  const sessionCookie = (await context.cookies(base)).find((c) => c.name === 'cbd_session');
  const forged = await rawPost(`/callbacks/${second}/cancel`, {
    host: `127.0.0.1:${port}`,
    origin: 'http://evil.example',
    cookie: `cbd_session=${sessionCookie.value}`,
    'content-type': 'application/x-www-form-urlencoded',
  }, `csrf=${encodeURIComponent(managerCsrf)}`);
  check(forged === 403, `a POST with a live cookie and token but a foreign Origin is refused (${forged})`);
  check((await api('GET', `/v1/callbacks/${second}`)).json.status === 'pending', 'the callback is still pending');
  await page.goto(base + '/');
  await signOut();

  // --- Viewer: no buttons, a direct POST refused ---------------------------
  await signIn(viewer);
  await page.goto(base + '/callbacks');
  check(await page.locator(`tr[data-id="${second}"]`).isVisible(), 'the viewer sees the pending callback');
  check(await page.getByRole('button', { name: /Cancel/ }).count() === 0, 'the viewer sees no cancel button');
  check(await page.locator('summary', { hasText: 'Schedule a callback' }).count() === 0, 'the viewer sees no schedule form');
  await shot('callbacks-viewer.png');
  const statuses = await page.evaluate(async (id) => {
    const csrf = document.querySelector('input[name=csrf]').value;
    const post = (path, body) => fetch(path, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ csrf, ...body }),
    }).then((r) => r.status);
    return [
      await post(`/callbacks/${id}/cancel`, {}),
      await post('/callbacks', { queue: 'support', number: '3125550111', scheduled_for: '2030-01-01T10:00' }),
    ];
  }, second);
  check(statuses[0] === 403, `the viewer's direct cancel POST (right CSRF token) is refused (${statuses[0]})`);
  check(statuses[1] === 403, `the viewer's direct create POST (right CSRF token) is refused (${statuses[1]})`);
  check((await api('GET', `/v1/callbacks/${second}`)).json.status === 'pending', 'the callback is still pending');
  await page.goto(`${base}/callbacks/${second}`);
  await shot('callback-viewer.png');

  // --- A phone-sized screen and the keyboard ---------------------------------
  await page.setViewportSize({ width: 390, height: 844 });
  for (const path of ['/', '/callbacks', '/agents', '/switches']) {
    await page.goto(base + path);
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    check(overflow <= 0, `${path} fits a 390 px wide screen (overflow ${overflow} px)`);
  }
  await page.goto(base + '/callbacks');
  await shot('callbacks-phone.png');
  await page.keyboard.press('Tab');
  check(await page.evaluate(() => document.activeElement.textContent) === 'Skip to content',
    'the first Tab reaches the skip link');
  await page.keyboard.press('Enter');
  await page.keyboard.press('Tab');
  check(await page.evaluate(() => document.activeElement.closest('main') !== null),
    'the skip link leads into the content');
  await page.setViewportSize({ width: 1280, height: 800 });
  await signOut();
  // Signed out: the old page's token and cookie are worth nothing.
  const after = await rawPost(`/callbacks/${second}/cancel`, {
    host: `127.0.0.1:${port}`,
    cookie: `cbd_session=${sessionCookie.value}`,
    'content-type': 'application/x-www-form-urlencoded',
  }, `csrf=${encodeURIComponent(managerCsrf)}`);
  check(after === 403, `the manager's old session is gone after sign-out (${after})`);
} catch (e) {
  failures.push(`exception: ${e.stack || e}`);
  console.log(`FAIL exception: ${e.stack || e}`);
  await shot('failure.png').catch(() => {});
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}

check(foreign.length === 0, `no request left the machine (${foreign.join(', ')})`);
if (failures.length > 0) {
  console.log(`${failures.length} check(s) failed`);
  process.exit(1);
}
console.log('all console checks passed');
