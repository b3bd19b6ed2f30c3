// The dashboard and the virtual device against a twinhub in upstream mode (B, fronting A).
// usage: node tests/browser/upstream.mjs <loginUrlOfB> <deviceId> <screenshotDir>
// The console lists the device (a query forwarded to A), its page shows the twin, and the
// features B cannot offer say so instead of failing; "Run as virtual device" connects through
// B's device endpoint (piped to A) and comes online. Prints "online" when it has.
import { run, settle } from './chromium.mjs';

const [loginUrl, deviceId, shotDir] = process.argv.slice(2);
await run('upstream', async (page, problems) => {
  page.on('console', (m) => { if (m.type() === 'error' || m.type() === 'warning') problems.push(`console ${m.type()}: ${m.text()}`); });
  await page.goto(loginUrl);
  await page.locator('.badge.upstream').waitFor({ timeout: 30_000 });
  await page.locator(`tr[data-device-id="${deviceId}"] a`).click();
  // The device page's tabs each say what they cannot offer: gather the notes of all of them
  // (the identity tab first: once its connection string shows, the session's limits are known).
  const notes = [];
  for (const tab of ['identity', 'telemetry', 'history', 'methods']) {
    await page.locator(`#tab-${tab}`).click();
    await page.locator(`#tab-${tab}[aria-selected="true"]`).waitFor({ timeout: 15_000 });
    if (tab === 'identity') await page.locator('input.device-cs').waitFor({ timeout: 30_000 });
    if (tab === 'methods') await page.locator('.c2d-form').waitFor({ timeout: 15_000 });
    notes.push(...await page.locator('.unavailable').allInnerTexts());
  }
  for (const feature of ['telemetry', 'history', 'cloud-to-device']) {
    if (!notes.some((n) => n.toLowerCase().includes(feature))) problems.push(`no "unavailable" note for ${feature}: ${notes}`);
  }
  if (!(await page.locator('.c2d-form button').isDisabled())) problems.push('the message form is on in upstream mode');
  await page.screenshot({ path: `${shotDir}/upstream-device.png`, fullPage: true });
  await page.locator('#tab-identity').click();

  const [device] = await Promise.all([page.context().waitForEvent('page'), page.locator('a.run-virtual').click()]);
  device.on('pageerror', (e) => problems.push(`virtual device page error: ${e.message}`));
  device.on('console', (m) => { if (m.type() === 'error') problems.push(`virtual device console: ${m.text()}`); });
  try {
    await device.locator('.vd-devices .badge.ok').waitFor({ timeout: 30_000 });
  } catch (e) {
    throw new Error(`the virtual device did not come online through B; its page says:\n${await device.locator('body').innerText()}`);
  }
  console.log('online');
  await device.screenshot({ path: `${shotDir}/upstream-virtual-device.png`, fullPage: true });
  await settle(page);
});
