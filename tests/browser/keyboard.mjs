// The operator's main path with the keyboard alone, in Debian's headless Chromium: create a
// device on the fleet page, open it, move between its tabs with the arrow keys, change a
// desired property through the editor's review and save, and disable the device. No click.
// usage: node tests/browser/keyboard.mjs <loginUrl> <newDeviceId> <screenshotDir>
import { run } from './chromium.mjs';

const [loginUrl, deviceId, shotDir] = process.argv.slice(2);

// Presses Tab until the element matching `selector` has the focus.
async function tabTo(page, selector, limit = 250) {
  for (let i = 0; i < limit; i++) {
    if (await page.evaluate((s) => document.activeElement?.matches(s) ?? false, selector)) return;
    await page.keyboard.press('Tab');
  }
  throw new Error(`Tab never reached ${selector}`);
}

await run('keyboard', async (page, problems) => {
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warning') problems.push(`console ${m.type()}: ${m.text()}`);
  });
  await page.setViewportSize({ width: 1440, height: 900 });
  await page.goto(loginUrl);
  await page.locator('#new-device-id:not([disabled])').waitFor({ timeout: 30_000 });

  // Create: the id field, typed, Enter submits.
  await tabTo(page, '#new-device-id');
  await page.keyboard.type(deviceId);
  await page.keyboard.press('Enter');
  const link = `table.fleet-rows tr[data-device-id="${deviceId}"] a`;
  await page.locator(link).waitFor({ timeout: 15_000 });

  // Open it: its link, Enter.
  await page.evaluate(() => document.activeElement?.blur());
  await tabTo(page, link);
  await page.keyboard.press('Enter');
  await page.locator('#tab-overview[aria-selected="true"]').waitFor({ timeout: 30_000 });

  // The tabs are one tab stop; the arrow keys select the next one.
  await tabTo(page, '#tab-overview');
  await page.keyboard.press('ArrowRight');
  await page.locator('#tab-twin[aria-selected="true"]').waitFor({ timeout: 10_000 });
  if (!(await page.evaluate(() => document.activeElement?.id === 'tab-twin'))) problems.push('the focus did not follow the arrow key');

  // A desired property: typed into the editor, reviewed, saved.
  await tabTo(page, 'textarea.desired-json');
  await page.keyboard.press('Control+A');
  await page.keyboard.type('{"telemetryInterval": 42}');
  await tabTo(page, 'button.review');
  await page.keyboard.press('Enter');
  await tabTo(page, 'button.save');
  await page.keyboard.press('Enter');
  await page.locator('.saved').waitFor({ timeout: 15_000 });

  // Identity (End: the last tab), then disable.
  await tabTo(page, '#tab-twin');
  await page.keyboard.press('End');
  await page.locator('#tab-identity[aria-selected="true"]').waitFor({ timeout: 10_000 });
  await tabTo(page, 'button.toggle-status');
  await page.keyboard.press('Enter');
  await page.locator('button.toggle-status', { hasText: 'Enable' }).waitFor({ timeout: 15_000 });
  await page.screenshot({ path: `${shotDir}/keyboard-device.png`, fullPage: true });
});
