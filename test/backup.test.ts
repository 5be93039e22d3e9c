// `watchtime backup`: an online copy of a live SQLite database. Under load it
// holds every event acknowledged before it began; it is one consistent
// snapshot (a server on it answers what a rebuild of it gives); `query`
// works on it; the documented restore brings a server back on it with the
// same totals. And its refusals, one line each.
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, linkSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import Database from 'better-sqlite3';
import { SqliteStore } from '../src/store/sqlite.ts';
import { cleanupAfter, cli, get, post, schemaOneDatabase, serverProcess, snapshot, tempDir, type Cleanup, type Run } from './helpers.ts';
import { heartbeats, pairMembers, population, writePopulation } from './load/population.ts';

/** The events of a seeded database: enough that the copy takes a while, with events still arriving. */
const SEED_EVENTS = Number(process.env.BACKUP_SEED_EVENTS ?? 1_000_000);
const POSTERS = 6;
const BATCH = 20;

const BACKED_UP = /^backed up (\d+) events to (.+): (\d+) bytes \([\d.]+ MiB\) in ([\d.]+) s, schema version (\d+)\n$/;

/** A run that ended in one line on stderr and nothing on stdout. */
function assertOneLine(run: Run, code: number, pattern: RegExp): void {
  assert.equal(run.code, code, `exit ${run.code}: ${run.stderr}${run.stdout}`);
  assert.equal(run.stdout, '');
  assert.match(run.stderr, /^watchtime: [^\n]+\n$/, 'one line');
  assert.match(run.stderr, pattern);
}

function startServer(cleanup: Cleanup, db: string) {
  const server = serverProcess(['--db', db]);
  cleanup(async () => {
    server.child.kill('SIGKILL');
    await server.exited;
  });
  return server;
}

async function stop(server: ReturnType<typeof startServer>): Promise<void> {
  server.child.kill('SIGTERM');
  assert.equal(await server.exited, 0, server.stderr());
}

/** Events of `copy`, which must be exactly the events of `live` up to the copy's last one. */
function assertPrefix(copy: string, live: string): { events: number; lastSeq: number } {
  const db = new Database(copy, { readonly: true });
  try {
    db.prepare('ATTACH DATABASE ? AS live').run(live);
    const { events, lastSeq } = db.prepare('SELECT count(*) AS events, coalesce(max(seq), 0) AS lastSeq FROM main.events').get() as {
      events: number;
      lastSeq: number;
    };
    const same = db
      .prepare(
        `SELECT count(*) FROM main.events c JOIN live.events l USING (seq)
         WHERE c.user_id = l.user_id AND c.movie_id = l.movie_id AND c.at = l.at AND c.received_at = l.received_at
           AND c.client_id IS l.client_id`,
      )
      .pluck()
      .get();
    const liveUpTo = db.prepare('SELECT count(*) FROM live.events WHERE seq <= ?').pluck().get(lastSeq);
    assert.equal(same, events, 'every event of the copy is the live event of that seq');
    assert.equal(liveUpTo, events, 'the copy holds every live event up to its last: a snapshot at one commit');
    return { events, lastSeq };
  } finally {
    db.close();
  }
}

function clientIds(file: string): Set<string> {
  const db = new Database(file, { readonly: true });
  try {
    return new Set(db.prepare('SELECT client_id FROM events WHERE client_id IS NOT NULL').pluck().all() as string[]);
  } finally {
    db.close();
  }
}

interface Sample {
  movies: string[];
  users: string[];
  pairs: [string, string][];
}

/** The lookups of a sample as a server answers them. */
async function served(url: string, sample: Sample) {
  const answer = async (pathname: string) => {
    const { status, body } = await get(url, pathname);
    assert.equal(status, 200, `${pathname}: ${JSON.stringify(body)}`);
    return body;
  };
  return {
    movies: await Promise.all(sample.movies.map((slug) => answer(`/movies/${slug}/watch-time`))),
    users: await Promise.all(sample.users.map((user) => answer(`/users/${user}/watch-time`))),
    pairs: await Promise.all(sample.pairs.map(([user, slug]) => answer(`/users/${user}/movies/${slug}/latest-moment`))),
  };
}

/** The same lookups, read from a file with the store `watchtime query` uses. */
function stored(file: string, sample: Sample) {
  const store = new SqliteStore(file, { readonly: true });
  try {
    return {
      movies: sample.movies.map((slug) => store.movie(slug)),
      users: sample.users.map((user) => store.user(user)),
      pairs: sample.pairs.map(([user, slug]) => store.pair(user, slug)),
    };
  } finally {
    store.close();
  }
}

describe('watchtime backup', () => {
  test(
    'under load: holds every event acknowledged before it began, is one consistent snapshot, serves, answers queries, restores',
    { timeout: 300_000 },
    async (t) => {
      const cleanup = cleanupAfter(t);
      const dir = tempDir(cleanup);
      const db = path.join(dir, 'w.db');
      const people = population(SEED_EVENTS, 20_000);
      writePopulation(db, people);
      assert.equal((await cli(['rebuild', '--db', db])).code, 0);

      const server = startServer(cleanup, db);
      const url = await server.listening;
      // A reader's snapshot from before the load (a long query, a backup) keeps the server's checkpoints
      // from moving what follows into the file: everything acknowledged below sits in the WAL only, as the
      // latest commits always do. A copy of the file alone (the `cp` of issue 19) misses all of it.
      const reader = new Database(db, { readonly: true });
      cleanup(() => reader.close());
      reader.exec('BEGIN');
      reader.prepare('SELECT seq FROM events LIMIT 1').get();

      // Posters send batches of events with ids, recording when each batch was acknowledged.
      const next = heartbeats({ ...people, users: 2_000, pairs: 6_000 });
      const acknowledged: { ids: string[]; at: number }[] = [];
      const refused: string[] = [];
      const posted = new Map<string, { user: string; slug: string }>();
      let sending = true;
      const poster = async (p: number) => {
        for (let n = 0; sending; n += 1) {
          const batch = Array.from({ length: BATCH }, (_, i) => ({ ...next(), id: `p${p}-${n}-${i}` }));
          for (const event of batch) posted.set(event.id, event);
          const answer = await post(url, batch);
          if (answer.status === 200 && answer.body.accepted === BATCH) {
            acknowledged.push({ ids: batch.map((e) => e.id), at: performance.now() });
          } else refused.push(`${answer.status} ${JSON.stringify(answer.body)}`);
        }
      };
      const load = Array.from({ length: POSTERS }, (_, p) => poster(p));
      const ackedEvents = () => acknowledged.length * BATCH;
      while (ackedEvents() < 2_000) await new Promise((resolve) => setTimeout(resolve, 10));

      const backup = path.join(dir, 'backups', 'w-backup.db');
      mkdirSync(path.dirname(backup));
      const began = performance.now();
      const run = await cli(['backup', '--db', db, '--to', backup]);
      const ended = performance.now();
      // A little more load after the copy, which it need not hold.
      await new Promise((resolve) => setTimeout(resolve, 200));
      sending = false;
      await Promise.all(load);
      reader.exec('COMMIT');

      assert.equal(run.code, 0, run.stderr);
      assert.equal(run.stderr, '');
      const printed = BACKED_UP.exec(run.stdout);
      assert.ok(printed, run.stdout);
      assert.deepEqual(refused, [], 'the server answered every batch while the copy was made');
      const before = acknowledged.filter((a) => a.at < began).flatMap((a) => a.ids);
      const during = acknowledged.filter((a) => a.at >= began && a.at <= ended).flatMap((a) => a.ids);
      assert.ok(during.length > 0, 'events were acknowledged while the backup ran');
      assert.deepEqual(readdirSync(path.dirname(backup)), ['w-backup.db'], 'no temporary file left beside the backup');

      // Every event acknowledged before the backup began is in the copy.
      const inCopy = clientIds(backup);
      const missing = before.filter((id) => !inCopy.has(id));
      assert.deepEqual(missing.slice(0, 10), [], `${missing.length} of ${before.length} acknowledged events missing from the backup`);

      // The server was stopped before the copy was checked against it; the copy is the live events up to one commit.
      await stop(server);
      const { events, lastSeq } = assertPrefix(backup, db);
      assert.equal(Number(printed[1]), events, 'the line counts the events in the copy');
      assert.ok(events >= SEED_EVENTS + before.length);
      t.diagnostic(
        `backup of ${events} events: ${printed[3]} bytes in ${printed[4]} s; ${before.length} events acknowledged before it, ` +
          `${during.length} during it, ${inCopy.size} with ids in the copy (last seq ${lastSeq})`,
      );

      // Internally consistent: a server on the copy answers what a rebuild of another copy of it gives.
      const rebuilt = path.join(dir, 'rebuilt.db');
      copyFileSync(backup, rebuilt);
      const rebuild = await cli(['rebuild', '--db', rebuilt]);
      assert.equal(rebuild.code, 0, rebuild.stderr);
      const firstIds = before.slice(0, 20).map((id) => posted.get(id)!);
      const seeded = [0, 1, 7, 4_321, 12_345].map((pair) => pairMembers(people, pair));
      const sample: Sample = {
        movies: [...firstIds.map((e) => e.slug), ...seeded.map((m) => `movie-${m.movie}`)],
        users: [...firstIds.map((e) => e.user), ...seeded.map((m) => `user-${m.user}`)],
        pairs: [...firstIds.map((e): [string, string] => [e.user, e.slug]), ...seeded.map((m): [string, string] => [`user-${m.user}`, `movie-${m.movie}`])],
      };
      const expected = stored(rebuilt, sample);

      // A server writes to its file (WAL mode, its lock): it runs on a copy, and the backup stays as it was made.
      const servedCopy = path.join(dir, 'served.db');
      copyFileSync(backup, servedCopy);
      const onCopy = startServer(cleanup, servedCopy);
      const copyUrl = await onCopy.listening;
      assert.deepEqual(await served(copyUrl, sample), expected, 'a server on the backup answers what a rebuild of it gives');
      await stop(onCopy);
      assert.deepEqual(snapshot(backup), snapshot(rebuilt), 'every total of the backup equals a rebuild of it');
      const query = await cli(['query', 'movie', sample.movies[0], '--db', backup, '--json']);
      assert.equal(query.code, 0, query.stderr);
      assert.deepEqual(JSON.parse(query.stdout), expected.movies[0], '`watchtime query` answers on the backup');
      const latest = await cli(['query', 'latest', ...sample.pairs[0], '--db', backup]);
      assert.equal(latest.code, 0, latest.stderr);
      assert.match(latest.stdout, new RegExp(`latest moment +${expected.pairs[0]!.latestMoment} s`));

      // The documented restore: stop the server (done above), put the database and its -wal and -shm
      // aside, copy the backup in its place, start the server.
      const aside = path.join(dir, 'aside');
      mkdirSync(aside);
      for (const suffix of ['', '-wal', '-shm']) {
        if (existsSync(`${db}${suffix}`)) renameSync(`${db}${suffix}`, path.join(aside, `w.db${suffix}`));
      }
      copyFileSync(backup, db);
      const restored = startServer(cleanup, db);
      const restoredUrl = await restored.listening;
      assert.deepEqual(await served(restoredUrl, sample), expected, 'the restored server answers the backup\'s totals');
      assert.deepEqual(snapshot(db), snapshot(rebuilt), 'the restored database holds the backup\'s totals');
      // It remembers the ids it holds: a client's retry of an event acknowledged before the backup is a duplicate.
      const retried = posted.get(before[0])!;
      assert.deepEqual((await post(restoredUrl, { ...retried, at: 1, id: before[0] })).body, { accepted: 0, duplicates: 1 });
      await stop(restored);
    },
  );

  test('refuses, in one line: an existing target, the database itself, a PostgreSQL URL, a file not watchtime\'s', async (t) => {
    const dir = tempDir(cleanupAfter(t));
    const db = path.join(dir, 'w.db');
    writePopulation(db, population(1_000, 10));
    assert.equal((await cli(['rebuild', '--db', db])).code, 0);
    const live = snapshot(db);
    const target = path.join(dir, 'b.db');

    const first = await cli(['backup', '--db', db, '--to', target]);
    assert.equal(first.code, 0, first.stderr);
    assert.match(first.stdout, BACKED_UP);
    assert.equal(BACKED_UP.exec(first.stdout)![1], '1000');
    assert.ok(!existsSync(`${db}-lock`), 'the serve lock is not taken');
    const content = readFileSync(target);

    // An existing target: refused, left as it was; replaced with --force.
    assertOneLine(await cli(['backup', '--db', db, '--to', target]), 1, /b\.db exists; pass --force to replace it/);
    assert.deepEqual(readFileSync(target), content);
    assert.equal((await cli(['backup', '--db', db, '--to', target, '--force'])).code, 0);

    // The database itself, however spelled, even with --force; and its companion files.
    const link = path.join(dir, 'link.db');
    symlinkSync(db, link);
    const hard = path.join(dir, 'hard.db');
    linkSync(db, hard);
    for (const same of [db, path.join(dir, '.', 'w.db'), path.relative(process.cwd(), db), link, hard]) {
      assertOneLine(await cli(['backup', '--db', db, '--to', same, '--force']), 1, /is the database itself/);
    }
    rmSync(hard);
    for (const suffix of ['-wal', '-shm', '-lock']) {
      assertOneLine(await cli(['backup', '--db', db, '--to', `${db}${suffix}`, '--force']), 1, new RegExp(`SQLite's ${suffix} file`));
    }
    assert.deepEqual(snapshot(db), live, 'the database is untouched');

    // A directory, a missing directory, and a target with an old WAL beside it.
    assertOneLine(await cli(['backup', '--db', db, '--to', dir]), 1, /is a directory; name the file/);
    assertOneLine(await cli(['backup', '--db', db, '--to', `${path.join(dir, 'new')}/`]), 1, /names a directory; name the file/);
    assertOneLine(await cli(['backup', '--db', db, '--to', path.join(dir, 'nowhere', 'b.db')]), 1, /no directory/);
    writeFileSync(`${target}-wal`, 'an old WAL');
    assertOneLine(await cli(['backup', '--db', db, '--to', target, '--force']), 1, /b\.db-wal exists/);
    rmSync(`${target}-wal`);

    // A PostgreSQL URL: what to use instead, no password shown, nothing written.
    for (const url of ['postgres://watch:s3cret@127.0.0.1:1/watchtime', 'postgresql://127.0.0.1/watchtime']) {
      const run = await cli(['backup', '--db', url, '--to', path.join(dir, 'pg.db')]);
      assertOneLine(run, 2, /pg_dump.*pg_basebackup/);
      assert.doesNotMatch(run.stderr, /s3cret/);
    }
    assert.ok(!existsSync(path.join(dir, 'pg.db')));

    // Sources that are missing or not watchtime databases.
    const other = path.join(dir, 'other.db');
    const app = new Database(other);
    app.exec('CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES (\'keep me\')');
    app.close();
    const text = path.join(dir, 'notes.txt');
    writeFileSync(text, 'not a database at all, but long enough to have a header of sorts\n'.repeat(20));
    const empty = path.join(dir, 'empty.db');
    writeFileSync(empty, '');
    assertOneLine(await cli(['backup', '--db', path.join(dir, 'missing.db'), '--to', path.join(dir, 'x.db')]), 1, /no database at .*missing\.db/);
    assertOneLine(await cli(['backup', '--db', other, '--to', path.join(dir, 'x.db')]), 1, /other\.db is not a watchtime database \(it holds notes\)/);
    assertOneLine(await cli(['backup', '--db', text, '--to', path.join(dir, 'x.db')]), 1, /notes\.txt is not a SQLite database/);
    assertOneLine(await cli(['backup', '--db', empty, '--to', path.join(dir, 'x.db')]), 1, /empty\.db is not a watchtime database \(it is empty\)/);
    assert.ok(!existsSync(path.join(dir, 'x.db')));
    assert.deepEqual(readdirSync(dir).filter((name) => name.includes('partial')), [], 'no temporary file left');

    // Usage: --to is required (exit 2); --db comes from WATCHTIME_DB as for the other commands.
    assert.equal((await cli(['backup', '--db', db])).code, 2);
    const fromEnv = await cli(['backup', '--to', path.join(dir, 'env.db')], { WATCHTIME_DB: db });
    assert.equal(fromEnv.code, 0, fromEnv.stderr);
  });

  test('copies a database of an older schema (a backup before an upgrade), without a rebuild\'s half-built tables', async (t) => {
    const dir = tempDir(cleanupAfter(t));
    const db = path.join(dir, 'old.db');
    schemaOneDatabase(db, 'CREATE TABLE next_user_movies (user_id INTEGER, movie_id INTEGER);');

    const target = path.join(dir, 'b.db');
    const run = await cli(['backup', '--db', db, '--to', target, '--json']);
    assert.equal(run.code, 0, run.stderr);
    const result = JSON.parse(run.stdout);
    assert.equal(result.events, 2);
    assert.equal(result.schemaVersion, 1);
    const copy = new Database(target, { readonly: true });
    try {
      assert.equal(copy.pragma('user_version', { simple: true }), 1, 'not migrated');
      const tables = copy.prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name").pluck().all();
      assert.deepEqual(tables, ['events', 'movies', 'settings', 'user_movies', 'users']);
    } finally {
      copy.close();
    }
  });
});
