// The desired-properties editor in Debian's headless Chromium, with a conflict on purpose.
// usage: node tests/browser/edit.mjs <loginUrl> <deviceId> <screenshotDir>
// Signs in, opens the device and its Twin tab, edits desired, reviews the change, then prints "reviewed" and
// waits for a line on stdin (the test changes the twin meanwhile). Saving must then hit 412;
// the editor shows the three-way view, and "apply on top of theirs" must save.
import { createInterface } from 'node:readline';
import { run } from './chromium.mjs';

const [loginUrl, deviceId, shotDir] = process.argv.slice(2);
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

await run('editor', async (page) => {
  await page.goto(loginUrl);
  await page.locator(`tr[data-device-id="${deviceId}"] a`).click();
  // The editors are on the device page's Twin tab.
  await page.locator('#tab-twin').click();
  const editor = page.locator('textarea.desired-json');
  await editor.waitFor({ timeout: 30_000 });
  await editor.fill(JSON.stringify({ telemetryInterval: 15, temperatureThreshold: 30 }, null, 2));
  await page.locator('button.review').click();
  const diff = page.locator('table.diff');
  await diff.waitFor({ timeout: 10_000 });
  const diffText = await diff.innerText();
  if (!diffText.includes('properties.desired.telemetryInterval')) throw new Error(`diff lacks the change: ${diffText}`);
  await page.screenshot({ path: `${shotDir}/editor-review.png`, fullPage: true });
  console.log('reviewed');
  await lines.next();
  await page.locator('button.save').click();
  await page.locator('.conflict').waitFor({ timeout: 15_000 });
  await page.screenshot({ path: `${shotDir}/editor-conflict.png`, fullPage: true });
  await page.locator('button.retry').click();
  await page.locator('.saved').waitFor({ timeout: 15_000 });
  await page.screenshot({ path: `${shotDir}/editor-saved.png`, fullPage: true });
});
