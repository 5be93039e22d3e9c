// Online rebuild: a server keeps taking events while `watchtime rebuild` runs,
// readers see the old totals or the new ones, and the result equals a rebuild
// done with the server stopped. Also: the schema a rebuild leaves, and the
// migration of a database made before the totals moved to tables of their own.
import assert from 'node:assert/strict';
import path from 'node:path';
import { describe, test } from 'node:test';
import Database from 'better-sqlite3';
import { SqliteStore } from '../src/store/sqlite.ts';
import { cleanupAfter, cli, get, post, schemaOneDatabase, serverProcess, snapshot, tempDir } from './helpers.ts';
import { heartbeats, population, writePopulation } from './load/population.ts';

/** Columns, keys and indexes of the totals tables, as SQLite reports them. */
function totalsSchema(file: string) {
  const db = new Database(file, { readonly: true });
  try {
    return Object.fromEntries(
      ['user_movies', 'movie_totals'].map((table) => [
        table,
        {
          columns: db.pragma(`table_info(${table})`),
          foreignKeys: db.pragma(`foreign_key_list(${table})`),
          indexes: (db.pragma(`index_list(${table})`) as { name: string; unique: number; origin: string }[]).map(
            (index) => ({ ...index, columns: db.pragma(`index_xinfo(${index.name})`) }),
          ),
        },
      ]),
    );
  } finally {
    db.close();
  }
}

describe('online rebuild', () => {
  test('the server keeps taking events, readers never see a mix, and the result equals an offline rebuild', async (t) => {
    const cleanup = cleanupAfter(t);
    const db = path.join(tempDir(cleanup), 'w.db');
    const people = population(300_000, 10_000);
    writePopulation(db, people);
    assert.equal((await cli(['rebuild', '--db', db])).code, 0);

    const server = serverProcess(['--db', db]);
    cleanup(async () => {
      server.child.kill('SIGKILL');
      await server.exited;
    });
    const url = await server.listening;
    // user-9999 gets no event during the rebuild: its movies change only by the rule.
    const frozen = '/users/user-9999/movies?limit=100';
    const before = (await get(url, frozen)).body;
    assert.equal(before.items.length, 3);

    const next = heartbeats({ ...people, users: 5_000, pairs: 15_000 });
    let rebuilding = true;
    let longestMs = 0;
    let acknowledged = 0;
    const failures: string[] = [];
    const player = async () => {
      while (rebuilding) {
        const started = performance.now();
        const answer = await post(url, next());
        longestMs = Math.max(longestMs, performance.now() - started);
        if (answer.status === 200) acknowledged += 1;
        else failures.push(`${answer.status} ${JSON.stringify(answer.body)}`);
      }
    };
    const reads: unknown[] = [];
    const reader = async () => {
      while (rebuilding) reads.push((await get(url, frozen)).body);
    };
    const load = [...Array.from({ length: 8 }, player), reader()];
    const run = await cli(['rebuild', '--db', db, '--accounting', 'sum']);
    rebuilding = false;
    await Promise.all(load);
    assert.equal(run.code, 0, run.stderr);

    assert.deepEqual(failures, [], 'no request refused');
    assert.ok(acknowledged > 100, `events kept flowing during the rebuild (${acknowledged})`);
    assert.ok(longestMs < 1000, `no request waited a second (longest ${Math.round(longestMs)} ms)`);
    const after = (await get(url, frozen)).body;
    assert.notDeepEqual(after, before, 'the rule changed the frozen user\'s totals');
    for (const seen of reads) assert.ok([before, after].some((whole) => JSON.stringify(whole) === JSON.stringify(seen)), 'old or new, never a mix');

    server.child.kill('SIGTERM');
    assert.equal(await server.exited, 0);
    const live = snapshot(db);
    assert.equal((await cli(['rebuild', '--db', db])).code, 0);
    assert.deepEqual(snapshot(db), live, 'the live totals equal a rebuild with the server stopped');
  });

  test('a rebuild keeps the schema the migrations made', async (t) => {
    const dir = tempDir(cleanupAfter(t));
    const db = path.join(dir, 'w.db');
    writePopulation(db, population(1_000, 10));
    const migrated = totalsSchema(db);
    assert.equal((await cli(['rebuild', '--db', db])).code, 0);
    assert.deepEqual(totalsSchema(db), migrated);
  });
});

describe('migrations', () => {
  test('a database of schema 1 keeps its totals and gains the receive time of their latest event', (t) => {
    const db = path.join(tempDir(cleanupAfter(t)), 'old.db');
    schemaOneDatabase(db);

    const store = new SqliteStore(db);
    try {
      const updatedAt = new Date(1700000005000).toISOString();
      assert.deepEqual(store.user('ann'), { user: 'ann', watchTime: 30, movies: 1, events: 2, updatedAt });
      assert.deepEqual(store.movie('heat'), { slug: 'heat', watchTime: 30, viewers: 1, events: 2, updatedAt });
      assert.deepEqual(store.pair('ann', 'heat'), {
        user: 'ann', slug: 'heat', latestMoment: 40, watchTime: 30, events: 2, updatedAt,
      });
      // And it goes on from there.
      assert.deepEqual(store.ingest([{ user: 'ann', slug: 'heat', at: 50, receivedAt: 1700000010000 }]), [false]);
      assert.equal(store.movie('heat')?.watchTime, 40);
      assert.deepEqual(store.ingest([{ user: 'ann', slug: 'heat', at: 60, id: 'x', receivedAt: 1700000011000 }]), [true]);
    } finally {
      store.close();
    }
  });
});
