// A soak: the player simulator against a server for minutes, then --verify.
// Passes when there is no difference, the server's memory stays flat and the
// WAL stays bounded (it is checkpointed under constant writes).
//   npm run soak -- [--duration 120] [--rate 3000]
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { BIN, serverProcess } from '../helpers.ts';

const arg = (name: string, fallback: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : fallback;
};
const duration = arg('duration', 120);
const rate = arg('rate', 3000);
/** Memory is flat when the last third's median is within this factor of the first third's. */
const RSS_GROWTH_LIMIT = 1.25;
/** The WAL is checkpointed at 1000 pages (4 MiB); allow a burst past that. */
const WAL_LIMIT = 32 * 1024 * 1024;

const rssOf = (pid: number) => {
  const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return match ? Number(match[1]) * 1024 : 0;
};
const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] ?? 0;
const mib = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(1)} MiB`;

const dir = mkdtempSync(path.join(tmpdir(), 'watchtime-soak-'));
const db = path.join(dir, 'soak.db');
const server = serverProcess(['--db', db]);
let failed = false;
try {
  const url = await server.listening;
  const samples: { rss: number; wal: number }[] = [];
  const sampler = setInterval(() => {
    const wal = existsSync(`${db}-wal`) ? statSync(`${db}-wal`).size : 0;
    samples.push({ rss: rssOf(server.child.pid!), wal });
  }, 2000);

  const generator = spawn(
    process.execPath,
    [BIN, 'generate', '--url', `${url}/`, '--duration', String(duration), '--rate', String(rate),
      '--users', '2000', '--movies', '200', '--connections', '16', '--verify'],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  let report = '';
  generator.stdout.on('data', (d) => (report += d));
  const code = await new Promise<number | null>((resolve) => generator.on('exit', resolve));
  clearInterval(sampler);
  process.stdout.write(report);

  const warm = samples.slice(Math.floor(samples.length / 10));
  const third = Math.max(1, Math.floor(warm.length / 3));
  const early = median(warm.slice(0, third).map((s) => s.rss));
  const late = median(warm.slice(-third).map((s) => s.rss));
  const peakRss = Math.max(...samples.map((s) => s.rss));
  const peakWal = Math.max(...samples.map((s) => s.wal));
  console.log(`rss: early median ${mib(early)}, late median ${mib(late)} (x${(late / early).toFixed(2)}), peak ${mib(peakRss)}`);
  console.log(`wal: peak ${mib(peakWal)}, last ${mib(samples.at(-1)?.wal ?? 0)} over ${samples.length} samples`);

  const checks: [string, boolean][] = [
    ['the simulator verified every total (exit 0)', code === 0],
    [`memory flat (late/early below ${RSS_GROWTH_LIMIT})`, late / early < RSS_GROWTH_LIMIT],
    [`WAL bounded (peak below ${mib(WAL_LIMIT)})`, peakWal < WAL_LIMIT],
  ];
  for (const [name, ok] of checks) console.log(`${ok ? 'ok  ' : 'FAIL'} ${name}`);
  failed = checks.some(([, ok]) => !ok);
} finally {
  server.child.kill('SIGTERM');
  await server.exited;
  rmSync(dir, { recursive: true, force: true });
}
process.exitCode = failed ? 1 : 0;
