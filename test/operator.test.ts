// What a careless operator does (issue 18): two servers on one file, a file
// the process may not write or that belongs to another application, a token
// from an unset variable, and the counters an operator reads.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmodSync, linkSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';
import Database from 'better-sqlite3';
import { SERVER_DEFAULTS } from '../src/cli/options.ts';
import { silentLogger } from '../src/log.ts';
import { startServer } from '../src/server.ts';
import { SqliteStore } from '../src/store/sqlite.ts';
import { BIN, cleanupAfter, cli, get, post, serve, serveArgs, serverProcess, snapshot, tempDir, type Cleanup } from './helpers.ts';
import { autoWorkers, cpuQuota } from '../src/config.ts';

interface Ended {
  code: number | null;
  stderr: string;
  /** It got as far as listening, and was stopped. */
  listened: boolean;
}

interface RunAs {
  env?: Record<string, string>;
  /** Another user, for files that root could write whatever their mode. */
  uid?: number;
  gid?: number;
}

const NOBODY = { uid: 65534, gid: 65534 };
const asRoot = process.getuid?.() === 0;

/**
 * Runs bin/watchtime to its end; `serve` is stopped once it listens, so that
 * a start that should have been refused ends the test instead of hanging it.
 */
function run(args: string[], { env = {}, uid, gid }: RunAs = {}): Promise<Ended> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, ...env }, uid, gid });
    let stderr = '';
    let listened = false;
    child.stderr.on('data', (d) => {
      stderr += d;
      if (!listened && /"msg":"listening on /.test(stderr)) {
        listened = true;
        child.kill('SIGKILL');
      }
    });
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stderr, listened }));
  });
}

/** `watchtime serve` on 127.0.0.1, an ephemeral port. */
const startServe = (args: string[], as: RunAs = {}) => run(serveArgs(args).slice(1), as);

/** A refusal an operator reads at a glance: exit 1, one line, no stack. */
function assertRefused(ended: Ended, pattern: RegExp): void {
  assert.equal(ended.listened, false, `it started: ${ended.stderr}`);
  assert.equal(ended.code, 1, ended.stderr);
  const lines = ended.stderr.trimEnd().split('\n');
  assert.equal(lines.length, 1, `one line, not:\n${ended.stderr}`);
  assert.match(lines[0], pattern);
}

/** A second server started in this process on `db`, closed at clean-up if it does start. */
function startSecond(cleanup: Cleanup, db: string) {
  return startServer({ ...SERVER_DEFAULTS, host: '127.0.0.1', port: 0, db, rule: {} }, silentLogger).then((server) => {
    cleanup(() => server.close());
    return server;
  });
}

interface Totals {
  watched: number;
  events: number;
}

const event = (at: number) => ({ user: 'ann', slug: 'heat', at, receivedAt: Date.now() });

describe('one server per SQLite file', () => {
  test('a second server, in this process or another, is refused with who holds the file; queries and rebuild still run beside it', { timeout: 60_000 }, async (t) => {
    const cleanup = cleanupAfter(t);
    const db = path.join(tempDir(cleanup), 'w.db');
    const first = await serve(cleanup, db);
    assert.equal((await post(first.url, { user: 'ann', slug: 'heat', at: 30 })).status, 200);
    const holder = new RegExp(
      `already served by another watchtime \\(pid ${process.pid} on ${hostname()}, started \\d{4}-\\d\\d-\\d\\dT[^,]+, listening on 127\\.0\\.0\\.1`,
    );

    await assert.rejects(startSecond(cleanup, db), holder);
    assertRefused(await startServe(['--db', db]), holder);
    // With workers too: the writer takes the lock before it forks any.
    assertRefused(await startServe(['--db', db, '--workers', '2']), holder);

    const query = await cli(['query', 'movie', 'heat', '--db', db, '--json']);
    assert.equal(query.code, 0, query.stderr);
    assert.equal(JSON.parse(query.stdout).watchTime, 30);
    const rebuild = await cli(['rebuild', '--db', db]);
    assert.equal(rebuild.code, 0, rebuild.stderr);

    await first.close();
    const next = await startSecond(cleanup, db);
    assert.equal((await get(next.url, '/movies/heat/watch-time')).body.events, 1, 'the file is free once its server has closed');
  });

  test('a holder killed with SIGKILL leaves the file free for the next server', { timeout: 60_000 }, async (t) => {
    const cleanup = cleanupAfter(t);
    const db = path.join(tempDir(cleanup), 'w.db');
    const holder = serverProcess(['--db', db]);
    cleanup(() => holder.child.kill('SIGKILL'));
    await holder.listening;
    assertRefused(await startServe(['--db', db]), new RegExp(`already served by another watchtime \\(pid ${holder.child.pid} `));

    holder.child.kill('SIGKILL');
    await holder.exited;
    const next = serverProcess(['--db', db]);
    cleanup(() => next.child.kill('SIGKILL'));
    const url = await next.listening;
    assert.equal((await post(url, { user: 'ann', slug: 'heat', at: 30 })).status, 200);
    next.child.kill('SIGTERM');
    assert.equal(await next.exited, 0);
  });

  test('of servers started at once on one new file, exactly one serves', { timeout: 60_000 }, async (t) => {
    const cleanup = cleanupAfter(t);
    const db = path.join(tempDir(cleanup), 'w.db');
    const servers = Array.from({ length: 4 }, () => serverProcess(['--db', db]));
    for (const server of servers) cleanup(() => server.child.kill('SIGKILL'));
    // Each one listens, or exits; the ones listening keep the file until the end.
    const listened = await Promise.all(servers.map((server) => server.listening.then(() => true, () => false)));
    assert.equal(listened.filter(Boolean).length, 1, servers.map((server) => server.stderr()).join('\n'));
    for (const refused of servers.filter((_, i) => !listened[i])) {
      assert.equal(await refused.exited, 1);
      assert.match(refused.stderr(), /^watchtime: .*w\.db is already served by another watchtime \([^\n]*\n$/);
    }
  });

  test('a writer that another connection\'s commits reach applies the rule from the stored pair, not the one it remembers', (t) => {
    const db = path.join(tempDir(cleanupAfter(t)), 'w.db');
    // Two stores stand for two writers of one file (the two servers).
    const writers = [new SqliteStore(db), new SqliteStore(db)];
    try {
      writers[0].initSettings({ accounting: 'progress', maxStep: 120 });
      for (const [i, at] of [10, 20, 30, 40, 50].entries()) writers[i % 2].ingest([event(at)]);
      const totals = { watchTime: 50, events: 5 };
      for (const writer of writers) {
        assert.deepEqual({ ...writer.pair('ann', 'heat'), updatedAt: undefined }, { user: 'ann', slug: 'heat', latestMoment: 50, ...totals, updatedAt: undefined });
        assert.deepEqual({ ...writer.movie('heat'), updatedAt: undefined }, { slug: 'heat', viewers: 1, ...totals, updatedAt: undefined });
        assert.deepEqual({ ...writer.user('ann'), updatedAt: undefined }, { user: 'ann', movies: 1, ...totals, updatedAt: undefined });
      }
    } finally {
      for (const writer of writers) writer.close();
    }
    const { pairs, movies, users } = snapshot(db);
    const watchedAndEvents = (rows: unknown[]) => rows.map((row) => [(row as Totals).watched, (row as Totals).events]);
    assert.deepEqual([pairs, movies, users].map(watchedAndEvents), [[[50, 5]], [[50, 5]], [[50, 5]]], 'the file holds the same');
  });
});

describe('files the process may not use', () => {
  test('a file it may not write: serve and rebuild refuse in one line; query answers while it can read, else says why', { skip: !asRoot && 'runs the CLI as nobody, which needs root', timeout: 60_000 }, async (t) => {
    const cleanup = cleanupAfter(t);
    const dir = tempDir(cleanup);
    chmodSync(dir, 0o755); // nobody may read in it, not write
    const db = path.join(dir, 'w.db');
    const server = await serve(cleanup, db);
    assert.equal((await post(server.url, { user: 'ann', slug: 'heat', at: 30 })).status, 200);

    const query = await run(['query', 'movie', 'heat', '--db', db, '--json'], NOBODY);
    assert.equal(query.code, 0, query.stderr);
    const cannotWrite = /^watchtime: cannot write the database .*w\.db: EACCES .*`watchtime query` only reads\)$/;
    assertRefused(await startServe(['--db', db], NOBODY), cannotWrite);
    assertRefused(await run(['rebuild', '--db', db], NOBODY), cannotWrite);

    // Stopped, its server takes the -shm file away, which a reader of a WAL file needs and nobody may create.
    await server.close();
    assertRefused(await run(['query', 'movie', 'heat', '--db', db], NOBODY), /^watchtime: cannot read .*w\.db as this user: SQLite must create w\.db-shm/);
    chmodSync(db, 0o600);
    assertRefused(await run(['query', 'movie', 'heat', '--db', db], NOBODY), /^watchtime: cannot open the database .*w\.db: unable to open database file/);
  });

  const foreign: [string, (file: string) => void][] = [
    ['another application\'s SQLite file', (file) => {
      const other = new Database(file);
      other.exec("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT); INSERT INTO notes VALUES (1, 'keep me');");
      other.close();
    }],
    ['a SQLite file with a schema version of its own and a table named as ours', (file) => {
      const other = new Database(file);
      other.exec('CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT); PRAGMA user_version = 3;');
      other.close();
    }],
    ['a file that is not SQLite', (file) => writeFileSync(file, 'user,slug,at\nann,heat,30\n'.repeat(100))],
    ['a SQLite file that holds only a view', (file) => {
      const other = new Database(file);
      other.exec('CREATE VIEW answer AS SELECT 42;');
      other.close();
    }],
    ['a SQLite file with a schema version and no tables', (file) => {
      const other = new Database(file);
      other.exec('PRAGMA user_version = 1;');
      other.close();
    }],
  ];
  for (const [name, make] of foreign) {
    test(`${name}: serve, rebuild and query refuse it in one line and leave it as it was`, { timeout: 60_000 }, async (t) => {
      const dir = tempDir(cleanupAfter(t));
      const db = path.join(dir, 'theirs.db');
      make(db);
      const before = readFileSync(db);
      const notOurs = /^watchtime: .*theirs\.db is not a (watchtime|SQLite) database/;
      assertRefused(await startServe(['--db', db]), notOurs);
      assertRefused(await run(['rebuild', '--db', db]), notOurs);
      assertRefused(await run(['query', 'top', '--db', db]), notOurs);
      assert.deepEqual(readFileSync(db), before, 'not one byte changed');
      assert.deepEqual(readdirSync(dir), ['theirs.db'], 'no -wal, -shm, -journal or -lock beside it');
    });
  }
});

describe('names of the file', () => {
  test('a symbolic link to the database: its WAL and its lock are the real file\'s', async (t) => {
    const cleanup = cleanupAfter(t);
    const dir = tempDir(cleanup);
    const real = path.join(dir, 'w.db');
    const link = path.join(dir, 'link.db');
    await (await serve(cleanup, real)).close();
    symlinkSync(real, link);
    const server = await serve(cleanup, link);
    assert.deepEqual((await post(server.url, { user: 'a', slug: 'm', at: 10 })).body, { accepted: 1, duplicates: 0 });
    assert.equal((await get(server.url, '/stats')).body.eventsCommitted, 1);
    assertRefused(await startServe(['--db', real]), /is already served by another watchtime/);
  });

  test('a database with two hard links, or no name at all, is refused in one line', async (t) => {
    const dir = tempDir(cleanupAfter(t));
    const db = path.join(dir, 'w.db');
    const made = await startServe(['--db', db]);
    assert.equal(made.listened, true, made.stderr);
    linkSync(db, path.join(dir, 'hard.db'));
    assertRefused(await startServe(['--db', db]), /has 2 hard links/);
    assertRefused(await run(['rebuild', '--db', path.join(dir, 'hard.db')]), /has 2 hard links/);
    for (const name of ['', ':memory:']) {
      assertRefused(await startServe(['--db', name]), /^watchtime: --db must name a database file/);
      assertRefused(await startServe([], { env: { WATCHTIME_DB: name } }), /^watchtime: --db must name a database file/);
    }
  });

  test('a -wal or -shm left by another user is refused at start, not at the first commit', { skip: !asRoot && 'runs the CLI as nobody, which needs root', timeout: 60_000 }, async (t) => {
    const cleanup = cleanupAfter(t);
    const dir = tempDir(cleanup);
    chmodSync(dir, 0o777);
    const db = path.join(dir, 'w.db');
    const made = await startServe(['--db', db]);
    assert.equal(made.listened, true);
    chmodSync(db, 0o666);
    // root's query leaves -wal and -shm that only root may write.
    writeFileSync(`${db}-wal`, '');
    chmodSync(`${db}-wal`, 0o644);
    assertRefused(await startServe(['--db', db], NOBODY), /cannot write the database .*EACCES on .*w\.db-wal/);
  });
});

describe('settings', () => {
  const refusedTokens: [string, string[], Record<string, string>, string][] = [
    ['--ingest-token \'\' (an unset shell variable)', ['--ingest-token', ''], {}, '--ingest-token'],
    ['--read-token \'\'', ['--read-token', ''], {}, '--read-token'],
    ['WATCHTIME_INGEST_TOKEN=\'\'', [], { WATCHTIME_INGEST_TOKEN: '' }, '--ingest-token'],
    ['a blank --ingest-token', ['--ingest-token', '   '], {}, '--ingest-token'],
    ['a --read-token with a space', ['--read-token', 'two words'], {}, '--read-token'],
  ];
  for (const [name, args, env, option] of refusedTokens) {
    test(`${name} is refused at start as bad usage`, async (t) => {
      const db = path.join(tempDir(cleanupAfter(t)), 'w.db');
      const ended = await startServe(['--db', db, ...args], { env });
      assert.equal(ended.listened, false, 'it started');
      assert.equal(ended.code, 2, ended.stderr);
      assert.match(ended.stderr, new RegExp(`^watchtime: ${option} must be one or more visible ASCII characters, with no spaces .*the value is not shown\\n$`));
      if (args[1]?.trim()) assert.ok(!ended.stderr.includes(args[1]), 'the token is not echoed');
    });
  }

  for (const bad of ['0', 'two', '1.5', '257']) {
    test(`--workers ${bad} is refused at start as bad usage, naming the rule`, async (t) => {
      const db = path.join(tempDir(cleanupAfter(t)), 'w.db');
      const ended = await startServe(['--db', db, '--workers', bad]);
      assert.equal(ended.listened, false, 'it started');
      assert.equal(ended.code, 2, ended.stderr);
      assert.match(ended.stderr, /--workers.*must be auto or an integer from 1 to 256/);
    });
  }

  test("WATCHTIME_WORKERS='' (an unset shell variable) is refused at start as bad usage", async (t) => {
    const db = path.join(tempDir(cleanupAfter(t)), 'w.db');
    const ended = await startServe(['--db', db], { env: { WATCHTIME_WORKERS: '' } });
    assert.equal(ended.listened, false, 'it started');
    assert.equal(ended.code, 2, ended.stderr);
    assert.match(ended.stderr, /--workers.*must be auto or an integer from 1 to 256/);
  });

  test('--workers auto counts the cores a container may use (its CPU quota, rounded up), and keeps one for the writer', () => {
    const files = (contents: Record<string, string>) => (file: string) => {
      if (file in contents) return contents[file];
      throw new Error(`ENOENT ${file}`);
    };
    assert.equal(cpuQuota(files({ '/sys/fs/cgroup/cpu.max': 'max 100000\n' })), undefined);
    assert.equal(cpuQuota(files({ '/sys/fs/cgroup/cpu.max': '150000 100000\n' })), 2);
    assert.equal(cpuQuota(files({ '/sys/fs/cgroup/cpu.max': '20000 100000\n' })), 1);
    assert.equal(cpuQuota(files({ '/sys/fs/cgroup/cpu/cpu.cfs_quota_us': '-1\n', '/sys/fs/cgroup/cpu/cpu.cfs_period_us': '100000\n' })), undefined);
    assert.equal(cpuQuota(files({ '/sys/fs/cgroup/cpu/cpu.cfs_quota_us': '400000\n', '/sys/fs/cgroup/cpu/cpu.cfs_period_us': '100000\n' })), 4);
    assert.equal(cpuQuota(files({})), undefined);
    assert.deepEqual([1, 2, 3, 16].map((cores) => autoWorkers(cores)), [1, 1, 2, 15]);
  });

  test('a token of visible characters is taken', async (t) => {
    const db = path.join(tempDir(cleanupAfter(t)), 'w.db');
    assert.equal((await startServe(['--db', db, '--ingest-token', 's3cr3t-T0k3n_=+/~'])).listened, true);
  });

  test('/stats counts an event sent three times with one id as committed once', async (t) => {
    const cleanup = cleanupAfter(t);
    const server = await serve(cleanup, path.join(tempDir(cleanup), 'w.db'));
    for (let i = 0; i < 3; i++) assert.equal((await post(server.url, { user: 'ann', slug: 'heat', at: 30, id: 'e1' })).status, 200);
    const stats = (await get(server.url, '/stats')).body;
    assert.deepEqual([stats.eventsStored, stats.eventsCommitted, stats.duplicates], [1, 1, 2]);
  });
});
