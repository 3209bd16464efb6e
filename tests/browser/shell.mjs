// kubectl in the browser, end to end: Debian's chromium (playwright-core) types into the web
// shell's terminal and reads what it shows. Run by tests/integration/shell.rs, which starts
// the gateway and checks the audit trail afterwards; everything comes in ZTK_SHELL_TEST (JSON).
// Prints one JSON line of results (the command ids and timings) last.
import { chromium } from 'playwright-core';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import path from 'node:path';

const cfg = JSON.parse(process.env.ZTK_SHELL_TEST);
const run = promisify(execFile);
const base = cfg.url.replace(/\/$/, '');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function check(cond, message) {
  if (!cond) throw new Error('check failed: ' + message);
}

async function waitFor(what, fn, ms = 20000) {
  const end = Date.now() + ms;
  for (;;) {
    if (await fn()) return;
    if (Date.now() > end) throw new Error('timed out waiting for ' + what);
    await sleep(50);
  }
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

// The terminal's text as the page shows it (xterm.js's DOM renderer: one div per row).
const screen = (page) => page.evaluate(() =>
  [...document.querySelectorAll('#terminal .xterm-rows > div')].map((d) => d.textContent.replace(/\u00a0/g, ' ')).join('\n'));
const done = (page) => page.evaluate(() => Number(document.getElementById('terminal').dataset.done || 0));
const state = (page) => page.evaluate(() => document.getElementById('terminal').dataset.state);

async function clear(page) {
  await page.keyboard.press('Control+L');
  await waitFor('a cleared screen', async () => !(await screen(page)).includes('$ kubectl'));
}

// Types a line, presses Enter; returns when the command ended (or was refused).
async function runLine(page, line, ms = 20000) {
  const before = await done(page);
  await page.keyboard.type(line);
  await page.keyboard.press('Enter');
  await waitFor(`"${line}" to end`, async () => (await done(page)) > before, ms);
  return settled(page);
}

// The screen once the prompt written after a command is rendered (so is all before it).
async function settled(page) {
  let text = '';
  await waitFor('the prompt', async () => {
    text = await screen(page);
    const last = text.split('\n').filter((l) => l.trim()).pop() || '';
    return last.trim().endsWith('$');
  });
  return text;
}

async function openShell(page, query) {
  await page.goto(base + '/shell' + query);
  await waitFor('the shell to be ready', async () => (await state(page)) === 'ready');
  await page.locator('#terminal').click();
}

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const results = {};
const problems = [];
try {
  const ctx = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 900 } });
  const page = await ctx.newPage();
  page.on('pageerror', (e) => problems.push('page error: ' + e.message));
  await signIn(page, cfg.alice.user, cfg.alice.password);

  // An unknown cluster is refused on the page; the deep link opens the one asked for.
  let resp = await page.goto(base + '/shell?cluster=nope');
  check(resp.status() === 404, 'an unknown cluster: ' + resp.status());
  // From here on, any console error (a CSP violation, a missing asset) fails the test.
  let watching = true;
  page.on('console', (m) => { if (watching && m.type() === 'error') problems.push('console: ' + m.text()); });
  await openShell(page, '?cluster=sandbox&namespace=dev');
  check((await page.locator('#shell-status').innerText()).includes('namespace dev'), 'the status names the namespace');
  check(await page.locator('.xterm-accessibility-tree, .xterm-accessibility').count() > 0, 'the terminal has a screen-reader tree');

  // kubectl get pods: the output streams into the terminal.
  let t0 = Date.now();
  let text = await runLine(page, 'kubectl get pods -n dev');
  results.getPodsMs = Date.now() - t0;
  check(text.includes('web-f4xbb9mvgl-fh794') && text.includes('Running'), 'get pods output:\n' + text);
  await shot(page, 'shell-get-pods');
  // The default namespace of the deep link applies.
  await clear(page);
  text = await runLine(page, 'kubectl get deploy');
  check(text.includes('api') && text.includes('web'), 'get deploy in dev:\n' + text);

  // History: ↑ recalls the last line.
  await page.keyboard.press('ArrowUp');
  await waitFor('the recalled line', async () => (await screen(page)).split('\n').some((l) => l.trim().endsWith('$ kubectl get deploy') && l.includes('dev$')) );
  await page.keyboard.press('Control+U');

  // Each refusal: refused, recorded, and no file content shown.
  for (const line of cfg.refused) {
    await clear(page);
    text = await runLine(page, line);
    check(text.includes('refused:'), `"${line}" refused:\n` + text);
    check(!text.includes('root:x:0:0') && !text.includes('client-key-data') && !text.includes('token:'), `"${line}" shows no file content:\n` + text);
  }
  await shot(page, 'shell-refused');

  // exec -it into a sandbox pod, run a command there, leave.
  await clear(page);
  const before = await done(page);
  await page.keyboard.type('kubectl exec -it web-f4xbb9mvgl-fh794 -n dev -- sh');
  await page.keyboard.press('Enter');
  await waitFor('the pod shell prompt', async () => (await screen(page)).includes('/ # '));
  await page.keyboard.type('hostname');
  await page.keyboard.press('Enter');
  await waitFor('the pod answered', async () => (await screen(page)).split('\n').some((l) => l.trim() === 'web-f4xbb9mvgl-fh794'));
  await shot(page, 'shell-exec');
  await page.keyboard.type('exit');
  await page.keyboard.press('Enter');
  await waitFor('exec to end', async () => (await done(page)) > before);
  await settled(page);

  // Ctrl-C ends get -w.
  await clear(page);
  const beforeWatch = await done(page);
  await page.keyboard.type('kubectl get pods -n dev -w');
  await page.keyboard.press('Enter');
  await waitFor('the watch to list', async () => (await screen(page)).includes('web-f4xbb9mvgl-pv968'));
  await sleep(300);
  t0 = Date.now();
  await page.keyboard.press('Control+C');
  await waitFor('Ctrl-C to end the watch', async () => (await done(page)) > beforeWatch, 5000);
  results.ctrlCMs = Date.now() - t0;
  await settled(page);

  // Paste manifest, then apply -f - reads it.
  await clear(page);
  await page.getByRole('button', { name: 'Paste manifest' }).click();
  await page.getByLabel('Manifest (YAML or JSON)').fill(
    'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-the-browser\ndata:\n  greeting: hello\n');
  await page.getByRole('button', { name: 'Use manifest' }).click();
  await waitFor('the manifest to be ready', async () => (await page.locator('#manifest-state').innerText()).includes('Manifest ready'));
  await page.locator('#terminal').click();
  text = await runLine(page, 'kubectl apply -f -');
  check(text.includes('configmap/from-the-browser created'), 'apply -f - from the pasted manifest:\n' + text);
  text = await runLine(page, 'kubectl get configmap from-the-browser -o jsonpath={.data.greeting}');
  check(text.includes('hello'), 'the configmap exists:\n' + text);
  // Dropping a YAML file on the terminal supplies the manifest too.
  await clear(page);
  await page.evaluate(() => {
    const dt = new DataTransfer();
    dt.items.add(new File(['apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: dropped\n'], 'dropped.yaml', { type: 'application/yaml' }));
    document.getElementById('terminal').dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
  });
  await waitFor('the dropped manifest', async () => (await page.locator('#manifest-state').innerText()).includes('dropped.yaml'));
  text = await runLine(page, 'kubectl create -f -');
  check(text.includes('configmap/dropped created'), 'create -f - from the dropped file:\n' + text);

  // The audit page shows the commands, access method Browser.
  const audit = await ctx.newPage();
  await audit.goto(base + '/audit/kubectl?access-method=browser');
  const rows = await audit.locator('#rows tbody tr').allInnerTexts();
  check(rows.some((r) => r.includes('kubectl get pods -n dev') && r.includes('Browser')), 'the audit page lists the browser command:\n' + rows.join('\n'));
  await shot(audit, 'shell-audit');
  await audit.close();

  // No console error so far (a CSP violation or a missing asset would show here). The
  // revocation below makes the page's session watch answer 401, which the console logs.
  check(problems.length === 0, problems.join('\n'));
  watching = false;

  // Revoking the session kills a running logs -f and closes the shell.
  await clear(page);
  await page.keyboard.type('kubectl logs -f web-f4xbb9mvgl-fh794 -n dev');
  await page.keyboard.press('Enter');
  await waitFor('logs to stream', async () => (await state(page)) === 'running' && (await screen(page)).includes('[web-f4xbb9mvgl-fh794/'));
  t0 = Date.now();
  await run(cfg.ztk, ['gateway', 'session', 'revoke', cfg.alice.user, '--config', cfg.config], { timeout: 30000 });
  const revokedAt = Date.now();
  await waitFor('the shell to close', async () => (await state(page)) === 'closed', 10000);
  results.revokeToClosedMs = Date.now() - revokedAt;
  results.revokeCommandMs = revokedAt - t0;
  // The page hides its content once signed out (console.js); the status line keeps the reason.
  const closedStatus = await page.locator('#shell-status').textContent();
  check(closedStatus.includes('Closed:') && closedStatus.includes('sign in again'), 'the shell says why it closed: ' + closedStatus);
  await shot(page, 'shell-revoked');
  results.ok = true;
} catch (e) {
  for (const p of browser.contexts().flatMap((c) => c.pages())) {
    await shot(p, 'failure-' + Math.random().toString(36).slice(2, 6)).catch(() => {});
  }
  throw e;
} finally {
  await browser.close();
}
console.log(JSON.stringify(results));
