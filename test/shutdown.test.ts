// SIGINT and SIGTERM on a real server process (SPEC section 4): stop
// accepting, flush what is queued, checkpoint, close, exit 0.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { describe, test } from 'node:test';
import Database from 'better-sqlite3';
import { BIN, cleanupAfter, get, post, tempDir } from './helpers.ts';

function startChild(db: string) {
  const child = spawn(process.execPath, [BIN, 'serve', '--host', '127.0.0.1', '--port', '0', '--db', db, '--flush-ms', '2']);
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const listening = new Promise<string>((resolve, reject) => {
    child.stderr.on('data', () => {
      const match = /listening on 127\.0\.0\.1:(\d+)/.exec(stderr);
      if (match) resolve(`http://127.0.0.1:${match[1]}`);
    });
    child.on('exit', () => reject(new Error(`server exited early: ${stderr}`)));
  });
  return { child, listening, exited, stderr: () => stderr };
}

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
      const server = startChild(db);
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

      // Checkpointed and closed: the WAL is empty or gone, and every event is in the database.
      const wal = `${db}-wal`;
      assert.ok(!existsSync(wal) || statSync(wal).size === 0);
      const check = new Database(db, { readonly: true });
      assert.equal(check.prepare('SELECT count(*) FROM events').pluck().get(), 21);
      assert.equal(check.prepare("SELECT watched FROM movies WHERE slug = 'm'").pluck().get(), 10 + 20 * 30 + (19 * 20) / 2);
      check.close();
    });
  }
});
