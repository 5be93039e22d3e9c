// The benchmark. watchtime against a bare node:http server that only parses
// the body, for single-event ingest, reads and 1,000-event batches. Single
// events run twice: with 64 connections, where each client waits for the
// sync of the disk that precedes watchtime's answer, and with 256, enough
// that neither server runs out of requests to take. Each
// server is pinned to one core and the load tool (wrk) to the other, so that
// the ratio measures what each server costs per request rather than how the
// two share the cores with the load tool. The servers take turns, in rounds,
// and each figure is the median of the rounds with its min and max. The reads
// also run against the bare server answering at the end of the event loop's
// turn, as watchtime answers its lookups, which on its own changes the rate
// a good deal. Then the rebuild rate on 1,000,000 stored events, bytes on disk
// per event and the server's peak RSS.
// Then PostgreSQL against SQLite mode (./bench-postgres.ts): one server, one
// with the database 1 ms away, three, and three on one movie, with the CPU
// an event of the servers and of PostgreSQL and its WAL bytes. Every server
// above is `serve --workers 1`, one process, so that its figures compare with
// runs from before --workers.
// Last, every core: nothing pinned, wrk beside the servers as on a real
// 2-core machine, --crowd connections (batches --connections), the bare
// server as a node:cluster of two against `serve --workers 1` and
// `--workers 2`, in alternating rounds; then what handing an event from a
// worker to the writer costs alone (./handoff.ts).
//   npm run bench -- [--rounds 5] [--duration 5] [--warmup 5] [--connections 64] [--crowd 256] [--events 1000000]
//   npm run bench -- --phases read,single   (only those HTTP phases: no rebuild, size or PostgreSQL)
//   npm run bench -- --phases cores   (only every core, with the handoff; --rounds 3 --duration 5 --warmup 3 takes 3 minutes)
//   npm run bench -- --phases postgres   (only PostgreSQL against SQLite mode; 4 minutes)
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { SqliteStore } from '../../src/store/sqlite.ts';
import { cli, serveArgs } from '../helpers.ts';
import { postgresFigures } from './bench-postgres.ts';
import { followAll, followerLine, heartbeatDatabase } from './follower-rate.ts';
import { handoffFigures, handoffLines } from './handoff.ts';
import { cpuSeconds, median, need, pinned, processTree, startPinned, startUnpinned, wrk as runWrk } from './wrk.ts';

const arg = (name: string, fallback: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : fallback;
};
// Five: with three, a median moved by a tenth from run to run on the shared development machine.
const rounds = arg('rounds', 5);
const duration = arg('duration', 5);
const warmup = arg('warmup', 5);
const connections = arg('connections', 64);
/** Connections of the second single-event phase. */
const crowd = arg('crowd', 256);
const rebuildEvents = arg('events', 1_000_000);

const BARE = fileURLToPath(new URL('./bare-server.ts', import.meta.url));
const TSX = fileURLToPath(new URL('../../node_modules/tsx/dist/cli.mjs', import.meta.url));
const USERS = 10_000;
const MOVIES = 500;

need('wrk', 'wrk');
need('taskset', 'util-linux');

type Phase = 'single' | 'crowd' | 'read' | 'batch';
const phasesArg = process.argv.indexOf('--phases');
const onlyPhases = phasesArg > 0;
const asked = onlyPhases ? process.argv[phasesArg + 1].split(',') : ['single', 'crowd', 'read', 'batch', 'cores', 'postgres'];
/** The pinned comparison's phases. */
const PHASES = asked.filter((phase) => phase !== 'cores' && phase !== 'postgres') as Phase[];
const everyCore = asked.includes('cores');
const postgresToo = asked.includes('postgres');
const clientsOf = (phase: Phase) => (phase === 'crowd' ? crowd : connections);
const LABEL: Record<Phase, string> = {
  single: `single-event POST /, ${clientsOf('single')} connections`,
  crowd: `single-event POST /, ${clientsOf('crowd')} connections`,
  read: 'reads (3 lookups, 1 in 4 a 404)',
  batch: '1,000-event batches',
};

interface Run {
  /** Requests a second, or events a second for batches. */
  rate: number;
  /** Requests answered, or events for batches. */
  units: number;
  p50Ms: number;
  p99Ms: number;
  socketErrors: number;
  /** Answers other than 2xx; expected for the reads' unknown names. */
  non2xx: number;
  /** Cores wrk kept busy: near 1, its one thread was the limit. */
  wrkCores: number;
}

let eventsSent = 0;

interface Measured extends Run {
  /** The server's CPU time (all its processes and threads) a request, or an event for batches. */
  cpuUs: number;
  /** The same of the server's first process alone: with workers, the writer's. */
  rootCpuUs: number;
  /** CPU seconds of each of the server's processes over the run, the first process first. */
  byProcess: { pid: number; seconds: number }[];
}

interface WrkOptions {
  clients?: number;
  /** Where the events start; by default where the last run left off. */
  start?: number;
  /** wrk on any core rather than on core 1. */
  unpinned?: boolean;
}

async function wrk(url: string, phase: Phase, seconds: number, { clients = clientsOf(phase), start = eventsSent, unpinned }: WrkOptions = {}): Promise<Run> {
  const script = phase === 'read' ? 'reads.lua' : 'ingest.lua';
  const size = phase === 'batch' ? 1000 : 1;
  // Each run starts where the last left off, so that every pair keeps moving forward.
  const r = await runWrk(url, script, phase === 'read' ? [] : [String(size), String(start)], clients, seconds, unpinned);
  if (phase !== 'read') eventsSent += r.requests * size;
  return {
    rate: (r.requests * size) / (r.durationUs / 1e6),
    units: r.requests * size,
    p50Ms: r.p50Us / 1000,
    p99Ms: r.p99Us / 1000,
    socketErrors: r.socketErrors,
    non2xx: r.non2xx,
    wrkCores: r.cpuSeconds / (r.durationUs / 1e6),
  };
}

/** The pid of the server itself, under taskset (which execs, so it is the same pid). */
const peakRss = (pid: number) => Number(/VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) * 1024;

/** Heartbeats from USERS users over MOVIES movies, as ingest.lua sends them. */
function heartbeats() {
  let n = 0;
  return () => {
    const event = { user: `user-${n % USERS}`, slug: `movie-${n % MOVIES}`, at: Math.floor(n / USERS) * 5 };
    n += 1;
    return event;
  };
}

/** A measured run, with the server's CPU time a request (an event for batches) over it. */
async function measured(server: { child: { pid?: number }; url: string }, phase: Phase, options: WrkOptions = {}): Promise<Measured> {
  const pids = processTree(server.child.pid!);
  const before = pids.map((pid) => cpuSeconds([pid]));
  const run = await wrk(server.url, phase, duration, options);
  const byProcess = pids.map((pid, i) => ({ pid, seconds: cpuSeconds([pid]) - before[i] }));
  const perUnit = (seconds: number) => (seconds * 1e6) / run.units;
  return { ...run, cpuUs: perUnit(byProcess.reduce((sum, p) => sum + p.seconds, 0)), rootCpuUs: perUnit(byProcess[0].seconds), byProcess };
}

const fmt = (v: number) => Math.round(v).toLocaleString('en');
const spread = (values: number[]) => `${fmt(median(values))} (${fmt(Math.min(...values))}-${fmt(Math.max(...values))})`;
const mark = (ok: boolean) => (ok ? 'met   ' : 'MISSED');
const mb = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(0)} MB`;

const CORE_SERVERS = {
  bare2: 'bare node:http, cluster of 2',
  w1: 'watchtime --workers 1',
  w2: 'watchtime --workers 2',
} as const;
type CoreServer = keyof typeof CORE_SERVERS;
const CORE_PHASES = ['crowd', 'read', 'batch'] as const;
type CorePhase = (typeof CORE_PHASES)[number];
const CORE_LABEL: Record<CorePhase, string> = {
  crowd: 'single events (1 a request)',
  read: 'reads (3 lookups, 1 in 4 a 404)',
  batch: '1,000-event batches',
};

/** Log lines of a server at warn or above (pino's JSON lines on stderr). */
const warnings = (stderr: string) =>
  stderr.split('\n').filter((line) => {
    try {
      return (JSON.parse(line) as { level?: number }).level! >= 40;
    } catch {
      return false;
    }
  });

/**
 * Every core: the servers and wrk unpinned, as on a real 2-core machine, at
 * --crowd connections, in alternating rounds; with the writer's CPU time and
 * every process's peak RSS for `--workers 2`. Lines to print, and the targets'.
 */
async function everyCoreFigures(dir: string): Promise<{ lines: string[]; targets: string[] }> {
  const servers: Record<CoreServer, Awaited<ReturnType<typeof startUnpinned>>> = {
    bare2: await startUnpinned(process.execPath, [TSX, BARE], { BARE_WORKERS: '2' }),
    w1: await startUnpinned(process.execPath, serveArgs(['--db', path.join(dir, 'w1.db'), '--workers', '1'])),
    w2: await startUnpinned(process.execPath, serveArgs(['--db', path.join(dir, 'w2.db'), '--workers', '2'])),
  };
  const names = Object.keys(CORE_SERVERS) as CoreServer[];
  // Batches at --connections: at --crowd, 1,000 events a request would overfill the 100,000-event queue (503s).
  const options = (phase: CorePhase): WrkOptions => ({ clients: phase === 'batch' ? connections : crowd, unpinned: true });
  const runs: Record<CoreServer, Record<CorePhase, Measured[]>> = {
    bare2: { crowd: [], read: [], batch: [] },
    w1: { crowd: [], read: [], batch: [] },
    w2: { crowd: [], read: [], batch: [] },
  };
  for (const phase of CORE_PHASES) for (const name of names) await wrk(servers[name].url, phase, warmup, options(phase));
  for (let round = 0; round < rounds; round++) {
    for (const phase of CORE_PHASES) {
      const order = round % 2 === 0 ? names : [...names].reverse();
      for (const name of order) runs[name][phase].push(await measured(servers[name], phase, options(phase)));
    }
  }
  // After the runs: each process's peak, the writer (or the one process) first.
  const rss = { w1: processTree(servers.w1.child.pid!), w2: processTree(servers.w2.child.pid!) };
  const peaks = Object.fromEntries(Object.entries(rss).map(([name, pids]) => [name, pids.map((pid) => ({ pid, bytes: peakRss(pid) }))]));
  for (const server of Object.values(servers)) {
    server.child.kill('SIGTERM');
    await server.exited;
  }

  const lines = [
    `every core: servers and wrk unpinned on ${cpus().length} cores, ${crowd} connections (batches ${connections}), ${rounds} rounds of ${duration} s, ` +
      'the order reversed each round; median (min-max) of the rounds, p99 the median of their p99',
  ];
  const rate = (name: CoreServer, phase: CorePhase) => median(runs[name][phase].map((r) => r.rate));
  /** The ratio of the medians, and the median of the rounds' own ratios. */
  const ratio = (a: CoreServer, b: CoreServer, phase: CorePhase) => ({
    ofMedians: rate(a, phase) / rate(b, phase),
    ofRounds: median(runs[a][phase].map((r, i) => r.rate / runs[b][phase][i].rate)),
  });
  const ratioText = (r: { ofMedians: number; ofRounds: number }) => `${r.ofMedians.toFixed(2)} (rounds' own ${r.ofRounds.toFixed(2)})`;
  for (const phase of CORE_PHASES) {
    const unit = phase === 'batch' ? 'ev/s' : 'req/s';
    const per = phase === 'batch' ? 'an event' : 'a request';
    lines.push(`${CORE_LABEL[phase]}:`);
    for (const name of names) {
      const r = runs[name][phase];
      const cpu = median(r.map((x) => x.cpuUs));
      const non2xx = r.reduce((sum, x) => sum + x.non2xx, 0);
      const socketErrors = r.reduce((sum, x) => sum + x.socketErrors, 0);
      // With workers, the first process is the writer: its share beside the workers'.
      const writer = name === 'w2' ? median(r.map((x) => x.rootCpuUs)) : undefined;
      lines.push(
        `  ${CORE_SERVERS[name].padEnd(30)} ${spread(r.map((x) => x.rate))} ${unit}, p99 ${median(r.map((x) => x.p99Ms)).toFixed(1)} ms, ` +
          `CPU ${cpu.toFixed(1)} µs ${per}` +
          (writer === undefined ? '' : ` (writer ${writer.toFixed(1)} µs, workers ${(cpu - writer).toFixed(1)} µs)`) +
          `, wrk ${median(r.map((x) => x.wrkCores)).toFixed(2)} core` +
          // The bare server answers every read 200.
          (phase === 'read' && name !== 'bare2' ? `, ${fmt(non2xx)} 404s` : phase !== 'read' && non2xx > 0 ? `, ${fmt(non2xx)} NOT 2xx` : '') +
          (socketErrors > 0 ? `, ${fmt(socketErrors)} socket errors` : ''),
      );
    }
    lines.push(
      `  w2/bare cluster ${ratioText(ratio('w2', 'bare2', phase))}, w2/w1 ${ratioText(ratio('w2', 'w1', phase))}, ` +
        `w1/bare cluster ${ratioText(ratio('w1', 'bare2', phase))}`,
    );
  }
  // Each process's CPU seconds over all the measured runs: workers far apart would say the port is shared unevenly.
  const cpuOf = new Map<number, number>();
  for (const phase of CORE_PHASES) {
    for (const run of runs.w2[phase]) for (const p of run.byProcess) cpuOf.set(p.pid, (cpuOf.get(p.pid) ?? 0) + p.seconds);
  }
  const role = (i: number) => (i === 0 ? 'writer' : `worker ${i}`);
  lines.push(
    `watchtime --workers 2, CPU seconds of each process over the measured runs: ` +
      [...cpuOf].map(([pid, seconds], i) => `${role(i)} (pid ${pid}) ${seconds.toFixed(1)}`).join(', '),
  );
  lines.push('peak RSS (VmHWM) of each process after the runs:');
  for (const name of ['w1', 'w2'] as const) {
    const each = peaks[name].map((p, i) => `${name === 'w1' ? 'the one process' : role(i)} ${mb(p.bytes)}`).join(', ');
    lines.push(`  ${CORE_SERVERS[name]}: ${each}; total ${mb(peaks[name].reduce((sum, p) => sum + p.bytes, 0))}`);
  }
  for (const name of ['w1', 'w2'] as const) {
    const logged = warnings(servers[name].stderr());
    if (logged.length > 0) lines.push(`${CORE_SERVERS[name]} logged ${logged.length} lines at warn or above, the first: ${logged[0]}`);
  }
  lines.push('handing events from a worker to the writer alone (JSON IPC, each message answered before the next):');
  lines.push(...handoffLines(await handoffFigures()));

  const single = { ofBare: ratio('w2', 'bare2', 'crowd').ofMedians, ofW1: ratio('w2', 'w1', 'crowd').ofMedians };
  const reads = ratio('w2', 'bare2', 'read').ofMedians;
  const batches = ratio('w2', 'w1', 'batch').ofMedians;
  const targets = [
    `  ${mark(single.ofBare >= 0.8)} every core, single events: --workers 2 >= 0.8 of the bare cluster of 2 (${single.ofBare.toFixed(2)})`,
    `  ${mark(single.ofW1 >= 1.3)} every core, single events: --workers 2 >= 1.3 x --workers 1 (${single.ofW1.toFixed(2)})`,
    `  ${mark(reads >= 0.8)} every core, reads: --workers 2 >= 0.8 of the bare cluster of 2 (${reads.toFixed(2)})`,
    `  ${mark(batches >= 1)} every core, batches: --workers 2 no worse than --workers 1 (${batches.toFixed(2)})`,
  ];
  return { lines, targets };
}

const dir = mkdtempSync(path.join(tmpdir(), 'watchtime-bench-'));
try {
  if (PHASES.length === 0) {
    // --phases cores and/or postgres: no pinned servers at all.
    const figures = [...(everyCore ? [await everyCoreFigures(dir)] : []), ...(postgresToo ? [await postgresFigures({ dir, duration, warmup, crowd })] : [])];
    for (const line of [...figures.flatMap((f) => f.lines), 'targets:', ...figures.flatMap((f) => f.targets)]) console.log(line);
    rmSync(dir, { recursive: true, force: true });
    process.exit(0);
  }
  const servers = {
    bare: await startPinned(process.execPath, [TSX, BARE]),
    watchtime: await startPinned(process.execPath, serveArgs(['--db', path.join(dir, 'served.db'), '--workers', '1'])),
    // Reads only: the bare server answering GETs at the end of the turn, as watchtime answers its lookups.
    grouped: await startPinned(process.execPath, [TSX, BARE], { BARE_GROUPED: '1' }),
  };
  const names = ['bare', 'watchtime'] as const;
  const namesFor = (phase: Phase) => (phase === 'read' ? (['bare', 'watchtime', 'grouped'] as const) : names);
  const runs: Record<keyof typeof servers, Record<Phase, Measured[]>> = {
    bare: { single: [], crowd: [], read: [], batch: [] },
    watchtime: { single: [], crowd: [], read: [], batch: [] },
    grouped: { single: [], crowd: [], read: [], batch: [] },
  };
  // Warm-up, not counted: the JIT settles, and the reads have asked for most names once.
  for (const phase of PHASES) for (const name of namesFor(phase)) await wrk(servers[name].url, phase, warmup);
  for (let round = 0; round < rounds; round++) {
    for (const phase of PHASES) {
      // Alternate who goes first, so that neither always runs on a machine warmed (or slowed) by the other.
      const order = round % 2 === 0 ? namesFor(phase) : [...namesFor(phase)].reverse();
      for (const name of order) runs[name][phase].push(await measured(servers[name], phase));
    }
  }
  const rss = peakRss(servers.watchtime.child.pid!);
  for (const server of Object.values(servers)) {
    server.child.kill('SIGTERM');
    await server.exited;
  }
  /** Each round's watchtime rate over the bare server's in that round: two runs seconds apart, where rounds are a minute apart. */
  const roundRatios = (phase: Phase) => runs.watchtime[phase].map((w, i) => w.rate / runs.bare[phase][i].rate);
  if (onlyPhases) {
    for (const phase of PHASES) {
      const rate = (name: keyof typeof servers) => median(runs[name][phase].map((x) => x.rate));
      const p99 = (name: keyof typeof servers) => median(runs[name][phase].map((x) => x.p99Ms)).toFixed(1);
      const all = (name: keyof typeof servers) => runs[name][phase].map((x) => Math.round(x.rate)).join(' ');
      const cpu = (name: keyof typeof servers) => median(runs[name][phase].map((x) => x.cpuUs)).toFixed(1);
      console.log(
        `${LABEL[phase]}: bare ${all('bare')} (p99 ${p99('bare')} ms), watchtime ${all('watchtime')} (p99 ${p99('watchtime')} ms), ` +
          `ratio of medians ${(rate('watchtime') / rate('bare')).toFixed(2)}, median of the rounds' ratios ${median(roundRatios(phase)).toFixed(2)}; ` +
          `CPU a ${phase === 'batch' ? 'event' : 'request'}: bare ${cpu('bare')} µs, watchtime ${cpu('watchtime')} µs`,
      );
      if (phase === 'read') {
        console.log(`  bare answering at the end of the turn: ${all('grouped')}, watchtime's ratio to it ${(rate('watchtime') / rate('grouped')).toFixed(2)}`);
      }
    }
    console.log(`server peak RSS: ${(rss / 1024 / 1024).toFixed(0)} MB`);
    if (everyCore) {
      const { lines, targets } = await everyCoreFigures(dir);
      for (const line of [...lines, 'targets:', ...targets]) console.log(line);
    }
    rmSync(dir, { recursive: true, force: true });
    process.exit(0);
  }

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
  // The analytics follower on heartbeats of 100,000 players, against the same events' ingest through the store.
  const followedFile = path.join(dir, 'followed.db');
  const storeIngest = heartbeatDatabase(followedFile, rebuildEvents);
  const follower = await followAll(followedFile);

  const figures = (phase: Phase, name: keyof typeof servers) => {
    const r = runs[name][phase];
    return { rate: median(r.map((x) => x.rate)), p99: median(r.map((x) => x.p99Ms)), cpuUs: median(r.map((x) => x.cpuUs)), all: r };
  };
  console.log(
    `watchtime benchmark: ${rounds} rounds of ${duration} s a phase and server, ${connections} connections, ` +
      `${pinned ? 'each server pinned to core 0 and wrk to core 1' : 'one core: NOT pinned'}, ` +
      `${cpus().length} cores (${cpus()[0].model}), Node ${process.version}`,
  );
  console.log('median (min-max) of the rounds; p99 is the median of the rounds\' p99');
  const ratios: Record<Phase, number> = { single: 0, crowd: 0, read: 0, batch: 0 };
  const p99s: Record<Phase, [number, number]> = { single: [0, 0], crowd: [0, 0], read: [0, 0], batch: [0, 0] };
  for (const phase of PHASES) {
    const unit = phase === 'batch' ? 'ev/s' : 'req/s';
    const b = figures(phase, 'bare');
    const w = figures(phase, 'watchtime');
    ratios[phase] = w.rate / b.rate;
    p99s[phase] = [b.p99, w.p99];
    const errors = [...b.all, ...w.all].reduce((sum, x) => sum + x.socketErrors, 0);
    const non2xx = (r: Run[]) => r.reduce((sum, x) => sum + x.non2xx, 0);
    console.log(`${LABEL[phase]}:`);
    const cpu = (x: { cpuUs: number }) => `, CPU ${x.cpuUs.toFixed(1)} µs a${phase === 'batch' ? 'n event' : ' request'}`;
    console.log(`  bare node:http  ${spread(b.all.map((x) => x.rate))} ${unit}, p99 ${b.p99.toFixed(1)} ms${cpu(b)}`);
    console.log(
      `  watchtime       ${spread(w.all.map((x) => x.rate))} ${unit}, p99 ${w.p99.toFixed(1)} ms${cpu(w)}` +
        (phase === 'read' ? `, ${fmt(non2xx(w.all))} 404s` : non2xx(w.all) > 0 ? `, ${non2xx(w.all)} NOT 2xx` : ''),
    );
    console.log(
      `  ratio ${ratios[phase].toFixed(2)} (median of the rounds' own ratios ${median(roundRatios(phase)).toFixed(2)})` +
        (errors > 0 ? `  (${errors} socket errors)` : ''),
    );
    if (phase === 'read') {
      const g = figures(phase, 'grouped');
      console.log(`  bare, answering at the end of the turn as watchtime does: ${spread(g.all.map((x) => x.rate))} ${unit}, p99 ${g.p99.toFixed(1)} ms`);
      console.log(`  watchtime's ratio to it ${(w.rate / g.rate).toFixed(2)}`);
    }
  }
  console.log(`rebuild of ${rebuildEvents.toLocaleString('en')} events: ${rebuildRate.toLocaleString('en')} events/s`);
  console.log(`bytes on disk per event: ${bytesPerEvent.toFixed(1)} (${USERS} users, ${MOVIES} movies, no client ids)`);
  console.log(
    `ingest through the store alone, 1,000-event batches of heartbeats from 100,000 players: ${fmt(storeIngest.rate)} events/s, CPU ${storeIngest.cpuUs.toFixed(1)} µs an event`,
  );
  console.log(followerLine('analytics follower on those events', follower));
  const followerRatio = follower.rate / figures('batch', 'watchtime').rate;
  console.log(
    `  follower / HTTP batch ingest of this run ${followerRatio.toFixed(2)}; follower / ingest through the store ${(follower.rate / storeIngest.rate).toFixed(2)}; ` +
      `CPU an event, follower / store ingest ${(follower.cpuUs / storeIngest.cpuUs).toFixed(2)}`,
  );
  console.log(`server peak RSS: ${(rss / 1024 / 1024).toFixed(0)} MB`);
  const postgres = await postgresFigures({ dir, duration, warmup, crowd });
  for (const line of postgres.lines) console.log(line);
  const cores = await everyCoreFigures(dir);
  for (const line of cores.lines) console.log(line);
  const batchRate = figures('batch', 'watchtime').rate;
  console.log('targets:');
  const singleMet = (phase: Phase) => ratios[phase] >= 0.8 && p99s[phase][1] <= 1.5 * p99s[phase][0];
  for (const phase of ['crowd', 'single'] as const) {
    console.log(`  ${mark(singleMet(phase))} single-event ingest >= 0.8 of bare, p99 <= 1.5 x bare's, ${clientsOf(phase)} connections`);
  }
  console.log(
    `  ${mark(ratios.read >= 0.9)} reads >= 0.9 of bare ` +
      `(${(figures('read', 'watchtime').rate / figures('read', 'grouped').rate).toFixed(2)} of the bare server answering at the end of the turn)`,
  );
  console.log(`  ${mark(batchRate >= 250_000)} batch ingest >= 250,000 events/s`);
  console.log(`  ${mark(rebuildRate >= 500_000)} rebuild >= 500,000 events/s`);
  console.log(`  ${mark(bytesPerEvent <= 80)} <= 80 bytes per event on disk`);
  console.log(`  ${mark(followerRatio >= 3)} analytics follower >= 3 x the batch ingest rate`);
  console.log(`  ${mark(rss < 200 * 1024 * 1024)} server RSS < 200 MB`);
  for (const line of cores.targets) console.log(line);
  for (const line of postgres.targets) console.log(line);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
