// The fleet console at scale, in Debian's headless Chromium.
// usage: node tests/browser/query.mjs <loginUrl> <devices> <buildingACount> <readOnlyLoginUrl> <screenshotDir>
// The virtualized table keeps few rows in the DOM while it pages through the whole fleet; a
// query with a syntax error shows where; the building quick filter narrows the fleet to the
// expected count; a bar of the GROUP BY summary filters; a `service` sign-in (no RegistryWrite) is
// read-only and still lists the fleet.
import { canvasHasBlue, run, settle } from './chromium.mjs';

const [loginUrl, devices, buildingA, readOnlyUrl, shotDir] = process.argv.slice(2);
const MAX_DOM_ROWS = 60;

const domRows = (page) => page.locator('table.fleet-rows tbody tr[data-device-id]').count();
const countText = (page) => page.locator('.fleet-count').innerText();

await run('query', async (page, problems) => {
  page.on('console', (m) => { if (m.type() === 'error' || m.type() === 'warning') problems.push(`console ${m.type()}: ${m.text()}`); });
  await page.goto(loginUrl);
  await page.waitForFunction((n) => document.querySelector('.fleet-count')?.textContent.includes(`of ${n} device`), devices, { timeout: 30_000 });
  if ((await domRows(page)) > MAX_DOM_ROWS) problems.push(`first page: ${await domRows(page)} rows in the DOM`);
  await page.screenshot({ path: `${shotDir}/fleet-query.png`, fullPage: true });

  // Scroll to the end, again and again, until every device is loaded.
  const deadline = Date.now() + 60_000;
  while (!(await countText(page)).startsWith(`${devices} of ${devices}`)) {
    if (Date.now() > deadline) throw new Error(`never loaded everything: ${await countText(page)}`);
    await page.locator('.fleet-scroll').evaluate((el) => { el.scrollTop = el.scrollHeight; });
    await page.waitForTimeout(150);
  }
  const rows = await domRows(page);
  if (rows > MAX_DOM_ROWS || rows === 0) problems.push(`after scrolling ${devices} devices: ${rows} rows in the DOM`);
  const last = await page.locator('table.fleet-rows tbody tr[data-device-id]').last().getAttribute('data-device-id');
  if (!last) problems.push('no row at the end of the scroll');

  // A syntax error is shown at its position, and Run is off.
  await page.locator('#fleet-query').fill("SELECT * FROM devices WHERE tags.location.building = ");
  await page.locator('.query-error').waitFor({ timeout: 5_000 });
  const message = await page.locator('.query-error').innerText();
  if (!/at 1:\d+/.test(message)) problems.push(`error without a position: ${message}`);
  if ((await page.locator('mark.error-at').count()) !== 1) problems.push('the error position is not marked');
  if (!(await page.locator('button.run').isDisabled())) problems.push('Run is enabled for a broken query');
  await page.screenshot({ path: `${shotDir}/fleet-query-error.png`, fullPage: true });

  // The building quick filter writes the query and narrows the fleet.
  await page.locator('.qf-building').selectOption('Building-A');
  await page.waitForFunction((n) => document.querySelector('.fleet-count')?.textContent.includes(`of ${n} device`), buildingA, { timeout: 30_000 });
  const query = await page.locator('#fleet-query').inputValue();
  if (!query.includes("tags.location.building = 'Building-A'")) problems.push(`quick filter wrote: ${query}`);
  await page.screenshot({ path: `${shotDir}/fleet-filtered.png`, fullPage: true });

  // A bar of the summary adds its group to the filter.
  await page.locator('.group-pick').first().click();
  await page.waitForFunction(() => document.querySelector('#fleet-query').value.includes('properties.reported.firmwareVersion'), null, { timeout: 10_000 });
  // The summary chart has drawn its bars.
  await page.waitForFunction(canvasHasBlue, { selector: 'canvas.group-canvas', min: 100 }, { timeout: 10_000 });

  // Saved queries survive a reload.
  page.once('dialog', (d) => d.accept('Building A drift'));
  await page.locator('button.save-query').click();
  await settle(page);
  await page.reload();
  await page.locator('.saved-queries button', { hasText: 'Building A drift' }).waitFor({ timeout: 15_000 });

  // service: the console says it is read-only and turns writes off, and still shows the fleet.
  await settle(page);
  await page.goto(readOnlyUrl);
  await page.locator('.badge.read-only').waitFor({ timeout: 15_000 });
  if (!(await page.locator('form.create-device button').isDisabled())) problems.push('create is enabled for service');
  const reason = await page.locator('.read-only-reason').first().innerText();
  if (!reason.includes('service') || !reason.includes('RegistryWrite')) problems.push(`read-only reason: ${reason}`);
  await page.locator('table.fleet-rows tbody tr[data-device-id]').first().waitFor({ timeout: 15_000 });
  await page.screenshot({ path: `${shotDir}/fleet-read-only.png`, fullPage: true });
});
