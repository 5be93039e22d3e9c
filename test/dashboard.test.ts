/// <reference lib="dom" />
// The dashboard in a real headless Chromium (Debian's chromium package, driven
// by playwright-core): it shows the rate and the top movies change as events
// arrive, the service's watch time over time and its viewers now as the API
// answers them, looks up a user and a movie (a movie's stats, retention curve
// and watch time over time, or under sum accounting the API's 409 in place of
// the stats and the curve), stays usable in a phone-sized window, and leaves
// screenshots in test/output/.
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { chromium, type Page } from 'playwright-core';
import type { ServerConfig } from '../src/server.ts';
import { cleanupAfter, get, post, serve, tempDir, type Cleanup } from './helpers.ts';
import { needDebianCommand } from './support/debian.ts';

const OUTPUT = fileURLToPath(new URL('./output/', import.meta.url));
const CHROMIUM = '/usr/bin/chromium';

/** Debian's chromium, installed here if missing; never a downloaded browser build. */
function browserPath(): string {
  needDebianCommand('chromium', 'chromium');
  return CHROMIUM;
}

const numberIn = (text: string | null) => Number((text ?? '').replace(/,/g, ''));

/** Seconds as the page writes them, h:mm:ss. */
function hms(seconds: number): string {
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = Math.floor(seconds % 60);
  return `${h}:${String(m).padStart(2, '0')}:${String(s).padStart(2, '0')}`;
}

/** h:mm:ss on the page, as seconds. */
function secondsIn(text: string | null): number {
  const match = /^(\d+):(\d{2}):(\d{2})$/.exec((text ?? '').trim());
  assert.ok(match, `${JSON.stringify(text)} is not h:mm:ss`);
  return Number(match[1]) * 3600 + Number(match[2]) * 60 + Number(match[3]);
}

/** "12.5 %" on the page, as a share. */
function shareIn(text: string | null): number {
  const match = /^(\d+(?:\.\d+)?) %$/.exec((text ?? '').trim());
  assert.ok(match, `${JSON.stringify(text)} is not a percentage`);
  return Number(match[1]) / 100;
}

const sum = (buckets: { watchTime: number }[]) => buckets.reduce((total, b) => total + b.watchTime, 0);

/** Waits until an analytics answer includes every stored event (lagEvents 0), and returns it. */
async function caughtUp(base: string, pathname: string): Promise<any> {
  for (const deadline = Date.now() + 30_000; Date.now() < deadline; ) {
    const { status, body } = await get(base, pathname);
    assert.equal(status, 200, `${pathname} answered ${status}`);
    if (body.lagEvents === 0) return body;
    await sleep(20);
  }
  assert.fail(`${pathname} never caught up (lagEvents stayed above 0)`);
}

/** A server and a page on it in Chromium, with the requests that failed or left the server. */
async function openDashboard(cleanup: Cleanup, config: Partial<ServerConfig>) {
  const base = (await serve(cleanup, path.join(tempDir(cleanup), 'w.db'), config)).url;
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
  page.on('pageerror', (error) => failed.push(`script error: ${error.message}`));
  return { base, page, failed };
}

/**
 * What a uPlot chart drew: its canvas's size, and how many of its pixels are
 * in colour (bars, a curve): the axes, grid and labels are black or grey, so
 * an empty chart has none.
 */
async function drawn(page: Page, selector: string): Promise<{ width: number; height: number; coloured: number }> {
  await page.waitForSelector(`${selector} canvas`);
  return page.$eval(`${selector} canvas`, (canvas: HTMLCanvasElement) => {
    const { data } = canvas.getContext('2d')!.getImageData(0, 0, canvas.width, canvas.height);
    let coloured = 0;
    for (let i = 0; i < data.length; i += 4) {
      if (data[i + 3] > 200 && Math.max(data[i], data[i + 1], data[i + 2]) - Math.min(data[i], data[i + 1], data[i + 2]) > 80) coloured++;
    }
    const box = canvas.getBoundingClientRect();
    return { width: box.width, height: box.height, coloured };
  });
}

async function assertChart(page: Page, selector: string, what: string): Promise<void> {
  const chart = await drawn(page, selector);
  assert.ok(chart.width > 100 && chart.height > 100, `${what}: a canvas of ${chart.width} x ${chart.height} px`);
  assert.ok(chart.coloured > 50, `${what}: ${chart.coloured} coloured pixels, so no data drawn`);
}

/** Waits until an element's text is the one expected, and fails saying what it was instead. */
async function waitForText(page: Page, selector: string, expected: string, timeout = 10_000): Promise<void> {
  try {
    await page.waitForFunction(([s, e]) => document.querySelector(s)?.textContent?.trim() === e, [selector, expected] as const, { timeout });
  } catch {
    const found = await page.evaluate((s) => document.querySelector(s)?.textContent ?? null, selector);
    assert.equal(found?.trim(), expected, `the text of ${selector}`);
  }
}

async function lookUpMovie(page: Page, slug: string): Promise<void> {
  await page.selectOption('#kind', 'movie');
  await page.fill('#name', slug);
  await page.click('button[type=submit]');
}

const lookUpPanel = (page: Page) => page.locator('section.panel', { has: page.locator('#result') });

describe('dashboard', () => {
  test('rate, top movies, analytics and look-ups in a real browser', { timeout: 120_000 }, async (t) => {
    const cleanup = cleanupAfter(t);
    // Two HTTP workers: the rates and totals the page shows are the whole service's, whichever worker answers.
    const { base, page, failed } = await openDashboard(cleanup, { workers: 2 });

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

    // viewer-0 goes back in heat from 0:40 to 0:10 and watches ten seconds again: heat's coverage is less than its watch time.
    assert.equal((await post(base, [{ user: 'viewer-0', slug: 'heat', at: 10 }, { user: 'viewer-0', slug: 'heat', at: 20 }])).status, 200);

    // The analytics follow ingest: from here on they include all 242 events, and the page must show what the API answers.
    const stats = await caughtUp(base, '/movies/heat/stats');
    assert.equal(stats.asOf, 242);
    assert.equal(stats.viewers, 10, 'each of the ten users watched heat');
    assert.equal(stats.rewatched, 10);

    // Viewers now: the number, and the movies with their viewers now.
    const now = (await get(base, '/viewers')).body;
    assert.equal(now.viewers, 10);
    await waitForText(page, '#viewers-now', String(now.viewers));
    await waitForText(page, '#now-asof', `as of event ${now.asOf}`);
    const watching = await page.$$eval('#now tbody tr', (rows) => rows.map((r) => Array.from(r.querySelectorAll('td'), (c) => c.textContent)));
    assert.deepEqual(
      watching.map((r) => [r[1], Number(r[2])]),
      now.movies.map((m: { slug: string; viewers: number }) => [m.slug, m.viewers]),
    );
    assert.equal(watching.length, 3);

    // The service's watch time by hour (the default view): the chart drawn, its total the API's, as of the last event.
    const movies = (await get(base, '/movies?limit=10')).body.items as { watchTime: number }[];
    const watched = movies.reduce((total, m) => total + m.watchTime, 0);
    const hourly = await caughtUp(base, '/timeseries?interval=hour');
    assert.equal(sum(hourly.buckets), watched, 'the series holds every second credited');
    await waitForText(page, '#series-total', `${hms(watched)} watched in the last 48 hours`);
    await waitForText(page, '#series-asof', `as of event ${hourly.asOf}`);
    await assertChart(page, '#series', 'the watch time chart by hour');
    assert.match((await page.getAttribute('#series', 'aria-label')) ?? '', new RegExp(`by hour: ${hms(watched)}`));

    mkdirSync(OUTPUT, { recursive: true });
    await page.screenshot({ path: path.join(OUTPUT, 'dashboard.png'), fullPage: true });

    // By minute over the last hour: the same seconds, in minute buckets.
    const minutes = (await get(base, `/timeseries?interval=minute&from=${new Date(Date.now() - 59 * 60_000).toISOString()}`)).body;
    assert.equal(minutes.buckets.length, 60);
    assert.equal(sum(minutes.buckets), watched);
    await page.check('input[name=series-interval][value=minute]');
    await waitForText(page, '#series-total', `${hms(watched)} watched in the last hour`);
    await assertChart(page, '#series', 'the watch time chart by minute');

    await page.fill('#name', 'viewer-3');
    await page.click('button[type=submit]');
    await page.waitForSelector('#result table');
    const result = (await page.textContent('#result')) ?? '';
    assert.match(result, /viewer-3: \d+:\d{2}:\d{2} watched over 3 movie/);
    assert.match(result, /heat|alien|brazil/);

    // A movie: its totals, its stats as the API answers them, its retention curve and its watch time over time.
    await lookUpMovie(page, 'heat');
    await page.waitForSelector('#movie-stats');
    assert.match((await page.textContent('#result')) ?? '', /movieheat/);
    const shown = async (key: string) => page.textContent(`#movie-stats [data-stat=${key}]`);
    assert.equal(secondsIn(await shown('duration')), stats.duration);
    assert.ok((await shown('durationSource'))?.startsWith(stats.durationSource), 'where the duration comes from');
    assert.equal(secondsIn(await shown('watchTime')), stats.watchTime);
    assert.equal(numberIn(await shown('viewers')), stats.viewers);
    assert.equal(secondsIn(await shown('coverage')), stats.coverage);
    assert.equal(secondsIn(await shown('rewatched')), stats.rewatched);
    assert.equal(numberIn(await shown('completed')), stats.completed);
    assert.ok(Math.abs(shareIn(await shown('completionRate')) - stats.completionRate) < 0.0005, 'the completion rate');
    assert.equal(secondsIn(await shown('averageCoverage')), Math.round(stats.averageCoverage));
    assert.ok(stats.completed > 0 && stats.completed < stats.viewers, 'some viewers completed heat, not all');
    await waitForText(page, '#coverage-asof', `as of event ${stats.asOf}`);

    const curve = (await get(base, '/movies/heat/retention?points=200')).body;
    assert.equal(curve.points.length, 200);
    await assertChart(page, '#retention', 'the retention curve');
    const words = (await page.textContent('#retention-words')) ?? '';
    assert.ok(words.startsWith(`Of its ${curve.viewers} viewers`), words);
    for (const i of [50, 100, 150]) {
      const point = curve.points[i];
      assert.ok(words.includes(`${(point.share * 100).toFixed(1)} % at ${hms(point.second)}`), `${words} has the share at ${point.second} s`);
    }
    assert.ok(curve.points[150].share < curve.points[0].share, 'fewer watch the end than the start');

    const heatSeries = await caughtUp(base, '/movies/heat/timeseries');
    assert.equal(sum(heatSeries.buckets), stats.watchTime);
    await waitForText(page, '#movie-series-total', `${hms(stats.watchTime)} watched in the last 48 hours`);
    await waitForText(page, '#movie-series-asof', `as of event ${heatSeries.asOf}`);
    await assertChart(page, '#movie-series', 'the movie\'s watch time chart');
    await page.check('input[name=movie-interval][value=minute]');
    await waitForText(page, '#movie-series-total', `${hms(stats.watchTime)} watched in the last hour`);
    await assertChart(page, '#movie-series', 'the movie\'s watch time chart by minute');
    await lookUpPanel(page).screenshot({ path: path.join(OUTPUT, 'dashboard-movie.png') });

    await page.fill('#name', 'no-such-movie');
    await page.click('button[type=submit]');
    await page.waitForSelector('#result .error');
    assert.equal(await page.$('#result canvas'), null, 'no chart of the movie before is left');

    await page.fill('#name', 'heat');
    await page.click('button[type=submit]');
    await page.waitForSelector('#movie-series canvas');

    await page.setViewportSize({ width: 390, height: 844 });
    await sleep(500);
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `the page is ${overflow} px wider than a phone`);
    for (const chart of ['#series', '#retention', '#movie-series']) {
      const { width } = await drawn(page, chart);
      assert.ok(width > 200 && width <= 390, `${chart} is ${width} px wide on a phone`);
    }
    await page.screenshot({ path: path.join(OUTPUT, 'dashboard-phone.png'), fullPage: true });
    assert.deepEqual(failed, [], 'every request stayed on this server and succeeded');
  });

  test('under sum accounting a movie shows the 409 in place of its stats and retention', { timeout: 90_000 }, async (t) => {
    const cleanup = cleanupAfter(t);
    const { base, page, failed } = await openDashboard(cleanup, { rule: { accounting: 'sum' } });
    const events = Array.from({ length: 40 }, (_, i) => ({ user: `viewer-${i % 4}`, slug: 'heat', at: 10 * (Math.floor(i / 4) + 1) }));
    assert.equal((await post(base, events)).status, 200);
    const series = await caughtUp(base, '/movies/heat/timeseries');
    assert.ok(sum(series.buckets) > 0);
    const refused = await get(base, '/movies/heat/stats');
    assert.equal(refused.status, 409);
    assert.equal((await get(base, '/movies/heat/retention?points=200')).body.detail, refused.body.detail);

    await page.goto(`${base}/`);
    await page.waitForFunction(() => /accounting: sum/.test(document.getElementById('rule')?.textContent ?? ''));
    // Time series and viewers now still answer.
    await waitForText(page, '#viewers-now', String((await get(base, '/viewers')).body.viewers));
    await waitForText(page, '#series-total', `${hms(sum(series.buckets))} watched in the last 48 hours`);
    await assertChart(page, '#series', 'the watch time chart under sum accounting');

    await lookUpMovie(page, 'heat');
    await waitForText(page, '#coverage-notice', refused.body.detail);
    assert.equal(await page.getAttribute('#coverage-notice', 'class'), 'notice');
    assert.equal(await page.$('#movie-stats'), null, 'no stats');
    assert.equal(await page.$('#retention'), null, 'no retention curve');
    await waitForText(page, '#movie-series-total', `${hms(sum(series.buckets))} watched in the last 48 hours`);
    await assertChart(page, '#movie-series', 'the movie\'s watch time chart under sum accounting');
    mkdirSync(OUTPUT, { recursive: true });
    await lookUpPanel(page).screenshot({ path: path.join(OUTPUT, 'dashboard-sum.png') });
    assert.deepEqual(failed, [], 'every request stayed on this server and succeeded');
  });
});
