// Backpressure and faults (SPEC section 4): a full queue, a disk that fills
// up and frees again, and clients too slow to finish a request.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import Database from 'better-sqlite3';
import { childServer, cleanupAfter, get, post, serve, serveArgs, tempDir } from './helpers.ts';

const storedIds = (db: string) => {
  const conn = new Database(db, { readonly: true });
  try {
    return new Set(conn.prepare('SELECT client_id FROM events').pluck().all() as string[]);
  } finally {
    conn.close();
  }
};

const hasPrlimit = (() => {
  try {
    execFileSync('prlimit', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();

describe('backpressure', () => {
  test('a full queue answers 503 with Retry-After, and loses nothing it acknowledged', async (t) => {
    const cleanup = cleanupAfter(t);
    const db = path.join(tempDir(cleanup), 'w.db');
    const server = await serve(cleanup, db, { queueSize: 10, flushMs: 2 });
    // Hold the write lock: events pile up in the queue.
    const lock = new Database(db);
    cleanup(() => lock.close());
    lock.exec('BEGIN IMMEDIATE');
    const send = (i: number) => post(server.url, { user: `u${i}`, slug: 'm', at: i, id: `e${i}` });
    const queued = Array.from({ length: 10 }, (_, i) => send(i));
    for (let tries = 0; (await get(server.url, '/readyz')).body.queue.depth < 10; tries++) {
      assert.ok(tries < 200, 'the queue never filled');
      await sleep(10);
    }

    const refused = await Promise.all([10, 11, 12].map(send));
    for (const res of refused) {
      assert.equal(res.status, 503);
      assert.equal(res.headers.get('retry-after'), '1');
      assert.equal(res.body.type, '/problems/queue-full');
      assert.match(res.body.detail, /holds 10 of 10 events/);
    }
    const notReady = await get(server.url, '/readyz');
    assert.equal(notReady.status, 503);
    assert.match(notReady.body.detail, /the ingest queue is full/);

    lock.exec('ROLLBACK');
    assert.deepEqual((await Promise.all(queued)).map((r) => r.status), Array(10).fill(200));
    const ids = storedIds(db);
    assert.deepEqual([...ids].sort(), Array.from({ length: 10 }, (_, i) => `e${i}`).sort());
    assert.equal((await send(10)).status, 200, 'room again once the queue drained');
  });
});

describe('storage faults', () => {
  test('a full disk: 503 for the requests it hits, /readyz says degraded (still ready: reads are served), recovery by itself', { skip: !hasPrlimit && 'prlimit (util-linux) is not installed' }, async (t) => {
    const cleanup = cleanupAfter(t);
    const db = path.join(tempDir(cleanup), 'w.db');
    // A file-size limit on the server process: its writes past 2 MB fail as on a full disk.
    const server = childServer('prlimit', ['--fsize=2000000:unlimited', process.execPath, ...serveArgs(['--db', db])]);
    const { child } = server;
    cleanup(() => child.kill('SIGKILL'));
    const base = await server.listening;

    const acknowledged = new Set<string>();
    const refused = new Set<string>();
    let failure: Awaited<ReturnType<typeof post>> | undefined;
    for (let batch = 0; batch < 200 && !failure; batch++) {
      const events = Array.from({ length: 500 }, (_, i) => ({
        user: `user-${batch}-${i}-${'x'.repeat(60)}`,
        slug: `movie-${i % 50}`,
        at: batch,
        id: `b${batch}-${i}`,
      }));
      const res = await post(base, events);
      if (res.status === 200) for (const e of events) acknowledged.add(e.id);
      else {
        failure = res;
        for (const e of events) refused.add(e.id);
      }
    }
    assert.ok(failure, 'the disk never filled');
    assert.equal(failure.status, 503);
    assert.equal(failure.body.type, '/problems/storage-unavailable');
    assert.equal(failure.headers.get('retry-after'), '1');

    // Not a reason to take the server out of a load balancer: no other server would do better, and reads go on.
    const degraded = await get(base, '/readyz');
    assert.equal(degraded.status, 200);
    assert.equal(degraded.body.status, 'degraded');
    assert.match(degraded.body.database, /^(not writable|a flush failed)/);
    assert.equal((await get(base, '/livez')).status, 200, 'still serving');
    assert.equal((await get(base, '/movies/movie-1/watch-time')).status, 200, 'reads still work');

    // The fault goes: lift the limit on the running process. With no traffic, /readyz turns ready by itself.
    execFileSync('prlimit', ['--pid', String(child.pid), '--fsize=unlimited:unlimited']);
    for (let tries = 0; (await get(base, '/readyz')).body.status !== 'ready'; tries++) {
      assert.ok(tries < 100, 'never ready again');
      await sleep(100);
    }
    const again = await post(base, { user: 'after', slug: 'movie-1', at: 1, id: 'after-1' });
    assert.equal(again.status, 200);
    acknowledged.add('after-1');

    child.kill('SIGTERM');
    await server.exited;
    const ids = storedIds(db);
    for (const id of acknowledged) assert.ok(ids.has(id), `acknowledged ${id} is stored`);
    for (const id of refused) assert.ok(!ids.has(id), `refused ${id} is not stored`);
    assert.equal(ids.size, acknowledged.size);
  });
});

describe('slow clients', () => {
  const connect = (url: string) =>
    new Promise<net.Socket>((resolve) => {
      const { port } = new URL(url);
      const socket = net.connect(Number(port), '127.0.0.1', () => resolve(socket));
    });
  const answerOf = (socket: net.Socket) =>
    new Promise<string>((resolve) => {
      let text = '';
      socket.on('data', (d) => (text += d));
      socket.on('close', () => resolve(text));
    });

  test('headers that never end, and a body that stalls, are cut off', async (t) => {
    const cleanup = cleanupAfter(t);
    const server = await serve(cleanup, path.join(tempDir(cleanup), 'w.db'), {
      timeouts: { headersMs: 300, requestMs: 600 },
    });

    const slowHeaders = await connect(server.url);
    slowHeaders.write('POST /events HTTP/1.1\r\nHost: localhost\r\n');
    assert.match(await answerOf(slowHeaders), /^HTTP\/1\.1 408/);

    const slowBody = await connect(server.url);
    slowBody.write('POST /events HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n[{"user"');
    const answer = await answerOf(slowBody);
    assert.match(answer, /^HTTP\/1\.1 408/);

    assert.equal((await post(server.url, { user: 'a', slug: 'm', at: 1 })).status, 200, 'still serving');
  });
});
