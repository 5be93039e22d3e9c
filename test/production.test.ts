// What running it in production needs, on real server processes: a log
// destination that cannot kill it, faults that repeat logged as episodes,
// the lame duck at shutdown, secrets from files, and a warning when ingest
// is open to every interface.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { openSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { Writable } from 'node:stream';
import { describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import Database from 'better-sqlite3';
import pino from 'pino';
import { EpisodeLog } from '../src/log.ts';
import { SERVER_DEFAULTS } from '../src/cli/options.ts';
import { startServer } from '../src/server.ts';
import { describeDb } from '../src/store/open.ts';
import { BIN, cleanupAfter, cli, freePort, get, post, serveArgs, serverProcess, tempDir } from './helpers.ts';

const jsonLines = (text: string) =>
  text
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, any>);

async function until(what: string, check: () => Promise<boolean> | boolean, tries = 200) {
  for (let i = 0; i < tries; i++) {
    if (await check()) return;
    await sleep(25);
  }
  assert.fail(`waited in vain for ${what}`);
}

const metric = async (base: string, series: string) => {
  const line = String((await get(base, '/metrics')).body)
    .split('\n')
    .find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
};

/** A pino logger whose lines land in an array, as a log collector would read them. */
function capturedLog(level: pino.LevelWithSilent = 'debug') {
  const lines: Record<string, any>[] = [];
  const sink = new Writable({
    write(chunk, _encoding, done) {
      lines.push(...jsonLines(String(chunk)));
      done();
    },
  });
  return { log: pino({ level, base: undefined }, sink), lines };
}

describe('logs that cannot kill the server', () => {
  test('with stderr on a full device it serves on and counts the lines it dropped', async (t) => {
    const cleanup = cleanupAfter(t);
    const port = await freePort();
    const full = openSync('/dev/full', 'w');
    // Debug level: every request, refused or not, tries to write a line.
    const child = spawn(process.execPath, serveArgs(['--db', path.join(tempDir(cleanup), 'w.db'), '--port', String(port), '--log-level', 'debug']), {
      stdio: ['ignore', 'ignore', full],
    });
    cleanup(() => child.kill('SIGKILL'));
    const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
    const base = `http://127.0.0.1:${port}`;
    await until('the server to answer', () => get(base, '/livez').then(() => true, () => false));
    for (let i = 0; i < 50; i++) {
      assert.equal((await post(base, { user: 'a', slug: 'm', at: -1 })).status, 400);
      assert.equal((await get(base, `/nothing-${i}`)).status, 404);
      assert.equal((await post(base, { user: 'a', slug: 'm', at: i * 10 })).status, 200);
    }
    assert.equal(child.exitCode, null, 'still running');
    assert.equal((await get(base, '/users/a/watch-time')).body.watchTime, 490);
    const dropped = await metric(base, 'watchtime_log_lines_dropped_total');
    assert.ok(dropped! >= 101, `dropped ${dropped}: the start line and every refusal`);
    child.kill('SIGTERM');
    assert.equal(await exited, 0, 'and it stops cleanly, still unable to log');
  });
});

describe('log floods', () => {
  test('an episode: its first occurrence in full, counts while it lasts, one line when it ends', async () => {
    const { log, lines } = capturedLog();
    const episodes = new EpisodeLog(log, { summaryMs: 100, quietMs: 150 });
    for (let i = 0; i < 1000; i++) episodes.occurred('storage-unavailable', 'error', { reqId: `r${i}` }, 'request refused');
    assert.equal(lines.length, 1);
    assert.equal(lines[0].reqId, 'r0');
    assert.equal(lines[0].level, 50);
    await sleep(120);
    for (let i = 0; i < 10; i++) episodes.occurred('storage-unavailable', 'error', {}, 'request refused');
    await until('the episode to end', () => lines.some((l) => /ended/.test(l.msg)));
    const summaries = lines.filter((l) => l.repeats !== undefined);
    assert.ok(summaries.length >= 1 && summaries.length <= 3, JSON.stringify(lines));
    const end = lines.at(-1)!;
    assert.equal(end.total, 1010);
    assert.equal(end.level, 50);
    assert.ok(lines.length <= 5, `${lines.length} lines for 1,010 refusals`);
    // A new occurrence after the end starts a new episode.
    episodes.occurred('storage-unavailable', 'error', { reqId: 'again' }, 'request refused');
    assert.equal(lines.at(-1)!.reqId, 'again');
    episodes.close();
    assert.match(lines.at(-1)!.msg, /ended/);
  });

  test('a full queue for a while is a handful of warn lines; client refusals are debug lines', async (t) => {
    const cleanup = cleanupAfter(t);
    const db = path.join(tempDir(cleanup), 'w.db');
    const { log, lines } = capturedLog('info');
    const logged = await startServer(
      { ...SERVER_DEFAULTS, host: '127.0.0.1', port: 0, db, rule: {}, flushMs: 2, queueSize: 5, drainMs: 0, episodes: { summaryMs: 1000, quietMs: 300 } },
      log,
    );
    cleanup(() => logged.close());
    const base = logged.url;
    const startLines = lines.length;
    // Clients' mistakes: none of them is news at info.
    for (let i = 0; i < 20; i++) {
      await get(base, `/wp-admin-${i}`);
      await post(base, { user: 'a', slug: 'm', at: -1 });
    }
    assert.equal(lines.length, startLines, JSON.stringify(lines.slice(startLines)));

    // Hold the write lock so that 5 events fill the queue, then send 200 more.
    const lock = new Database(db);
    lock.exec('BEGIN IMMEDIATE');
    const held = Array.from({ length: 5 }, (_, i) => post(base, { user: `u${i}`, slug: 'm', at: 1 }));
    await until('the queue to fill', async () => (await get(base, '/stats')).body.queue.depth === 5);
    const refused = await Promise.all(Array.from({ length: 200 }, () => post(base, { user: 'x', slug: 'm', at: 1 })));
    assert.ok(refused.every((r) => r.status === 503 && r.body.type === '/problems/queue-full'));
    lock.exec('ROLLBACK');
    lock.close();
    assert.deepEqual((await Promise.all(held)).map((r) => r.status), Array(5).fill(200));
    await until('the episode to end', () => lines.some((l) => l.episode === 'queue-full' && /ended/.test(l.msg)));
    const episode = lines.slice(startLines).filter((l) => l.episode === 'queue-full');
    assert.ok(episode.length >= 2 && episode.length <= 4, JSON.stringify(episode));
    assert.ok(episode.every((l) => l.level === 40));
    assert.equal(episode.at(-1)!.total, 200);
    assert.equal(await metric(base, 'watchtime_ingest_rejected_requests_total{reason="queue-full"}'), 200);
  });
});

describe('the lame duck', () => {
  test('SIGTERM with a load balancer probing: /readyz 503 while requests are still served, then stop, exit 0', async (t) => {
    const cleanup = cleanupAfter(t);
    const server = serverProcess(['--db', path.join(tempDir(cleanup), 'w.db'), '--drain-ms', '1500']);
    cleanup(() => server.child.kill('SIGKILL'));
    const base = await server.listening;
    assert.equal((await get(base, '/readyz')).status, 200);
    const signalled = Date.now();
    server.child.kill('SIGTERM');
    await until('/readyz to say draining', async () => (await get(base, '/readyz')).status === 503);
    const draining = await get(base, '/readyz');
    assert.match(draining.body.detail, /draining/);
    // Still served meanwhile, writes and reads, each answer telling its client to reconnect elsewhere.
    const during = await post(base, { user: 'a', slug: 'm', at: 10 });
    assert.equal(during.status, 200);
    assert.equal(during.headers.get('connection'), 'close');
    assert.equal((await get(base, '/users/a/watch-time')).body.watchTime, 10);
    assert.equal(await server.exited, 0, server.stderr());
    assert.ok(Date.now() - signalled >= 1400, 'it waited for the drain');
    assert.ok(jsonLines(server.stderr()).some((l) => /^draining/.test(l.msg)));
  });

  test('Ctrl-C (SIGINT) does not wait for the drain, even with /readyz probed', async (t) => {
    const cleanup = cleanupAfter(t);
    const server = serverProcess(['--db', path.join(tempDir(cleanup), 'w.db'), '--drain-ms', '30000']);
    cleanup(() => server.child.kill('SIGKILL'));
    const base = await server.listening;
    assert.equal((await get(base, '/readyz')).status, 200);
    const signalled = Date.now();
    server.child.kill('SIGINT');
    assert.equal(await server.exited, 0);
    assert.ok(Date.now() - signalled < 10_000, 'no drain for an interactive stop');
  });

  test('SIGTERM with nobody probing /readyz stops at once; idle connections are kept past 60 s load balancers', async (t) => {
    const cleanup = cleanupAfter(t);
    const server = serverProcess(['--db', path.join(tempDir(cleanup), 'w.db'), '--drain-ms', '30000']);
    cleanup(() => server.child.kill('SIGKILL'));
    const base = await server.listening;
    const answer = await fetch(`${base}/livez`);
    assert.equal(answer.headers.get('keep-alive'), 'timeout=65');
    const signalled = Date.now();
    server.child.kill('SIGTERM');
    assert.equal(await server.exited, 0);
    assert.ok(Date.now() - signalled < 10_000, 'no drain with nobody to tell');
  });
});

describe('secrets and defaults', () => {
  test('tokens and the database from files named by WATCHTIME_*_FILE; both set, or an unreadable file, refused', async (t) => {
    const cleanup = cleanupAfter(t);
    const dir = tempDir(cleanup);
    const tokenFile = path.join(dir, 'ingest-token');
    writeFileSync(tokenFile, 's3cret-token\n');
    const dbFile = path.join(dir, 'db-url');
    writeFileSync(dbFile, path.join(dir, 'w.db'));
    const server = serverProcess([], { WATCHTIME_INGEST_TOKEN_FILE: tokenFile, WATCHTIME_DB_FILE: dbFile, WATCHTIME_DB: '' });
    cleanup(() => server.child.kill('SIGKILL'));
    await server.listening.catch(() => undefined);
    assert.match(server.stderr(), /set WATCHTIME_DB or WATCHTIME_DB_FILE, not both/);

    const good = serverProcess([], { WATCHTIME_INGEST_TOKEN_FILE: tokenFile, WATCHTIME_DB_FILE: dbFile });
    cleanup(() => good.child.kill('SIGKILL'));
    const base = await good.listening;
    assert.equal((await post(base, { user: 'a', slug: 'm', at: 1 })).status, 401);
    assert.equal((await post(base, { user: 'a', slug: 'm', at: 1 }, 'application/json', { authorization: 'Bearer s3cret-token' })).status, 200);
    assert.ok(!JSON.stringify(jsonLines(good.stderr())).includes('s3cret-token'), 'the token is not logged');
    good.child.kill('SIGTERM');
    await good.exited;
    assert.equal((await cli(['query', 'user', 'a', '--json'], { WATCHTIME_DB_FILE: dbFile })).code, 0);

    const missing = await cli(['query', 'top'], { WATCHTIME_DB_FILE: path.join(dir, 'nope') });
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /^watchtime: cannot read WATCHTIME_DB_FILE .*nope: ENOENT\n$/);
  });

  test('a malformed token in a file is refused without showing it; a password in a URL\'s query is not shown either', async (t) => {
    const dir = tempDir(cleanupAfter(t));
    const tokenFile = path.join(dir, 'token');
    writeFileSync(tokenFile, 'S3CRET two\n');
    const run = await cli(['serve', '--port', '0', '--db', path.join(dir, 'w.db')], { WATCHTIME_INGEST_TOKEN_FILE: tokenFile });
    assert.equal(run.code, 2);
    assert.match(run.stderr, /^watchtime: the token in WATCHTIME_INGEST_TOKEN_FILE .*token must be one or more visible ASCII characters.*the value is not shown\n$/);
    assert.ok(!run.stderr.includes('S3CRET'));
    const direct = await cli(['serve', '--port', '0', '--db', path.join(dir, 'w.db'), '--read-token', 'S3CRET two']);
    assert.equal(direct.code, 2);
    assert.ok(!direct.stderr.includes('S3CRET'), direct.stderr);
    assert.equal(describeDb('postgres://wt@db/watchtime?password=S3cret&sslmode=require'), 'postgres://wt@db/watchtime?password=***&sslmode=require');
    assert.equal(describeDb('postgres://wt:S3cret@db/watchtime'), 'postgres://wt:***@db/watchtime');
    // A database that is away at start: one line, no stack, no password.
    const away = await cli(['serve', '--port', '0', '--db', 'postgres://wt:S3cret@127.0.0.1:1/watchtime']);
    assert.equal(away.code, 1);
    assert.match(away.stderr, /^watchtime: cannot use the database: connect ECONNREFUSED 127\.0\.0\.1:1 \(ECONNREFUSED\)\n$/);
  });

  test('a warning at start when ingest is open on every interface, none on loopback or with a token', async (t) => {
    const cleanup = cleanupAfter(t);
    const dir = tempDir(cleanup);
    const warnings = async (args: string[], env: Record<string, string> = {}) => {
      const child = spawn(process.execPath, [BIN, 'serve', '--port', '0', '--drain-ms', '0', ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
      cleanup(() => child.kill('SIGKILL'));
      let stderr = '';
      child.stderr.on('data', (d) => (stderr += d));
      await until('the start line', () => /listening on/.test(stderr));
      await sleep(50);
      child.kill('SIGTERM');
      await new Promise((resolve) => child.on('exit', resolve));
      return jsonLines(stderr).filter((l) => l.level === 40);
    };
    const open = await warnings(['--host', '0.0.0.0', '--db', path.join(dir, 'a.db')]);
    assert.equal(open.length, 1);
    assert.match(open[0].msg, /ingest is open to anyone/);
    assert.deepEqual(await warnings(['--host', '127.0.0.1', '--db', path.join(dir, 'b.db')]), []);
    assert.deepEqual(await warnings(['--host', '0.0.0.0', '--db', path.join(dir, 'c.db')], { WATCHTIME_INGEST_TOKEN: 'tok' }), []);
  });
});

