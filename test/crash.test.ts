// kill -9 under load (SPEC section 4): every acknowledged event survives, the
// totals equal a rebuild from the events, and retries count nothing twice.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import Database from 'better-sqlite3';
import { BIN, childrenOf, cleanupAfter, cli, freePort, procStat, serverProcess, snapshot, tempDir } from './helpers.ts';

const KILLS = Number(process.env.CRASH_KILLS ?? 3);

/** Whether a process runs: not gone, and not a zombie that nobody has reaped yet. */
const alive = (pid: number) => {
  try {
    return procStat(pid)[0] !== 'Z';
  } catch {
    return false;
  }
};

async function until(what: string, check: () => boolean) {
  for (let i = 0; i < 200; i++) {
    if (check()) return;
    await sleep(25);
  }
  assert.fail(`waited in vain for ${what}`);
}

describe('crash safety', () => {
  // One process that serves and writes; and a writer with two HTTP workers, all killed at once (kill -9 of the
  // writer: its workers go with it, as the channel they hand events through closes).
  for (const workers of [1, 2]) test(`SIGKILL at random moments under load, ${KILLS} times, --workers ${workers}`, { timeout: 180_000 }, async (t) => {
    const cleanup = cleanupAfter(t);
    const db = path.join(tempDir(cleanup), 'w.db');
    const port = await freePort();
    const start = () => {
      const server = serverProcess(['--port', String(port), '--db', db, '--workers', String(workers)]);
      cleanup(() => server.child.kill('SIGKILL'));
      return server;
    };
    let server = start();
    await server.listening;

    // The generator retries through every crash with the same event ids, and checks every total at the end.
    const generator = spawn(process.execPath, [
      BIN, 'generate', '--url', `http://127.0.0.1:${port}/`, '--rate', '0', '--connections', '24', '--batch', '5',
      '--users', '300', '--movies', '25', '--duration', String(2 + KILLS * 2), '--seed', '5', '--verify',
    ]);
    let out = '';
    generator.stdout.on('data', (d) => (out += d));
    generator.stderr.on('data', (d) => (out += d));
    const generated = new Promise<number | null>((resolve) => generator.on('exit', resolve));
    cleanup(() => generator.kill('SIGKILL'));
    await new Promise<void>((resolve) => generator.stderr.on('data', () => out.includes('generate: seed') && resolve()));

    for (let kill = 0; kill < KILLS; kill++) {
      const after = 600 + Math.floor(Math.random() * 1200);
      t.diagnostic(`kill ${kill + 1} after ${after} ms`);
      await sleep(after);
      const workerPids = childrenOf(server.child.pid!);
      server.child.kill('SIGKILL');
      await server.exited;
      await until('its workers to exit', () => workerPids.every((pid) => !alive(pid)));
      server = start();
      await server.listening;
    }

    assert.equal(await generated, 0, out);
    assert.match(out, / 0 difference\(s\)/);
    const retries = Number(/(\d+) retries/.exec(out)![1]);
    assert.ok(retries > 0, 'the kills hit requests in flight');
    const acknowledged = Number(/^sent (\d+) events/m.exec(out)![1]);

    server.child.kill('SIGTERM');
    assert.equal(await server.exited, 0);
    const conn = new Database(db, { readonly: true });
    const stored = conn.prepare('SELECT count(*) AS n, count(DISTINCT client_id) AS ids FROM events').get() as { n: number; ids: number };
    conn.close();
    assert.deepEqual(stored, { n: acknowledged, ids: acknowledged }, 'each acknowledged event stored exactly once');

    const live = snapshot(db);
    const rebuilt = await cli(['rebuild', '--db', db]);
    assert.equal(rebuilt.code, 0, rebuilt.stderr);
    assert.deepEqual(snapshot(db), live, 'the totals equal a rebuild from the events');
  });
});
