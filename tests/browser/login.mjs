// Drives the dashboard in Debian's headless Chromium with playwright-core.
// usage: node tests/browser/login.mjs <loginUrl> <deviceId> <expectedText> <screenshotDir>
// Exits 0 and prints "browser: ok" when the login URL signs in, the fleet lists the device,
// and the device page shows its twin; the key (env TWINHUB_SECRET_KEY) must never leave the
// browser in a URL or header. With LIVE_MARKER set, it then prints "ready" and waits for that
// text to appear in the twin without a reload (the test changes the twin meanwhile).
import { run, settle } from './chromium.mjs';

const [loginUrl, deviceId, expectedText, shotDir] = process.argv.slice(2);
const secret = process.env.TWINHUB_SECRET_KEY ?? '';

await run('browser', async (page, problems) => {
  page.on('request', (r) => {
    const leaked = secret && (r.url().includes(secret) || Object.values(r.headers()).some((v) => v.includes(secret)));
    if (leaked) problems.push(`key sent in a request to ${r.url()}`);
  });
  await page.goto(loginUrl);
  const row = page.locator(`tr[data-device-id="${deviceId}"] a`);
  await row.waitFor({ timeout: 30_000 });
  if (page.url().includes('SharedAccessKey')) problems.push(`key left in the address bar: ${page.url()}`);
  await page.screenshot({ path: `${shotDir}/fleet.png`, fullPage: true });
  await row.click();
  // The twin is on the device page's Twin tab, its raw JSON collapsed (the text is there).
  await page.locator('#tab-twin').click();
  const twin = page.locator('pre.twin-json');
  await twin.waitFor({ state: 'attached', timeout: 30_000 });
  const text = await twin.textContent();
  if (!text.includes(`"deviceId": "${deviceId}"`)) problems.push(`twin does not name ${deviceId}`);
  if (!text.includes(expectedText)) problems.push(`twin lacks ${expectedText}`);
  await page.screenshot({ path: `${shotDir}/device.png`, fullPage: true });
  const marker = process.env.LIVE_MARKER;
  if (marker) {
    await page.locator('.badge.live').waitFor({ timeout: 15_000 });
    console.log('ready');
    await page.waitForFunction(
      (m) => document.querySelector('pre.twin-json')?.textContent.includes(m),
      marker,
      { timeout: 20_000 },
    );
    await page.screenshot({ path: `${shotDir}/device-live.png`, fullPage: true });
  }
  // A reload keeps the session (sessionStorage) without the fragment.
  await settle(page);
  await page.reload();
  await twin.waitFor({ state: 'attached', timeout: 30_000 });
});
