// The fleet page in Debian's headless Chromium: create a device, open it (its connection
// string is shown), delete it after confirming.
// usage: node tests/browser/fleet.mjs <loginUrl> <newDeviceId> <screenshotDir>
import { run } from './chromium.mjs';

const [loginUrl, deviceId, shotDir] = process.argv.slice(2);
await run('fleet', async (page) => {
  await page.goto(loginUrl);
  await page.locator('form.create-device input').fill(deviceId);
  await page.locator('form.create-device button').click();
  const row = page.locator(`tr[data-device-id="${deviceId}"]`);
  await row.waitFor({ timeout: 15_000 });
  await row.locator('a').click();
  // The connection string is on the device page's Identity tab.
  await page.locator('#tab-identity').click();
  const cs = page.locator('input.device-cs');
  await cs.waitFor({ timeout: 15_000 });
  const value = await cs.inputValue();
  if (!value.includes(`DeviceId=${deviceId};SharedAccessKey=`)) throw new Error(`connection string: ${value}`);
  await page.screenshot({ path: `${shotDir}/device-created.png`, fullPage: true });
  // Back twice: the tab switch is a history entry of its own.
  await page.goBack();
  await page.goBack();
  page.once('dialog', (d) => d.accept());
  await page.locator(`tr[data-device-id="${deviceId}"] button.delete`).click();
  await row.waitFor({ state: 'detached', timeout: 15_000 });
});
