// The ingest queue over a real SQLite store: when batches flush, what a full
// queue, a locked database and a failing transaction do.
import assert from 'node:assert/strict';
import path from 'node:path';
import { describe, test } from 'node:test';
import Database from 'better-sqlite3';
import { FlushError, IngestQueue, QueueFullError, type QueueOptions } from '../src/ingest/queue.ts';
import { SqliteStore } from '../src/store/sqlite.ts';
import { cleanupAfter, tempDir } from './helpers.ts';

function setup(t: { after: (fn: () => Promise<void>) => void }, options: Partial<QueueOptions> = {}) {
  const cleanup = cleanupAfter(t);
  const db = path.join(tempDir(cleanup), 'w.db');
  const store = new SqliteStore(db, { busyTimeoutMs: 0 });
  store.initSettings({ accounting: 'progress', maxStep: 120 });
  cleanup(() => store.close());
  const queue = new IngestQueue(store, { batchSize: 1000, queueSize: 1000, flushMs: 5, lockWaitMs: 10_000, ...options });
  const other = new Database(db);
  cleanup(() => other.close());
  const count = () => other.prepare('SELECT count(*) FROM events').pluck().get() as number;
  return { queue, other, count };
}

const event = (at: number, user = 'u') => ({ user, slug: 'm', at, receivedAt: Date.now() });

describe('ingest queue', () => {
  test('an idle queue commits at the end of the turn, without waiting for a timer', { timeout: 5000 }, async (t) => {
    const { queue, count } = setup(t, { flushMs: 60_000 });
    const done = queue.submit([event(1)]);
    assert.equal(count(), 0, 'not within the same turn');
    assert.deepEqual(await done, { accepted: 1, duplicates: 0 });
    assert.equal(count(), 1);
  });

  test('a batch that reaches batchSize is committed at once', async (t) => {
    const { queue, count } = setup(t, { batchSize: 3, flushMs: 60_000 });
    const first = queue.submit([event(1), event(2)]);
    assert.equal(count(), 0);
    const second = queue.submit([event(3, 'v')]);
    assert.equal(count(), 3, 'flushed inside submit');
    await Promise.all([first, second]);
  });

  test('a long turn does not hold a batch past flushMs', async (t) => {
    const { queue, count } = setup(t, { flushMs: 5 });
    const first = queue.submit([event(1)]);
    const start = Date.now();
    while (Date.now() - start < 10); // the same turn goes on, as under a flood of requests
    const second = queue.submit([event(2)]);
    assert.equal(count(), 2);
    await Promise.all([first, second]);
  });

  test('a locked database keeps the events queued; a full queue refuses more', async (t) => {
    const { queue, other, count } = setup(t, { queueSize: 3, flushMs: 2 });
    other.exec('BEGIN IMMEDIATE');
    const waiting = [queue.submit([event(1)]), queue.submit([event(2), event(3)])];
    await new Promise((r) => setTimeout(r, 30));
    assert.equal(queue.stats().depth, 3);
    await assert.rejects(queue.submit([event(4)]), QueueFullError);
    other.exec('ROLLBACK');
    assert.deepEqual(await Promise.all(waiting), [{ accepted: 1, duplicates: 0 }, { accepted: 2, duplicates: 0 }]);
    assert.equal(count(), 3);
    assert.equal(queue.stats().depth, 0);
  });

  test('a failed transaction rejects every request in it, stores none, and the next flush works', async (t) => {
    const { queue, other, count } = setup(t);
    // A real failure inside the transaction, after other events of the batch were inserted.
    other.exec("CREATE TRIGGER fault BEFORE INSERT ON events WHEN NEW.at = 666 BEGIN SELECT RAISE(ABORT, 'injected fault'); END");
    const sameBatch = [queue.submit([event(1)]), queue.submit([event(2), event(666)])];
    for (const result of await Promise.allSettled(sameBatch)) {
      assert.equal(result.status, 'rejected');
      assert.ok(result.reason instanceof FlushError);
      assert.match(result.reason.message, /injected fault/);
    }
    assert.equal(count(), 0);
    assert.match(queue.stats().lastError!.message, /injected fault/);
    assert.deepEqual(await queue.submit([event(3)]), { accepted: 1, duplicates: 0 });
    assert.equal(queue.stats().lastError, undefined);
    assert.equal(count(), 1);
    assert.equal(other.prepare("SELECT watched FROM movies JOIN movie_totals ON movie_id = id WHERE slug = 'm'").pluck().get(), 3);
  });
});
