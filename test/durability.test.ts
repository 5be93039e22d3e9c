// No answer leaves before its batch is on disk. The server commits without
// waiting for the disk and syncs the WAL on the thread pool; here every sync
// of the server process is made slow on purpose (test/support/slow-sync.c,
// loaded with LD_PRELOAD), and the test watches the database from outside:
// each event is committed well before its answer, the answers wait for the
// sync, and the server answers other requests meanwhile.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { cleanupAfter, get, post, serverProcess, tempDir } from './helpers.ts';

const SHIM = fileURLToPath(new URL('./support/slow-sync.c', import.meta.url));
const SLOW_SYNC_MS = 1500;

function buildShim(dir: string): string {
  const library = path.join(dir, 'slow-sync.so');
  try {
    execFileSync('cc', ['-shared', '-fPIC', '-O2', '-o', library, SHIM, '-ldl']);
  } catch (error) {
    throw new Error(`this test builds a small C library with cc, which failed (install a C compiler): ${(error as Error).message}`);
  }
  return library;
}

describe('durable answers', () => {
  test('every answer of a batch waits for the WAL sync, which does not block the event loop', { timeout: 60_000 }, async (t) => {
    const cleanup = cleanupAfter(t);
    const dir = tempDir(cleanup);
    const db = path.join(dir, 'w.db');
    const server = serverProcess(['--db', db], { LD_PRELOAD: buildShim(dir), SLOW_SYNC_MS: String(SLOW_SYNC_MS) });
    cleanup(() => server.child.kill('SIGKILL'));
    const url = await server.listening;
    // Created by the server's start-up: from now on, a commit is visible here as soon as it is made.
    const reader = new Database(db, { readonly: true });
    cleanup(() => reader.close());
    const committed = reader.prepare('SELECT count(*) FROM events WHERE client_id = ?').pluck();

    const ids = ['e1', 'e2', 'e3', 'e4', 'e5'];
    const answeredAt = new Map<string, number>();
    const answers = ids.map((id, i) =>
      post(url, { user: `u${i}`, slug: 'heat', at: 60, id }).then((answer) => {
        answeredAt.set(id, Date.now());
        return answer;
      }),
    );

    // A failed assertion below must not leave these to reject unobserved.
    for (const answer of answers) answer.catch(() => undefined);

    // Watch the file. The requests may make more than one batch, each committed after the last one's answer.
    const committedAt = new Map<string, number>();
    const watch = () => {
      for (const id of ids) if (!committedAt.has(id) && committed.get(id) === 1) committedAt.set(id, Date.now());
    };
    while (committedAt.size === 0) {
      watch();
      await sleep(10);
    }
    // The first batch is committed and syncing: the server answers a read meanwhile, before that batch's answers.
    assert.equal((await get(url, '/livez')).status, 200);
    for (const id of committedAt.keys()) assert.ok(!answeredAt.has(id), `${id} was answered before its sync completed`);
    while (committedAt.size < ids.length) {
      watch();
      await sleep(10);
    }

    for (const answer of await Promise.all(answers)) assert.equal(answer.status, 200);
    for (const id of ids) {
      const waited = answeredAt.get(id)! - committedAt.get(id)!;
      // The commit was seen at most one 10 ms poll after it happened.
      assert.ok(waited >= SLOW_SYNC_MS - 50, `${id} was answered ${waited} ms after its commit, before the sync of ${SLOW_SYNC_MS} ms ended`);
    }
  });
});
