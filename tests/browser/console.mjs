// The web console end to end in a real browser: Debian's chromium driven by playwright-core.
// Run by tests/integration/console.rs, which starts the gateway, makes the records, and passes
// everything in ZTK_CONSOLE_TEST (JSON). Every check throws with a message; the exit code says
// whether all passed. Screenshots of each page go to `shots`.
import { chromium } from 'playwright-core';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import path from 'node:path';

const cfg = JSON.parse(process.env.ZTK_CONSOLE_TEST);
const run = promisify(execFile);
const base = cfg.url.replace(/\/$/, '');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function check(cond, message) {
  if (!cond) throw new Error('check failed: ' + message);
}

async function ztk(args, env) {
  return run(cfg.ztk, args, { env: { ...process.env, ...env }, timeout: 60000 });
}

async function shot(page, name) {
  await page.screenshot({ path: path.join(cfg.shots, name + '.png'), fullPage: true });
}

async function signIn(page, user, password) {
  await page.goto(base + '/');
  await page.getByLabel('Username').fill(user);
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.waitForURL('**/audit/kubectl');
}

async function column(page, header) {
  const headers = await page.locator('#rows thead th').allInnerTexts();
  const i = headers.findIndex((h) => h.trim() === header);
  check(i >= 0, `column ${header} in ${headers.join('|')}`);
  return page.locator(`#rows tbody tr td:nth-child(${i + 1})`).allInnerTexts();
}

async function waitFor(what, fn, ms = 15000, step = 100) {
  const end = Date.now() + ms;
  for (;;) {
    if (await fn()) return;
    if (Date.now() > end) throw new Error('timed out waiting for ' + what);
    await sleep(step);
  }
}

// Headless, with a fresh temporary profile (playwright's --headless and --user-data-dir).
const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const results = {};
try {
  // ---- a non-administrator sees only their own records
  const alice = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 800 } });
  const ap = await alice.newPage();
  ap.on('pageerror', (e) => { throw new Error('page error: ' + e.message); });
  let resp = await ap.goto(base + '/audit/kubectl?view=calls');
  check(ap.url().includes('/signin?next='), 'an unsigned page goes to the sign-in: ' + ap.url());
  await shot(ap, '01-signin');
  // Wrong password: the form says so and sets no session.
  await ap.getByLabel('Username').fill(cfg.alice.user);
  await ap.getByLabel('Password').fill('wrong password');
  await ap.getByRole('button', { name: 'Sign in' }).click();
  check(await ap.getByRole('alert').innerText().then((t) => t.includes('invalid user name or password')), 'a wrong password is refused');
  await signIn(ap, cfg.alice.user, cfg.alice.password);
  const cookie = (await alice.cookies()).find((c) => c.name === '__Host-ztk');
  check(cookie, 'a session cookie');
  check(cookie.httpOnly && cookie.secure && cookie.sameSite === 'Strict', 'cookie flags: ' + JSON.stringify(cookie));
  results.cookie = { httpOnly: cookie.httpOnly, secure: cookie.secure, sameSite: cookie.sameSite };
  const users = await column(ap, 'User');
  check(users.length > 0 && users.every((u) => u === cfg.alice.user), 'alice sees only her records: ' + [...new Set(users)]);
  check(await ap.locator('#f-user').count() === 0, 'no user filter for a non-administrator');
  resp = await ap.goto(base + '/audit/kubectl?view=calls&user=' + cfg.admin.user);
  check(resp.status() === 403, 'asking for another user is refused: ' + resp.status());
  check((await ap.getByRole('alert').first().innerText()).includes('only their own'), 'the page says why');
  resp = await ap.goto(base + '/audit/kubectl?view=calls&colour=red');
  check(resp.status() === 400, 'an unknown filter is a 400: ' + resp.status());
  check((await ap.locator('#filter-error').innerText()).includes('unknown filter'), 'the page names the unknown filter');
  resp = await ap.goto(base + '/audit/kubectl?view=calls&status=7xx');
  check(resp.status() === 400, 'a malformed status is a 400');
  check(await ap.locator('#rows').count() === 0, 'no partial listing beside an error');
  // CSRF: a sign-out without the token, or from another origin, is refused.
  let r = await ap.request.post(base + '/signout', { headers: { Origin: base }, form: { csrf: 'forged' } });
  check(r.status() === 403, 'sign-out without the CSRF token: ' + r.status());
  r = await ap.request.post(base + '/signout', { headers: { Origin: 'https://evil.example' }, form: { csrf: await ap.locator('meta[name="csrf-token"]').getAttribute('content') } });
  check(r.status() === 403, 'sign-out from another origin: ' + r.status());
  r = await ap.request.post(base + '/signin', { headers: { Origin: base }, form: { username: cfg.alice.user, password: cfg.alice.password, csrf: 'x' } });
  check(r.status() === 403, 'a sign-in without the form token: ' + r.status());
  const headers = (await ap.request.get(base + '/audit/kubectl')).headers();
  check(headers['content-security-policy'].includes("script-src 'self'") && headers['content-security-policy'].includes("frame-ancestors 'none'"), 'CSP');
  check(headers['x-content-type-options'] === 'nosniff' && headers['strict-transport-security'], 'nosniff and HSTS');
  // Still signed in after the refused requests.
  resp = await ap.goto(base + '/audit/kubectl');
  check(resp.status() === 200 && !ap.url().includes('signin'), 'still signed in');
  // Suggested filter values come from her own records only (root's namespace is not there).
  const suggested = await ap.locator('#s-namespaces option').evaluateAll((o) => o.map((x) => x.value));
  check(suggested.includes('default') && !suggested.includes(cfg.admin.onlyNamespace), 'her own suggestions: ' + suggested);
  // Her access, not everyone's.
  await ap.goto(base + '/access');
  check(await ap.getByRole('heading', { name: 'Your access' }).isVisible(), 'her access');
  check(await ap.getByRole('heading', { name: 'All bindings' }).count() === 0 && await ap.getByRole('heading', { name: 'Roles' }).count() === 0, 'no bindings or roles for a non-administrator');

  // ---- an administrator
  const admin = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 800 }, acceptDownloads: true });
  const p = await admin.newPage();
  p.on('pageerror', (e) => { throw new Error('page error: ' + e.message); });
  await signIn(p, cfg.admin.user, cfg.admin.password);
  await shot(p, '02-commands');
  const commandUsers = new Set(await column(p, 'User'));
  check(commandUsers.has(cfg.alice.user) && commandUsers.has(cfg.admin.user), 'the administrator sees everyone: ' + [...commandUsers]);
  const commandCells = await column(p, 'Command');
  check(commandCells.some((c) => c.includes('kubectl get namespaces')), 'the ztk kubectl commands are listed');
  // Drill into a command: its API calls.
  await p.getByRole('link', { name: /kubectl get namespaces/ }).first().click();
  await p.waitForURL(/view=calls&id=/);
  check((await p.locator('.command-header h2').innerText()).includes('kubectl get namespaces'), 'the command header');
  const drilled = await column(p, 'Resource');
  check(drilled.some((x) => x.includes('namespaces')), 'the command\'s calls: ' + drilled);
  await p.locator('#rows tbody tr').first().getByText('Details').click();
  const facts = await p.locator('#rows tbody tr details[open] dl').first().innerText();
  for (const label of ['Request id', 'Record id', 'Time', 'Client duration', 'Gateway duration', 'Command', 'Method and path', 'Decision', 'Reason', 'Bytes in / out', 'User agent', 'Source IP']) {
    check(facts.includes(label), `details show ${label}: ${facts}`);
  }
  check(facts.includes('kubectl get namespaces') && facts.includes('127.0.0.1') && /Decision\s+allow/.test(facts), 'details hold the values: ' + facts);
  await shot(p, '03-command-calls');
  // The README's picture: the calls view, one record's details open.
  await p.goto(base + '/audit/kubectl?view=calls&access-method=cli');
  await p.setViewportSize({ width: 1280, height: 960 });
  await p.locator('#rows tbody tr').nth(1).getByText('Details').click();
  await p.evaluate(() => window.scrollTo(0, 0));
  await p.screenshot({ path: path.join(cfg.shots, 'readme.png') });
  await p.setViewportSize({ width: 1280, height: 800 });

  // Filter through the UI.
  await p.goto(base + '/audit/kubectl?view=calls');
  await p.getByLabel('Namespace').fill('default');
  await p.getByLabel('Verb', { exact: true }).fill('list');
  await p.getByRole('button', { name: 'Apply filters' }).click();
  await p.waitForURL(/namespace=default/);
  check(p.url().includes('verb=list'), 'the filters are the URL: ' + p.url());
  const ns = await column(p, 'Namespace');
  const verbs = await column(p, 'Verb');
  check(ns.length > 0 && ns.every((x) => x === 'default') && verbs.every((x) => x === 'list'), 'filtered rows: ' + ns + ' ' + verbs);
  await shot(p, '04-filtered');

  // Several values per field, the time presets and a custom range.
  await p.goto(base + '/audit/kubectl?view=calls');
  await p.getByRole('link', { name: 'Last 15m' }).click();
  await p.waitForURL(/since=15m/);
  check(await p.getByRole('link', { name: 'Last 15m' }).getAttribute('aria-current') === 'true', 'the preset is marked');
  check(await p.getByLabel('Since (UTC)').inputValue() === '15m', 'the preset is in the form');
  await p.getByLabel('CLI', { exact: true }).check();
  await p.getByLabel('API', { exact: true }).check();
  await p.getByLabel('Verb', { exact: true }).fill('get,list');
  await p.getByLabel('Resource', { exact: true }).fill('namespaces');
  await p.getByRole('button', { name: 'Apply filters' }).click();
  await p.waitForURL(/access-method=api/);
  const methodsSeen = new Set(await column(p, 'Access method'));
  check(methodsSeen.size === 2 && methodsSeen.has('CLI') && methodsSeen.has('API'), 'two access methods: ' + [...methodsSeen]);
  const verbsSeen = new Set(await column(p, 'Verb'));
  check(verbsSeen.size === 2 && verbsSeen.has('get') && verbsSeen.has('list'), 'two verbs: ' + [...verbsSeen]);
  const applied = p.url();
  const [again] = await Promise.all([p.waitForNavigation(), p.getByRole('button', { name: 'Apply filters' }).click()]);
  check(again.status() === 200 && p.url() === applied, 'applying the same form again is the same view: ' + p.url());
  const fmt = (d) => d.toISOString().slice(0, 19).replace('T', ' ');
  const from = new Date(Date.now() - 10 * 60e3);
  const until = new Date(Date.now() + 60e3);
  await p.getByLabel('Since (UTC)').fill(fmt(from));
  await p.getByLabel('Until (UTC)').fill(fmt(until));
  await p.getByRole('button', { name: 'Apply filters' }).click();
  await p.waitForURL(/until=/);
  const times = await p.locator('#rows tbody tr').evaluateAll((rows) => rows.map((r) => Number(r.dataset.time)));
  const [lo, hi] = [Math.floor(from.getTime() / 1000) * 1e6, Math.floor(until.getTime() / 1000) * 1e6];
  check(times.length > 0 && times.every((t) => t >= lo && t < hi), 'rows in the custom range');
  check(await p.getByLabel('Since (UTC)').inputValue() === fmt(from) && await p.locator('.presets a[aria-current]').count() === 0, 'the custom range in the form, no preset marked');
  await p.goto(base + '/audit/kubectl?view=calls&access-method=cli,api&verb=get&verb=list');
  check(await p.getByLabel('CLI', { exact: true }).isChecked() && await p.getByLabel('API', { exact: true }).isChecked() && !(await p.getByLabel('Browser', { exact: true }).isChecked()), 'a deep link\'s access methods are checked');
  check(await p.getByLabel('Verb', { exact: true }).inputValue() === 'get,list', 'a deep link\'s verbs are in the form');
  resp = await p.goto(base + '/audit/kubectl?view=calls&since=1h&since=2h');
  check(resp.status() === 400 && (await p.locator('#filter-error').innerText()).includes('more than once'), 'a time given twice is refused');

  // The keyboard reaches everything: the skip link first, then a row's details.
  await p.goto(base + '/audit/kubectl?view=calls');
  await p.keyboard.press('Tab');
  check(await p.evaluate(() => document.activeElement.textContent === 'Skip to content'), 'Tab starts at the skip link');
  for (let i = 0; i < 120 && !(await p.evaluate(() => document.activeElement.tagName === 'SUMMARY')); i++) {
    await p.keyboard.press('Tab');
  }
  check(await p.evaluate(() => document.activeElement.tagName === 'SUMMARY'), 'a row\'s Details is reached with Tab');
  check(await p.evaluate(() => getComputedStyle(document.activeElement).outlineStyle !== 'none'), 'the focus is visible');
  await p.keyboard.press('Enter');
  check(await p.evaluate(() => document.activeElement.parentElement.open === true), 'Enter opens the details');

  // A deep link, several pages, Back.
  await p.goto(base + '/audit/kubectl?view=calls&access-method=api&since=1h');
  const firstPage = await column(p, 'Access method');
  check(firstPage.length === 100 && firstPage.every((x) => x === 'API'), 'a full page of API calls: ' + firstPage.length);
  const firstIds = await p.locator('#rows tbody tr').evaluateAll((rows) => rows.map((r) => r.dataset.id));
  await p.getByRole('link', { name: 'Older →' }).click();
  await p.waitForURL(/after=/);
  const secondIds = await p.locator('#rows tbody tr').evaluateAll((rows) => rows.map((r) => r.dataset.id));
  check(secondIds.length > 0 && secondIds.every((id) => !firstIds.includes(id)), 'the next page continues');
  await p.goBack();
  check(!p.url().includes('after='), 'Back returns to the first page');

  // Live: a new command appears without a reload, the reader's open details stay open.
  await p.goto(base + '/audit/kubectl?view=commands');
  await p.evaluate(() => { window.__sameDocument = true; });
  await ztk(['kubectl', 'get', 'configmaps', '-n', 'default'], cfg.alice.env);
  const ranAt = Date.now();
  await waitFor('the new command', async () => (await column(p, 'Command')).some((c) => c.includes('get configmaps')), 5000, 20);
  results.liveCommandMs = Date.now() - ranAt;
  check(await p.evaluate(() => window.__sameDocument === true), 'no reload');
  // The calls view shows a new call as live.
  await p.goto(base + '/audit/kubectl?view=calls&verb=get&resource=namespaces');
  await ztk(['kubectl', 'get', 'namespace', 'kube-system'], cfg.alice.env);
  const callAt = Date.now();
  await waitFor('the new call', async () => (await column(p, 'Resource')).some((c) => c.includes('kube-system')), 5000, 20);
  results.liveCallMs = Date.now() - callAt;
  await shot(p, '05-live');

  // Scrolled away: the rows above do not move the reader; a marker counts them.
  await p.goto(base + '/audit/kubectl?view=calls');
  await p.locator('#rows tbody tr').nth(60).getByText('Details').click();
  const openId = await p.locator('#rows tbody tr').nth(60).getAttribute('data-id');
  await p.locator('#rows tbody tr').nth(60).scrollIntoViewIfNeeded();
  const before = await p.locator(`tr[data-id="${openId}"]`).boundingBox();
  await ztk(['kubectl', 'get', 'secrets', '-n', 'default'], cfg.alice.env);
  await waitFor('the new-rows marker', async () => p.locator('#new-rows').isVisible());
  const after = await p.locator(`tr[data-id="${openId}"]`).boundingBox();
  check(Math.abs(after.y - before.y) < 4, `the reader's row stays put: ${before.y} -> ${after.y}`);
  check(await p.locator(`tr[data-id="${openId}"] details`).evaluate((d) => d.open), 'open details stay open');
  check(/^\d+ new$/.test(await p.locator('#new-rows').innerText()), 'the marker counts');
  await shot(p, '06-new-marker');

  // Pause: rows wait until resumed.
  await p.goto(base + '/audit/kubectl?view=commands');
  await p.getByRole('button', { name: 'Pause' }).click();
  await ztk(['kubectl', 'get', 'serviceaccounts', '-n', 'default'], cfg.alice.env);
  await waitFor('the paused marker', async () => (await p.locator('#new-rows').innerText()).includes('paused'));
  check(!(await column(p, 'Command')).some((c) => c.includes('get serviceaccounts')), 'paused: not shown yet');
  await waitFor('the paused command to have arrived', async () => {
    const r = await p.request.get(base + '/console/live?view=commands&command=get+serviceaccounts&after_seq=0');
    return r.ok() && (await r.json()).rows.length > 0;
  });
  check(!(await column(p, 'Command')).some((c) => c.includes('get serviceaccounts')), 'paused: still not shown');
  await p.getByRole('button', { name: 'Resume' }).click();
  await waitFor('the held rows after resuming', async () => (await column(p, 'Command')).some((c) => c.includes('get serviceaccounts')), 3000);

  // Export the whole filtered set (more than one page).
  await p.goto(base + '/audit/kubectl?view=calls&since=1h');
  const [download] = await Promise.all([p.waitForEvent('download'), p.getByRole('link', { name: 'Export CSV' }).click()]);
  const name = download.suggestedFilename();
  check(/^ztk-audit-calls-\d{8}T\d{4}Z-\d{8}T\d{4}Z\.csv$/.test(name), 'the file name has the time range: ' + name);
  await download.saveAs(path.join(cfg.shots, 'export.csv'));
  results.exportName = name;

  // Who can do what.
  await p.goto(base + '/access?ask=can-i&cluster=sandbox&verb=delete&resource=pods&namespace=default&user=' + cfg.alice.user);
  check((await p.locator('.answer').innerText()).includes('may delete pods'), 'can-i answered');
  await p.goto(base + '/access?ask=who-can&cluster=sandbox&verb=delete&resource=pods&namespace=default');
  check((await p.locator('.answer').innerText()).includes(cfg.alice.user), 'who-can answered');
  await shot(p, '07-access');

  // Latency and activity.
  resp = await p.goto(base + '/audit/insights?since=1h&by=user');
  check(resp.status() === 200, 'insights: ' + resp.status());
  const groupKeys = await p.locator('#groups tbody tr td:first-child').allInnerTexts();
  check(groupKeys.includes(cfg.alice.user) && groupKeys.includes(cfg.admin.user), 'insights per user: ' + groupKeys);
  check(await p.locator('figure.chart svg').count() === 3, 'three charts');
  check(await p.locator('#slowest tbody tr').count() > 0, 'the slowest calls');
  check(await p.locator('figure.chart rect.bar.ok').count() > 0 && await p.locator('figure.chart rect.bar.e4').count() > 0, 'calls per minute stacked by outcome, the 404 among the client errors');
  check((await p.locator('figure.chart figcaption').allInnerTexts()).some((t) => t.startsWith('Calls per minute')), 'the chart says per minute');
  await shot(p, '08-insights');
  // The slowest call links to its record, details open.
  const slowDuration = (await p.locator('#slowest tbody tr').first().locator('td').last().innerText()).trim();
  await p.locator('#slowest tbody tr').first().getByRole('link').click();
  await p.waitForURL(/open=/);
  const openRow = p.locator('#rows tbody tr[id^="call-"]');
  check(await openRow.count() === 1 && await openRow.locator('details').evaluate((d) => d.open), 'the slowest call\'s record, details open');
  check((await openRow.locator('td.num').first().innerText()).trim() === slowDuration, 'the same call: ' + slowDuration);
  await p.goto(base + '/audit/insights?since=1h&by=verb');
  await p.getByRole('button', { name: 'Theme' }).click();
  check(await p.evaluate(() => document.documentElement.dataset.theme === 'dark'), 'the dark theme');
  const dark = await p.evaluate(() => getComputedStyle(document.body).backgroundColor);
  await shot(p, '08-insights-dark');
  await p.getByRole('button', { name: 'Theme' }).click();
  const light = await p.evaluate(() => getComputedStyle(document.body).backgroundColor);
  const lum = (c) => c.match(/\d+/g).slice(0, 3).map(Number).reduce((a, b) => a + b, 0);
  check(lum(dark) < 150 && lum(light) > 600, `dark and light backgrounds: ${dark} ${light}`);
  resp = await p.goto(base + '/audit/insights?by=colour');
  check(resp.status() === 400 && (await p.locator('#filter-error').innerText()).includes('unknown grouping'), 'a bad grouping is a 400');

  // A phone-sized screen and the dark theme.
  const phone = await admin.newPage();
  await phone.setViewportSize({ width: 390, height: 844 });
  for (const page of ['/audit/kubectl?view=commands', '/audit/insights?since=1h', '/access', '/audit/kubectl?view=calls']) {
    await phone.goto(base + page);
    check(await phone.evaluate(() => document.documentElement.scrollWidth <= 400), page + ' fits a phone (tables scroll inside)');
  }
  await phone.getByRole('button', { name: 'Theme' }).click();
  await phone.screenshot({ path: path.join(cfg.shots, '09-phone-dark.png') });
  await phone.close();

  // Revocation signs an open page out within about a second.
  await ap.goto(base + '/audit/kubectl');
  await sleep(300);
  const started = Date.now();
  await run(cfg.ztk, ['gateway', 'session', 'revoke', cfg.alice.user, '--config', cfg.config], { env: { ...process.env, ...cfg.alice.env } });
  await waitFor('the signed-out notice', async () => ap.locator('#signed-out').isVisible(), 10000);
  results.signedOutAfterMs = Date.now() - started;
  await shot(ap, '10-signed-out');
  resp = await ap.goto(base + '/audit/kubectl');
  check(ap.url().includes('/signin'), 'a revoked session sees no data');

  // Sign out ends the session.
  await p.goto(base + '/audit/kubectl');
  await p.getByRole('button', { name: 'Sign out' }).click();
  await p.waitForURL('**/signin');
  resp = await p.goto(base + '/audit/kubectl');
  check(p.url().includes('/signin'), 'signed out');
  console.log(JSON.stringify({ ok: true, ...results }));
} catch (err) {
  console.error(err.stack || String(err));
  process.exitCode = 1;
} finally {
  await browser.close();
}
