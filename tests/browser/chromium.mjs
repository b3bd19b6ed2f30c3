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

// Runs in the page (pass it to page.waitForFunction with `{ selector, min }`): whether the
// canvas matching `selector` has at least `min` pixels of the charts' blue, i.e. a series or
// bars were drawn. It reads a copy, so the page's own canvas is not flagged for frequent
// readback (a console warning the tests would count).
export function canvasHasBlue({ selector, min }) {
  const c = document.querySelector(selector);
  if (!c) return false;
  const t = document.createElement('canvas');
  t.width = c.width;
  t.height = c.height;
  const ctx = t.getContext('2d', { willReadFrequently: true });
  ctx.drawImage(c, 0, 0);
  const d = ctx.getImageData(0, 0, c.width, c.height).data;
  let blue = 0;
  for (let i = 0; i < d.length; i += 4) if (d[i] < 100 && d[i + 2] > 180) blue++;
  return blue >= min;
}

// Resolves once the page has had no request in flight for `quietMs`. A reload or navigation
// with fetches still open makes wrangler's dev proxy answer them 503 as it drops them, which the
// page then logs as a console error; scripts call this before leaving a page on purpose.
export async function settle(page, quietMs = 300, timeoutMs = 15_000) {
  let inFlight = 0;
  let last = Date.now();
  const up = () => { inFlight++; last = Date.now(); };
  const down = () => { inFlight = Math.max(0, inFlight - 1); last = Date.now(); };
  page.on('request', up);
  page.on('requestfinished', down);
  page.on('requestfailed', down);
  try {
    const deadline = Date.now() + timeoutMs;
    // Requests already open when this was called are not counted, so wait at least one
    // quiet period of our own before trusting the count.
    await page.waitForTimeout(quietMs);
    while (inFlight > 0 || Date.now() - last < quietMs) {
      if (Date.now() > deadline) break;
      await page.waitForTimeout(50);
    }
  } finally {
    page.off('request', up);
    page.off('requestfinished', down);
    page.off('requestfailed', down);
  }
}
