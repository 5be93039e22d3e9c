// serve --workers N (SPEC section 4): HTTP workers in processes of their own,
// one writer. Everything the one-process server promises holds through them:
// read-your-writes from any worker, exact totals, nothing acknowledged lost
// when a worker or the whole service is killed, queue-full 503, a shutdown
// that flushes every worker's events, one /metrics, and logs that say which worker.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import path from 'node:path';
import { describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import Database from 'better-sqlite3';
import { BIN, childrenOf, cleanupAfter, cli, connection, get, post, serverProcess, snapshot, tempDir } from './helpers.ts';
import { needDebianCommand } from './support/debian.ts';


/** The JSON log lines a server wrote on stderr. */
const logLines = (stderr: string) =>
  stderr
    .split('\n')
    .filter((line) => line.startsWith('{'))
    .map((line) => JSON.parse(line) as Record<string, unknown>);

/** Which worker answered a request, from the debug line it logged for it. */
function workerOf(stderr: string, requestId: string): number | undefined {
  return logLines(stderr).find((line) => line.reqId === requestId)?.worker as number | undefined;
}

const sample = (text: string, series: string) => Number(new RegExp(`^${series.replace(/[{}()[\]|.+*?^$\\]/g, '\\$&')} (\\S+)$`, 'm').exec(text)?.[1]);

async function until(what: string, check: () => Promise<boolean> | boolean) {
  for (let i = 0; i < 1000; i++) {
    if (await check()) return;
    await sleep(25);
  }
  assert.fail(`waited in vain for ${what}`);
}

/** `watchtime generate --verify` against a server, to its end. */
const generate = (base: string, seconds: number, seed: number) =>
  cli([
    'generate', '--url', `${base}/`, '--rate', '0', '--connections', '16', '--users', '200', '--movies', '20',
    '--duration', String(seconds), '--seed', String(seed), '--verify',
  ]);

describe('serve --workers', () => {
  test('an event acknowledged by one worker is seen at once by a lookup on any other; logs say which worker', async (t) => {
    const cleanup = cleanupAfter(t);
    const db = path.join(tempDir(cleanup), 'w.db');
    const server = serverProcess(['--db', db, '--workers', '2', '--log-level', 'debug']);
    cleanup(() => server.child.kill('SIGKILL'));
    const base = await server.listening;
    const clients = Array.from({ length: 4 }, () => connection(base));
    cleanup(() => clients.forEach((c) => c.close()));

    // Each connection's worker, from the debug line of a 404 it answered.
    const workers: number[] = [];
    for (const [i, client] of clients.entries()) {
      const answer = await client.get(`/nothing-here-${i}`);
      assert.equal(answer.status, 404);
      const id = answer.headers['x-request-id'] as string;
      await until('the 404 to be logged', () => workerOf(server.stderr(), id) !== undefined);
      workers.push(workerOf(server.stderr(), id)!);
    }
    assert.equal(new Set(workers).size, 2, `the connections reached both workers (${workers})`);

    // Other clients keep both workers' event loops busy with lookups meanwhile, as players do.
    let hammering = true;
    const hammers = Array.from({ length: 8 }, async () => {
      const c = connection(base);
      while (hammering) await c.get('/users/someone/movies/else/latest-moment');
      c.close();
    });
    for (let i = 0; i < 300; i++) {
      const writer = clients[i % 4];
      const at = (i + 1) * 10;
      assert.deepEqual((await writer.post({ user: 'ryw', slug: 'film', at })).body, { accepted: 1, duplicates: 0 });
      // At once, on every other connection, and so on the other worker too; plain paths, and paths polka routes (a query).
      const answers = await Promise.all(
        clients
          .filter((c) => c !== writer)
          .flatMap((c) => [
            c.get('/users/ryw/movies/film/latest-moment'),
            c.get('/movies/film/watch-time'),
            c.get(`/users/ryw/movies/film/latest-moment?i=${i}`),
          ]),
      );
      for (let k = 0; k < answers.length; k += 3) {
        assert.equal(answers[k].body.latestMoment, at, `lookup ${k / 3} after event ${i + 1}`);
        assert.equal(answers[k].body.events, i + 1);
        assert.equal(answers[k + 1].body.events, i + 1);
        assert.equal(answers[k + 2].body.latestMoment, at, `routed lookup ${k / 3} after event ${i + 1}`);
      }
    }
    hammering = false;
    await Promise.all(hammers);

    const lines = logLines(server.stderr());
    assert.ok(lines.some((l) => l.role === 'writer' && String(l.msg).startsWith('listening on')), 'the writer says it listens, once');
    assert.ok(lines.filter((l) => l.role === 'http').every((l) => l.worker === 1 || l.worker === 2), 'each worker line says which worker');
  });

  test('exact totals under concurrency, through an online rebuild; one /metrics for the whole service', async (t) => {
    const cleanup = cleanupAfter(t);
    const db = path.join(tempDir(cleanup), 'w.db');
    const server = serverProcess(['--db', db, '--workers', '2']);
    cleanup(() => server.child.kill('SIGKILL'));
    const base = await server.listening;

    const generated = generate(base, 4, 7);
    await sleep(1500);
    const rebuilt = await cli(['rebuild', '--db', db]);
    assert.equal(rebuilt.code, 0, rebuilt.stderr);
    const run = await generated;
    assert.equal(run.code, 0, run.stdout + run.stderr);
    assert.match(run.stdout + run.stderr, / 0 difference\(s\)/);
    const sent = Number(/^sent (\d+) events/m.exec(run.stdout + run.stderr)![1]);

    // Requests over several connections, so over both workers, counted once each in the one /metrics.
    const clients = Array.from({ length: 4 }, () => connection(base));
    cleanup(() => clients.forEach((c) => c.close()));
    for (let i = 0; i < 40; i++) assert.equal((await clients[i % 4].post({ user: `m${i}`, slug: 'count', at: 5 })).status, 200);
    const scrapes = await Promise.all(clients.map((c) => c.get('/metrics')));
    for (const scrape of scrapes) {
      const text = scrape.body as string;
      assert.equal(sample(text, 'watchtime_http_workers'), 2);
      assert.equal(sample(text, 'watchtime_events_accepted_total'), sent + 40, 'every event, whichever worker took it');
      assert.equal(sample(text, 'watchtime_http_requests_total{route="/events",method="POST",status="200"}'), 40);
      assert.equal(sample(text, 'watchtime_build_info{version="0.1.0",node="' + process.version + '"}'), 1, 'not one per process');
    }
    needDebianCommand('promtool', 'prometheus');
    const lint = spawnSync('promtool', ['check', 'metrics'], { input: scrapes[0].body, encoding: 'utf8' });
    assert.equal(lint.status, 0, `promtool: ${lint.stdout}${lint.stderr}`);

    server.child.kill('SIGTERM');
    assert.equal(await server.exited, 0, server.stderr());
    const live = snapshot(db);
    assert.equal((await cli(['rebuild', '--db', db])).code, 0);
    assert.deepEqual(snapshot(db), live, 'the totals equal a rebuild from the events');
  });

  test('a worker killed with SIGKILL is replaced; nothing acknowledged is lost or counted twice', async (t) => {
    const cleanup = cleanupAfter(t);
    const db = path.join(tempDir(cleanup), 'w.db');
    const server = serverProcess(['--db', db, '--workers', '2']);
    cleanup(() => server.child.kill('SIGKILL'));
    const base = await server.listening;

    const generator = spawn(process.execPath, [
      BIN, 'generate', '--url', `${base}/`, '--rate', '0', '--connections', '16', '--users', '200', '--movies', '20',
      '--duration', '4', '--seed', '11', '--verify',
    ]);
    cleanup(() => generator.kill('SIGKILL'));
    let out = '';
    generator.stdout.on('data', (d) => (out += d));
    generator.stderr.on('data', (d) => (out += d));
    const generated = new Promise<number | null>((resolve) => generator.on('exit', resolve));
    await sleep(1200);
    // Counters of /metrics never go back: what a dead worker counted stays.
    const before = sample((await get(base, '/metrics')).body, 'watchtime_http_requests_total{route="/",method="POST",status="200"}');
    assert.ok(before > 0);
    const [victim] = childrenOf(server.child.pid!);
    process.kill(victim, 'SIGKILL');
    await until('the worker to be replaced', () => /worker \d died \(SIGKILL\)/.test(server.stderr()) && childrenOf(server.child.pid!).length === 2);
    assert.ok(!childrenOf(server.child.pid!).includes(victim));
    const metrics = (await get(base, '/metrics')).body as string;
    assert.equal(sample(metrics, 'watchtime_http_worker_restarts_total'), 1, server.stderr());
    assert.equal(sample(metrics, 'watchtime_http_workers'), 2);
    assert.ok(sample(metrics, 'watchtime_http_requests_total{route="/",method="POST",status="200"}') >= before, 'no counter went back');

    assert.equal(await generated, 0, out);
    assert.match(out, / 0 difference\(s\)/);
    const acknowledged = Number(/^sent (\d+) events/m.exec(out)![1]);
    server.child.kill('SIGTERM');
    assert.equal(await server.exited, 0, server.stderr());
    const conn = new Database(db, { readonly: true });
    const stored = conn.prepare('SELECT count(*) AS n, count(DISTINCT client_id) AS ids FROM events').get();
    conn.close();
    assert.deepEqual(stored, { n: acknowledged, ids: acknowledged }, 'each acknowledged event stored exactly once');
  });

  test('a full queue is 503 with Retry-After; SIGTERM answers and stores every worker\'s queued events', async (t) => {
    const cleanup = cleanupAfter(t);
    const db = path.join(tempDir(cleanup), 'w.db');
    const server = serverProcess(['--db', db, '--workers', '2', '--queue-size', '12', '--flush-ms', '2']);
    cleanup(() => server.child.kill('SIGKILL'));
    const base = await server.listening;
    assert.equal((await post(base, { user: 'a', slug: 'm', at: 10 })).status, 200);

    // Hold the write lock: what is sent next waits in the writer's queue.
    const lock = new Database(db);
    lock.exec('BEGIN IMMEDIATE');
    // A connection each, so over both workers.
    const clients = Array.from({ length: 12 }, () => connection(base));
    cleanup(() => clients.forEach((c) => c.close()));
    const queued = clients.map((c, i) => c.post({ user: `u${i}`, slug: 'm', at: 30 + i }));
    await until('12 events queued', async () => (await get(base, '/readyz')).body.queue?.depth === 12);
    const refused = await post(base, { user: 'late', slug: 'm', at: 1 });
    assert.equal(refused.status, 503);
    assert.equal(refused.body.type, '/problems/queue-full');
    assert.ok(refused.headers.get('retry-after'));

    server.child.kill('SIGTERM');
    await sleep(300);
    lock.exec('ROLLBACK');
    lock.close();
    const answers = await Promise.all(queued);
    assert.deepEqual(answers.map((a) => a.status), Array(12).fill(200));
    assert.equal(await server.exited, 0, server.stderr());
    const conn = new Database(db, { readonly: true });
    assert.equal((conn.prepare('SELECT count(*) AS n FROM events').get() as { n: number }).n, 13);
    conn.close();
  });

  test('workers that all die at once, or stop answering, are started again; the writer stays up', { timeout: 60_000 }, async (t) => {
    const cleanup = cleanupAfter(t);
    const db = path.join(tempDir(cleanup), 'w.db');
    const server = serverProcess(['--db', db, '--workers', '2']);
    cleanup(() => server.child.kill('SIGKILL'));
    const base = await server.listening;
    const first = childrenOf(server.child.pid!);
    for (const pid of first) process.kill(pid, 'SIGKILL');
    await until('both workers to be started again', () => (server.stderr().match(/worker \d started again/g) ?? []).length === 2);
    assert.equal(server.child.exitCode, null, 'the writer is still running');
    assert.equal((await post(base, { user: 'a', slug: 'm', at: 10 })).status, 200);

    // A worker stopped (as if in an endless loop) is found out by the writer's heartbeat, killed and replaced.
    const [stuck] = childrenOf(server.child.pid!);
    process.kill(stuck, 'SIGSTOP');
    await until('the stopped worker to be replaced', () => /has not answered for \d+ s; killing it/.test(server.stderr()) && !childrenOf(server.child.pid!).includes(stuck) && childrenOf(server.child.pid!).length === 2);
    assert.equal((await get(base, '/users/a/watch-time')).body.watchTime, 10);
    server.child.kill('SIGTERM');
    assert.equal(await server.exited, 0, server.stderr());
  });
});
