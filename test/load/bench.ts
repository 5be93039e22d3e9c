// The benchmark. In one run, each server in its own process, driven by autocannon:
// watchtime against a bare node:http server that only parses the body, for
// single-event ingest, 1,000-event batches and reads; then the rebuild rate
// on 1,000,000 stored events, bytes on disk per event and peak RSS.
//   npm run bench -- [--duration 10] [--connections 64] [--events 1000000]
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';
import { SqliteStore } from '../../src/store/sqlite.ts';
import { childServer, cli, serverProcess } from '../helpers.ts';

const arg = (name: string, fallback: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : fallback;
};
const duration = arg('duration', 10);
const connections = arg('connections', 64);
const rebuildEvents = arg('events', 1_000_000);

const BARE = fileURLToPath(new URL('./bare-server.ts', import.meta.url));
const TSX = fileURLToPath(new URL('../../node_modules/tsx/dist/cli.mjs', import.meta.url));
const USERS = 10_000;
const MOVIES = 500;

async function start(server: ReturnType<typeof childServer>) {
  return { ...server, url: await server.listening };
}

async function stop(server: ReturnType<typeof childServer>) {
  server.child.kill('SIGTERM');
  await server.exited;
}

/** Heartbeats from USERS users over MOVIES movies; each pair moves forward 5 s a round. */
function heartbeats() {
  let n = 0;
  return () => {
    const event = { user: `user-${n % USERS}`, slug: `movie-${n % MOVIES}`, at: Math.floor(n / USERS) * 5 };
    n += 1;
    return event;
  };
}

type Phase = 'single' | 'batch' | 'read';

function requestsFor(phase: Phase): autocannon.Request[] {
  if (phase === 'read') {
    let n = 0;
    const paths = [
      (k: number) => `/users/user-${k}/watch-time`,
      (k: number) => `/movies/movie-${k % MOVIES}/watch-time`,
      (k: number) => `/users/user-${k}/movies/movie-${k % MOVIES}/latest-moment`,
    ];
    return [{ method: 'GET', setupRequest: (req) => ({ ...req, path: paths[n % 3](n++ % USERS) }) }];
  }
  const next = heartbeats();
  const size = phase === 'single' ? 1 : 1000;
  return [
    {
      method: 'POST',
      path: '/',
      headers: { 'content-type': 'application/json' },
      setupRequest: (req) => {
        const events = Array.from({ length: size }, next);
        return { ...req, body: JSON.stringify(size === 1 ? events[0] : events) };
      },
    },
  ];
}

interface Figures {
  rps: number;
  p50: number;
  p99: number;
  errors: number;
}

async function load(url: string, phase: Phase): Promise<Figures> {
  const result = await autocannon({ url, connections, duration, requests: requestsFor(phase) });
  return {
    rps: result.requests.average,
    p50: result.latency.p50,
    p99: result.latency.p99,
    errors: result.errors + result.timeouts + result.non2xx,
  };
}

const peakRss = (pid: number) => Number(/VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) * 1024;

const dir = mkdtempSync(path.join(tmpdir(), 'watchtime-bench-'));
try {
  const phases: Phase[] = ['single', 'batch', 'read'];
  const bare = await start(childServer(process.execPath, [TSX, BARE]));
  const baseline: Record<string, Figures> = {};
  for (const phase of phases) baseline[phase] = await load(bare.url, phase);
  await stop(bare);

  const served = await start(serverProcess(['--db', path.join(dir, 'served.db')]));
  const measured: Record<string, Figures> = {};
  for (const phase of phases) measured[phase] = await load(served.url, phase);
  const rss = peakRss(served.child.pid!);
  await stop(served);

  // 1,000,000 stored events for rebuild and size, written through the store as the server would.
  const file = path.join(dir, 'rebuild.db');
  const store = new SqliteStore(file);
  store.initSettings({ accounting: 'progress', maxStep: 120 });
  const next = heartbeats();
  for (let done = 0; done < rebuildEvents; done += 10_000) {
    const receivedAt = Date.now();
    store.ingest(Array.from({ length: Math.min(10_000, rebuildEvents - done) }, () => ({ ...next(), receivedAt })));
  }
  store.checkpoint();
  store.close();
  const bytesPerEvent = statSync(file).size / rebuildEvents;
  const rebuilt = await cli(['rebuild', '--db', file]);
  const rebuildRate = Number(/\((\d+) events\/s/.exec(rebuilt.stdout)?.[1] ?? 0);

  const ms = (v: number) => `${v} ms`.padStart(6);
  const mark = (ok: boolean) => (ok ? 'met   ' : 'MISSED');
  console.log(`watchtime benchmark: ${connections} connections, ${duration} s a phase, ${cpus().length} cores (${cpus()[0].model}), Node ${process.version}`);
  console.log('phase                      bare node:http              watchtime                   ratio');
  for (const phase of phases) {
    const unit = phase === 'batch' ? 1000 : 1;
    const b = baseline[phase];
    const w = measured[phase];
    const rate = (f: Figures) => `${Math.round(f.rps * unit).toLocaleString('en')} ${unit > 1 ? 'ev/s' : 'req/s'}`.padEnd(14);
    console.log(
      `${`${phase === 'batch' ? 'batch (1,000 events)' : phase === 'single' ? 'single-event ingest' : 'reads (3 lookups)'}`.padEnd(26)} ` +
        `${rate(b)} p50${ms(b.p50)} p99${ms(b.p99)}   ${rate(w)} p50${ms(w.p50)} p99${ms(w.p99)}   ${(w.rps / b.rps).toFixed(2)}` +
        (w.errors + b.errors > 0 ? `  (errors: bare ${b.errors}, watchtime ${w.errors})` : ''),
    );
  }
  console.log(`rebuild of ${rebuildEvents.toLocaleString('en')} events: ${rebuildRate.toLocaleString('en')} events/s`);
  console.log(`bytes on disk per event: ${bytesPerEvent.toFixed(1)} (${USERS} users, ${MOVIES} movies, no client ids)`);
  console.log(`server peak RSS: ${(rss / 1024 / 1024).toFixed(0)} MB`);
  console.log('targets:');
  const single = measured.single;
  console.log(`  ${mark(single.rps / baseline.single.rps >= 0.8 && single.p99 < 15)} single-event ingest >= 0.8 of bare, p99 < 15 ms`);
  console.log(`  ${mark(measured.batch.rps * 1000 >= 250_000)} batch ingest >= 250,000 events/s`);
  console.log(`  ${mark(measured.read.rps / baseline.read.rps >= 0.8)} reads >= 0.8 of bare`);
  console.log(`  ${mark(rebuildRate >= 500_000)} rebuild >= 500,000 events/s`);
  console.log(`  ${mark(bytesPerEvent <= 80)} <= 80 bytes per event on disk`);
  console.log(`  ${mark(rss < 200 * 1024 * 1024)} server RSS < 200 MB`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
