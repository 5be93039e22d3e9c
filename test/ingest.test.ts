// POST / and POST /events against the real server, on a real SQLite file and on a real PostgreSQL.
import assert from 'node:assert/strict';
import http from 'node:http';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import Database from 'better-sqlite3';
import pg from 'pg';
import { credit, DEFAULT_RULE } from '../src/accounting.ts';
import { cleanupAfter, get, post, request, serve, tempDir } from './helpers.ts';
import { sharedPostgres, stopSharedPostgres } from './support/postgres.ts';

type Backend = 'SQLite' | 'PostgreSQL';
after(stopSharedPostgres);

async function setupOn(backend: Backend, t: { after: (fn: () => Promise<void>) => void }, config = {}) {
  const cleanup = cleanupAfter(t);
  const db = backend === 'SQLite' ? path.join(tempDir(cleanup), 'w.db') : await (await sharedPostgres()).newDatabase();
  const server = await serve(cleanup, db, config);
  /** A query on the database itself, without parameters, in SQL both stores understand. */
  const sql = async <T>(query: string): Promise<T[]> => {
    if (backend === 'PostgreSQL') {
      const client = new pg.Client(db);
      await client.connect();
      try {
        return (await client.query(query)).rows as T[];
      } finally {
        await client.end();
      }
    }
    const conn = new Database(db, { readonly: true });
    try {
      return conn.prepare(query).all() as T[];
    } finally {
      conn.close();
    }
  };
  const count = async () => Number((await sql<{ n: number }>('SELECT count(*) AS n FROM events'))[0].n);
  return { base: server.url, db, sql, count };
}

for (const backend of ['SQLite', 'PostgreSQL'] as const) describe(`ingest (${backend})`, () => {
  const setup = (t: { after: (fn: () => Promise<void>) => void }, config = {}) => setupOn(backend, t, config);

  test('one object on POST / (the generator) is stored with its receive time', async (t) => {
    const { base, sql } = await setup(t);
    const before = Date.now();
    const res = await request(`${base}/`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ user: '3h2srcrl5ufy4', slug: '1dpi4qtavjwtr', at: 4500 }),
    });
    const after = Date.now();
    assert.equal(res.status, 200);
    assert.deepEqual(res.body, { accepted: 1, duplicates: 0 });
    const rows = await sql<{ name: string; slug: string; at: number; received_at: number }>(
      'SELECT u.name, m.slug, e.at, e.received_at FROM events e JOIN users u ON u.id = e.user_id JOIN movies m ON m.id = e.movie_id',
    );
    assert.equal(rows.length, 1);
    assert.equal(rows[0].name, '3h2srcrl5ufy4');
    assert.equal(rows[0].slug, '1dpi4qtavjwtr');
    assert.equal(rows[0].at, 4500);
    assert.ok(rows[0].received_at >= before && rows[0].received_at <= after);
  });

  test('a JSON array and NDJSON are batches, applied in order', async (t) => {
    const { base } = await setup(t);
    assert.deepEqual((await post(base, [10, 20, 30].map((at) => ({ user: 'a', slug: 'm', at })))).body, {
      accepted: 3,
      duplicates: 0,
    });
    const ndjson = [40, 50].map((at) => JSON.stringify({ user: 'a', slug: 'm', at })).join('\r\n') + '\n';
    assert.deepEqual((await post(base, ndjson, 'application/x-ndjson')).body, { accepted: 2, duplicates: 0 });
    const pair = (await get(base, '/users/a/movies/m/latest-moment')).body;
    assert.equal(pair.latestMoment, 50);
    assert.equal(pair.watchTime, 50);
    assert.equal(pair.events, 5);
  });

  test('a batch with one bad event stores nothing of it', async (t) => {
    const { base, count } = await setup(t);
    await post(base, { user: 'a', slug: 'm', at: 10 });
    const res = await post(base, [
      { user: 'a', slug: 'm', at: 20 },
      { user: 'b', slug: 'n', at: 5 },
      { user: 'a', slug: 'm', at: 'late' },
    ]);
    assert.equal(res.status, 400);
    assert.deepEqual(res.body.errors, [{ pointer: '/2/at', message: 'at must be an integer (whole seconds)' }]);
    assert.equal(await count(), 1);
    assert.equal((await get(base, '/users/b/watch-time')).status, 404, 'no user row was created');
    assert.equal((await get(base, '/movies/m/watch-time')).body.watchTime, 10);
  });

  test('NDJSON names the lines that are not JSON or are empty', async (t) => {
    const { base, count } = await setup(t);
    const res = await post(base, '{"user":"a","slug":"m","at":1}\n{nope\n\n{"user":"a","slug":"m","at":2}\n', 'application/x-ndjson');
    assert.equal(res.status, 400);
    assert.equal(res.body.errors.length, 2);
    assert.equal(res.body.errors[0].pointer, '/1');
    assert.match(res.body.errors[0].message, /^line 2 is not valid JSON/);
    assert.deepEqual(res.body.errors[1], { pointer: '/2', message: 'line 3 is empty' });
    const invalid = await post(base, '{"user":"a","slug":"m","at":1}\n{"user":"a","slug":"m"}\n', 'application/x-ndjson');
    assert.deepEqual(invalid.body.errors, [{ pointer: '/1/at', message: 'at is required' }]);
    assert.equal(await count(), 0);
  });

  test('a repeated id is acknowledged as a duplicate and not applied again', async (t) => {
    const { base, count } = await setup(t);
    const first = { user: 'a', slug: 'm', at: 30, id: 'evt-1' };
    assert.deepEqual((await post(base, first)).body, { accepted: 1, duplicates: 0 });
    // A retry, even with other content, is the same event.
    assert.deepEqual((await post(base, { ...first, at: 60 })).body, { accepted: 0, duplicates: 1 });
    // Within one batch too, and mixed with new events.
    const batch = [
      { user: 'a', slug: 'm', at: 40, id: 'evt-2' },
      { user: 'a', slug: 'm', at: 40, id: 'evt-2' },
      { user: 'a', slug: 'm', at: 50, id: 'evt-1' },
      { user: 'a', slug: 'm', at: 50 },
    ];
    assert.deepEqual((await post(base, batch)).body, { accepted: 2, duplicates: 2 });
    assert.equal(await count(), 3);
    const pair = (await get(base, '/users/a/movies/m/latest-moment')).body;
    assert.deepEqual([pair.latestMoment, pair.watchTime, pair.events], [50, 50, 3]);
  });

  test('a body with no Content-Type is read as JSON; another type, or a charset other than UTF-8, is 415', async (t) => {
    const { base, count } = await setup(t);
    const event = JSON.stringify({ user: 'a', slug: 'm', at: 1 });
    // fetch with a Blob of no type sends no Content-Type at all.
    const noType = await request(`${base}/events`, { method: 'POST', body: new Blob([event]) });
    assert.equal(noType.status, 200);
    assert.equal(await count(), 1);
    const notJson = await request(`${base}/`, { method: 'POST', body: new Blob(['user=a&slug=m']) });
    assert.equal(notJson.status, 400, 'no looser than JSON: a body that is not JSON is still refused');
    const other = await post(base, event, 'text/plain');
    assert.equal(other.status, 415);
    assert.equal(other.body.type, '/problems/unsupported-media-type');
    assert.match(other.body.detail, /not "text\/plain"/);
    assert.equal((await post(base, event, '')).status, 415, 'an empty Content-Type is present, and wrong');
    assert.equal((await post(base, event, 'application/json; charset=latin1')).status, 415);
    assert.equal((await post(base, event, 'Application/JSON; charset="UTF-8"')).status, 200);
    assert.equal(await count(), 2);
  });

  test('answers 400 for a body that is not JSON, not UTF-8, empty, or not an event', async (t) => {
    const { base, count } = await setup(t);
    const broken = await post(base, '{"user": "a", "slug"');
    assert.equal(broken.status, 400);
    assert.equal(broken.body.type, '/problems/invalid-body');
    assert.match(broken.body.detail, /^the body is not valid JSON/);
    const latin1 = Buffer.from('{"user":"caf\xe9","slug":"m","at":1}', 'latin1');
    const notUtf8 = await request(`${base}/events`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: latin1 });
    assert.equal(notUtf8.status, 400);
    assert.equal(notUtf8.body.detail, 'the body is not valid UTF-8');
    assert.equal((await post(base, '')).status, 400);
    assert.equal((await post(base, '[]')).body.errors[0].message, 'a batch needs at least one event');
    assert.equal((await post(base, '"hello"')).body.errors[0].message, 'body must be an object or an array');
    assert.equal(await count(), 0);
  });

  test('takes 10,000 events in one request and refuses 10,001', async (t) => {
    const { base, count } = await setup(t);
    const events = (n: number) => Array.from({ length: n }, (_, i) => ({ user: `u${i % 100}`, slug: `m${i % 7}`, at: i }));
    const tooMany = await post(base, events(10_001));
    assert.equal(tooMany.status, 400);
    assert.equal(tooMany.body.errors[0].message, 'batch must have at most 10000 events');
    assert.equal(await count(), 0);
    assert.deepEqual((await post(base, events(10_000))).body, { accepted: 10_000, duplicates: 0 });
    assert.equal(await count(), 10_000);
  });

  test('refuses a body over the limit with 413 before reading it', async (t) => {
    const { base, count } = await setup(t);
    const status = await new Promise<number>((resolve, reject) => {
      const req = http.request(`${base}/events`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'content-length': String(64 * 1024 * 1024) },
      });
      req.on('response', (res) => {
        res.resume();
        resolve(res.statusCode!);
        req.destroy();
      });
      req.on('error', reject);
      // Send only the start of the declared 64 MiB: the answer must not wait for the rest.
      req.write('[');
    });
    assert.equal(status, 413);
    assert.equal(await count(), 0);
  });

  test('a client that disconnects mid-body leaves nothing stored and the server serving', async (t) => {
    const { base, count } = await setup(t);
    await new Promise<void>((resolve) => {
      const req = http.request(`${base}/events`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'content-length': '1000' },
      });
      req.on('error', () => resolve());
      req.write('[{"user":"a","slug":"m","at":1}', () => setTimeout(() => req.destroy(), 50));
    });
    assert.equal((await post(base, { user: 'b', slug: 'm', at: 2 })).status, 200);
    assert.equal(await count(), 1);
  });

  test('unknown routes and methods answer problem+json', async (t) => {
    const { base } = await setup(t);
    const missing = await get(base, '/nothing/here');
    assert.equal(missing.status, 404);
    assert.equal(missing.headers.get('content-type'), 'application/problem+json');
    const wrongMethod = await get(base, '/events');
    assert.equal(wrongMethod.status, 405);
    assert.equal(wrongMethod.headers.get('allow'), 'POST');
  });

  test('tokens guard ingest and reads, but not /livez and /readyz', async (t) => {
    const { base } = await setup(t, { ingestToken: 'in-secret', readToken: 'read-secret' });
    const event = { user: 'a', slug: 'm', at: 5 };
    const denied = await post(base, event);
    assert.equal(denied.status, 401);
    assert.equal(denied.headers.get('www-authenticate'), 'Bearer');
    assert.equal((await post(base, event, 'application/json', { authorization: 'Bearer read-secret' })).status, 401);
    assert.equal((await post(base, event, 'application/json', { authorization: 'Bearer in-secret' })).status, 200);
    assert.equal((await get(base, '/movies/m/watch-time')).status, 401);
    assert.equal((await get(base, '/movies/m/watch-time', { authorization: 'Bearer in-secret' })).status, 401);
    assert.equal((await get(base, '/movies/m/watch-time', { authorization: 'Bearer read-secret' })).status, 200);
    assert.equal((await get(base, '/livez')).status, 200);
    assert.equal((await get(base, '/readyz')).status, 200);
  });

  test('50 concurrent connections, each sending one pair in order: every total is exact', async (t) => {
    const { base, count } = await setup(t);
    const connections = 50;
    const perConnection = 60;
    const movies = 7;
    // Each connection plays one (user, movie) pair: steps, pauses, seeks and rewinds.
    const plays = Array.from({ length: connections }, (_, c) => {
      let at = (c * 37) % 200;
      return Array.from({ length: perConnection }, (_, i) => {
        const move = (c + i) % 11;
        at = move === 0 ? Math.max(0, at - 90) : move === 1 ? at + 400 : move === 2 ? at : at + 1 + ((c * i) % 15);
        return { user: `user-${c}`, slug: `movie-${c % movies}`, at };
      });
    });
    const expected = plays.map((events) => {
      let position = 0;
      let watched = 0;
      for (const { at } of events) {
        watched += credit(DEFAULT_RULE, position, at);
        position = at;
      }
      return { position, watched };
    });

    await Promise.all(
      plays.map(async (events) => {
        // One keep-alive socket per player, so there are 50 connections at once.
        const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
        try {
          for (const event of events) {
            const body = JSON.stringify(event);
            const status = await new Promise<number>((resolve, reject) => {
              const req = http.request(`${base}/events`, {
                method: 'POST',
                agent,
                headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
              });
              req.on('response', (res) => res.resume().on('end', () => resolve(res.statusCode!)));
              req.on('error', reject);
              req.end(body);
            });
            assert.equal(status, 200);
          }
        } finally {
          agent.destroy();
        }
      }),
    );

    assert.equal(await count(), connections * perConnection);
    for (let c = 0; c < connections; c++) {
      const pair = (await get(base, `/users/user-${c}/movies/movie-${c % movies}/latest-moment`)).body;
      assert.deepEqual([pair.latestMoment, pair.watchTime, pair.events], [expected[c].position, expected[c].watched, perConnection]);
      const user = (await get(base, `/users/user-${c}/watch-time`)).body;
      assert.equal(user.watchTime, expected[c].watched);
    }
    for (let m = 0; m < movies; m++) {
      const viewers = expected.filter((_, c) => c % movies === m);
      const movie = (await get(base, `/movies/movie-${m}/watch-time`)).body;
      assert.equal(movie.watchTime, viewers.reduce((sum, v) => sum + v.watched, 0));
      assert.equal(movie.viewers, viewers.length);
      assert.equal(movie.events, viewers.length * perConnection);
    }
  });

  test('a POST answered 200 is visible to the next GET (read your writes)', async (t) => {
    const { base } = await setup(t);
    for (let at = 1; at <= 50; at++) {
      assert.equal((await post(base, { user: 'ryw', slug: 'film', at })).status, 200);
      const [pair, user, movie] = await Promise.all([
        get(base, '/users/ryw/movies/film/latest-moment'),
        get(base, '/users/ryw/watch-time'),
        get(base, '/movies/film/watch-time'),
      ]);
      assert.equal(pair.body.latestMoment, at);
      assert.equal(user.body.events, at);
      assert.equal(movie.body.watchTime, at);
    }
  });
});
