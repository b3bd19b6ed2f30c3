// The console's quality bar, checked on whatever page is open (shared by the browser scripts):
// no layout overflow at 1440 px and at 390 px (the full-page screenshot, saved for review, must
// be exactly the viewport's width), every control has an accessible name, Tab alone reaches
// every control, and each shows a visible focus indicator when it does.

// Runs in the page: the visible controls a keyboard user must be able to reach and name.
function controls() {
  const selector = 'a[href], button, input:not([type=hidden]), select, textarea, [tabindex]:not([tabindex="-1"])';
  return [...document.querySelectorAll(selector)].filter((e) => {
    // tabindex -1: reached another way (the tabs of a tablist, with the arrow keys).
    if (e.disabled || e.tabIndex < 0 || e.closest('[hidden], [inert]')) return false;
    // A radio group is one Tab stop (its checked radio); the arrows move within it.
    if (e.type === 'radio' && !e.checked && e.name
      && document.querySelector(`input[type=radio][name="${CSS.escape(e.name)}"]:checked`)) return false;
    const r = e.getBoundingClientRect();
    const s = getComputedStyle(e);
    return r.width > 0 && r.height > 0 && s.visibility !== 'hidden';
  });
}

function describe(e) {
  const id = e.id ? `#${e.id}` : '';
  const cls = typeof e.className === 'string' && e.className ? `.${e.className.trim().split(/\s+/).join('.')}` : '';
  return `${e.tagName.toLowerCase()}${id}${cls} "${(e.textContent || '').trim().slice(0, 30)}"`;
}

export async function checkQuality(page, name, shotDir, problems) {
  for (const width of [1440, 390]) {
    await page.setViewportSize({ width, height: 900 });
    await page.waitForTimeout(300);
    const overflow = await page.evaluate(() => {
      const d = document.documentElement;
      const wide = [...document.querySelectorAll('body *')]
        .filter((e) => e.getBoundingClientRect().right > d.clientWidth + 1 && !e.closest('.table-scroll, pre'))
        .slice(0, 4)
        .map((e) => `${e.tagName.toLowerCase()}.${typeof e.className === 'string' ? e.className : ''}`);
      return { scroll: d.scrollWidth, client: d.clientWidth, wide };
    });
    if (overflow.scroll > overflow.client) {
      problems.push(`${name} at ${width}px: the page is ${overflow.scroll}px wide (${overflow.wide.join(', ')})`);
    }
    const png = await page.screenshot({ path: `${shotDir}/quality-${name}-${width}.png`, fullPage: true });
    const shot = png.readUInt32BE(16); // PNG IHDR width
    if (shot !== width) problems.push(`${name} at ${width}px: the full-page screenshot is ${shot}px wide`);
  }
  await page.setViewportSize({ width: 1440, height: 900 });

  const unnamed = await page.evaluate(`(${function (controls, describe) {
    return controls().filter((e) => {
      const labelledBy = e.getAttribute('aria-labelledby');
      const name = [
        e.getAttribute('aria-label'),
        labelledBy && document.getElementById(labelledBy)?.textContent,
        e.labels && [...e.labels].map((l) => l.textContent).join(' '),
        e.tagName === 'INPUT' || e.tagName === 'SELECT' || e.tagName === 'TEXTAREA' ? '' : e.textContent,
        e.getAttribute('title'),
      ].filter(Boolean).join(' ').trim();
      return !name;
    }).map(describe);
  }})(${controls}, ${describe})`);
  for (const c of unnamed) problems.push(`${name}: no accessible name on ${c}`);

  // Tab from the top of the page through every control.
  const count = await page.evaluate(`(${controls})().length`);
  await page.evaluate(() => {
    document.querySelectorAll('[data-qa-reached]').forEach((e) => e.removeAttribute('data-qa-reached'));
    document.activeElement?.blur?.();
    window.scrollTo(0, 0);
  });
  const invisible = new Set();
  for (let i = 0; i < count + 2; i++) {
    await page.keyboard.press('Tab');
    const seen = await page.evaluate(`(${function (describe) {
      const e = document.activeElement;
      if (!e || e === document.body) return null;
      e.setAttribute('data-qa-reached', '1');
      const s = getComputedStyle(e);
      const ring = (s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) > 0) || s.boxShadow !== 'none';
      return { ring, what: describe(e) };
    }})(${describe})`);
    if (seen && !seen.ring) invisible.add(seen.what);
  }
  for (const what of invisible) problems.push(`${name}: no visible focus on ${what}`);
  const unreached = await page.evaluate(`(${controls})().filter((e) => !e.hasAttribute('data-qa-reached')).map(${describe})`);
  for (const c of unreached.slice(0, 5)) problems.push(`${name}: Tab never reaches ${c}`);
  // Leave the keyboard's focus where a user would start again.
  await page.evaluate(() => document.activeElement?.blur?.());
}
