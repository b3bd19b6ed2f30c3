// The device page's operations in Debian's headless Chromium.
// usage: node tests/browser/device.mjs <loginUrl> <deviceId> <screenshotDir>
// The summary shows the connection state and the firmware; the tabs work from the keyboard
// (ArrowRight selects and focuses the next) and the chosen tab is in the URL, so a reload
// keeps it. Edit desired and save; revert that version from the history; call a method on the
// offline device (the error reads in words); queue a cloud-to-device message; disable the
// device; regenerate its keys (the connection string shown changes).
import { run, settle } from './chromium.mjs';

const [loginUrl, deviceId, shotDir] = process.argv.slice(2);

await run('device', async (page, problems) => {
  // Chromium logs every 4xx response as a console error; the one 404 expected here is the hub's
  // answer to the method on the offline device, which the page shows in words.
  let expected404 = 1;
  page.on('console', (m) => {
    if (m.type() !== 'error' && m.type() !== 'warning') return;
    if (m.text().includes('status of 404') && expected404-- > 0) return;
    problems.push(`console ${m.type()}: ${m.text()}`);
  });
  await page.goto(loginUrl);
  await page.locator(`tr[data-device-id="${deviceId}"] a`).click();

  // The summary, above the tabs: the connection state and the firmware, desired → reported.
  const connection = page.locator('.device-summary dd.connection');
  await connection.waitFor({ timeout: 30_000 });
  const state = await connection.innerText();
  if (!['Connected', 'Disconnected'].includes(state)) problems.push(`summary connection: ${state}`);
  const firmware = await page.locator('.device-summary dd.firmware').innerText();
  if (!firmware.includes('→')) problems.push(`summary firmware: ${firmware}`);

  // The tabs from the keyboard: the selected tab is the one tab stop, and ArrowRight selects
  // and focuses the next (Overview → Twin), which the URL then names.
  const overview = page.locator('#tab-overview');
  if ((await overview.getAttribute('aria-selected')) !== 'true') problems.push('the page does not open on the Overview tab');
  await overview.focus();
  await page.keyboard.press('ArrowRight');
  await page.waitForFunction(() => {
    const twin = document.querySelector('#tab-twin');
    return document.activeElement === twin && twin?.getAttribute('aria-selected') === 'true' && twin?.getAttribute('tabindex') === '0'
      && document.querySelector('#tab-overview')?.getAttribute('tabindex') === '-1';
  }, null, { timeout: 10_000 });
  if (new URL(page.url()).searchParams.get('tab') !== 'twin') problems.push(`the URL does not name the tab: ${page.url()}`);

  const editor = page.locator('textarea.desired-json');
  await editor.waitFor({ timeout: 30_000 });
  await editor.fill(JSON.stringify({ telemetryInterval: 15 }, null, 2));
  await page.locator('button.review').click();
  await page.locator('button.save').click();
  await page.locator('.saved').waitFor({ timeout: 15_000 });

  // The history shows the change. Its tab is in the URL: a reload opens it again.
  await page.locator('#tab-history').click();
  await page.locator('li.history-entry').first().waitFor({ timeout: 15_000 });
  await settle(page);
  await page.reload();
  await page.locator('ol.history').waitFor({ timeout: 30_000 });
  if ((await page.locator('#tab-history').getAttribute('aria-selected')) !== 'true') problems.push('a reload lost the History tab');
  if ((await page.locator('#panel').getAttribute('aria-labelledby')) !== 'tab-history') problems.push('the panel is not labelled by the History tab');

  // Revert the change.
  const entry = page.locator('li.history-entry', { hasText: 'properties.desired.telemetryInterval' }).first();
  await entry.waitFor({ timeout: 15_000 });
  const text = await entry.innerText();
  if (!text.includes('15') || !text.includes('60')) problems.push(`history entry lacks before/after: ${text}`);
  await entry.locator('button.revert').click();
  await page.locator('.reverted').waitFor({ timeout: 15_000 });
  await page.screenshot({ path: `${shotDir}/device-history.png`, fullPage: true });
  // The raw twin is on the Twin tab, collapsed until asked for (its text is there all the same).
  await page.locator('#tab-twin').click();
  await page.locator('details.raw-twin').waitFor({ timeout: 15_000 });
  if (await page.locator('details.raw-twin').evaluate((d) => d.open)) problems.push('the raw twin JSON is open by default');
  await page.waitForFunction(() => document.querySelector('pre.twin-json')?.textContent.includes('"telemetryInterval": 60'), null, { timeout: 15_000 });

  // Tags have their own editor.
  await page.locator('textarea.tags-desired-json').fill(JSON.stringify({ location: { building: 'Building-Z' } }, null, 2));
  await page.locator('button.tags-review').click();
  await page.locator('button.tags-save').click();
  await page.locator('.tags-saved').waitFor({ timeout: 15_000 });
  await page.waitForFunction(() => document.querySelector('pre.twin-json')?.textContent.includes('Building-Z'), null, { timeout: 15_000 });

  // A method on an offline device: the hub's reason, in words.
  await page.locator('#tab-methods').click();
  await page.locator('#method-name').fill('reboot');
  await page.locator('button.invoke').click();
  const methodError = page.locator('.method-result.error');
  await methodError.waitFor({ timeout: 15_000 });
  if (!(await methodError.innerText()).includes("isn't online")) problems.push(`method error: ${await methodError.innerText()}`);

  await page.locator('#c2d-payload').fill('hello device');
  await page.locator('.c2d-form button').click();
  await page.locator('.c2d-result.ok').waitFor({ timeout: 15_000 });

  await page.locator('#tab-identity').click();
  await page.locator('button.toggle-status').click();
  await page.locator('.identity-result.ok').waitFor({ timeout: 15_000 });
  await page.locator('button.toggle-status', { hasText: 'Enable' }).waitFor({ timeout: 15_000 });
  await page.locator('.device-summary dd.status', { hasText: 'disabled' }).waitFor({ timeout: 15_000 });

  const before = await page.locator('input.device-cs').inputValue();
  page.once('dialog', (d) => d.accept());
  await page.locator('button.regenerate').click();
  await page.waitForFunction((old) => document.querySelector('input.device-cs')?.value !== old, before, { timeout: 15_000 });
  await page.screenshot({ path: `${shotDir}/device-operations.png`, fullPage: true });
});
