// The endpoints page in Debian's headless Chromium.
// usage: node tests/browser/endpoints.mjs <loginUrl> <screenshotDir>
// Exits 0 and prints "endpoints: ok" (and "endpoint: <connection string>") when the header's
// Endpoints link opens a page whose Event Hub-compatible connection string names the page's own
// host and the signed-in policy; the test then connects the real azure-eventhub client with it.
import { run } from './chromium.mjs';

const [loginUrl, shotDir] = process.argv.slice(2);

await run('endpoints', async (page, problems) => {
  page.on('console', (m) => { if (m.type() === 'error') problems.push(`console: ${m.text()}`); });
  await page.goto(loginUrl);
  const link = page.locator('a', { hasText: 'Endpoints' }).first();
  await link.waitFor({ timeout: 30_000 });
  await link.click();
  const box = page.locator('#eventhub-cs');
  await box.waitFor({ timeout: 15_000 });
  await page.waitForFunction(() => document.querySelector('#eventhub-cs')?.value.startsWith('Endpoint=sb://'), null, { timeout: 15_000 });
  const shown = await box.inputValue();
  const host = new URL(loginUrl).host;
  if (!shown.includes(`Endpoint=sb://${host}/`)) problems.push(`the string names another host: ${shown.split(';')[0]}`);
  if (!shown.includes('SharedAccessKeyName=iothubowner') || !shown.includes('EntityPath=twinhub')) problems.push('the string lacks the policy or the entity path');
  if (await page.locator('label[for="eventhub-cs"]').count() !== 1) problems.push('the connection string has no label');
  await page.screenshot({ path: `${shotDir}/endpoints.png`, fullPage: true });
  console.log(`endpoint: ${shown}`);
});
