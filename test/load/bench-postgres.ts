// PostgreSQL mode against SQLite mode in the same run: events a second, the
// CPU an event of the servers and of every PostgreSQL process (the backends,
// and the processes that ended meanwhile, from the postmaster's reaped time),
// and WAL bytes an event; one server with the database 1 ms away each way
// (a delaying TCP proxy), three servers, and three with every event on one
// movie. Everything unpinned: servers, PostgreSQL and wrk share the cores.
// Players are 100,000 users over 500 movies; the first run of each database
// meets every pair once, then VACUUM ANALYZE, as autovacuum does within its
// first minute, which these runs are shorter than.
//   npm run bench -- --phases postgres [--duration 5] [--warmup 5]
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import pg from 'pg';
import { procStat, serverProcess } from '../helpers.ts';
import { delayProxy, viaProxy } from '../support/delay-proxy.ts';
import { startPostgres } from '../support/postgres.ts';
import { cpuSeconds, endedChildrenCpu, processTree, wrk } from './wrk.ts';

export interface PostgresBenchOptions {
  /** A folder for the SQLite mode's database. */
  dir: string;
  duration: number;
  warmup: number;
  /** Connections of the single-event runs (batches use 8). */
  crowd: number;
}

const USERS = 100_000;
const MOVIES = 500;
const BATCH_CONNECTIONS = 8;
const DELAY_MS = 1;

type Load = 'batch' | 'single';
interface Figure {
  rate: number;
  /** CPU µs an event (batches) or a request (single events). */
  serverUs: number;
  postgresUs: number;
  walBytes: number;
  failed: number;
  p99Ms: number;
}

const isPostgres = (pid: number | string) => {
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === 'postgres';
  } catch {
    return false; // gone meanwhile
  }
};

/** CPU seconds of PostgreSQL so far: its live processes, and those that ended, from the postmaster's reaped time. */
function postgresCpu(): number {
  const pids = readdirSync('/proc').filter((name) => /^\d+$/.test(name) && isPostgres(name)).map(Number);
  let reaped = 0;
  for (const pid of pids) {
    try {
      // The postmaster: the one whose parent is not PostgreSQL.
      if (!isPostgres(procStat(pid)[1])) reaped += endedChildrenCpu(pid);
    } catch {
      // gone meanwhile
    }
  }
  return cpuSeconds(pids) + reaped;
}

export async function postgresFigures({ dir, duration, warmup, crowd }: PostgresBenchOptions): Promise<{ lines: string[]; targets: string[] }> {
  const database = await startPostgres();
  const admin = async <T>(url: string, work: (client: pg.Client) => Promise<T>) => {
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    try {
      return await work(client);
    } finally {
      await client.end();
    }
  };
  const walPosition = (url: string) =>
    admin(url, async (c) => Number((await c.query("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0') AS n")).rows[0].n));
  let start = 0;

  /** Servers on one database; each load once to warm up, then measured. */
  async function measure(db: string, count: number, options: { movies?: number; postgres?: string } = {}): Promise<Record<Load, Figure>> {
    const servers = await Promise.all(
      Array.from({ length: count }, async () => {
        const server = serverProcess(['--db', db, '--workers', '1']);
        return { ...server, url: await server.listening };
      }),
    );
    const run = async (load: Load, seconds: number) => {
      const size = load === 'batch' ? 1000 : 1;
      const clients = Math.ceil((load === 'batch' ? BATCH_CONNECTIONS : crowd) / count);
      const runs = await Promise.all(
        servers.map((s, i) =>
          // Each server a third of the players: a player's heartbeats are seconds apart, not on two servers at once.
          wrk(s.url, 'ingest.lua', [String(size), String(start + i * Math.floor(USERS / count)), String(options.movies ?? MOVIES), String(USERS)], clients, seconds, true),
        ),
      );
      // Every pair moves on from where the last run left it.
      start += Math.max(...runs.map((r) => r.requests * size));
      return { runs, units: runs.reduce((sum, r) => sum + r.requests * size, 0) };
    };
    try {
      // Warm-up: every pair stored once, and the JIT settled.
      await run('batch', Math.max(2, warmup));
      if (options.postgres) await admin(options.postgres, (c) => c.query('VACUUM ANALYZE'));
      await run('single', warmup);
      const figures = {} as Record<Load, Figure>;
      for (const load of ['batch', 'single'] as const) {
        const serverPids = servers.flatMap((s) => processTree(s.child.pid!));
        const wal = options.postgres ? await walPosition(options.postgres) : 0;
        const before = [cpuSeconds(serverPids), options.postgres ? postgresCpu() : 0];
        const { runs, units } = await run(load, duration);
        const used = [cpuSeconds(serverPids) - before[0], options.postgres ? postgresCpu() - before[1] : 0];
        figures[load] = {
          rate: runs.reduce((sum, r) => sum + (r.requests * (load === 'batch' ? 1000 : 1)) / (r.durationUs / 1e6), 0),
          serverUs: (used[0] * 1e6) / units,
          postgresUs: (used[1] * 1e6) / units,
          walBytes: options.postgres ? ((await walPosition(options.postgres)) - wal) / units : 0,
          failed: runs.reduce((sum, r) => sum + r.non2xx + r.socketErrors, 0),
          p99Ms: Math.max(...runs.map((r) => r.p99Us / 1000)),
        };
      }
      return figures;
    } finally {
      for (const server of servers) {
        server.child.kill('SIGTERM');
        await server.exited;
      }
    }
  }

  const lines: string[] = [];
  const targets: string[] = [];
  try {
    const sqlite = await measure(path.join(dir, 'postgres-baseline.db'), 1);
    const one = await database.newDatabase();
    const direct = await measure(one, 1, { postgres: one });
    const far = await database.newDatabase();
    const proxy = await delayProxy({ host: '127.0.0.1', port: Number(new URL(far).port) }, DELAY_MS);
    const delayed = await measure(viaProxy(far, proxy), 1, { postgres: far }).finally(() => proxy.close());
    const three = await database.newDatabase();
    const spread = await measure(three, 3, { postgres: three });
    const hot = await database.newDatabase();
    const hotMovie = await measure(hot, 3, { postgres: hot, movies: 1 });

    const unit = (load: Load) => (load === 'batch' ? 'ev/s' : 'req/s');
    const per = (load: Load) => (load === 'batch' ? 'an event' : 'a request');
    const row = (label: string, load: Load, f: Figure) =>
      `  ${label.padEnd(36)} ${Math.round(f.rate).toLocaleString('en').padStart(7)} ${unit(load)}, p99 ${f.p99Ms.toFixed(0)} ms; ` +
      `CPU ${per(load)}: server ${f.serverUs.toFixed(1)} µs` +
      (f.postgresUs > 0 ? `, PostgreSQL ${f.postgresUs.toFixed(1)} µs; WAL ${Math.round(f.walBytes)} B an event` : '') +
      (f.failed > 0 ? `; ${f.failed} failed` : '');
    lines.push(
      `PostgreSQL against SQLite mode, unpinned, ${duration} s a run, ${USERS.toLocaleString('en')} users over ${MOVIES} movies ` +
        `(1,000-event batches on ${BATCH_CONNECTIONS} connections, single events on ${crowd}):`,
    );
    for (const load of ['batch', 'single'] as const) {
      lines.push(load === 'batch' ? ' 1,000-event batches:' : ' single events:');
      lines.push(row('SQLite mode', load, sqlite[load]));
      lines.push(row('PostgreSQL, 1 server', load, direct[load]));
      lines.push(row(`PostgreSQL, 1 server, +${DELAY_MS} ms each way`, load, delayed[load]));
      lines.push(row('PostgreSQL, 3 servers', load, spread[load]));
      lines.push(row('PostgreSQL, 3 servers, one movie', load, hotMovie[load]));
    }
    const mark = (ok: boolean) => (ok ? 'met   ' : 'MISSED');
    const ratio = (a: number, b: number) => (a / b).toFixed(2);
    targets.push(
      `  ${mark(direct.batch.postgresUs <= 20)} PostgreSQL CPU <= 20 µs an event in batches (${direct.batch.postgresUs.toFixed(1)})`,
      `  ${mark(direct.batch.serverUs <= 1.5 * sqlite.batch.serverUs)} server CPU in batches <= 1.5 x SQLite mode's ` +
        `(${ratio(direct.batch.serverUs, sqlite.batch.serverUs)})`,
      `  ${mark(direct.single.postgresUs <= 40)} PostgreSQL CPU <= 40 µs a single event at ${crowd} connections (${direct.single.postgresUs.toFixed(1)})`,
      `  ${mark(direct.batch.rate >= 0.4 * sqlite.batch.rate)} 1 server on PostgreSQL >= 0.4 of SQLite mode for batches (${ratio(direct.batch.rate, sqlite.batch.rate)})`,
      `  ${mark(direct.single.rate >= 0.7 * sqlite.single.rate)} 1 server on PostgreSQL >= 0.7 of SQLite mode for single events ` +
        `(${ratio(direct.single.rate, sqlite.single.rate)})`,
    );
    for (const load of ['batch', 'single'] as const) {
      const name = load === 'batch' ? 'batches' : 'single events';
      targets.push(
        `  ${mark(spread[load].rate >= 0.9 * direct[load].rate)} 3 servers >= 0.9 of 1, ${name} (${ratio(spread[load].rate, direct[load].rate)}; ` +
          `one movie ${ratio(hotMovie[load].rate, direct[load].rate)})`,
        `  ${mark(hotMovie[load].rate >= 0.9 * direct[load].rate)} 3 servers on one movie >= 0.9 of 1 server, ${name}`,
        `  ${mark(delayed[load].rate >= 0.7 * direct[load].rate)} +${DELAY_MS} ms each way keeps >= 0.7 of the rate, ${name} ` +
          `(${ratio(delayed[load].rate, direct[load].rate)})`,
      );
    }
  } finally {
    await database.destroy();
  }
  return { lines, targets };
}
