// A device's modules in the dashboard.
// usage: node tests/browser/modules.mjs <loginUrl> <deviceId> <moduleId> <screenshotDir>
// Exits 0 and prints "modules: ok" when the device page's Modules tab lists the module
// (connected, with its drift), the module's page (no Modules tab) shows the module's own twin
// live and no cloud-to-device or status controls, "Run as virtual device" runs the module, and the fleet console's
// `FROM devices.modules` query lists and links the module.
import { run, settle } from './chromium.mjs';

const [loginUrl, deviceId, moduleId, shotDir] = process.argv.slice(2);
const key = `${deviceId}/${moduleId}`;

await run('modules', async (page, problems) => {
  await page.goto(loginUrl);
  await page.locator(`tr[data-device-id="${deviceId}"] a`).waitFor({ timeout: 30_000 });
  await page.locator(`tr[data-device-id="${deviceId}"] a`).click();
  await page.locator('#tab-modules').click();
  const row = page.locator('tr.module-row', { hasText: moduleId });
  await row.waitFor({ timeout: 30_000 });
  const cells = await row.locator('td').allInnerTexts();
  if (cells[1] !== 'Connected') problems.push(`module connection shown as ${cells[1]}`);
  if (cells[3] !== '1') problems.push(`module drift shown as ${cells[3]} (one desired property not reported)`);
  await page.screenshot({ path: `${shotDir}/device-modules.png`, fullPage: true });

  await row.locator('a').click();
  // The module's page (wait for it: the device page has the same tabs) has no Modules tab;
  // its twin is on its Twin tab, the raw JSON collapsed (its text is there all the same).
  await page.locator('h1.device-id', { hasText: `module ${moduleId}` }).waitFor({ timeout: 30_000 });
  if ((await page.locator('#tab-modules').count()) !== 0) problems.push('a module page has a Modules tab');
  await page.locator('#tab-twin').click();
  const twin = page.locator('pre.twin-json');
  await twin.waitFor({ state: 'attached', timeout: 30_000 });
  const text = await twin.textContent();
  if (!text.includes(`"moduleId": "${moduleId}"`)) problems.push('the module page does not show the module twin');
  const heading = await page.locator('h1.device-id').innerText();
  if (!heading.includes(`module ${moduleId}`)) problems.push(`heading: ${heading}`);
  // Methods, but no cloud-to-device messages; keys, but no enable/disable.
  await page.locator('#tab-methods').click();
  await page.locator('form.method-form').waitFor({ timeout: 15_000 });
  if ((await page.locator('.c2d-form').count()) !== 0) problems.push('a module page offers cloud-to-device messages');
  await page.locator('#tab-identity').click();
  await page.locator('button.regenerate').waitFor({ timeout: 15_000 });
  if ((await page.locator('button.toggle-status').count()) !== 0) problems.push('a module page offers enable/disable');
  await page.locator('.badge.live').waitFor({ timeout: 15_000 });
  await page.screenshot({ path: `${shotDir}/module.png`, fullPage: true });

  // "Run as virtual device" runs the module (its connection string names the module): the
  // article's device reports into the module's twin, which this page shows live.
  const [vd] = await Promise.all([page.context().waitForEvent('page'), page.locator('a.run-virtual').click()]);
  vd.on('pageerror', (e) => problems.push(`virtual device page error: ${e.message}`));
  await vd.locator('.vd-devices .badge.ok').waitFor({ timeout: 30_000 });
  await page.locator('#tab-twin').click();
  await page.waitForFunction(() => document.querySelector('pre.twin-json')?.textContent.includes('"connectivity"'), null, { timeout: 30_000 });
  await vd.close();

  await page.locator('a', { hasText: 'Fleet' }).first().click();
  await page.locator('#fleet-query').fill(`SELECT * FROM devices.modules WHERE deviceId = '${deviceId}'`);
  await page.locator('button.run').click();
  const moduleRow = page.locator(`tr[data-device-id="${key}"] a`);
  await moduleRow.waitFor({ timeout: 30_000 });
  await page.screenshot({ path: `${shotDir}/fleet-modules.png`, fullPage: true });
  await moduleRow.click();
  await page.locator('#tab-twin').click();
  await page.waitForFunction((m) => document.querySelector('pre.twin-json')?.textContent.includes(`"moduleId": "${m}"`), moduleId, { timeout: 30_000 });
  await settle(page);
});
