// bin/watchtime as a child process: query, rebuild, serve's settings check.
import assert from 'node:assert/strict';
import path from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import Database from 'better-sqlite3';
import { after, before, describe, test } from 'node:test';
import { credit, type AccountingRule } from '../src/accounting.ts';
import { seededRandom } from '../src/generator/players.ts';
import { cleanupAfter, cli, get, post, request, serve, snapshot, tempDir } from './helpers.ts';
import { sharedPostgres, stopSharedPostgres } from './support/postgres.ts';

after(stopSharedPostgres);

/** Players who step, pause, seek and rewind over a few users and movies. */
function workload(seed: number, count: number) {
  const next = seededRandom(seed);
  const positions = new Map<string, number>();
  return Array.from({ length: count }, () => {
    const user = `u${Math.floor(next() * 12)}`;
    const slug = `m${Math.floor(next() * 5)}`;
    const key = `${user}/${slug}`;
    const prev = positions.get(key) ?? 0;
    const roll = next();
    const at = roll < 0.7 ? prev + 1 + Math.floor(next() * 20) : roll < 0.8 ? prev : roll < 0.9 ? prev + 500 : Math.floor(prev / 2);
    positions.set(key, at);
    return { user, slug, at };
  });
}

/** Expected totals of a workload under a rule, from the pure function. */
function expectedTotals(events: { user: string; slug: string; at: number }[], rule: AccountingRule) {
  const pairs = new Map<string, { position: number; watched: number }>();
  const users = new Map<string, number>();
  const movies = new Map<string, number>();
  for (const { user, slug, at } of events) {
    const pair = pairs.get(`${user}/${slug}`) ?? { position: 0, watched: 0 };
    const credited = credit(rule, pair.position, at);
    pairs.set(`${user}/${slug}`, { position: at, watched: pair.watched + credited });
    users.set(user, (users.get(user) ?? 0) + credited);
    movies.set(slug, (movies.get(slug) ?? 0) + credited);
  }
  return { users, movies };
}

const totalsOf = (rows: unknown[], key: string) =>
  new Map((rows as Record<string, unknown>[]).map((r) => [r[key] as string, r.watched as number]));

async function ingest(base: string, events: object[], perRequest: number) {
  for (let i = 0; i < events.length; i += perRequest) {
    assert.equal((await post(base, events.slice(i, i + perRequest))).status, 200);
  }
}

// The same answers from both stores. (rebuild and serve on PostgreSQL: test/postgres.test.ts.)
for (const backend of ['SQLite', 'PostgreSQL'] as const) describe(`query (${backend})`, () => {
  const cleanup = cleanupAfter();
  let db: string;

  before(async () => {
    db = backend === 'SQLite' ? path.join(tempDir(cleanup), 'w.db') : await (await sharedPostgres()).newDatabase();
    const server = await serve(cleanup, db);
    await ingest(server.url, [
      { user: 'ann', slug: 'alien', at: 60 },
      { user: 'ann', slug: 'alien', at: 7450 },
      { user: 'ann', slug: 'alien', at: 7500 },
      { user: 'bob', slug: 'alien', at: 100 },
      { user: 'ann', slug: 'brazil', at: 20 },
    ], 1);
    // The server stays up: queries read the file beside it.
  });

  test('movie prints the totals; --json prints what the API answers', async () => {
    const json = await cli(['query', 'movie', 'alien', '--db', db, '--json']);
    assert.equal(json.code, 0, json.stderr);
    const movie = JSON.parse(json.stdout);
    assert.deepEqual({ ...movie, updatedAt: undefined }, { slug: 'alien', watchTime: 210, viewers: 2, events: 4, updatedAt: undefined });
    const text = await cli(['query', 'movie', 'alien', '--db', db]);
    assert.equal(text.code, 0);
    assert.equal(
      text.stdout,
      `movie    alien\nwatched  3m 30s (210 s)\nviewers  2\nevents   4\nupdated  ${movie.updatedAt}\n`,
    );
  });

  test('user and latest', async () => {
    const user = JSON.parse((await cli(['query', 'user', 'ann', '--db', db, '--json'])).stdout);
    assert.equal(user.watchTime, 130);
    assert.equal(user.movies, 2);
    const latest = await cli(['query', 'latest', 'ann', 'alien', '--db', db]);
    assert.equal(latest.code, 0);
    assert.match(latest.stdout, /^user           ann\nmovie          alien\nlatest moment  7500 s\nwatched        1m 50s \(110 s\)\n/);
  });

  test('top ranks movies; movies lists a user\'s, most recent first', async () => {
    const top = await cli(['query', 'top', '--limit', '5', '--db', db]);
    assert.equal(top.code, 0);
    assert.equal(
      top.stdout,
      'rank  movie   watched (s)  viewers  events\n   1  alien           210        2       4\n   2  brazil           20        1       1\n',
    );
    const movies = JSON.parse((await cli(['query', 'movies', 'ann', '--db', db, '--json'])).stdout);
    assert.deepEqual(movies.map((m: { slug: string }) => m.slug), ['brazil', 'alien']);
  });

  test('exit 3 when not found, 2 for bad usage, 1 without a database', async () => {
    const missing = await cli(['query', 'user', 'nobody', '--db', db]);
    assert.equal(missing.code, 3);
    assert.equal(missing.stderr, 'watchtime: no events for the user "nobody"\n');
    assert.equal((await cli(['query', 'latest', 'ann', 'nothing', '--db', db])).code, 3);
    const usage = await cli(['query', 'top', '--limit', 'many', '--db', db]);
    assert.equal(usage.code, 2);
    assert.match(usage.stderr, /--limit <n>.*many.*must be an integer/);
    assert.equal((await cli(['query', 'frobnicate'])).code, 2);
    assert.equal((await cli(['query', 'user', '', '--db', db])).code, 2);
    const noDb = await cli(['query', 'top', '--db', path.join(tempDir(cleanup), 'absent.db')]);
    assert.equal(noDb.code, 1);
    assert.match(noDb.stderr, /cannot open the database/);
  });

  test('options come from WATCHTIME_* variables too', async () => {
    const run = await cli(['query', 'movie', 'brazil', '--json'], { WATCHTIME_DB: db });
    assert.equal(run.code, 0, run.stderr);
    assert.equal(JSON.parse(run.stdout).watchTime, 20);
  });
});

/** Waits until the analytics follower, which runs in the server, has every stored event (lagEvents 0). */
async function analyticsCaughtUp(base: string) {
  for (let tries = 0; ; tries++) {
    const { body } = await get(base, '/viewers');
    if (body.lagEvents === 0) return;
    assert.ok(tries < 200, `the analytics still lag by ${body.lagEvents} events`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

const HOUR = 3_600_000;
const iso = (ms: number) => new Date(ms).toISOString();

// The analytics of SPEC section 7, on SQLite (PostgreSQL's store has no analytics yet: when it has, this joins the loop above).
describe('query stats, retention and timeseries (SQLite)', () => {
  const cleanup = cleanupAfter();
  let db: string;
  let base: string;
  const api = async (pathname: string) => {
    const answer = await get(base, pathname);
    assert.equal(answer.status, 200, `${pathname}: ${JSON.stringify(answer.body)}`);
    return answer.body;
  };
  const json = async (args: string[]) => {
    const run = await cli(['query', ...args, '--db', db, '--json']);
    assert.equal(run.code, 0, run.stderr);
    return JSON.parse(run.stdout);
  };

  before(async () => {
    db = path.join(tempDir(cleanup), 'w.db');
    const server = await serve(cleanup, db);
    base = server.url;
    // ann covers [0, 90) of alien and rewatches [10, 40); bob covers [0, 50); bob watches 20 s of brazil.
    await ingest(base, [
      { user: 'ann', slug: 'alien', at: 30 },
      { user: 'ann', slug: 'alien', at: 60 },
      { user: 'bob', slug: 'alien', at: 50 },
      { user: 'ann', slug: 'alien', at: 90 },
      { user: 'ann', slug: 'alien', at: 10 },
      { user: 'ann', slug: 'alien', at: 40 },
      { user: 'bob', slug: 'brazil', at: 20 },
    ], 1);
    const put = await request(`${base}/movies/alien`, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: '{"duration":100}' });
    assert.equal(put.status, 200);
    await analyticsCaughtUp(base);
    // The server stays up, as for the other queries: the command reads the file beside it.
  });

  test('--json prints what the API answers, from the same functions', async () => {
    const stats = await json(['stats', 'alien']);
    assert.deepEqual(stats, await api('/movies/alien/stats'));
    assert.deepEqual(stats, {
      slug: 'alien', duration: 100, durationSource: 'set', watchTime: 170, viewers: 2, coverage: 140, rewatched: 30,
      completed: 1, completionRate: 0.5, averageCoverage: 70, asOf: 7, lagEvents: 0,
    });
    assert.deepEqual((await json(['stats', 'brazil'])).durationSource, 'observed');

    const retention = await json(['retention', 'alien', '--points', '4']);
    assert.deepEqual(retention, await api('/movies/alien/retention?points=4'));
    assert.deepEqual(retention.points, [
      { second: 0, viewers: 2, share: 1 },
      { second: 25, viewers: 2, share: 1 },
      { second: 50, viewers: 1, share: 0.5 },
      { second: 75, viewers: 1, share: 0.5 },
    ]);
    assert.equal((await json(['retention', 'alien'])).points.length, 100, 'the API\'s default');
    assert.deepEqual(await json(['retention', 'alien']), await api('/movies/alien/retention'));

    const now = Date.now();
    const ranges = [
      { interval: 'minute', from: iso(now - 5 * 60_000), to: iso(now + 5 * 60_000) },
      { interval: 'hour', from: iso(now - 2 * HOUR), to: iso(now + HOUR) },
      { interval: 'day', from: iso(now - 72 * HOUR).slice(0, 10), to: iso(now + 24 * HOUR).slice(0, 10) },
    ];
    const scopes = [
      { args: [] as string[], path: '/timeseries' },
      { args: ['--movie', 'alien'], path: '/movies/alien/timeseries' },
      { args: ['--user', 'ann'], path: '/users/ann/timeseries' },
    ];
    for (const { args, path: pathname } of scopes) {
      for (const { interval, from, to } of ranges) {
        const series = await json(['timeseries', ...args, '--interval', interval, '--from', from, '--to', to]);
        assert.deepEqual(series, await api(`${pathname}?interval=${interval}&from=${from}&to=${to}`), `${pathname} ${interval}`);
        const sums = series.buckets.reduce(
          (sum: number[], b: { watchTime: number; events: number }) => [sum[0] + b.watchTime, sum[1] + b.events], [0, 0]);
        assert.deepEqual(sums, pathname === '/timeseries' ? [190, 7] : pathname.startsWith('/movies') ? [170, 6] : [120, 5], `${pathname} ${interval}`);
      }
    }
    // Without a range: the last 48 buckets up to now, as the API answers at that moment.
    const before = await api('/timeseries');
    const series = await json(['timeseries']);
    const after = await api('/timeseries');
    assert.equal(series.buckets.length, 48);
    assert.ok([before, after].some((answer) => isDeepStrictEqual(answer, series)), `${series.from}: neither ${before.from} nor ${after.from}`);
  });

  test('the human form is a short aligned table of the same figures', async () => {
    const stats = await cli(['query', 'stats', 'alien', '--db', db]);
    assert.equal(stats.code, 0, stats.stderr);
    assert.equal(stats.stdout, [
      'movie             alien',
      'duration          1m 40s (100 s, set)',
      'watched           2m 50s (170 s)',
      'viewers           2',
      'coverage          2m 20s (140 s)',
      'rewatched         30s (30 s)',
      'completed         1 of 2 (50.0 %)',
      'average coverage  1m 10s (70 s)',
      'as of             event 7, every stored event included',
      '',
    ].join('\n'));

    const retention = await cli(['query', 'retention', 'alien', '--points', '4', '--db', db]);
    assert.equal(retention.code, 0, retention.stderr);
    assert.ok(retention.stdout.endsWith([
      'second  viewers  share',
      '     0        2  100.0 %',
      '    25        2  100.0 %',
      '    50        1   50.0 %',
      '    75        1   50.0 %',
      '',
    ].join('\n')), retention.stdout);
    assert.match(retention.stdout, /^movie     alien\nduration  1m 40s \(100 s\)\nviewers   2\n/);

    const from = iso(Date.now() - HOUR);
    const series = await json(['timeseries', '--movie', 'alien', '--from', from]);
    const text = await cli(['query', 'timeseries', '--movie', 'alien', '--from', from, '--db', db]);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /^series  movie alien, by hour \(UTC\)\n/);
    const lines = text.stdout.trimEnd().split('\n');
    const table = lines.slice(lines.indexOf('start                     watched (s)  viewers  events'));
    assert.deepEqual(table.slice(1), series.buckets.map((b: { start: string; watchTime: number; viewers: number; events: number }) =>
      `${b.start}  ${String(b.watchTime).padStart(11)}  ${String(b.viewers).padStart(7)}  ${String(b.events).padStart(6)}`));
    assert.ok(table.some((line) => /Z {10}170 {8}2 {7}6$/.test(line)), text.stdout);
  });

  test('exit 3 for a movie or user never seen; 2 for a bad option, naming it and its rule as the API\'s 400 does', async () => {
    for (const args of [['stats', 'nobody'], ['retention', 'nobody'], ['timeseries', '--movie', 'nobody']]) {
      const run = await cli(['query', ...args, '--db', db]);
      assert.equal(run.code, 3, args.join(' '));
      assert.equal(run.stderr, 'watchtime: no events for the movie "nobody"\n');
    }
    const user = await cli(['query', 'timeseries', '--user', 'nobody', '--db', db]);
    assert.equal(user.code, 3);
    assert.equal(user.stderr, 'watchtime: no events for the user "nobody"\n');

    const far = iso(Date.now() - 40 * 24 * HOUR);
    const bad: [string[], string, string][] = [
      [['retention', 'alien', '--points', '0'], 'points', '/movies/alien/retention?points=0'],
      [['retention', 'alien', '--points', '1001'], 'points', '/movies/alien/retention?points=1001'],
      [['retention', 'alien', '--points', '2.5'], 'points', '/movies/alien/retention?points=2.5'],
      [['timeseries', '--interval', 'week'], 'interval', '/timeseries?interval=week'],
      [['timeseries', '--from', 'yesterday'], 'from', '/timeseries?from=yesterday'],
      [['timeseries', '--to', '2026-13-01'], 'to', '/timeseries?to=2026-13-01'],
      [['timeseries', '--from', '2026-02-01', '--to', '2026-01-01'], 'to', '/timeseries?from=2026-02-01&to=2026-01-01'],
      // Only --from given: the range's problem is blamed on it, not on a --to the user never wrote.
      [['timeseries', '--interval', 'minute', '--from', far], 'from', `/timeseries?interval=minute&from=${far}`],
    ];
    for (const [args, option, pathname] of bad) {
      const run = await cli(['query', ...args, '--db', db]);
      assert.equal(run.code, 2, `${args.join(' ')}: ${run.stderr}`);
      const refused = await get(base, pathname);
      assert.equal(refused.status, 400, pathname);
      const { pointer, message } = refused.body.errors[0];
      assert.equal(pointer, `/${option}`);
      // The API says "points must be …"; the command "invalid --points: must be …".
      assert.equal(run.stderr, `watchtime: invalid --${option}: ${message.slice(option.length + 1)}\n`);
    }
    const far40 = await cli(['query', 'timeseries', '--interval', 'minute', '--from', far, '--db', db]);
    assert.match(far40.stderr, /at most 44640 are answered at once/);

    const both = await cli(['query', 'timeseries', '--movie', 'alien', '--user', 'ann', '--db', db]);
    assert.equal(both.code, 2);
    assert.match(both.stderr, /--movie <slug>' cannot be used with option '--user <user>'/);
    assert.equal((await cli(['query', 'stats', '', '--db', db])).code, 2);
    assert.equal((await cli(['query', 'timeseries', '--user', 'a\u0001b', '--db', db])).code, 2);
  });

  test('under sum accounting, stats and retention exit 1 with the API\'s reason; time series still answer', async (t) => {
    const cleanup = cleanupAfter(t);
    const sumDb = path.join(tempDir(cleanup), 'sum.db');
    const server = await serve(cleanup, sumDb, { rule: { accounting: 'sum' } });
    await ingest(server.url, [{ user: 'ann', slug: 'alien', at: 30 }, { user: 'ann', slug: 'alien', at: 45 }], 1);
    await analyticsCaughtUp(server.url);
    const refused = await get(server.url, '/movies/alien/stats');
    assert.equal(refused.status, 409);
    for (const args of [['stats', 'alien'], ['retention', 'alien', '--points', '3']]) {
      const run = await cli(['query', ...args, '--db', sumDb, '--json']);
      assert.equal(run.code, 1, args.join(' '));
      assert.equal(run.stdout, '');
      assert.equal(run.stderr, `watchtime: ${refused.body.detail}\n`);
      assert.match(run.stderr, /under sum accounting/);
    }
    assert.equal((await cli(['query', 'stats', 'nobody', '--db', sumDb])).code, 3, 'not found first, as the API');
    const from = iso(Date.now() - HOUR);
    const run = await cli(['query', 'timeseries', '--movie', 'alien', '--from', from, '--db', sumDb, '--json']);
    assert.equal(run.code, 0, run.stderr);
    const series = JSON.parse(run.stdout);
    assert.deepEqual(series, (await get(server.url, `/movies/alien/timeseries?from=${from}`)).body);
    assert.equal(series.buckets.reduce((sum: number, b: { watchTime: number }) => sum + b.watchTime, 0), 75, 'sum credits each at');
  });
});

describe('rebuild', () => {
  test('gives the same aggregates as live ingestion, and switches between progress and sum', async (t) => {
    const cleanup = cleanupAfter(t);
    const db = path.join(tempDir(cleanup), 'w.db');
    const events = workload(7, 3000);
    const server = await serve(cleanup, db);
    await ingest(server.url, events, 250);
    await server.close();
    const live = snapshot(db);
    const progress = expectedTotals(events, { accounting: 'progress', maxStep: 120 });
    assert.deepEqual(totalsOf(live.users, 'name'), progress.users);

    const same = await cli(['rebuild', '--db', db]);
    assert.equal(same.code, 0, same.stderr);
    assert.match(same.stdout, /^rebuilt 3000 events under accounting progress with --max-step 120 in/);
    assert.deepEqual(snapshot(db), live);

    assert.equal((await cli(['rebuild', '--db', db, '--accounting', 'sum'])).code, 0);
    const sum = snapshot(db);
    assert.deepEqual(sum.settings, [{ id: 1, accounting: 'sum', max_step: 120 }]);
    const summed = expectedTotals(events, { accounting: 'sum', maxStep: 120 });
    assert.deepEqual(totalsOf(sum.users, 'name'), summed.users);
    assert.deepEqual(totalsOf(sum.movies, 'slug'), summed.movies);

    assert.equal((await cli(['rebuild', '--db', db, '--accounting', 'progress', '--max-step', '30'])).code, 0);
    const tight = expectedTotals(events, { accounting: 'progress', maxStep: 30 });
    assert.deepEqual(totalsOf(snapshot(db).movies, 'slug'), tight.movies);

    assert.equal((await cli(['rebuild', '--db', db, '--max-step', '120'])).code, 0);
    assert.deepEqual(snapshot(db), live, 'back to the first rule, back to the same rows');
  });

  test('that fails exits with the reason and leaves the totals as they were', { timeout: 30_000 }, async (t) => {
    const cleanup = cleanupAfter(t);
    const db = path.join(tempDir(cleanup), 'w.db');
    const server = await serve(cleanup, db);
    await ingest(server.url, [{ user: 'a', slug: 'm', at: 100 }, { user: 'a', slug: 'm', at: 110 }], 2);
    await server.close();
    const before = snapshot(db);
    // A time that is not a number (only a hand edit of the file stores one) stops the rebuild part-way.
    const conn = new Database(db);
    conn.prepare("INSERT INTO events (seq, user_id, movie_id, at, received_at) VALUES (3, 1, 1, '1,2', 0)").run();
    conn.close();
    const run = await cli(['rebuild', '--db', db]);
    assert.equal(run.code, 1, run.stderr);
    assert.match(run.stderr, /rebuild read 4 of the 3 events of a pair/);
    assert.deepEqual(snapshot(db), before);
  });

  test('runs beside a server, which then applies the new rule', async (t) => {
    const cleanup = cleanupAfter(t);
    const db = path.join(tempDir(cleanup), 'w.db');
    const server = await serve(cleanup, db);
    await ingest(server.url, [{ user: 'a', slug: 'm', at: 100 }, { user: 'a', slug: 'm', at: 110 }], 2);
    assert.equal((await get(server.url, '/movies/m/watch-time')).body.watchTime, 110);

    // An event sent while the rebuild runs is counted once, whether it lands before or after it.
    const rebuilding = cli(['rebuild', '--db', db, '--accounting', 'sum']);
    const during = post(server.url, { user: 'a', slug: 'm', at: 5 });
    const run = await rebuilding;
    assert.equal(run.code, 0, run.stderr);
    assert.equal((await during).status, 200);

    assert.equal((await post(server.url, { user: 'a', slug: 'm', at: 7 })).status, 200);
    const movie = (await get(server.url, '/movies/m/watch-time')).body;
    assert.equal(movie.watchTime, 100 + 110 + 5 + 7, 'every event counted under sum, none twice');
    assert.equal(movie.events, 4);
    // The server's own memory of the pair must not outlive the rebuild.
    const pair = (await get(server.url, '/users/a/movies/m/latest-moment')).body;
    assert.deepEqual([pair.watchTime, pair.latestMoment, pair.events], [100 + 110 + 5 + 7, 7, 4]);
  });

  test('--json prints the result as JSON; off a terminal, progress is plain lines', async (t) => {
    const cleanup = cleanupAfter(t);
    const db = path.join(tempDir(cleanup), 'w.db');
    const server = await serve(cleanup, db);
    await ingest(server.url, workload(3, 300), 50);
    const run = await cli(['rebuild', '--db', db, '--json']);
    assert.equal(run.code, 0, run.stderr);
    const result = JSON.parse(run.stdout);
    assert.deepEqual([result.events, result.accounting, result.maxStep], [300, 'progress', 120]);
    assert.ok(result.eventsPerSecond > 0 && result.peakRssMb > 0);
    assert.match(run.stderr, /^rebuild: 300 of 300 events\n$/m);
    assert.doesNotMatch(run.stderr, /\u001b/, 'no terminal escapes in a pipe');
  });

  test('refuses a database that does not exist', async (t) => {
    const dir = tempDir(cleanupAfter(t));
    const run = await cli(['rebuild', '--db', path.join(dir, 'none.db')]);
    assert.equal(run.code, 1);
    assert.match(run.stderr, /no database at/);
  });
});

describe('serve', () => {
  test('refuses settings that differ from the database, and says to rebuild', async (t) => {
    const cleanup = cleanupAfter(t);
    const db = path.join(tempDir(cleanup), 'w.db');
    const server = await serve(cleanup, db, { rule: { maxStep: 60 } });
    await server.close();
    const run = await cli(['serve', '--db', db, '--port', '0', '--accounting', 'sum']);
    assert.equal(run.code, 1);
    assert.match(run.stderr, /computed with accounting progress with --max-step 60, not sum/);
    assert.match(run.stderr, /watchtime rebuild --db .* --accounting sum/);
    const fromEnv = await cli(['serve', '--db', db, '--port', '0'], { WATCHTIME_MAX_STEP: '90' });
    assert.equal(fromEnv.code, 1);
    assert.match(fromEnv.stderr, /not progress with --max-step 90/);
  });
});
