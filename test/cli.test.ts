// bin/watchtime as a child process: query, rebuild, serve's settings check.
import assert from 'node:assert/strict';
import path from 'node:path';
import Database from 'better-sqlite3';
import { after, before, describe, test } from 'node:test';
import { credit, type AccountingRule } from '../src/accounting.ts';
import { seededRandom } from '../src/generator/players.ts';
import { cleanupAfter, cli, get, post, serve, snapshot, tempDir } from './helpers.ts';
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
