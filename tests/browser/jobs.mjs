// The jobs page in Debian's headless Chromium.
// usage: node tests/browser/jobs.mjs <loginUrl> <buildingACount> <screenshotDir>
// From the fleet filtered to Building-A, "New job for these devices" opens the jobs page with
// the condition filled in; a broken condition is refused as typed; the job (desired
// firmwareVersion 2.1.0) runs to completed with its bar full and every device listed as
// completed; then "Roll back" gives the devices their previous value and the job says so,
// also after a reload of /jobs.
import { run, settle } from './chromium.mjs';

const [loginUrl, buildingA, shotDir] = process.argv.slice(2);
const jobRow = (page) => page.locator('tr.job').first();

await run('jobs', async (page, problems) => {
  page.on('console', (m) => { if (m.type() === 'error' || m.type() === 'warning') problems.push(`console ${m.type()}: ${m.text()}`); });
  await page.goto(loginUrl);
  await page.locator('.qf-building').selectOption('Building-A');
  await page.waitForFunction((n) => document.querySelector('.fleet-count')?.textContent.includes(`of ${n} device`), buildingA, { timeout: 30_000 });
  await settle(page);
  await page.locator('a.new-job').click();
  const condition = page.locator('#job-condition');
  await condition.waitFor({ timeout: 15_000 });
  const written = await condition.inputValue();
  if (written.trim() !== "tags.location.building = 'Building-A'") problems.push(`condition from the fleet: ${written}`);

  // A broken condition: the error shows and Start is off; fixed, it is on again.
  await condition.fill("tags.location.building = ");
  await page.locator('.condition-error').waitFor({ timeout: 5_000 });
  if (!(await page.locator('button.start-job').isDisabled())) problems.push('Start is enabled for a broken condition');
  await condition.fill(written);
  await page.locator('.condition-error').waitFor({ state: 'detached', timeout: 5_000 });

  await page.locator('#job-id').fill('ui-firmware');
  await page.locator('#job-desired').fill('{"firmwareVersion": "2.1.0"}');
  await page.locator('button.start-job').click();
  const row = page.locator('tr.job[data-job-id="ui-firmware"]');
  await row.waitFor({ timeout: 15_000 });
  await page.locator('tr.job[data-job-id="ui-firmware"][data-status="completed"]').waitFor({ timeout: 60_000 });
  const counts = await row.locator('.job-counts').innerText();
  if (!counts.startsWith(`${buildingA} succeeded, 0 failed, 0 left of ${buildingA}`)) problems.push(`counts: ${counts}`);
  const bar = await row.locator('progress').evaluate((p) => [p.value, p.max]);
  if (bar[0] !== bar[1] || bar[1] !== Number(buildingA)) problems.push(`progress bar: ${bar}`);

  await row.locator('button.job-devices').click();
  await page.locator('tr.job-outcomes table.outcomes tbody tr').first().waitFor({ timeout: 15_000 });
  const outcomes = await page.locator('tr.job-outcomes .device-job-status').allInnerTexts();
  if (outcomes.length !== Number(buildingA) || outcomes.some((s) => s !== 'completed')) problems.push(`outcomes: ${outcomes}`);
  await page.screenshot({ path: `${shotDir}/jobs-completed.png`, fullPage: true });

  page.once('dialog', (d) => d.accept());
  await row.locator('button.job-rollback').click();
  await page.locator('tr.job[data-job-id="ui-firmware"][data-status="rolledBack"]').waitFor({ timeout: 60_000 });
  const message = await page.locator('tr.job[data-job-id="ui-firmware"] .job-message').innerText();
  if (!message.includes(`rolled back: ${buildingA} device`)) problems.push(`rollback message: ${message}`);
  await page.screenshot({ path: `${shotDir}/jobs-rolled-back.png`, fullPage: true });

  // /jobs is a page of its own, not only a route inside the app: a reload lands on it.
  await settle(page);
  await page.reload();
  await page.locator('tr.job[data-job-id="ui-firmware"][data-status="rolledBack"]').waitFor({ timeout: 30_000 });
  await settle(page);
});
