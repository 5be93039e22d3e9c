// GET /metrics: what the server counts, in Prometheus's text format, and
// names that pass `promtool check metrics` (Debian's prometheus package).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
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
    // What alerts use exists from the start, at 0, before anything happened.
    const fresh = String((await request(`${base}/metrics`)).body);
    for (const series of [
      'watchtime_flush_failures_total',
      'watchtime_ingest_rejected_requests_total{reason="storage-unavailable"}',
      'watchtime_ingest_rejected_events_total{reason="queue-full"}',
      'watchtime_log_lines_dropped_total',
      'watchtime_events_accepted_total',
    ]) {
      assert.equal(sample(fresh, series), 0, series);
    }
    assert.equal(sample(fresh, 'watchtime_queue_capacity_events'), 100_000);
    assert.equal(sample(fresh, 'watchtime_rebuild_running'), 0);
    assert.equal(sample(fresh, 'watchtime_rebuild_last_swap_timestamp_seconds'), 0);
    assert.ok(fresh.includes(`watchtime_build_info{version="0.1.0",node="${process.version}"} 1`));
    await post(base, [{ user: 'a', slug: 'm', at: 10, id: 'x1' }, { user: 'b', slug: 'm', at: 20 }]);
    await post(base, { user: 'a', slug: 'm', at: 10, id: 'x1' });
    assert.equal((await post(base, [{ user: 'a', slug: 'm', at: -1 }, { user: 'a', slug: 'm', at: 1 }, {}])).status, 400);
    assert.equal((await post(base, 'x', 'text/plain')).status, 415);
    await get(base, '/movies/m/watch-time');
    await get(base, '/users/nobody/watch-time');
    // A method the parser knows but the server does not serve: one label value for all such.
    const { port } = new URL(base);
    await new Promise<void>((resolve) => {
      const socket = net.connect(Number(port), '127.0.0.1', () => socket.write('PROPFIND /nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'));
      socket.on('data', () => undefined);
      socket.on('close', () => resolve());
    });

    const answer = await request(`${base}/metrics`);
    assert.equal(answer.status, 200);
    assert.match(answer.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
    const text = String(answer.body);
    assert.equal(sample(text, 'watchtime_events_accepted_total'), 2);
    assert.equal(sample(text, 'watchtime_events_duplicate_total'), 1);
    assert.equal(sample(text, 'watchtime_ingest_rejected_requests_total{reason="invalid-event"}'), 1);
    assert.equal(sample(text, 'watchtime_ingest_rejected_events_total{reason="invalid-event"}'), 3, 'a refused batch counts its events');
    assert.equal(sample(text, 'watchtime_flush_sync_seconds_count'), 2);
    assert.equal(sample(text, 'watchtime_http_requests_total{route="other",method="other",status="404"}'), 1);
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
    // The whole answer, Node's process metrics included.
    const lint = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
    assert.equal(lint.status, 0, `promtool: ${lint.stdout}${lint.stderr}`);

    // The alerting rules the docs give: valid, and every watchtime series they use is one the server exports.
    const rules = fileURLToPath(new URL('../docs/alerts.yml', import.meta.url));
    const checked = spawnSync('promtool', ['check', 'rules', rules], { encoding: 'utf8' });
    assert.equal(checked.status, 0, `promtool: ${checked.stdout}${checked.stderr}`);
    for (const name of new Set(readFileSync(rules, 'utf8').match(/watchtime_[a-z_]+/g))) {
      assert.match(text, new RegExp(`^${name}[{ ]`, 'm'), `alerts.yml uses ${name}, which /metrics does not have`);
    }
  });
});
