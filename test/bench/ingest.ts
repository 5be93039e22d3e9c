// Single-event ingest under load: watchtime against the bare baseline, in the
// same run, each in its own process, driven by autocannon.
//   npm run bench -- [--duration 10] [--connections 64]
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';

const arg = (name: string, fallback: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : fallback;
};
const duration = arg('duration', 10);
const connections = arg('connections', 64);

const BIN = fileURLToPath(new URL('../../bin/watchtime', import.meta.url));
const BARE = fileURLToPath(new URL('./bare-server.ts', import.meta.url));
const TSX = fileURLToPath(new URL('../../node_modules/tsx/dist/cli.mjs', import.meta.url));

async function start(args: string[]): Promise<{ child: ChildProcess; url: string }> {
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  const url = await new Promise<string>((resolve, reject) => {
    child.stderr!.on('data', (d) => {
      stderr += d;
      const match = /listening on 127\.0\.0\.1:(\d+)/.exec(stderr);
      if (match) resolve(`http://127.0.0.1:${match[1]}`);
    });
    child.on('exit', () => reject(new Error(`server exited: ${stderr}`)));
  });
  return { child, url };
}

async function stop(child: ChildProcess) {
  const exited = new Promise((resolve) => child.on('exit', resolve));
  child.kill('SIGTERM');
  await exited;
}

/** Heartbeats from 10,000 users over 500 movies, each pair moving forward. */
function heartbeatBody() {
  let n = 0;
  return () => {
    n += 1;
    return JSON.stringify({ user: `user-${n % 10_000}`, slug: `movie-${n % 500}`, at: Math.floor(n / 10_000) * 5 });
  };
}

async function load(url: string) {
  const next = heartbeatBody();
  const result = await autocannon({
    url,
    connections,
    duration,
    requests: [
      {
        method: 'POST',
        path: '/',
        headers: { 'content-type': 'application/json' },
        setupRequest: (req) => ({ ...req, body: next() }),
      },
    ],
  });
  return {
    rps: result.requests.average,
    p50: result.latency.p50,
    p99: result.latency.p99,
    errors: result.errors + result.timeouts + result.non2xx,
  };
}

const dir = mkdtempSync(path.join(tmpdir(), 'watchtime-bench-'));
try {
  const bare = await start([TSX, BARE]);
  const baseline = await load(bare.url);
  await stop(bare.child);

  const served = await start([BIN, 'serve', '--host', '127.0.0.1', '--port', '0', '--db', path.join(dir, 'bench.db')]);
  const watchtime = await load(served.url);
  await stop(served.child);

  const row = (name: string, r: typeof baseline) =>
    `${name.padEnd(22)} ${r.rps.toFixed(0).padStart(8)} req/s  p50 ${String(r.p50).padStart(3)} ms  p99 ${String(r.p99).padStart(3)} ms  errors ${r.errors}`;
  console.log(`single-event POST /, ${connections} connections, ${duration} s each, ${cpus().length} cores (${cpus()[0].model})`);
  console.log(row('bare node:http', baseline));
  console.log(row('watchtime', watchtime));
  console.log(`ratio watchtime / bare: ${(watchtime.rps / baseline.rps).toFixed(2)}`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
