// The virtual device beside the dashboard, in Debian's headless Chromium.
// usage: node tests/browser/virtual.mjs <loginUrl> <deviceId> <screenshotDir>
// Page A (dashboard) opens the device and starts "Run as virtual device" (page B, a new tab).
// A changes desired telemetryInterval and firmwareVersion in the editor; B applies them and A
// shows the reported firmware and "completed" without a reload, and telemetry arriving. Then B
// goes offline, prints "offline" and waits for a line (the test changes desired meanwhile);
// back online, B applies the change. Last, B refuses firmwareVersion, prints "refusing", waits
// for a line (the test asks for new firmware), and A shows the error acknowledgement in the
// twin and the drift table. A's chart draws the telemetry. Last, A spawns 3 virtual devices.
import { createInterface } from 'node:readline';
import { canvasHasBlue, run, settle } from './chromium.mjs';

const [loginUrl, deviceId, shotDir] = process.argv.slice(2);
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

const twinHas = (page, text, timeout = 30_000) =>
  page.waitForFunction((t) => document.querySelector('pre.twin-json')?.textContent.includes(t), text, { timeout });

await run('virtual', async (page, problems) => {
  page.on('console', (m) => { if (m.type() === 'error' || m.type() === 'warning') problems.push(`dashboard console: ${m.text()}`); });
  await page.goto(loginUrl);
  await page.locator(`tr[data-device-id="${deviceId}"] a`).click();
  await page.locator('.badge.live').waitFor({ timeout: 30_000 });
  // The device page's tabs: identity (connection string), telemetry, twin (editors, raw JSON),
  // overview (drift, chart).
  await page.locator('#tab-identity').click();
  const [device] = await Promise.all([page.context().waitForEvent('page'), page.locator('a.run-virtual').click()]);
  device.on('pageerror', (e) => problems.push(`virtual device page error: ${e.message}`));
  device.on('console', (m) => { if (m.type() === 'error') problems.push(`virtual device console: ${m.text()}`); });
  const online = device.locator('.vd-devices .badge.ok');
  try {
    await online.waitFor({ timeout: 30_000 });
  } catch (e) {
    await device.screenshot({ path: `${shotDir}/virtual-device-stuck.png`, fullPage: true });
    throw new Error(`the virtual device did not come online; its page says:\n${await device.locator('body').innerText()}`);
  }
  if (device.url().includes('SharedAccessKey')) problems.push(`key left in the address bar: ${device.url()}`);
  // The device reported its connectivity, and the dashboard shows it live.
  await page.locator('#tab-twin').click();
  await twinHas(page, '"connectivity"');
  await page.locator('#tab-telemetry').click();
  await page.locator('table.telemetry tr').first().waitFor({ timeout: 30_000 });
  await page.locator('#tab-twin').click();

  // Change desired in the dashboard's editor.
  const editor = page.locator('textarea.desired-json');
  await editor.fill(JSON.stringify({ telemetryInterval: 7, firmwareVersion: '2.1.0' }, null, 2));
  await page.locator('button.review').click();
  await page.locator('button.save').click();
  await page.locator('.saved').waitFor({ timeout: 15_000 });
  await device.locator('.vd-interval', { hasText: '7 s' }).waitFor({ timeout: 15_000 });
  await device.locator('.vd-firmware', { hasText: 'downloading' }).waitFor({ timeout: 15_000 });
  await device.screenshot({ path: `${shotDir}/virtual-device.png`, fullPage: true });
  await twinHas(page, '"firmwareUpdateStatus": "completed"');
  await twinHas(page, '"firmwareVersion": "2.1.0"');
  // The chart draws the readings (its average line is blue) without a reload.
  await page.locator('#tab-overview').click();
  await page.waitForFunction(canvasHasBlue, { selector: 'canvas.telemetry-chart', min: 31 }, { timeout: 45_000 });
  await page.locator('table.drift tr[data-property="firmwareVersion"] .drift.ok').waitFor({ timeout: 15_000 });
  await page.screenshot({ path: `${shotDir}/virtual-device-dashboard.png`, fullPage: true });
  const log = await device.locator('table.vd-log').innerText();
  if (!log.includes('$iothub/twin/PATCH/properties/desired')) problems.push('the traffic log lacks the desired patch');
  if (log.includes('SharedAccessSignature')) problems.push('the traffic log shows the SAS token');

  // Offline, a change meanwhile, online again.
  await device.locator('input.vd-online').uncheck();
  await device.locator('.vd-devices .badge.off').waitFor({ timeout: 15_000 });
  console.log('offline');
  await lines.next();
  await device.locator('input.vd-online').check();
  await online.waitFor({ timeout: 30_000 });
  await device.locator('.vd-interval', { hasText: '9 s' }).waitFor({ timeout: 15_000 });

  // Refuse firmware: the dashboard shows the device's error acknowledgement.
  await device.locator('input.vd-reject-firmwareVersion').check();
  console.log('refusing');
  await lines.next();
  await page.locator('#tab-twin').click();
  await twinHas(page, '"ac": 500');
  await page.locator('#tab-overview').click();
  await page.locator('table.drift tr[data-property="firmwareVersion"] .drift.refused').waitFor({ timeout: 15_000 });
  await page.screenshot({ path: `${shotDir}/virtual-device-refused.png`, fullPage: true });
  await device.close();

  // A signed-in operator spawns a small fleet of virtual devices in one tab.
  await settle(page);
  await page.goto(new URL('/virtual', page.url()).href);
  await page.locator('#vd-count').fill('3');
  await page.locator('#vd-prefix').fill('fleetdemo');
  await page.locator('.spawn button').click();
  await page.waitForFunction(() => document.querySelectorAll('.vd-devices .badge.ok').length === 3, null, { timeout: 45_000 });
  await page.screenshot({ path: `${shotDir}/virtual-fleet.png`, fullPage: true });
});
