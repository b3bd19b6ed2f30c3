// Dashboard figures in Debian's headless Chromium, printed as one JSON line per phase.
// usage: node tests/browser/bench-dashboard.mjs <phase> <loginUrl> [args]
//   first-rows <loginUrl> <runs>      navigation -> first fleet row, ms (performance.now()), per run
//   overview <overviewUrl> <runs> <n> navigation -> the overview's device total showing n, ms, per run
//   scroll <loginUrl> <seconds>       frame times while scrolling the fleet (pages load behind)
//   filter <loginUrl>                 frame times while a quick filter re-queries, and time to rows
//   chart <baseUrl> <points>          the chart's median draw time for that many points
// Frames: Chromium runs with vsync and the frame-rate limit off, so the interval between
// requestAnimationFrame callbacks is the time a frame takes, not the display's 16.7 ms.
import { chromium } from 'playwright-core';

const [phase, url, arg] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-background-networking', '--disable-component-update', '--disable-quic',
    '--no-first-run', '--disable-sync', '--disable-gpu-vsync', '--disable-frame-rate-limit'],
});
const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
const out = (o) => console.log(JSON.stringify({ phase, ...o }));
const stats = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const at = (p) => s[Math.min(s.length - 1, Math.floor(s.length * p))];
  return { frames: s.length, median: at(0.5), p95: at(0.95), max: s[s.length - 1] };
};
// Records rAF intervals until stopped.
const recordFrames = () => page.evaluate(() => {
  window.__frames = [];
  let last = performance.now();
  const tick = (t) => { window.__frames.push(t - last); last = t; if (!window.__stop) requestAnimationFrame(tick); };
  window.__stop = false;
  requestAnimationFrame(tick);
});
const stopFrames = () => page.evaluate(() => { window.__stop = true; return window.__frames.slice(1); });

try {
  if (phase === 'first-rows') {
    const times = [];
    for (let i = 0; i < Number(arg); i++) {
      await page.goto('about:blank');
      await page.goto(url);
      await page.locator('table.fleet-rows tr[data-device-id]').first().waitFor({ timeout: 30_000 });
      times.push(await page.evaluate(() => performance.now()));
    }
    out({ runs: times, median: [...times].sort((a, b) => a - b)[Math.floor(times.length / 2)] });
  } else if (phase === 'overview') {
    const total = process.argv[5];
    const times = [];
    for (let i = 0; i < Number(arg); i++) {
      await page.goto('about:blank');
      await page.goto(url);
      await page.waitForFunction((t) => document.querySelector('.figure.total .figure-value')?.textContent === t,
        total, { timeout: 30_000, polling: 'raf' });
      times.push(await page.evaluate(() => performance.now()));
    }
    out({ runs: times, median: [...times].sort((a, b) => a - b)[Math.floor(times.length / 2)] });
  } else if (phase === 'scroll') {
    await page.goto(url);
    await page.locator('tr[data-device-id]').first().waitFor({ timeout: 30_000 });
    await page.waitForTimeout(1000);
    await recordFrames();
    const end = Date.now() + Number(arg) * 1000;
    // Scroll 120 px a frame, like a fast wheel, for the whole time.
    await page.evaluate((until) => new Promise((done) => {
      const el = document.querySelector('.fleet-scroll');
      const step = () => { el.scrollTop += 120; if (Date.now() < until) requestAnimationFrame(step); else done(); };
      requestAnimationFrame(step);
    }), end);
    const frames = await stopFrames();
    const loaded = await page.locator('.fleet-count').innerText();
    const domRows = await page.locator('table.fleet-rows tbody tr[data-device-id]').count();
    out({ ...stats(frames), loaded, domRows });
  } else if (phase === 'filter') {
    await page.goto(url);
    await page.locator('tr[data-device-id]').first().waitFor({ timeout: 30_000 });
    await page.waitForTimeout(1000);
    await recordFrames();
    const started = Date.now();
    await page.locator('.qf-building').selectOption('Building-A');
    await page.waitForFunction(() => document.querySelector('#fleet-query').value.includes('Building-A')
      && document.querySelector('tr[data-device-id]') && !document.querySelector('.fleet-count').textContent.includes('Loading'), null, { timeout: 30_000 });
    const rowsMs = Date.now() - started;
    await page.waitForTimeout(1500);
    const frames = await stopFrames();
    out({ ...stats(frames), rowsMs, count: await page.locator('.fleet-count').innerText() });
  } else if (phase === 'chart') {
    await page.goto(`${url}/bench/chart?points=${arg}`);
    await page.waitForFunction(() => document.querySelector('#bench-result')?.textContent.length > 0, null, { timeout: 60_000 });
    out({ points: Number(arg), medianDrawMs: Number(await page.locator('#bench-result').innerText()) });
  }
} finally {
  await browser.close();
}
