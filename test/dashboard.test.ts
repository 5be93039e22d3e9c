/// <reference lib="dom" />
// The dashboard in a real headless Chromium (Debian's chromium package, driven
// by playwright-core): it shows the rate and the top movies change as events
// arrive, looks up a user and a movie, stays usable in a phone-sized window,
// and leaves a screenshot in test/output/.
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { cleanupAfter, post, serve, tempDir } from './helpers.ts';
import { needDebianCommand } from './support/debian.ts';

const OUTPUT = fileURLToPath(new URL('./output/', import.meta.url));
const CHROMIUM = '/usr/bin/chromium';

/** Debian's chromium, installed here if missing; never a downloaded browser build. */
function browserPath(): string {
  needDebianCommand('chromium', 'chromium');
  return CHROMIUM;
}

const numberIn = (text: string | null) => Number((text ?? '').replace(/,/g, ''));

describe('dashboard', () => {
  test('rate, top movies and look-ups in a real browser', { timeout: 90_000 }, async (t) => {
    const cleanup = cleanupAfter(t);
    // Two HTTP workers: the rates and totals the page shows are the whole service's, whichever worker answers.
    const base = (await serve(cleanup, path.join(tempDir(cleanup), 'w.db'), { workers: 2 })).url;
    // Quiet: this machine has no network, and Chromium would keep trying to reach its own services.
    const browser = await chromium.launch({
      executablePath: browserPath(),
      args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic'],
    });
    cleanup(() => browser.close());
    const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
    const failed: string[] = [];
    page.on('requestfailed', (r) => failed.push(r.url()));
    page.on('request', (r) => {
      if (!r.url().startsWith(base)) failed.push(`left the server: ${r.url()}`);
    });

    await page.goto(`${base}/`);
    assert.equal(new URL(page.url()).pathname, '/dashboard/');
    await page.waitForFunction(() => document.getElementById('stored')?.textContent === '0');
    assert.match((await page.textContent('#rule')) ?? '', /accounting: progress/);

    // Players: ten users watching three movies, a heartbeat each 5 s of show, sent over two seconds.
    for (let round = 1; round <= 8; round++) {
      const events = Array.from({ length: 30 }, (_, i) => ({ user: `viewer-${i % 10}`, slug: ['heat', 'alien', 'brazil'][i % 3], at: round * 5 + i }));
      assert.equal((await post(base, events)).status, 200);
      await sleep(250);
    }
    await page.waitForFunction(() => Number(document.getElementById('rate')?.textContent?.replace(/,/g, '')) > 0);
    await page.waitForFunction(() => document.getElementById('stored')?.textContent === '240');
    await page.waitForFunction(() => document.querySelectorAll('#top tbody tr').length === 3);
    const top = await page.$$eval('#top tbody tr', (rows) => rows.map((r) => Array.from(r.querySelectorAll("td"), (c) => c.textContent)));
    assert.deepEqual(top.map((r) => r[1]).sort(), ['alien', 'brazil', 'heat']);
    for (const r of top) assert.match(r[2] ?? '', /^\d+:\d{2}:\d{2}$/, 'watch time as h:mm:ss');
    assert.ok(numberIn(await page.textContent('#stored')) === 240);

    await page.fill('#name', 'viewer-3');
    await page.click('button[type=submit]');
    await page.waitForSelector('#result table');
    const result = (await page.textContent('#result')) ?? '';
    assert.match(result, /viewer-3: \d+:\d{2}:\d{2} watched over 3 movie/);
    assert.match(result, /heat|alien|brazil/);

    await page.selectOption('#kind', 'movie');
    await page.fill('#name', 'heat');
    await page.click('button[type=submit]');
    await page.waitForFunction(() => document.getElementById('result')?.textContent?.includes('viewers'));
    assert.match((await page.textContent('#result')) ?? '', /movieheat/);

    await page.fill('#name', 'no-such-movie');
    await page.click('button[type=submit]');
    await page.waitForSelector('#result .error');

    mkdirSync(OUTPUT, { recursive: true });
    await page.fill('#name', 'heat');
    await page.click('button[type=submit]');
    await page.waitForFunction(() => document.getElementById('result')?.textContent?.includes('viewers'));
    await page.screenshot({ path: path.join(OUTPUT, 'dashboard.png'), fullPage: true });

    await page.setViewportSize({ width: 390, height: 844 });
    await sleep(300);
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `the page is ${overflow} px wider than a phone`);
    await page.screenshot({ path: path.join(OUTPUT, 'dashboard-phone.png'), fullPage: true });
    assert.deepEqual(failed, [], 'every request stayed on this server and succeeded');
  });
});
