// What an operator sees of the database from a running server: where a
// rebuild (a process of its own) is and when it last swapped
// (Store.rebuildState, read at every scrape of /metrics), and the migrations
// a store applies as it opens (onMigration, one log line each), on SQLite
// and on PostgreSQL.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import Database from 'better-sqlite3';
import pg from 'pg';
import type { AccountingRule } from '../src/accounting.ts';
import { openStore } from '../src/store/open.ts';
import { PostgresStore } from '../src/store/postgres.ts';
import { migrations } from '../src/store/sql-files.ts';
import { SqliteStore } from '../src/store/sqlite.ts';
import {
  processHost,
  REBUILD_SILENT_MS,
  rebuildRunning,
  type MigrationStep,
  type RebuildProgress,
  type RebuildState,
  type Store,
} from '../src/store/store.ts';
import { BIN, cleanupAfter, tempDir } from './helpers.ts';
import { population, writePopulation } from './load/population.ts';
import { sharedPostgres, stopSharedPostgres } from './support/postgres.ts';

after(stopSharedPostgres);

const RULE: AccountingRule = { accounting: 'progress', maxStep: 120 };
const NEVER: RebuildState = { running: false, done: 0, total: 0, startedAt: null, lastSwapAt: null, generation: 0 };

/** `count` events over `pairs` pairs (users of 3 movies each), through the store as a server writes them. */
async function ingestEvents(store: Store, count: number, pairs: number): Promise<void> {
  const receivedAt = Date.now();
  for (let done = 0; done < count; done += 2_000) {
    const batch = Array.from({ length: Math.min(2_000, count - done) }, (_, k) => {
      const i = done + k;
      const pair = i % pairs;
      return { user: `user-${Math.floor(pair / 3)}`, slug: `movie-${pair % 3}`, at: (Math.floor(i / pairs) + 1) * 10, receivedAt };
    });
    await store.ingest(batch);
  }
}

/** A process id that no process has now: one that just ended. */
async function deadPid(): Promise<number> {
  const child = spawn(process.execPath, ['-e', '']);
  await new Promise((resolve) => child.on('exit', resolve));
  return child.pid!;
}

/**
 * Rebuilds on `rebuilder` while reading `reader`'s rebuildState at each progress
 * report; returns what each report said and what the reader saw then.
 */
async function rebuildWatched(rebuilder: Store, reader: Store) {
  const seen: { progress: RebuildProgress; state: Promise<RebuildState> }[] = [];
  const startedFrom = Date.now();
  const result = await rebuilder.rebuild(RULE, (progress) => {
    seen.push({ progress, state: Promise.resolve(reader.rebuildState!()) });
  });
  const reads = await Promise.all(seen.map(async ({ progress, state }) => ({ progress, state: await state })));
  return { result, reads, startedFrom, endedBy: Date.now() };
}

describe('rebuild state on SQLite', () => {
  test('before any rebuild, at each chunk of one (read from another connection), and after its swap', async (t) => {
    const cleanup = cleanupAfter(t);
    const file = path.join(tempDir(cleanup), 'w.db');
    // 25,000 pairs: the snapshot pass writes them in chunks of 10,000.
    const people = population(250_000, 25_000);
    writePopulation(file, people);
    const rebuilder = new SqliteStore(file);
    const server = new SqliteStore(file, { busyTimeoutMs: 0 });
    cleanup(() => rebuilder.close());
    cleanup(() => server.close());

    assert.deepEqual(server.rebuildState(), NEVER);

    const first = await rebuildWatched(rebuilder, server);
    assert.equal(first.result.done, people.events);
    assert.ok(first.reads.length >= 4, `a report a chunk (${first.reads.length})`);
    const startedAt = first.reads[0].state.startedAt!;
    assert.ok(startedAt >= first.startedFrom && startedAt <= first.endedBy, 'started when the rebuild started');
    for (const { progress, state } of first.reads) {
      // Each report comes once its chunk committed, and the chunk's transaction recorded it.
      assert.deepEqual(state, { running: true, done: progress.done, total: progress.total, startedAt, lastSwapAt: null, generation: 0 });
    }
    const dones = new Set(first.reads.map((r) => r.state.done));
    assert.ok(dones.size >= 4, `progress moved chunk by chunk: ${[...dones].join(', ')}`);

    const swapped = server.rebuildState();
    assert.equal(swapped.running, false);
    assert.equal(swapped.startedAt, null);
    assert.equal(swapped.generation, 1);
    assert.deepEqual([swapped.done, swapped.total], [people.events, people.events], 'the last rebuild\'s figures stay');
    assert.ok(swapped.lastSwapAt! >= startedAt && swapped.lastSwapAt! <= Date.now(), 'swapped after it started');

    await sleep(5);
    await rebuilder.rebuild(RULE);
    const again = server.rebuildState();
    assert.equal(again.generation, 2);
    assert.ok(again.lastSwapAt! > swapped.lastSwapAt!);
  });

  test('a rebuild that fails clears its start; one killed leaves it, and a server tells by its process', async (t) => {
    const cleanup = cleanupAfter(t);
    const file = path.join(tempDir(cleanup), 'w.db');
    writePopulation(file, population(250_000, 25_000));
    const rebuilder = new SqliteStore(file);
    const server = new SqliteStore(file, { busyTimeoutMs: 0 });
    cleanup(() => rebuilder.close());
    cleanup(() => server.close());
    await rebuilder.rebuild(RULE);
    const swapped = server.rebuildState();

    // Fails with an error after its first chunk: no longer running, how far it went kept.
    assert.throws(() =>
      rebuilder.rebuild(RULE, ({ done }) => {
        if (done > 0) throw new Error('stopped by the test');
      }),
    /stopped by the test/);
    const failed = server.rebuildState();
    assert.equal(failed.running, false);
    assert.equal(failed.startedAt, null);
    assert.ok(failed.done > 0 && failed.done < failed.total, `how far it went: ${failed.done} of ${failed.total}`);
    assert.deepEqual([failed.generation, failed.lastSwapAt], [swapped.generation, swapped.lastSwapAt], 'no swap');

    // `watchtime rebuild` killed mid-way: its start stays behind, its process is gone.
    const child = spawn(process.execPath, [BIN, 'rebuild', '--db', file], { stdio: 'ignore' });
    const exited = new Promise((resolve) => child.on('exit', resolve));
    let running: RebuildState | undefined;
    for (const until = Date.now() + 20_000; Date.now() < until && !running; await sleep(1)) {
      const state = server.rebuildState();
      if (state.running) running = state;
    }
    child.kill('SIGKILL');
    await exited;
    assert.ok(running, 'the server saw the rebuild running');
    assert.equal(running.generation, swapped.generation);
    const killed = server.rebuildState();
    assert.equal(killed.generation, swapped.generation, 'killed before its swap');
    assert.equal(killed.startedAt, running.startedAt, 'a killed rebuild leaves its start');
    assert.equal(killed.running, false, 'its process is gone');

    // The next one runs from the start, and ends it.
    await rebuilder.rebuild(RULE);
    const next = server.rebuildState();
    assert.deepEqual([next.running, next.startedAt, next.generation], [false, null, swapped.generation + 1]);
  });

  test('the stale-progress rule: by its process on this host, by its silence elsewhere', async () => {
    const now = Date.now();
    const row = { startedAt: now - 60_000, progressAt: now - 1_000, pid: process.pid, host: processHost() };
    assert.equal(rebuildRunning({ ...row, startedAt: null }), false, 'no start, no rebuild');
    assert.equal(rebuildRunning(row, now), true, 'its process is alive');
    // Silent for long on this host (a sort of a billion events) still runs while its process does.
    assert.equal(rebuildRunning({ ...row, progressAt: now - 2 * REBUILD_SILENT_MS }, now), true);
    assert.equal(rebuildRunning({ ...row, pid: await deadPid() }, now), false, 'its process is gone');
    const elsewhere = { ...row, pid: 1, host: 'another-host pid:[1]' };
    assert.equal(rebuildRunning(elsewhere, now), true, 'another host: it wrote a second ago');
    assert.equal(rebuildRunning({ ...elsewhere, progressAt: now - REBUILD_SILENT_MS - 1 }, now), false, 'another host, silent too long');
  });
});

describe('migrations told on SQLite', () => {
  test('once each on a new database, in order and timed; not at all on an up-to-date one', async (t) => {
    const file = path.join(tempDir(cleanupAfter(t)), 'w.db');
    const steps: MigrationStep[] = [];
    const store = await openStore(file, { onMigration: (step) => steps.push(step) });
    await store.close();
    assert.deepEqual(
      steps.map(({ version, name }) => ({ version, name })),
      migrations('sqlite').map(({ version, name }) => ({ version, name })),
    );
    assert.ok(steps.every((s) => s.ms >= 0 && s.ms < 10_000));
    assert.ok(steps.some((s) => s.name === 'rebuild_state'));

    const again: MigrationStep[] = [];
    (await openStore(file, { onMigration: (step) => again.push(step) })).close();
    // Read-only (watchtime query) never migrates.
    new SqliteStore(file, { readonly: true, onMigration: (step) => again.push(step) }).close();
    assert.deepEqual(again, []);
  });

  test('an older database: only the migrations it lacks, and its rebuild state starts empty', (t) => {
    const file = path.join(tempDir(cleanupAfter(t)), 'old.db');
    const all = migrations('sqlite');
    const old = new Database(file);
    for (const step of all.slice(0, 3)) old.exec(step.sql);
    old.exec("PRAGMA user_version = 3; INSERT INTO settings (id, accounting, max_step, generation) VALUES (1, 'sum', 120, 2)");
    old.close();

    const steps: MigrationStep[] = [];
    const store = new SqliteStore(file, { onMigration: (step) => steps.push(step) });
    try {
      assert.deepEqual(steps.map((s) => s.version), all.slice(3).map((s) => s.version));
      assert.deepEqual(store.rebuildState(), { ...NEVER, generation: 2 });
    } finally {
      store.close();
    }
  });
});

describe('PostgreSQL', () => {
  let url: string;
  before(async () => {
    url = await (await sharedPostgres()).newDatabase();
  });

  test('migrations told once each on a new database, not at all on an up-to-date one', async () => {
    const fresh = await (await sharedPostgres()).newDatabase();
    const steps: MigrationStep[] = [];
    await (await openStore(fresh, { onMigration: (step) => steps.push(step) })).close();
    assert.deepEqual(
      steps.map(({ version, name }) => ({ version, name })),
      migrations('postgres').map(({ version, name }) => ({ version, name })),
    );
    assert.ok(steps.every((s) => s.ms >= 0 && s.ms < 10_000));
    const again: MigrationStep[] = [];
    await (await openStore(fresh, { onMigration: (step) => again.push(step) })).close();
    await (await PostgresStore.open(fresh, { readonly: true, onMigration: (step) => again.push(step) })).close();
    assert.deepEqual(again, []);
  });

  test('rebuild state before, during (from another connection) and after a rebuild, and after a failed one', async (t) => {
    const cleanup = cleanupAfter(t);
    const rebuilder = await PostgresStore.open(url);
    const server = await PostgresStore.open(url);
    cleanup(() => rebuilder.close());
    cleanup(() => server.close());
    await rebuilder.initSettings(RULE);
    // 12,000 pairs: the snapshot pass fetches them 5,000 at a time.
    const events = 24_000;
    await ingestEvents(rebuilder, events, 12_000);

    assert.deepEqual(await server.rebuildState(), NEVER);

    const first = await rebuildWatched(rebuilder, server);
    assert.equal(first.result.done, events);
    assert.ok(first.reads.length >= 4, `a report a chunk (${first.reads.length})`);
    const start = first.reads[0].state;
    assert.equal(start.running, true, 'running from its start');
    assert.deepEqual([start.total, start.generation, start.lastSwapAt], [events, 0, null]);
    assert.ok(start.startedAt! >= first.startedFrom && start.startedAt! <= first.endedBy);
    // Read while the rebuild went on: each saw at least the progress reported before it.
    const during = first.reads.filter((r) => r.state.running);
    assert.ok(during.some((r) => r.state.done > 0 && r.state.done < events), 'progress seen part-way');
    for (const { progress, state } of during) {
      assert.equal(state.startedAt, start.startedAt);
      assert.ok(state.done >= progress.done && state.done <= state.total, `${state.done} of ${state.total} at ${progress.done}`);
    }

    const swapped = await server.rebuildState();
    assert.deepEqual({ ...swapped, lastSwapAt: 0 }, { running: false, done: events, total: events, startedAt: null, lastSwapAt: 0, generation: 1 });
    assert.ok(swapped.lastSwapAt! >= start.startedAt! && swapped.lastSwapAt! <= Date.now());

    await assert.rejects(
      Promise.resolve(
        rebuilder.rebuild(RULE, ({ done }) => {
          if (done > 0) throw new Error('stopped by the test');
        }),
      ),
      /stopped by the test/,
    );
    const failed = await server.rebuildState();
    assert.deepEqual([failed.running, failed.startedAt, failed.generation, failed.lastSwapAt], [false, null, 1, swapped.lastSwapAt]);

    await rebuilder.rebuild(RULE);
    assert.equal((await server.rebuildState()).generation, 2);
  });

  test('a rebuild left behind by another host: running while it writes, stale once silent', async (t) => {
    const cleanup = cleanupAfter(t);
    const server = await PostgresStore.open(url);
    cleanup(() => server.close());
    const client = new pg.Client(url);
    await client.connect();
    cleanup(() => client.end());
    const leave = (progressAt: number) =>
      client.query("UPDATE rebuild_progress SET started_at = $1, done = 10, total = 20, progress_at = $2, pid = 1, host = 'another-host' WHERE id = 1", [
        Date.now() - 60_000,
        progressAt,
      ]);
    await leave(Date.now());
    assert.deepEqual(
      { ...(await server.rebuildState()), startedAt: 0, lastSwapAt: 0, generation: 0 },
      { running: true, done: 10, total: 20, startedAt: 0, lastSwapAt: 0, generation: 0 },
    );
    await leave(Date.now() - REBUILD_SILENT_MS - 1_000);
    assert.equal((await server.rebuildState()).running, false);
    await client.query('UPDATE rebuild_progress SET started_at = NULL WHERE id = 1');
  });
});
