// What careless and hostile clients do, on a real server: slow and large
// uploads all at once, clients that drop mid-body, bodies over the limit,
// lookups of names that plain objects inherit, encodings, request targets
// in absolute form, and requests pipelined behind a write.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { gzipSync } from 'node:zlib';
import { cleanupAfter, get, post, request, serve, serverProcess, tempDir } from './helpers.ts';

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

const rssMb = (pid: number) => Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) / 1024;

const metricLines = async (base: string, name: string) =>
  (await get(base, '/metrics')).body.split('\n').filter((l: string) => l.startsWith(name));

describe('hostile clients', () => {
  test('slow large uploads all at once: past the body memory, 503 before the body is read; reads served; RSS bounded', async (t) => {
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
    // The refused ones are answered at once; the 8 that fit in 64 MiB wait for the rest of their bodies.
    let answered: string[] = [];
    for (let tries = 0; tries < 100; tries++) {
      answered = (await Promise.all(refused.map((p) => Promise.race([p, sleep(10).then(() => '')])))).filter(Boolean);
      if (answered.length >= clients - 8) break;
      await sleep(50);
    }
    assert.equal(answered.length, clients - 8, 'all but the 8 bodies that fit are refused before they are read');
    for (const text of answered) {
      assert.match(text, /^HTTP\/1\.1 503/);
      assert.match(text, /Retry-After: 1/i);
      assert.match(text, /busy-reading/);
    }
    // Reads go on meanwhile.
    assert.equal((await get(base, '/users/a/watch-time')).body.watchTime, 10);
    const during = rssMb(server.child.pid!);
    assert.ok(during - before < 64 + 48, `RSS grew by ${(during - before).toFixed(0)} MB with 64 MiB of bodies allowed`);

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
    assert.deepEqual(await metricLines(base, 'watchtime_ingest_rejected_requests_total{'), []);
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
});
