// Structured logs (pino), from a real server process whose stderr is not a
// terminal, so one JSON object a line: the settings at start, a debug line
// for each request refused for the client's fault, carrying the request id
// of its answer, none for accepted events; --log-level.
import assert from 'node:assert/strict';
import path from 'node:path';
import { describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { cleanupAfter, freePort, get, post, serverProcess, tempDir } from './helpers.ts';

const lines = (stderr: string) =>
  stderr
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>);

describe('logs', () => {
  test('a start line with the settings, a line a refused request with its id, none an accepted event', async (t) => {
    const cleanup = cleanupAfter(t);
    const server = serverProcess(['--db', path.join(tempDir(cleanup), 'w.db'), '--batch-size', '500', '--log-level', 'debug']);
    cleanup(() => server.child.kill('SIGKILL'));
    const base = await server.listening;
    const start = lines(server.stderr()).find((l) => String(l.msg).startsWith('listening on'))!;
    assert.equal(start.level, 30);
    assert.equal(start.accounting, 'progress');
    assert.equal(start.maxStep, 120);
    assert.equal(start.batchSize, 500);
    assert.equal(start.ingestToken, false);
    // A new database: each migration applied is a line of its own, before the start line.
    const migrations = lines(server.stderr()).filter((l) => /^applied schema migration/.test(String(l.msg)));
    assert.deepEqual(migrations.map((l) => l.version), [1, 2, 3, 4, 5]);
    assert.ok(migrations.every((l) => l.level === 30 && typeof l.ms === 'number'));

    const before = lines(server.stderr()).length;
    for (let i = 0; i < 20; i++) assert.equal((await post(base, { user: 'a', slug: 'm', at: i })).status, 200);
    assert.equal((await get(base, '/users/nobody/watch-time')).status, 404);
    await sleep(100);
    assert.equal(lines(server.stderr()).length, before, 'no line for accepted events or for a lookup that found nothing');

    const theirs = await post(base, { user: 'a', slug: 'm', at: -5 }, 'application/json', { 'x-request-id': 'client-42' });
    assert.equal(theirs.status, 400);
    assert.equal(theirs.headers.get('x-request-id'), 'client-42');
    assert.equal(theirs.body.instance, 'client-42');
    const ours = await post(base, 'x', 'text/plain', { 'x-request-id': 'not a usable id!' });
    const id = ours.headers.get('x-request-id');
    assert.match(id ?? '', /^[a-z0-9]+-[a-z0-9]+$/, 'an unusable id is replaced by one of ours');
    assert.equal(ours.body.instance, id);
    await sleep(100);
    const refused = lines(server.stderr()).slice(before);
    assert.deepEqual(
      refused.map((l) => [l.level, l.msg, l.reqId, l.status, l.type]),
      [
        // A client's mistake is a debug line: the metrics count them all, and a scanner cannot flood the log.
        [20, 'request refused', 'client-42', 400, 'invalid-event'],
        [20, 'request refused', id, 415, 'unsupported-media-type'],
      ],
    );
  });

  test('--log-level warn leaves out the start line and the clients\' refusals', async (t) => {
    const cleanup = cleanupAfter(t);
    const port = await freePort();
    const server = serverProcess(['--db', path.join(tempDir(cleanup), 'w.db'), '--log-level', 'warn', '--port', String(port)]);
    cleanup(() => server.child.kill('SIGKILL'));
    server.listening.catch(() => undefined); // never says so at this level
    const base = `http://127.0.0.1:${port}`;
    for (let tries = 0; ; tries++) {
      const up = await get(base, '/livez').then(() => true, () => false);
      if (up) break;
      assert.ok(tries < 100, `the server did not start: ${server.stderr()}`);
      await sleep(50);
    }
    assert.equal((await post(base, { user: 'a', slug: 'm', at: -5 })).status, 400);
    await sleep(100);
    assert.deepEqual(lines(server.stderr()).map((l) => [l.level, l.msg]), []);
  });
});
