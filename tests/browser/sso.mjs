// Completes single sign-on in Debian's chromium for tests/integration/sso.rs. ZTK_SSO_TEST (JSON):
//   {mode: "visit", url, login}: opens url (a device-flow or code-flow URL the CLI printed) and
//     signs in at the provider (dev interactions: any login name and password), confirming and
//     consenting, until the browser leaves the provider or it says the device is signed in.
//   {mode: "console", base, login}: the console's "Sign in with SSO", back to the audit page.
// Prints one JSON line: {url, text} of the last page.
import { chromium } from 'playwright-core';

const cfg = JSON.parse(process.env.ZTK_SSO_TEST);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function atProvider(page, login) {
  const origin = new URL(page.url()).origin;
  for (let step = 0; step < 12; step++) {
    await page.waitForLoadState('domcontentloaded');
    if (new URL(page.url()).origin !== origin) return;
    const text = await page.locator('body').innerText().catch(() => '');
    if (/Sign-in Success|signed in|You can close/i.test(text) && !(await page.locator('button[type=submit]').count())) return;
    if (await page.locator('input[name=login]').count()) {
      await page.fill('input[name=login]', login);
      await page.fill('input[name=password]', 'any password');
      await Promise.all([page.waitForNavigation().catch(() => {}), page.locator('button[type=submit]').first().click()]);
    } else if (await page.locator('button[type=submit]').count()) {
      await Promise.all([page.waitForNavigation().catch(() => {}), page.locator('button[type=submit]').first().click()]);
    } else {
      await sleep(200);
    }
  }
  throw new Error('the provider flow did not end: ' + page.url() + '\n' + (await page.locator('body').innerText()));
}

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
try {
  const ctx = await browser.newContext({ ignoreHTTPSErrors: true });
  const page = await ctx.newPage();
  if (cfg.mode === 'visit') {
    await page.goto(cfg.url);
    await atProvider(page, cfg.login);
  } else {
    await page.goto(cfg.base + '/signin');
    await Promise.all([page.waitForNavigation(), page.getByRole('link', { name: 'Sign in with SSO' }).click()]);
    await atProvider(page, cfg.login);
    await page.waitForURL('**/audit/kubectl**', { timeout: 15000 });
  }
  await page.waitForLoadState('domcontentloaded');
  console.log(JSON.stringify({ url: page.url(), text: await page.locator('body').innerText() }));
} finally {
  await browser.close();
}
