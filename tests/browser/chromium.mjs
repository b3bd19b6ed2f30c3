// Shared by the browser scripts: Debian's headless Chromium with the flags this machine needs
// (no sandbox as root; no background networking, which the closed network refuses).
import { chromium } from 'playwright-core';

export function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
      '--disable-quic', '--no-first-run', '--disable-sync'],
  });
}

// Runs `scenario(page, problems)` in a fresh page, collecting page errors; exits 1 with the
// problems, or prints `${name}: ok`.
export async function run(name, scenario) {
  const browser = await launch();
  const problems = [];
  try {
    const page = await browser.newPage();
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    await scenario(page, problems);
  } catch (e) {
    problems.push(String(e));
  } finally {
    await browser.close();
  }
  if (problems.length) {
    console.error(problems.join('\n'));
    process.exit(1);
  }
  console.log(`${name}: ok`);
  process.exit(0);
}
