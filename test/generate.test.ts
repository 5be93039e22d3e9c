// watchtime generate against a real server: it sends, and --verify catches a difference.
import assert from 'node:assert/strict';
import path from 'node:path';
import { describe, test } from 'node:test';
import { ExpectedTotals, Simulation } from '../src/generator/players.ts';
import { cleanupAfter, cli, serve, tempDir } from './helpers.ts';

describe('generate', () => {
  test('the same seed makes the same players; players play, pause, seek and rewind', () => {
    const events = (seed: number) => {
      const simulation = new Simulation({ users: 5, movies: 3, seed });
      return Array.from({ length: 2000 }, (_, i) => simulation.next(i % 5));
    };
    assert.deepEqual(events(7), events(7));
    assert.notDeepEqual(events(7), events(8));
    const steps = { play: 0, pause: 0, seek: 0, rewind: 0 };
    const last = new Map<string, number>();
    for (const { user, slug, at } of events(7)) {
      const key = `${user}/${slug}`;
      const prev = last.get(key);
      if (prev !== undefined) {
        const step = at - prev;
        if (step === 0) steps.pause++;
        else if (step < 0) steps.rewind++;
        else if (step > 120) steps.seek++;
        else steps.play++;
      }
      last.set(key, at);
    }
    for (const [kind, count] of Object.entries(steps)) assert.ok(count > 20, `${kind}: ${count}`);
    assert.ok(steps.play > steps.pause + steps.seek + steps.rewind, 'mostly playing');
  });

  test('expected totals follow the rule', () => {
    const expected = new ExpectedTotals({ accounting: 'progress', maxStep: 120 });
    for (const at of [10, 20, 20, 900, 910, 300, 330]) expected.apply({ user: 'u', slug: 'm', at });
    expected.apply({ user: 'v', slug: 'm', at: 5 });
    assert.deepEqual(expected.users.get('u'), { watchTime: 60, events: 7, pairs: 1 });
    assert.deepEqual(expected.movies.get('m'), { watchTime: 65, events: 8, pairs: 2 });
  });

  test('sends to a server and verifies every total; a wrong rule shows as differences', async (t) => {
    const cleanup = cleanupAfter(t);
    const server = await serve(cleanup, path.join(tempDir(cleanup), 'w.db'));
    const args = ['generate', '--url', `${server.url}/`, '--duration', '2', '--rate', '1500', '--users', '50', '--movies', '8', '--verify'];
    const run = await cli([...args, '--seed', '11']);
    assert.equal(run.code, 0, run.stdout + run.stderr);
    const sent = Number(/^sent (\d+) events/.exec(run.stdout)![1]);
    // Events were sent; how many a second depends on how busy the machine is, which is for the benchmark.
    assert.ok(sent > 100, run.stdout);
    assert.match(run.stdout, /verify: 50 users, 8 movies, \d+ pairs checked, 0 difference\(s\)/);
    assert.match(run.stderr, /seed 11, 50 users, 8 movies, 1500 events\/s/);

    // Judged under sum while the server counts progress: verify must notice.
    const wrong = await cli([...args, '--seed', '12', '--accounting', 'sum']);
    assert.equal(wrong.code, 1);
    assert.match(wrong.stdout, /[1-9]\d* difference\(s\)/);
    assert.match(wrong.stdout, /watchTime is \d+, expected \d+/);
  });
});
