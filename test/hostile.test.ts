// What careless and hostile clients do, on a real server: slow and large
// uploads all at once, clients that drop mid-body, bodies over the limit,
// lookups of names that plain objects inherit, encodings, request targets
// in absolute form, and requests pipelined behind a write.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { gzipSync } from 'node:zlib';
import { childrenOf, cleanupAfter, get, post, request, serve, serverProcess, tempDir } from './helpers.ts';

/** Sends raw bytes on one connection and gathers what comes back until the server closes it or `until` holds. */
function exchange(port: number, bytes: string | Buffer, until: (text: string) => boolean): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    let text = '';
    const done = () => {
      socket.destroy();
      resolve(text);
    };
    socket.on('data', (d) => {
      text += d;
      if (until(text)) done();
    });
    socket.on('end', done);
    socket.on('error', reject);
    socket.write(bytes);
  });
}

/** Answers on a connection, each `HTTP/1.1 <status>` with its JSON body. */
function answers(text: string): { status: number; body: any }[] {
  return text
    .split(/(?=HTTP\/1\.1 \d{3})/)
    .filter(Boolean)
    .map((part) => {
      const [head, body] = part.split('\r\n\r\n');
      return { status: Number(head.slice(9, 12)), body: body ? JSON.parse(body) : undefined };
    });
}

async function until(what: string, check: () => boolean, tries = 100) {
  for (let i = 0; i < tries; i++) {
    if (check()) return;
    await sleep(20);
  }
  assert.fail(`waited in vain for ${what}`);
}

/** The resident memory of a server and its HTTP workers, in MB. */
const rssMb = (pid: number) =>
  [pid, ...childrenOf(pid)].reduce((sum, p) => sum + Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${p}/status`, 'utf8'))![1]), 0) / 1024;

const metricLines = async (base: string, name: string) =>
  (await get(base, '/metrics')).body.split('\n').filter((l: string) => l.startsWith(name));

describe('hostile clients', () => {
  test('slow large uploads all at once: past the body memory, 503 and Retry-After; reads served; RSS bounded', async (t) => {
    const cleanup = cleanupAfter(t);
    const server = serverProcess(['--db', path.join(tempDir(cleanup), 'w.db'), '--body-memory', '64']);
    cleanup(() => server.child.kill('SIGKILL'));
    const base = await server.listening;
    const port = Number(new URL(base).port);
    assert.equal((await post(base, { user: 'a', slug: 'm', at: 10 })).status, 200);
    const before = rssMb(server.child.pid!);

    // 200 clients each declare 8 MiB and send the first 2 MiB of it, then stall: 1.6 GB if all were read.
    const clients = 200;
    const declared = 8 * 1024 * 1024;
    const part = Buffer.alloc(2 * 1024 * 1024, 0x20);
    const sockets: net.Socket[] = [];
    const refused: Promise<string>[] = [];
    for (let i = 0; i < clients; i++) {
      const socket = net.connect(port, '127.0.0.1');
      sockets.push(socket);
      refused.push(
        new Promise((resolve) => {
          let text = '';
          socket.on('data', (d) => {
            text += d;
            if (text.includes('\r\n\r\n')) resolve(text);
          });
          socket.on('error', () => resolve(text));
          socket.on('close', () => resolve(text));
        }),
      );
      socket.write(`POST /events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${declared}\r\n\r\n`);
      socket.write(part);
    }
    cleanup(() => sockets.forEach((s) => s.destroy()));
    // Bodies hold what they have received: past 64 MiB (32 of these 2 MiB parts), the rest are refused.
    let answered: string[] = [];
    for (let tries = 0, last = -1; tries < 100; tries++) {
      answered = (await Promise.all(refused.map((p) => Promise.race([p, sleep(10).then(() => '')])))).filter(Boolean);
      if (answered.length === last && answered.length >= clients - 32) break;
      last = answered.length;
      await sleep(100);
    }
    assert.ok(answered.length >= clients - 32 && answered.length <= clients - 30, `${answered.length} of ${clients} refused`);
    for (const text of answered) {
      assert.match(text, /^HTTP\/1\.1 503/);
      assert.match(text, /Retry-After: 1/i);
      assert.match(text, /busy-reading/);
    }
    // Reads go on meanwhile.
    assert.equal((await get(base, '/users/a/watch-time')).body.watchTime, 10);
    const during = rssMb(server.child.pid!);
    // The bodies' 64 MiB, and the buffers of 200 connections and their answers (120 MB measured in all).
    assert.ok(during - before < 64 + 96, `RSS grew by ${(during - before).toFixed(0)} MB with 64 MiB of bodies allowed`);

    // Once the stalled ones go, their memory is free for new bodies.
    sockets.forEach((s) => s.destroy());
    for (let tries = 0; ; tries++) {
      const res = await post(base, { user: 'a', slug: 'm', at: 20 });
      if (res.status === 200) break;
      assert.ok(tries < 100, `still ${res.status} after the slow clients left`);
      await sleep(20);
    }
    assert.equal((await get(base, '/users/a/watch-time')).body.watchTime, 20);
  });

  test('clients that drop mid-body count as 499, log no error, and store nothing', async (t) => {
    const cleanup = cleanupAfter(t);
    const server = serverProcess(['--db', path.join(tempDir(cleanup), 'w.db'), '--log-level', 'debug']);
    cleanup(() => server.child.kill('SIGKILL'));
    const base = await server.listening;
    const port = Number(new URL(base).port);
    const half = '[' + Array.from({ length: 50 }, (_, i) => JSON.stringify({ user: 'u', slug: 'm', at: i * 10 })).join(',');
    await Promise.all(
      Array.from({ length: 200 }, () =>
        new Promise<void>((resolve) => {
          const socket = net.connect(port, '127.0.0.1');
          socket.on('error', () => resolve());
          socket.on('close', () => resolve());
          socket.write(`POST /events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${half.length * 2}\r\n\r\n${half}`, () =>
            setTimeout(() => socket.destroy(), 20),
          );
        }),
      ),
    );
    for (let tries = 0; ; tries++) {
      const counted = await metricLines(base, 'watchtime_http_requests_total{route="/events",method="POST",status="499"}');
      if (counted.length === 1 && counted[0].endsWith(' 200')) break;
      assert.ok(tries < 100, `499s counted: ${counted}`);
      await sleep(20);
    }
    assert.deepEqual(await metricLines(base, 'watchtime_http_requests_total{route="/events",method="POST",status="500"}'), []);
    const refusals = await metricLines(base, 'watchtime_ingest_rejected_requests_total{');
    assert.ok(refusals.length > 0 && refusals.every((l: string) => l.endsWith(' 0')), `no refusal counted: ${refusals}`);
    assert.equal((await get(base, '/stats')).body.eventsStored, 0);
    const logged = server
      .stderr()
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l));
    assert.deepEqual(logged.filter((l) => l.level >= 40), [], 'no warning or error for a client that left');
    const gone = logged.filter((l) => l.status === 499);
    assert.equal(gone.length, 200);
    assert.ok(gone.every((l) => l.level === 20 && l.err === undefined), 'each at debug, without a stack');
  });

  test('a 64 MiB upload over the limit gets its 413, 20 times in a row, with and without keep-alive', async (t) => {
    const cleanup = cleanupAfter(t);
    // In a process of its own, as in production: sharing the client's event loop hides the race.
    const server = serverProcess(['--db', path.join(tempDir(cleanup), 'w.db')]);
    cleanup(() => server.child.kill('SIGKILL'));
    const port = Number(new URL(await server.listening).port);
    const body = Buffer.alloc(64 * 1024 * 1024, 0x20);
    const keepAlive = new http.Agent({ keepAlive: true });
    cleanup(() => keepAlive.destroy());
    // Without an agent the client sends Connection: close, and the 413 is the connection's last answer.
    for (const [i, agent] of [...Array(20).fill(false), ...Array(20).fill(keepAlive)].entries()) {
      // Node's client writes the whole body and fails with EPIPE if the server resets the connection meanwhile.
      // Settled once the exchange is over, so that no upload outlives its try. What counts is the first
      // thing the client sees: its answer, or an error (a reset) before it. Node's client closes its own
      // connection once it has its answer, so errors after it are its own.
      const outcome = await new Promise<string>((resolve) => {
        let result: string | undefined;
        const req = http.request({ port, host: '127.0.0.1', path: '/events', method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': body.length } });
        req.on('response', (res) => {
          res.resume();
          result ??= String(res.statusCode);
        });
        req.on('error', (error) => (result ??= error.message));
        req.on('close', () => resolve(result ?? 'no answer'));
        req.end(body);
      });
      assert.equal(outcome, '413', `try ${i + 1}`);
    }
  });

  test('names that plain objects inherit are not found, nor taken as a content type', async (t) => {
    const cleanup = cleanupAfter(t);
    const { url } = await serve(cleanup, path.join(tempDir(cleanup), 'w.db'));
    for (const kind of ['constructor', '__proto__', 'toString', 'hasOwnProperty', 'valueOf']) {
      const res = await get(url, `/problems/${kind}`);
      assert.equal(res.status, 404, kind);
      assert.equal(res.body.type, '/problems/not-found');
      const typed = await post(url, { user: 'a', slug: 'm', at: 1 }, kind);
      assert.equal(typed.status, 415, `Content-Type: ${kind}`);
    }
    assert.equal((await get(url, '/problems/queue-full')).status, 200);
  });

  test('a batch larger than the whole queue is a 400 that names the limit, not a 503 for ever', async (t) => {
    const cleanup = cleanupAfter(t);
    const { url } = await serve(cleanup, path.join(tempDir(cleanup), 'w.db'), { queueSize: 100 });
    const batch = (n: number) => Array.from({ length: n }, (_, i) => ({ user: `u${i}`, slug: 'm', at: 1 }));
    const res = await post(url, batch(101));
    assert.equal(res.status, 400);
    assert.match(res.body.errors[0].message, /at most 100 events on this server/);
    assert.equal((await post(url, batch(100))).status, 200);
    assert.equal((await get(url, '/stats')).body.eventsStored, 100);
  });

  test('Content-Encoding: gzip is decoded under the same limit; others are 415; a false label stores nothing', async (t) => {
    const cleanup = cleanupAfter(t);
    const { url } = await serve(cleanup, path.join(tempDir(cleanup), 'w.db'));
    const events = [
      { user: 'a', slug: 'm', at: 10 },
      { user: 'a', slug: 'm', at: 30 },
    ];
    const zipped = await request(`${url}/events`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'content-encoding': 'gzip' },
      body: gzipSync(JSON.stringify(events)),
    });
    assert.deepEqual(zipped.body, { accepted: 2, duplicates: 0 });
    assert.equal((await get(url, '/users/a/watch-time')).body.watchTime, 30);

    const labelled = await post(url, events, 'application/json', { 'content-encoding': 'gzip' });
    assert.equal(labelled.status, 400);
    assert.match(labelled.body.detail, /not valid gzip/);

    const brotli = await post(url, events, 'application/json', { 'content-encoding': 'br' });
    assert.equal(brotli.status, 415);
    assert.match(brotli.body.detail, /Content-Encoding must be gzip or identity/);
    assert.equal(brotli.headers.get('accept-encoding'), 'gzip, identity');

    // 40 KiB that would decode to 40 MiB: refused once it passes the 16 MiB limit.
    const bomb = gzipSync(Buffer.alloc(40 * 1024 * 1024, 0x20));
    const exploded = await request(`${url}/events`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'content-encoding': 'gzip' },
      body: bomb,
    });
    assert.equal(exploded.status, 413);
    assert.equal((await get(url, '/stats')).body.eventsStored, 2);
  });

  test('a request target in absolute form is taken as its path', async (t) => {
    const cleanup = cleanupAfter(t);
    const { port } = await serve(cleanup, path.join(tempDir(cleanup), 'w.db'));
    const body = JSON.stringify({ user: 'a', slug: 'm', at: 7 });
    const posted = await exchange(
      port,
      `POST http://127.0.0.1:${port}/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`,
      (seen) => seen.includes('}'),
    );
    assert.deepEqual(answers(posted)[0], { status: 200, body: { accepted: 1, duplicates: 0 } });
    const read = await exchange(port, `GET http://127.0.0.1:${port}/users/a/movies/m/latest-moment HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`, (seen) =>
      seen.includes('}'),
    );
    assert.equal(answers(read)[0].body.latestMoment, 7);
  });

  test('a lookup pipelined behind a POST on one connection sees that POST', async (t) => {
    const cleanup = cleanupAfter(t);
    const { port } = await serve(cleanup, path.join(tempDir(cleanup), 'w.db'));
    for (let i = 1; i <= 20; i++) {
      const body = JSON.stringify({ user: `u${i}`, slug: 'm', at: i });
      const text = await exchange(
        port,
        `POST /events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}` +
          `GET /users/u${i}/movies/m/latest-moment HTTP/1.1\r\nHost: x\r\n\r\n` +
          `GET /movies/m/watch-time HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`,
        () => false,
      );
      const [posted, pair, movie] = answers(text);
      assert.equal(posted.status, 200);
      assert.equal(pair.status, 200, `the pair's lookup answered ${pair.status} before its write`);
      assert.equal(pair.body.latestMoment, i);
      assert.equal(movie.body.events, i);
    }
  });

  test('bodies that would cost far more parsed than read: refused before they are built, errors listed up to 100', async (t) => {
    const cleanup = cleanupAfter(t);
    const server = serverProcess(['--db', path.join(tempDir(cleanup), 'w.db')]);
    cleanup(() => server.child.kill('SIGKILL'));
    const base = await server.listening;
    const before = rssMb(server.child.pid!);
    const newlines = await post(base, '\n'.repeat(15 * 1024 * 1024), 'application/x-ndjson');
    assert.equal(newlines.status, 400);
    assert.match(newlines.body.detail, /at most 10000 events; this one has \d+ lines/);
    const empties = await post(base, `[${'{},'.repeat(5_000_000)}{}]`);
    assert.equal(empties.status, 400);
    assert.match(empties.body.detail, /at most 10000 events; this one has 10001 items or more/);
    const grew = rssMb(server.child.pid!) - before;
    assert.ok(grew < 200, `RSS grew by ${grew.toFixed(0)} MB for two refused 15 MiB bodies`);

    // Within the batch limit, every line wrong: 100 errors listed, the detail says how many in all.
    const blank = await post(base, '\n'.repeat(5000), 'application/x-ndjson');
    assert.equal(blank.status, 400);
    assert.equal(blank.body.errors.length, 100);
    assert.match(blank.body.detail, /the first 100 of 5000 errors are listed/);
    const invalid = await post(base, Array.from({ length: 10_000 }, () => ({ at: -1 })));
    assert.equal(invalid.body.errors.length, 100);
    assert.match(invalid.body.detail, /10000 of 10000 events are invalid.*the first 100 of 30000 errors/);

    // One unreadable line and one event missing a field: both said.
    const mixed = await post(base, '{"user":"a","slug":"m"}\nnot json\n{"user":"a","slug":"m","at":1}\n', 'application/x-ndjson');
    assert.deepEqual(mixed.body.errors.map((e: { pointer: string }) => e.pointer), ['/0/at', '/1']);
    assert.equal((await get(base, '/livez')).status, 200);
  });

  test('connections that declare large bodies and send nothing do not shut ingest out', async (t) => {
    const cleanup = cleanupAfter(t);
    const { url, port } = await serve(cleanup, path.join(tempDir(cleanup), 'w.db'), { bodyMemory: 32 * 1024 * 1024 });
    const idle = Array.from({ length: 8 }, () => {
      const socket = net.connect(port, '127.0.0.1');
      socket.on('error', () => undefined);
      socket.write(`POST /events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${16 * 1024 * 1024}\r\n\r\n`);
      return socket;
    });
    cleanup(() => idle.forEach((s) => s.destroy()));
    await sleep(200);
    assert.equal((await post(url, { user: 'a', slug: 'm', at: 5 })).status, 200);
  });

  test('a write routed by polka (a query string) is waited for by what is pipelined behind it', async (t) => {
    const cleanup = cleanupAfter(t);
    const { port } = await serve(cleanup, path.join(tempDir(cleanup), 'w.db'));
    const first = gzipSync(JSON.stringify(Array.from({ length: 50 }, (_, i) => ({ user: 'u', slug: 'm', at: 10 + i * 10 }))));
    const second = JSON.stringify({ user: 'u', slug: 'm', at: 510 });
    const text = await exchange(
      port,
      Buffer.concat([
        Buffer.from(`POST /events?src=proxy HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\nContent-Length: ${first.length}\r\n\r\n`),
        first,
        Buffer.from(`POST /events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${second.length}\r\n\r\n${second}`),
        Buffer.from('GET /users/u/movies/m/latest-moment HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'),
      ]),
      () => false,
    );
    const [a, b, pair] = answers(text);
    assert.deepEqual([a.status, b.status], [200, 200]);
    assert.deepEqual([pair.body.latestMoment, pair.body.watchTime, pair.body.events], [510, 510, 51]);
  });

  test('after a refused body, the connection\'s later Connection: close is honoured at once', async (t) => {
    const cleanup = cleanupAfter(t);
    const server = serverProcess(['--db', path.join(tempDir(cleanup), 'w.db')]);
    cleanup(() => server.child.kill('SIGKILL'));
    const port = Number(new URL(await server.listening).port);
    const fds = () => readdirSync(`/proc/${server.child.pid}/fd`).length;
    const before = fds();
    // A client that keeps its own side open once the server has closed its: the server must let go all the same.
    const socket = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    cleanup(() => socket.destroy());
    socket.on('error', () => undefined);
    let text = '';
    socket.on('data', (d) => (text += d));
    const ended = new Promise<void>((resolve) => socket.on('end', () => resolve()));
    socket.write('POST /events HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 10\r\n\r\n01234');
    await sleep(100);
    socket.write('56789GET /livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    await ended;
    assert.match(text, /HTTP\/1\.1 415[\s\S]*HTTP\/1\.1 200/);
    await until('the server to close its socket', () => fds() === before);
  });

  test('a body that outlives the request timeout is counted as the 408 Node answered, not as a client that left', async (t) => {
    const cleanup = cleanupAfter(t);
    const { url, port } = await serve(cleanup, path.join(tempDir(cleanup), 'w.db'), { timeouts: { headersMs: 300, requestMs: 600 } });
    const answer = await exchange(port, 'POST /events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n[{"user"', () => false);
    assert.match(answer, /^HTTP\/1\.1 408/);
    await sleep(50);
    assert.equal((await metricLines(url, 'watchtime_http_requests_total{route="/events",method="POST",status="408"}')).length, 1);
    assert.deepEqual(await metricLines(url, 'watchtime_http_requests_total{route="/events",method="POST",status="499"}'), []);
  });
});
