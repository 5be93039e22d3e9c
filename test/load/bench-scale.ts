// The scale benchmark: the same measurements on a platform-sized database and
// on a small one, in one run, so that each figure is a ratio that shows whether
// a cost grows with the data.
//   npm run bench:scale -- [--events 10000000] [--users 1000000] [--duration 5] [--connections 32] [--rounds 3]
// Large: --events events from --users users (ten events a pair). Small: a
// hundredth of the events from 1,000 users. For each: rebuild rate and peak
// RSS, server start-up, 1,000-event-batch ingest, the server's peak RSS,
// bytes on disk per event; then reads and single events, pinned with wrk as
// in npm run bench, in alternating rounds; then, on the large one, ingest
// while `watchtime rebuild` runs beside the server; last, on both, the floor
// under batch ingest: SQLite alone, with none of watchtime's code, doing an
// event's reads, then its writes. Every server is `serve --workers 1`, one
// process, so that the figures compare with runs from before --workers.
import { closeSync, fdatasyncSync, mkdtempSync, openSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import path from 'node:path';
import autocannon from 'autocannon';
import Database from 'better-sqlite3';
import { namedQueries } from '../../src/store/sql-files.ts';
import { cli, serveArgs, serverProcess } from '../helpers.ts';
import { followAll, followerLine, type FollowerFigures } from './follower-rate.ts';
import { heartbeats, pairMembers, population, randomPairs, writePopulation, type Population } from './population.ts';
import { median, need, startPinned, wrk } from './wrk.ts';

const arg = (name: string, fallback: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : fallback;
};
const events = arg('events', 10_000_000);
const users = arg('users', 1_000_000);
const duration = arg('duration', 5);
const connections = arg('connections', 32);
const rounds = arg('rounds', 3);
/** As in npm run bench: reads at 64 connections, single events at 64 and at 256. */
const READ_CONNECTIONS = 64;
const SINGLE_CONNECTIONS = [64, 256] as const;
need('wrk', 'wrk');
need('taskset', 'util-linux');

interface Figures {
  rebuildRate: number;
  rebuildRssMb: number;
  follower: FollowerFigures;
  startMs: number;
  batch: number;
  serverRssMb: number;
  bytesPerEvent: number;
}

const peakRssMb = (pid: number) =>
  Number(/VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) / 1024;

/** `count` lines written to `file`, the n-th from `line(n)`. */
function writeLines(file: string, count: number, line: (n: number) => string) {
  writeFileSync(file, `${Array.from({ length: count }, (_, n) => line(n)).join('\n')}\n`);
}

/** The lookups' paths, as players ask for them: one in six names a user that does not exist. */
function writeLookups(file: string, p: Population) {
  const next = heartbeats(p, 7);
  writeLines(file, 1_000_000, (n) => {
    const { user, slug } = next();
    const paths = [`/users/${user}/watch-time`, `/movies/${slug}/watch-time`, `/users/${user}/movies/${slug}/latest-moment`];
    return n % 6 === 5 ? `/users/nobody-${n}/watch-time` : paths[n % 3];
  });
}

/** Single events, the bodies of POST /, one a line: heartbeats of random pairs of the population. */
function writeHeartbeats(file: string, p: Population) {
  const next = heartbeats(p, 11);
  writeLines(file, 1_000_000, () => JSON.stringify(next()));
}

/** A file per database: `.small` and `.large`. */
type PerDatabase = { small: string; large: string };

/** How far the phases so far have replayed each file of lines, so that the next goes on from there. */
const replayed = new Map<string, number>();

/**
 * A phase measured as npm run bench measures: both servers up, pinned to
 * core 0 in turn and wrk to core 1, each warmed for a phase, then alternating
 * for the rounds, wrk replaying each database's file of lines as GET paths
 * or as POST bodies (wrk/lines.lua). Right after start-up a server's caches
 * are cold on a large database and warm at once on a small one, which says
 * how fast it warms, not what a request costs. Rates a round, per database.
 */
async function alternating(databases: PerDatabase, lines: PerDatabase, method: 'GET' | 'POST', clients: number) {
  const names = ['small', 'large'] as const;
  const started = await Promise.all(
    names.map(async (name) => ({
      server: await startPinned(process.execPath, serveArgs(['--db', databases[name], '--workers', '1'])),
      lines: lines[name],
      rates: [] as number[],
    })),
  );
  const run = async (i: number) => {
    const s = started[i];
    const from = replayed.get(s.lines) ?? 0;
    const r = await wrk(s.server.url, 'lines.lua', [s.lines, String(from), method], clients, duration);
    // Lookups of unknown names answer 404 by design; an event refused is a failure.
    if (r.socketErrors > 0 || (method === 'POST' && r.non2xx > 0)) {
      throw new Error(`${method}: ${r.non2xx} answers not 2xx, ${r.socketErrors} socket errors`);
    }
    replayed.set(s.lines, from + r.requests);
    return r.requests / (r.durationUs / 1e6);
  };
  for (let i = 0; i < names.length; i++) await run(i);
  for (let round = 0; round < rounds; round++) {
    for (const i of round % 2 === 0 ? [0, 1] : [1, 0]) started[i].rates.push(await run(i));
  }
  const rssMb = started.map(({ server }) => peakRssMb(server.child.pid!));
  for (const { server } of started) {
    server.child.kill('SIGTERM');
    await server.exited;
  }
  return { small: started[0].rates, large: started[1].rates, rssMb: { small: rssMb[0], large: rssMb[1] } };
}

function posts(p: Population, size: number, seed: number): autocannon.Request[] {
  const next = heartbeats(p, seed);
  return [
    {
      method: 'POST',
      path: '/',
      headers: { 'content-type': 'application/json' },
      setupRequest: (req) => {
        const batch = Array.from({ length: size }, next);
        return { ...req, body: JSON.stringify(size === 1 ? batch[0] : batch) };
      },
    },
  ];
}

async function load(url: string, requests: autocannon.Request[], seconds = duration) {
  const result = await autocannon({ url, connections, duration: seconds, requests });
  return { rps: result.requests.average, max: result.latency.max, failed: result.errors + result.timeouts + result.non2xx };
}

async function measure(label: string, file: string, p: Population): Promise<Figures> {
  const written = Date.now();
  writePopulation(file, p);
  console.error(`${label}: ${p.events.toLocaleString('en')} events written in ${((Date.now() - written) / 1000).toFixed(1)} s`);
  const rebuilt = await cli(['rebuild', '--db', file]);
  if (rebuilt.code !== 0) throw new Error(rebuilt.stderr);
  const [, rate, rss] = /\((\d+) events\/s, peak RSS (\d+) MB\)/.exec(rebuilt.stdout)!;
  const bytesPerEvent = statSync(file).size / p.events;
  // The analytics of every event, as a server's follower derives them after a rebuild; the servers below start caught up.
  const follower = await followAll(file);

  const started = Date.now();
  const server = serverProcess(['--db', file, '--workers', '1']);
  const url = await server.listening;
  const startMs = Date.now() - started;
  const batch = (await load(url, posts(p, 1000, 13))).rps * 1000;
  const serverRssMb = peakRssMb(server.child.pid!);
  server.child.kill('SIGTERM');
  await server.exited;
  return { rebuildRate: Number(rate), rebuildRssMb: Number(rss), startMs, batch, serverRssMb, bytesPerEvent, follower };
}

/** Single-event ingest while a rebuild runs beside the server: the longest wait and the failures. */
async function duringRebuild(file: string, p: Population) {
  const server = serverProcess(['--db', file, '--workers', '1']);
  const url = await server.listening;
  const rebuilding = cli(['rebuild', '--db', file]);
  let done = false;
  void rebuilding.then(() => (done = true));
  let longest = 0;
  let failed = 0;
  let requests = 0;
  while (!done) {
    const round = await load(url, posts(p, 1, 17 + requests), 1);
    longest = Math.max(longest, round.max);
    failed += round.failed;
    requests += 1;
  }
  const run = await rebuilding;
  server.child.kill('SIGTERM');
  await server.exited;
  const [, seconds] = /in ([\d.]+) s/.exec(run.stdout)!;
  return { longest, failed, seconds: Number(seconds) };
}

/**
 * The floor under batch ingest, with none of watchtime's code: each event one
 * row appended to events and one pair's row updated by its key (ids known),
 * pairs drawn as the benchmark draws them, in transactions of 5,000 events
 * committed and synced as the server does. Whatever a store adds, it cannot
 * go below this, so the large/small ratio of this floor bounds the ratio any
 * store can reach that updates an event's pair in the event's transaction.
 * Run last: it adds events to the database.
 */
function sqliteFloor(file: string, p: Population, seconds = duration): number {
  const db = new Database(file);
  try {
    db.pragma('synchronous = NORMAL');
    db.pragma('cache_size = -16384'); // the server's page cache
    let seq = db.prepare('SELECT max(seq) FROM events').pluck().get() as number;
    const append = db.prepare('INSERT INTO events (seq, user_id, movie_id, at, received_at) VALUES (?, ?, ?, ?, ?)');
    const update = db.prepare(
      'UPDATE user_movies SET position = position + 5, watched = watched + 5, events = events + 1, last_seq = ?, updated_at = ? WHERE user_id = ? AND movie_id = ?',
    );
    const nextPair = randomPairs(p, 99);
    const commit = db.transaction((count: number) => {
      const now = Date.now();
      for (let i = 0; i < count; i++) {
        const { user, movie } = pairMembers(p, nextPair());
        seq += 1;
        append.run(seq, user + 1, movie + 1, 5, now);
        update.run(seq, now, user + 1, movie + 1);
      }
    });
    let wal: number | undefined;
    let done = 0;
    const started = performance.now();
    while (performance.now() - started < seconds * 1000) {
      commit.immediate(5_000);
      wal ??= openSync(`${file}-wal`, 'r+');
      fdatasyncSync(wal);
      done += 5_000;
    }
    const rate = done / ((performance.now() - started) / 1000);
    if (wal !== undefined) closeSync(wal);
    return rate;
  } finally {
    db.close();
  }
}

type Statements<Name extends string> = Record<Name, Database.Statement>;

/**
 * SQLite alone, with none of watchtime's code: µs a step, each step on a pair
 * drawn as the load draws them, with the server's statements and page cache,
 * read-only, after a second's warm-up. `stepOf` makes the step once from the
 * prepared statements.
 */
function sqliteAlone<Name extends 'userId' | 'pairState' | 'user' | 'pair'>(
  file: string,
  p: Population,
  names: readonly Name[],
  stepOf: (q: Statements<Name>) => (user: string, slug: string, movieId: number) => unknown,
  seconds = duration,
): number {
  const db = new Database(file, { readonly: true });
  try {
    db.pragma('cache_size = -16384');
    const sql = namedQueries('sqlite', names);
    const step = stepOf(Object.fromEntries(names.map((name) => [name, db.prepare(sql[name])])) as Statements<Name>);
    const nextPair = randomPairs(p, 101);
    const loop = (until: number) => {
      let done = 0;
      while (performance.now() < until) {
        for (let i = 0; i < 1_000; i++) {
          const { user, movie } = pairMembers(p, nextPair());
          if (step(`user-${user}`, `movie-${movie}`, movie + 1) === undefined) throw new Error(`no pair for user-${user}`);
        }
        done += 1_000;
      }
      return done;
    };
    loop(performance.now() + 1_000);
    const started = performance.now();
    const done = loop(started + seconds * 1000);
    return ((performance.now() - started) * 1000) / done;
  } finally {
    db.close();
  }
}

/**
 * The reads an event's accounting needs when its user and pair are not in
 * memory: the user's id by name, then the pair's state by ids. A store that
 * took the pair's page write out of the event's transaction would still make
 * them, unless it held every user's id and every pair's state in memory.
 */
const eventReads = (file: string, p: Population) =>
  sqliteAlone(file, p, ['userId', 'pairState'], (q) => {
    const idOf = q.userId.pluck(); // as the server reads it
    return (user, _slug, movieId) => q.pairState.get(idOf.get(user), movieId);
  });

/**
 * A lookup of a known user's totals and of a pair, as the server asks SQLite
 * when it has no answer kept: on the large database, for nearly all of them.
 */
const lookupReads = (file: string, p: Population) => ({
  user: sqliteAlone(file, p, ['user'], (q) => (user) => q.user.get(user)),
  pair: sqliteAlone(file, p, ['pair'], (q) => (user, slug) => q.pair.get(user, slug)),
});

const dir = mkdtempSync(path.join(tmpdir(), 'watchtime-scale-'));
try {
  const large = population(events, users);
  const small = population(Math.max(10_000, Math.round(events / 100)), 1_000);
  const big = await measure('large', path.join(dir, 'large.db'), large);
  const little = await measure('small', path.join(dir, 'small.db'), small);
  const databases = { small: path.join(dir, 'small.db'), large: path.join(dir, 'large.db') };
  const lookupFiles = { small: path.join(dir, 'small-lookups.txt'), large: path.join(dir, 'large-lookups.txt') };
  const heartbeatFiles = { small: path.join(dir, 'small-heartbeats.txt'), large: path.join(dir, 'large-heartbeats.txt') };
  for (const [name, p] of [['small', small], ['large', large]] as const) {
    writeLookups(lookupFiles[name], p);
    writeHeartbeats(heartbeatFiles[name], p);
  }
  const reads = await alternating(databases, lookupFiles, 'GET', READ_CONNECTIONS);
  const singles = [];
  for (const clients of SINGLE_CONNECTIONS) singles.push({ clients, ...(await alternating(databases, heartbeatFiles, 'POST', clients)) });
  const serverRssMb = {
    small: Math.max(little.serverRssMb, reads.rssMb.small, ...singles.map((r) => r.rssMb.small)),
    large: Math.max(big.serverRssMb, reads.rssMb.large, ...singles.map((r) => r.rssMb.large)),
  };
  const online = await duringRebuild(path.join(dir, 'large.db'), large);
  const perEvent = { large: eventReads(path.join(dir, 'large.db'), large), small: eventReads(path.join(dir, 'small.db'), small) };
  const lookups = lookupReads(path.join(dir, 'large.db'), large);
  const floor = { large: sqliteFloor(path.join(dir, 'large.db'), large), small: sqliteFloor(path.join(dir, 'small.db'), small) };

  const n = (v: number) => Math.round(v).toLocaleString('en');
  const describe = (p: Population) => `${n(p.events)} events, ${n(p.users)} users, ${n(p.pairs)} pairs`;
  console.log(`watchtime scale benchmark: ${cpus().length} cores (${cpus()[0].model}), Node ${process.version}`);
  console.log(
    `large: ${describe(large)}; small: ${describe(small)}; ${duration} s a phase; ` +
      `batches from autocannon at ${connections} connections; reads and single events pinned with wrk, ${rounds} alternating rounds`,
  );
  console.log('measure                         small            large            large/small');
  const row = (name: string, s: number, l: number, unit: string, higherIsBetter = true) =>
    console.log(
      `${name.padEnd(31)} ${`${n(s)} ${unit}`.padEnd(16)} ${`${n(l)} ${unit}`.padEnd(16)} ${(l / s).toFixed(2)}` +
        (higherIsBetter ? '' : ' (lower is better)'),
    );
  row('rebuild', little.rebuildRate, big.rebuildRate, 'ev/s');
  row('rebuild peak RSS', little.rebuildRssMb, big.rebuildRssMb, 'MB', false);
  row('analytics follower', little.follower.rate, big.follower.rate, 'ev/s');
  row('follower CPU an event', little.follower.cpuUs, big.follower.cpuUs, 'µs', false);
  row('server start-up', little.startMs, big.startMs, 'ms', false);
  row('reads (3 lookups, 1/6 unknown)', median(reads.small), median(reads.large), 'req/s');
  for (const r of singles) row(`single events, ${r.clients} conn.`, median(r.small), median(r.large), 'req/s');
  row('1,000-event batches', little.batch, big.batch, 'ev/s');
  row('server peak RSS', serverRssMb.small, serverRssMb.large, 'MB', false);
  row('SQLite alone (floor, see above)', floor.small, floor.large, 'ev/s');
  console.log(
    `SQLite alone, an event's reads (its user's id, its pair's state): small ${perEvent.small.toFixed(1)} µs, ` +
      `large ${perEvent.large.toFixed(1)} µs; at 0.7 of the small batch rate an event may take ${(1e6 / (0.7 * little.batch)).toFixed(1)} µs in all`,
  );
  const rounded = (label: string, r: { small: number[]; large: number[] }) =>
    console.log(
      `${label}, each round: small ${r.small.map(n).join(' ')}, large ${r.large.map(n).join(' ')} req/s; ` +
        `median of the rounds' own ratios ${median(r.large.map((l, i) => l / r.small[i])).toFixed(2)}`,
    );
  rounded('reads', reads);
  for (const r of singles) rounded(`single events at ${r.clients} connections`, r);
  // Of six lookups, two are a known user's totals and one a pair's: kept answers on the small database, SQLite on the large.
  const smallUs = 1e6 / median(reads.small);
  const readsBound = smallUs / (smallUs + (2 * lookups.user + lookups.pair) / 6);
  console.log(
    `SQLite alone, a lookup on the large database: a user's totals ${lookups.user.toFixed(1)} µs, a pair ${lookups.pair.toFixed(1)} µs; ` +
      `a server as fast as watchtime on the small database that added only these would reach ${readsBound.toFixed(2)} of it`,
  );
  console.log(`bytes on disk per event (large, after a rebuild): ${big.bytesPerEvent.toFixed(1)}`);
  console.log(followerLine('analytics follower, large', big.follower));
  console.log(followerLine('analytics follower, small', little.follower));
  console.log(
    `ingest during a rebuild of the large database (${online.seconds.toFixed(1)} s): ` +
      `longest request ${online.longest} ms, ${online.failed} failed`,
  );
  const mark = (ok: boolean) => (ok ? 'met   ' : 'MISSED');
  console.log('targets:');
  for (const r of singles) {
    console.log(`  ${mark(median(r.large) / median(r.small) >= 0.7)} single-event ingest at scale >= 0.7 of small, ${r.clients} connections`);
  }
  console.log(
    `  ${mark(big.batch / little.batch >= 0.7)} batch ingest at scale >= 0.7 of small ` +
      `(SQLite alone, an append and a pair update an event: ${(floor.large / floor.small).toFixed(2)})`,
  );
  console.log(`  ${mark(online.longest <= 1000 && online.failed === 0)} during a rebuild: no request over 1 s, none refused`);
  console.log(`  ${mark(big.rebuildRssMb <= 200)} rebuild peak RSS <= 200 MB`);
  console.log(`  ${mark(big.rebuildRate >= 500_000)} rebuild >= 500,000 events/s`);
  console.log(`  ${mark(big.startMs < 1000)} server start-up < 1 s`);
  console.log(
    `  ${mark(median(reads.large) / median(reads.small) >= 0.9)} reads at scale >= 0.9 of small ` +
      `(with SQLite's lookups alone added: ${readsBound.toFixed(2)})`,
  );
  console.log(`  ${mark(serverRssMb.large < 200)} server RSS < 200 MB`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
