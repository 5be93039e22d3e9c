// The read endpoints of SPEC section 3 against the real server.
import assert from 'node:assert/strict';
import { connect, createServer, type AddressInfo, type Socket } from 'node:net';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { SqliteStore } from '../src/store/sqlite.ts';
import { cleanupAfter, cli, get, post, serve, tempDir } from './helpers.ts';
import { sharedPostgres, stopSharedPostgres } from './support/postgres.ts';

const ISO_UTC = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

after(stopSharedPostgres);

// The same answers from both stores.
for (const backend of ['SQLite', 'PostgreSQL'] as const) describe(`reads (${backend})`, () => {
  const cleanup = cleanupAfter();
  let base: string;
  const odd = 'ann/é %?#&+';

  before(async () => {
    const db = backend === 'SQLite' ? path.join(tempDir(cleanup), 'w.db') : await (await sharedPostgres()).newDatabase();
    base = (await serve(cleanup, db)).url;
    // Sent one request at a time so arrival order is known.
    const events = [
      { user: 'ann', slug: 'alien', at: 60 },
      { user: 'ann', slug: 'alien', at: 120 },
      { user: 'bob', slug: 'alien', at: 30 },
      { user: 'ann', slug: 'brazil', at: 100 },
      { user: 'ann', slug: 'casablanca', at: 10 },
      { user: 'ann', slug: 'alien', at: 150 },
      { user: odd, slug: 'x/y%z', at: 42 },
    ];
    for (const event of events) assert.equal((await post(base, event)).status, 200);
  });

  test("a movie's total watch time", async () => {
    const res = await get(base, '/movies/alien/watch-time');
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), 'application/json');
    const { updatedAt, ...rest } = res.body;
    assert.deepEqual(rest, { slug: 'alien', watchTime: 180, viewers: 2, events: 4 });
    assert.match(updatedAt, ISO_UTC);
  });

  test("a user's total watch time across movies", async () => {
    const { updatedAt, ...rest } = (await get(base, '/users/ann/watch-time')).body;
    assert.deepEqual(rest, { user: 'ann', watchTime: 150 + 100 + 10, movies: 3, events: 5 });
    assert.match(updatedAt, ISO_UTC);
  });

  test('the latest moment of a user in a movie', async () => {
    const { updatedAt, ...rest } = (await get(base, '/users/ann/movies/alien/latest-moment')).body;
    assert.deepEqual(rest, { user: 'ann', slug: 'alien', latestMoment: 150, watchTime: 150, events: 3 });
    assert.match(updatedAt, ISO_UTC);
  });

  test('percent-encoded names are decoded, slashes and all', async () => {
    const user = encodeURIComponent(odd);
    const slug = encodeURIComponent('x/y%z');
    const pair = (await get(base, `/users/${user}/movies/${slug}/latest-moment`)).body;
    assert.equal(pair.user, odd);
    assert.equal(pair.slug, 'x/y%z');
    assert.equal(pair.latestMoment, 42);
    assert.equal((await get(base, `/movies/${slug}/watch-time`)).body.watchTime, 42);
  });

  test('unknown user, movie or pair is 404 problem+json', async () => {
    for (const pathname of ['/movies/nope/watch-time', '/users/nobody/watch-time', '/users/bob/movies/brazil/latest-moment', '/users/nobody/movies']) {
      const res = await get(base, pathname);
      assert.equal(res.status, 404, pathname);
      assert.equal(res.headers.get('content-type'), 'application/problem+json');
      assert.deepEqual(Object.keys(res.body), ['type', 'title', 'status', 'detail', 'instance']);
      assert.equal(res.body.status, 404);
      assert.equal(res.body.instance, res.headers.get('x-request-id'), 'the instance is the request id');
    }
  });

  test('lookups read in one turn each get their own answer', async () => {
    // The server answers the lookups of a turn together: none may get another's answer. One socket
    // each, all connected and accepted first, then every request written at once, so that the
    // server reads them in one turn.
    const paths = ['ann', 'bob', 'nobody'].flatMap((user) =>
      ['alien', 'brazil', 'nothing'].flatMap((slug) => [
        `/users/${user}/watch-time`,
        `/movies/${slug}/watch-time`,
        `/users/${user}/movies/${slug}/latest-moment`,
      ]),
    );
    const expected = [];
    for (const p of paths) {
      const res = await get(base, p);
      expected.push(`${res.status} ${JSON.stringify({ ...res.body, instance: undefined })}`);
    }
    assert.ok(expected.some((a) => a.startsWith('200')) && expected.some((a) => a.startsWith('404')));
    const { port } = new URL(base);
    const sockets = await Promise.all(
      paths.map(
        () =>
          new Promise<Socket>((resolve, reject) => {
            const socket = connect(Number(port), '127.0.0.1');
            socket.once('connect', () => resolve(socket)).once('error', reject);
          }),
      ),
    );
    await new Promise((resolve) => setTimeout(resolve, 50)); // for the server to accept them all
    const answers = sockets.map(
      (socket) =>
        new Promise<string>((resolve, reject) => {
          let text = '';
          socket.setEncoding('utf8');
          socket.on('data', (chunk: string) => (text += chunk));
          socket.once('end', () => {
            const [head, body] = text.split('\r\n\r\n');
            resolve(`${head.split(' ')[1]} ${JSON.stringify({ ...JSON.parse(body), instance: undefined })}`);
          });
          socket.once('error', reject);
        }),
    );
    sockets.forEach((socket, i) => socket.write(`GET ${paths[i]} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n`));
    assert.deepEqual(await Promise.all(answers), expected);
  });

  test('a name that breaks the rules, or bad percent-encoding, is 400', async () => {
    const tooLong = await get(base, `/users/${'x'.repeat(201)}/watch-time`);
    assert.equal(tooLong.status, 400);
    assert.deepEqual(tooLong.body.errors, [{ pointer: '/user', message: 'user must be at most 200 characters long' }]);
    const control = await get(base, '/movies/a%0Ab/watch-time');
    assert.deepEqual(control.body.errors, [{ pointer: '/slug', message: 'slug must not contain control characters or unpaired surrogates' }]);
    const malformed = await get(base, '/users/%E0%A4%A/watch-time');
    assert.equal(malformed.status, 400);
    assert.match(malformed.body.detail, /not valid percent-encoding/);
  });

  test("a user's movies, most recently watched first, paginated", async () => {
    const first = (await get(base, '/users/ann/movies?limit=2')).body;
    assert.equal(first.user, 'ann');
    assert.deepEqual(first.items.map((m: { slug: string }) => m.slug), ['alien', 'casablanca']);
    assert.deepEqual(Object.keys(first.items[0]), ['slug', 'latestMoment', 'watchTime', 'events', 'updatedAt']);
    assert.equal(first.next, '/users/ann/movies?limit=2&offset=2');
    const second = (await get(base, first.next)).body;
    assert.deepEqual(second.items.map((m: { slug: string }) => m.slug), ['brazil']);
    assert.equal(second.next, null);
  });

  test('movies by total watch time, largest first, paginated', async () => {
    const first = (await get(base, '/movies?limit=2')).body;
    assert.deepEqual(first.items.map((m: { slug: string; watchTime: number }) => [m.slug, m.watchTime]), [['alien', 180], ['brazil', 100]]);
    assert.equal(first.next, '/movies?limit=2&offset=2');
    const rest = (await get(base, first.next)).body;
    assert.deepEqual(rest.items.map((m: { slug: string }) => m.slug), ['x/y%z', 'casablanca']);
    assert.equal(rest.next, null);
    assert.equal((await get(base, '/movies')).body.limit, 20);
  });

  test('bad pagination parameters are 400 and name the parameter', async () => {
    for (const query of ['limit=0', 'limit=1001', 'limit=abc', 'offset=-1', 'limit=1.5']) {
      const res = await get(base, `/movies?${query}`);
      assert.equal(res.status, 400, query);
      assert.match(res.body.errors[0].message, /^(limit|offset) must be an integer from/);
    }
  });

  test('/livez and /readyz', async () => {
    assert.deepEqual((await get(base, '/livez')).body, { status: 'live' });
    const ready = (await get(base, '/readyz')).body;
    assert.deepEqual(ready, {
      status: 'ready',
      queue: { depth: 0, capacity: 100_000 },
      database: 'writable',
      accounting: { accounting: 'progress', maxStep: 120 },
    });
  });
});

// The server keeps recent answers in memory; they must follow every commit,
// its own and another process's, exactly.
describe('answers kept in memory', () => {
  test('follow each batch and a rebuild made by another process', async (t) => {
    const cleanup = cleanupAfter(t);
    const db = path.join(tempDir(cleanup), 'w.db');
    const base = (await serve(cleanup, db)).url;
    const paths = ['/users/ann/watch-time', '/movies/heat/watch-time', '/users/ann/movies/heat/latest-moment', '/users/cy/watch-time'];
    /** What the server answers, against what the file holds, read by a fresh connection. */
    const compare = async (step: string) => {
      const file = new SqliteStore(db, { readonly: true });
      try {
        const expected = [file.user('ann'), file.movie('heat'), file.pair('ann', 'heat'), file.user('cy')];
        for (const [i, pathname] of paths.entries()) {
          const answer = await get(base, pathname);
          assert.equal(answer.status, expected[i] ? 200 : 404, `${step}: ${pathname}`);
          if (expected[i]) assert.deepEqual(answer.body, expected[i], `${step}: ${pathname}`);
        }
      } finally {
        file.close();
      }
    };
    await post(base, [{ user: 'ann', slug: 'heat', at: 60 }, { user: 'bob', slug: 'heat', at: 30 }]);
    await compare('first batch'); // and now every answer is kept, the unknown user's too
    await compare('read again');
    await post(base, { user: 'ann', slug: 'heat', at: 100 });
    await post(base, [{ user: 'cy', slug: 'heat', at: 20 }, { user: 'ann', slug: 'alien', at: 50 }]);
    await compare('after more batches, one of them making the unknown user known');
    assert.equal((await cli(['rebuild', '--db', db, '--accounting', 'sum'])).code, 0);
    await compare('after a rebuild by another process');
    assert.equal((await get(base, '/users/ann/watch-time')).body.watchTime, 60 + 100 + 50, 'the rebuild counted every second');
  });
});

describe('a read-only store (an HTTP worker\'s)', () => {
  test('a lookup read in the poll phase sees a commit made after the last turn\'s lookup', async (t) => {
    const cleanup = cleanupAfter(t);
    const file = path.join(tempDir(cleanup), 'w.db');
    const writer = new SqliteStore(file);
    cleanup(() => writer.close());
    writer.initSettings({ accounting: 'progress', maxStep: 120 });
    writer.ingest([{ user: 'u', slug: 'm', at: 10, receivedAt: Date.now() }]);
    const reader = new SqliteStore(file, { readonly: true });
    cleanup(() => reader.close());

    // A request read by a socket's callback, as polka's routed lookups are: in the poll phase of the turn after a
    // lookup answered in the check phase (as the plain lookups are), and after another connection's commit.
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    cleanup(() => server.close());
    const read = new Promise<number | undefined>((resolve) =>
      server.once('connection', (socket) => socket.once('data', () => resolve(reader.pair('u', 'm')?.latestMoment))),
    );
    const client = connect((server.address() as AddressInfo).port, '127.0.0.1');
    cleanup(() => client.destroy());
    await new Promise((resolve) => client.once('connect', resolve));
    setImmediate(() => {
      assert.equal(reader.pair('u', 'm')?.latestMoment, 10);
      writer.ingest([{ user: 'u', slug: 'm', at: 20, receivedAt: Date.now() }]);
      client.write('GET');
    });
    assert.equal(await read, 20);
  });
});
