// SIGINT and SIGTERM on a real server process (SPEC section 4): stop
// accepting, flush what is queued, checkpoint, close, exit 0.
import assert from 'node:assert/strict';
import { existsSync, statSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { describe, test } from 'node:test';
import Database from 'better-sqlite3';
import { cleanupAfter, get, post, serverProcess, tempDir } from './helpers.ts';

const refusesConnections = (port: number) =>
  new Promise<boolean>((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.on('connect', () => {
      socket.destroy();
      resolve(false);
    });
    socket.on('error', () => resolve(true));
  });

async function until(what: string, check: () => Promise<boolean>) {
  for (let i = 0; i < 200; i++) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  assert.fail(`waited in vain for ${what}`);
}

describe('graceful shutdown', () => {
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    test(`${signal} commits every queued event, then exits 0`, async (t) => {
      const cleanup = cleanupAfter(t);
      const db = path.join(tempDir(cleanup), 'w.db');
      const server = serverProcess(['--db', db, '--flush-ms', '2']);
      cleanup(() => server.child.kill('SIGKILL'));
      const base = await server.listening;
      assert.equal((await post(base, { user: 'a', slug: 'm', at: 10 })).status, 200);

      // Hold the write lock so that what is sent next stays in the server's queue.
      const lock = new Database(db);
      lock.exec('BEGIN IMMEDIATE');
      const queued = Array.from({ length: 20 }, (_, i) => post(base, { user: `u${i}`, slug: 'm', at: 30 + i }));
      await until('20 events queued', async () => (await get(base, '/readyz')).body.queue?.depth === 20);
      const ready = (await get(base, '/readyz')).body;
      assert.match(ready.database, /^locked/);

      server.child.kill(signal);
      const port = Number(new URL(base).port);
      await until('the listener to close', () => refusesConnections(port));
      lock.exec('ROLLBACK');
      lock.close();

      const answers = await Promise.all(queued);
      assert.deepEqual(answers.map((a) => a.status), Array(20).fill(200));
      assert.equal(await server.exited, 0, server.stderr());
      assert.match(server.stderr(), new RegExp(`${signal}: flushing queued events`));
      // The follower's line says where the analytics stand: every stored event followed or counted as behind, as its file says.
      const stopped = server
        .stderr()
        .split('\n')
        .filter((line) => line.startsWith('{'))
        .map((line) => JSON.parse(line))
        .find((line) => line.msg === 'analytics follower stopped');
      assert.ok(stopped, server.stderr());
      assert.equal(stopped.asOf + stopped.lagEvents, 21);
      assert.ok(!existsSync(`${db}-analytics-wal`), 'the analytics file is closed with its WAL folded in');
      const analytics = new Database(`${db}-analytics`, { readonly: true });
      assert.equal(analytics.prepare('SELECT cursor FROM follow_state').pluck().get(), stopped.asOf);
      analytics.close();

      // Checkpointed and closed: the WAL is empty or gone, and every event is in the database.
      const wal = `${db}-wal`;
      assert.ok(!existsSync(wal) || statSync(wal).size === 0);
      const check = new Database(db, { readonly: true });
      assert.equal(check.prepare('SELECT count(*) FROM events').pluck().get(), 21);
      assert.equal(check.prepare("SELECT watched FROM movies JOIN movie_totals ON movie_id = id WHERE slug = 'm'").pluck().get(), 10 + 20 * 30 + (19 * 20) / 2);
      check.close();
    });
  }
});
