// The overview, the console's first page, in Debian's headless Chromium.
// usage: node tests/browser/overview.mjs <overviewUrl> <registryReadUrl> <deviceId> <shotDir>
// The figures as the hub counts them (a slow network shows the loading state first); an alert
// sent while the page is open moves its figure with no reload ("ready" / "go" on stdio); the
// drifting figure links to the fleet query listing exactly those devices; the alerts break down
// by building; the fleet page shows the fleet's telemetry and alert feed. Every console page
// passes the quality bar (quality.mjs) and shows a loading state on a slow network and an error
// to a policy that may not read it. A path no program serves ends in "No such page.", not a
// reload loop. Signed in with a policy that cannot read the overview, the page shows its error.
import { createInterface } from 'node:readline';
import { run, settle } from './chromium.mjs';
import { checkQuality } from './quality.mjs';

const [overviewUrl, registryReadUrl, deviceId, shotDir] = process.argv.slice(2);
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const figure = (page, name) => page.locator(`.figure.${name} .figure-value`);

await run('overview', async (page, problems) => {
  let refusing = false;
  page.on('console', (m) => {
    if (m.type() !== 'error' && m.type() !== 'warning') return;
    // The registryRead policy's 401s are what the last part expects.
    if (refusing && m.text().includes('401')) return;
    problems.push(`console ${m.type()}: ${m.text()}`);
  });
  await page.setViewportSize({ width: 1440, height: 900 });
  // A slow network: the page says it is loading before the first answer.
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('Network.enable');
  const latency = async (ms) =>
    cdp.send('Network.emulateNetworkConditions', { offline: false, latency: ms, downloadThroughput: -1, uploadThroughput: -1 });
  await latency(1500);
  await page.goto(overviewUrl);
  await page.locator('p.loading', { hasText: 'Loading the overview' }).waitFor({ timeout: 60_000 });
  await latency(0);
  await figure(page, 'total').waitFor({ timeout: 30_000 });
  const want = { total: '5', connected: '2', disconnected: '3', disabled: '1', drifting: '2', refused: '1', alerts: '2' };
  await page.waitForFunction((want) => Object.entries(want).every(([k, v]) =>
    document.querySelector(`.figure.${k} .figure-value`)?.textContent === v), want, { timeout: 30_000 })
    .catch(async () => {
      const got = {};
      for (const k of Object.keys(want)) got[k] = await figure(page, k).textContent();
      problems.push(`figures: ${JSON.stringify(got)}, wanted ${JSON.stringify(want)}`);
    });
  // Live: an alert sent now moves the figure with no reload.
  console.log('ready');
  await lines.next();
  await page.waitForFunction(() => document.querySelector('.figure.alerts .figure-value')?.textContent === '3', null, { timeout: 20_000 })
    .catch(() => problems.push('the alerts figure did not follow the new alert'));
  // Alerts by building: the chart's legend names the buildings with their counts.
  await page.locator('.group-pick', { hasText: 'Building-A (3)' }).waitFor({ timeout: 15_000 })
    .catch(() => problems.push('no Building-A (3) in the alert breakdown'));
  await checkQuality(page, 'overview', shotDir, problems);

  // The drifting figure lists exactly the drifting devices.
  await settle(page);
  await page.locator('a.figure.drifting').click();
  await page.waitForURL(/\/fleet\?q=/, { timeout: 15_000 });
  const fleetRows = page.locator('table.fleet-rows tr[data-device-id]');
  await fleetRows.first().waitFor({ timeout: 30_000 });
  const rows = await fleetRows.evaluateAll((r) => r.map((e) => e.dataset.deviceId).sort());
  if (rows.join() !== 'ov-1,ov-2') problems.push(`drifting lists ${rows.join()}`);
  if (!(await page.locator('#fleet-query').inputValue()).includes('IS_DRIFTING()')) problems.push('the query box lacks IS_DRIFTING()');
  // The query survives a reload (it is in the address).
  await settle(page);
  await page.reload();
  await fleetRows.first().waitFor({ timeout: 30_000 });
  if ((await fleetRows.count()) !== 2) problems.push('the reloaded fleet page lost its query');

  // The fleet page: its devices' telemetry and alerts.
  await settle(page);
  await page.goto(new URL('/fleet', page.url()).href);
  await page.locator('tr.alert-row').first().waitFor({ timeout: 30_000 });
  const alertRows = await page.locator('tr.alert-row').count();
  if (alertRows !== 3) problems.push(`the alert feed shows ${alertRows} alerts`);
  await page.locator('.fleet-series-state', { hasText: 'every device' }).waitFor({ timeout: 15_000 })
    .catch(async () => problems.push(`fleet series: ${await page.locator('.fleet-series-state').textContent()}`));
  await checkQuality(page, 'fleet', shotDir, problems);

  // The other pages meet the same bar.
  for (const [name, path, ready] of [
    ['device', `/device/${encodeURIComponent(deviceId)}`, '[role=tablist]'],
    ['jobs', '/jobs', 'form.new-job'],
    ['configurations', '/device-configurations', 'h1'],
    ['endpoints', '/endpoints', 'h1'],
  ]) {
    await settle(page);
    await page.goto(new URL(path, page.url()).href);
    await page.locator(ready).first().waitFor({ timeout: 30_000 });
    await settle(page);
    await checkQuality(page, name, shotDir, problems);
  }

  // Every page says it is loading while its answers are on the way (a slow network)...
  await latency(1500);
  for (const path of ['/fleet', `/device/${encodeURIComponent(deviceId)}`, '/jobs', '/device-configurations']) {
    await page.goto(new URL(path, page.url()).href);
    await page.locator(':is([role=status], [aria-live]):has-text("Loading")').first().waitFor({ timeout: 60_000 })
      .catch(() => problems.push(`${path}: no loading state on a slow network`));
    await settle(page, 300, 60_000);
  }
  await latency(0);

  // Paths the server answers with a program that cannot serve them (a missing file under
  // another program's directory) say there is no such page, after one try, not a reload loop.
  for (const path of ['/virtual/no-such-file', '/app/device/']) {
    await settle(page);
    let loads = 0;
    const count = () => { loads++; };
    page.on('load', count);
    await page.goto(new URL(path, page.url()).href);
    await page.locator('p.error', { hasText: 'No such page.' }).waitFor({ timeout: 15_000 })
      .catch(() => problems.push(`${path}: no "No such page."`));
    await page.waitForTimeout(1_000);
    page.off('load', count);
    if (loads > 2) problems.push(`${path}: loaded ${loads} times`);
  }

  // A policy that may not read the overview: the page says so.
  await settle(page);
  refusing = true;
  await page.goto(registryReadUrl);
  await page.locator('.overview-error').waitFor({ timeout: 30_000 });
  await page.screenshot({ path: `${shotDir}/overview-error.png` });
  // ...and every page whose reads that policy may not make says why, instead of staying empty.
  for (const path of ['/fleet', `/device/${encodeURIComponent(deviceId)}`, '/jobs']) {
    await settle(page);
    await page.goto(new URL(path, page.url()).href);
    await page.locator('[role=alert]').first().waitFor({ timeout: 30_000 })
      .catch(() => problems.push(`${path}: no error shown to a policy that may not read it`));
  }
});
