// The configurations page in Debian's headless Chromium.
// usage: node tests/browser/configurations.mjs <loginUrl> <targeted> <screenshotDir>
// Exits 0 and prints "configurations: ok" when a configuration made with the form (its target
// condition checked as typed: a broken one is marked and cannot be saved) is listed with
// `targeted` twins targeted and then applied, the device page names it and shows each property
// it sets as still set, and Delete removes it.
import { run, settle } from './chromium.mjs';

const [loginUrl, targeted, shotDir] = process.argv.slice(2);

await run('configurations', async (page, problems) => {
  page.on('console', (m) => { if (m.type() === 'error') problems.push(`console: ${m.text()}`); });
  await page.goto(loginUrl);
  await page.locator('tr[data-device-id] a').first().waitFor({ timeout: 30_000 });
  await page.locator('a', { hasText: 'Configurations' }).first().click();
  await page.locator('form.new-configuration').waitFor({ timeout: 30_000 });

  await page.locator('#cfg-id').fill('ui-interval');
  await page.locator('#cfg-condition').fill("tags.env = ");
  await page.locator('.query-error').waitFor({ timeout: 5_000 });
  if (!(await page.locator('button.save-configuration').isDisabled())) problems.push('Save is enabled for a broken condition');
  await page.locator('#cfg-condition').fill("tags.env = 'prod'");
  await page.locator('#cfg-content').fill('{"telemetryInterval": 12}');
  await page.locator('#cfg-priority').fill('5');
  await page.locator('button.save-configuration').click();

  const row = page.locator('tr[data-configuration-id="ui-interval"]');
  await row.waitFor({ timeout: 15_000 });
  await page.waitForFunction((n) => {
    const r = document.querySelector('tr[data-configuration-id="ui-interval"]');
    return r && r.querySelector('.targeted')?.textContent === n && r.querySelector('.applied')?.textContent === n;
  }, targeted, { timeout: 30_000 });
  await page.screenshot({ path: `${shotDir}/configurations.png`, fullPage: true });

  await page.locator('a', { hasText: 'Fleet' }).first().click();
  await page.locator('tr[data-device-id] a').first().click();
  await page.locator('.configured-by', { hasText: 'ui-interval' }).waitFor({ timeout: 30_000 });
  await page.locator('.configured-by table.owned', { hasText: 'as the configuration sets it' }).waitFor({ timeout: 15_000 });
  await page.screenshot({ path: `${shotDir}/configured-device.png`, fullPage: true });

  await page.locator('a', { hasText: 'Configurations' }).first().click();
  page.once('dialog', (d) => d.accept());
  await page.locator('tr[data-configuration-id="ui-interval"] button.delete').click();
  await page.locator('tr[data-configuration-id="ui-interval"]').waitFor({ state: 'detached', timeout: 15_000 });
  await settle(page);
});
