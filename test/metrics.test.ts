// GET /metrics: what the server counts, in Prometheus's text format, and
// names that pass `promtool check metrics` (Debian's prometheus package).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { describe, test } from 'node:test';
import { cleanupAfter, get, post, request, serve, tempDir } from './helpers.ts';
import { needDebianCommand } from './support/debian.ts';

/** The value of one sample line, e.g. `watchtime_events_accepted_total` or `name{label="x"}`. */
function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

describe('metrics', () => {
  test('count events, refusals, batches, requests and the database, and pass promtool', async (t) => {
    const cleanup = cleanupAfter(t);
    const base = (await serve(cleanup, path.join(tempDir(cleanup), 'w.db'))).url;
    await post(base, [{ user: 'a', slug: 'm', at: 10, id: 'x1' }, { user: 'b', slug: 'm', at: 20 }]);
    await post(base, { user: 'a', slug: 'm', at: 10, id: 'x1' });
    assert.equal((await post(base, { user: 'a', slug: 'm', at: -1 })).status, 400);
    assert.equal((await post(base, 'x', 'text/plain')).status, 415);
    await get(base, '/movies/m/watch-time');
    await get(base, '/users/nobody/watch-time');

    const answer = await request(`${base}/metrics`);
    assert.equal(answer.status, 200);
    assert.match(answer.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
    const text = String(answer.body);
    assert.equal(sample(text, 'watchtime_events_accepted_total'), 2);
    assert.equal(sample(text, 'watchtime_events_duplicate_total'), 1);
    assert.equal(sample(text, 'watchtime_ingest_rejected_requests_total{reason="invalid-event"}'), 1);
    assert.equal(sample(text, 'watchtime_ingest_rejected_requests_total{reason="unsupported-media-type"}'), 1);
    assert.equal(sample(text, 'watchtime_batch_size_events_count'), 2);
    assert.equal(sample(text, 'watchtime_flush_duration_seconds_count'), 2);
    assert.equal(sample(text, 'watchtime_queue_depth_events'), 0);
    assert.ok(sample(text, 'watchtime_database_size_bytes')! > 0);
    assert.equal(sample(text, 'watchtime_http_requests_total{route="/events",method="POST",status="200"}'), 2);
    assert.equal(sample(text, 'watchtime_http_requests_total{route="/movies/{slug}/watch-time",method="GET",status="200"}'), 1);
    assert.equal(sample(text, 'watchtime_http_requests_total{route="/users/{user}/watch-time",method="GET",status="404"}'), 1);
    // Refusals are counted too, with their status, once answered.
    assert.equal(sample(text, 'watchtime_http_requests_total{route="/events",method="POST",status="400"}'), 1);
    assert.equal(sample(text, 'watchtime_http_requests_total{route="/events",method="POST",status="415"}'), 1);
    assert.equal(sample(text, 'watchtime_http_request_duration_seconds_count{route="/events",method="POST"}'), 4);
    // A histogram's buckets count every answer at or under their bound: they never fall, and +Inf is the count.
    const lookup = 'route="/movies/{slug}/watch-time",method="GET"';
    const buckets = text
      .split('\n')
      .filter((l) => l.startsWith(`watchtime_http_request_duration_seconds_bucket{${lookup},`))
      .map((l) => Number(l.split(' ')[1]));
    assert.equal(buckets.length, 12);
    assert.deepEqual(buckets, [...buckets].sort((a, b) => a - b));
    assert.equal(buckets.at(-1), sample(text, `watchtime_http_request_duration_seconds_count{${lookup}}`));
    assert.equal(buckets.at(-1), 1);
    assert.ok(sample(text, 'process_resident_memory_bytes')! > 0, "Node's process metrics are there too");

    needDebianCommand('promtool', 'prometheus');
    // Only our families: prom-client's own nodejs_active_*_total gauges break a rule that is theirs to fix.
    const ours = text.split('\n').filter((l) => /^(# (HELP|TYPE) )?watchtime_/.test(l)).join('\n') + '\n';
    const lint = spawnSync('promtool', ['check', 'metrics'], { input: ours, encoding: 'utf8' });
    assert.equal(lint.status, 0, `promtool: ${lint.stdout}${lint.stderr}`);
  });
});
