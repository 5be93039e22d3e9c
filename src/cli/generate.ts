// watchtime generate: sends simulated players' heartbeats to a server, and
// with --verify checks every total the server answers against its own.
import type { Command } from 'commander';
import { startProgress } from './progress.ts';
import { randomInt } from 'node:crypto';
import http from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import type { AccountingRule } from '../accounting.ts';
import type { WatchEvent } from '../event.ts';
import { ExpectedTotals, Simulation } from '../generator/players.ts';
import { accountingOptions, CliError, envOption, integer } from './options.ts';

interface GenerateOptions {
  url: string;
  users: number;
  movies: number;
  rate: number;
  duration: number;
  seed: number;
  connections: number;
  batch: number;
  verify?: boolean;
  json?: boolean;
  accounting?: 'progress' | 'sum';
  maxStep?: number;
  ingestToken?: string;
  readToken?: string;
}

/** How long one request is retried (server down, restarting, queue full) before it counts as failed. */
const RETRY_FOR_MS = 60_000;

class Counters {
  sent = 0;
  acknowledged = 0;
  duplicates = 0;
  retries = 0;
  failed = 0;
  lastError = '';
}

function authorization(token: string | undefined): Record<string, string> {
  return token ? { authorization: `Bearer ${token}` } : {};
}

interface Answer {
  status: number;
  retryAfter: number;
  body: string;
}

// node:http with keep-alive: a few times cheaper per request than fetch, which matters at high rates.
const agent = new http.Agent({ keepAlive: true });

function postOnce(url: URL, body: string, headers: Record<string, string>): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, {
      method: 'POST',
      agent,
      headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), ...headers },
    });
    req.setTimeout(30_000, () => req.destroy(new Error('no answer within 30 s')));
    req.on('error', reject);
    req.on('response', (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (text += chunk));
      res.on('error', reject);
      res.on('end', () => resolve({ status: res.statusCode!, retryAfter: Number(res.headers['retry-after'] ?? 0), body: text }));
    });
    req.end(body);
  });
}

/** Posts one request until the server acknowledges it; the ids make every retry safe. */
async function deliver(options: GenerateOptions, events: WatchEvent[], counters: Counters): Promise<boolean> {
  const body = JSON.stringify(events.length === 1 ? events[0] : events);
  const url = new URL(options.url);
  const giveUpAt = Date.now() + RETRY_FOR_MS;
  for (let attempt = 0; ; attempt++) {
    let wait = Math.min(1000, 50 * 2 ** attempt);
    try {
      const res = await postOnce(url, body, authorization(options.ingestToken));
      if (res.status === 200) {
        const { duplicates } = JSON.parse(res.body) as { duplicates: number };
        counters.duplicates += duplicates;
        return true;
      }
      counters.lastError = `${res.status} ${res.body.slice(0, 300)}`;
      if (res.status !== 503 && res.status !== 429) return false; // a refusal, not a fault: retrying will not help
      wait = Math.max(wait, res.retryAfter * 1000);
    } catch (error) {
      counters.lastError = String(error);
    }
    if (Date.now() + wait > giveUpAt) return false;
    counters.retries += 1;
    await sleep(wait);
  }
}

/** The rule to expect: as given, else the server's, waiting for a server that is starting. */
async function serverRule(options: GenerateOptions): Promise<AccountingRule> {
  if (options.accounting === 'sum') return { accounting: 'sum', maxStep: options.maxStep ?? 120 };
  if (options.accounting && options.maxStep) return { accounting: options.accounting, maxStep: options.maxStep };
  const giveUpAt = Date.now() + RETRY_FOR_MS;
  for (;;) {
    try {
      const res = await fetch(new URL('/readyz', options.url), { headers: authorization(options.readToken) });
      const { accounting } = (await res.json()) as { accounting?: AccountingRule };
      if (!accounting) throw new Error(`/readyz answered ${res.status} without the accounting rule`);
      return { accounting: options.accounting ?? accounting.accounting, maxStep: options.maxStep ?? accounting.maxStep };
    } catch (error) {
      if (Date.now() > giveUpAt) {
        throw new CliError(`cannot ask ${options.url} for its accounting rule (${(error as Error).message}); pass --accounting and --max-step`);
      }
      await sleep(250);
    }
  }
}

function progressDisplay(counters: Counters, durationSeconds: number, json: boolean) {
  const started = Date.now();
  let lastCount = 0;
  let lastAt = started;
  const progress = startProgress({
    total: durationSeconds,
    json,
    bar: 'generate [{bar}] {value}/{total} s | {sent} events | {rate}/s | retries {retries} | failed {failed}',
    line: (value, _total, f) => `generate: ${value} s, ${f.sent} events, ${f.rate}/s, retries ${f.retries}, failed ${f.failed}`,
  });
  const tick = () => {
    const now = Date.now();
    const rate = Math.round(((counters.acknowledged - lastCount) * 1000) / Math.max(1, now - lastAt));
    lastCount = counters.acknowledged;
    lastAt = now;
    progress.update(Math.min(durationSeconds, Math.round((now - started) / 1000)), {
      sent: counters.acknowledged,
      rate,
      retries: counters.retries,
      failed: counters.failed,
    });
  };
  tick();
  const timer = setInterval(tick, 1000);
  return () => {
    clearInterval(timer);
    tick();
    progress.stop();
  };
}

/** Compares every user, movie and pair the run touched with the server's answers. */
/** How long --verify tries a server that refuses connections (one that is restarting) before it gives up. */
const VERIFY_WAIT_MS = 10_000;

/** A lookup, tried again while the server cannot be reached: the events were acknowledged, the server may be starting again. */
async function reading(url: URL, headers: Record<string, string>): Promise<Response> {
  const until = Date.now() + VERIFY_WAIT_MS;
  for (;;) {
    try {
      return await fetch(url, { headers });
    } catch (error) {
      if (Date.now() > until) throw error;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
}

async function verify(options: GenerateOptions, expected: ExpectedTotals): Promise<string[]> {
  const differences: string[] = [];
  const checks: [string, Record<string, number>][] = [];
  for (const [user, t] of expected.users) {
    checks.push([`/users/${encodeURIComponent(user)}/watch-time`, { watchTime: t.watchTime, events: t.events, movies: t.pairs }]);
  }
  for (const [slug, t] of expected.movies) {
    checks.push([`/movies/${encodeURIComponent(slug)}/watch-time`, { watchTime: t.watchTime, events: t.events, viewers: t.pairs }]);
  }
  for (const p of expected.pairs.values()) {
    checks.push([
      `/users/${encodeURIComponent(p.user)}/movies/${encodeURIComponent(p.slug)}/latest-moment`,
      { latestMoment: p.latestMoment, watchTime: p.watchTime, events: p.events },
    ]);
  }
  let next = 0;
  const worker = async () => {
    while (next < checks.length) {
      const [path, want] = checks[next++];
      const res = await reading(new URL(path, options.url), authorization(options.readToken));
      const got = (await res.json()) as Record<string, unknown>;
      if (!res.ok) {
        differences.push(`${path}: ${res.status} ${JSON.stringify(got)}`);
        continue;
      }
      for (const [field, value] of Object.entries(want)) {
        if (got[field] !== value) differences.push(`${path}: ${field} is ${got[field]}, expected ${value}`);
      }
    }
  };
  await Promise.all(Array.from({ length: 16 }, worker));
  return differences;
}

async function run(options: GenerateOptions): Promise<void> {
  const rule = await serverRule(options);
  const simulation = new Simulation({ users: options.users, movies: options.movies, seed: options.seed });
  const expected = new ExpectedTotals(rule);
  const counters = new Counters();
  const connections = Math.min(options.connections, options.users);
  process.stderr.write(
    `generate: seed ${options.seed}, ${options.users} users, ${options.movies} movies, ` +
      `${options.rate > 0 ? `${options.rate} events/s` : 'as fast as the server answers'}, ${options.duration} s, ` +
      `${connections} connections, ${options.batch} event(s) a request, accounting ${rule.accounting}\n`,
  );

  const started = Date.now();
  const endAt = started + options.duration * 1000;
  const interval = options.rate > 0 ? 1000 / options.rate : 0;
  let due = started;
  let eventNumber = 0;
  const runId = options.seed.toString(36);
  const stopDisplay = progressDisplay(counters, options.duration, options.json ?? false);

  // Each connection owns a share of the users and sends them one request at a
  // time, so the server receives each pair's events in the order they were made.
  const connection = async (c: number) => {
    const owned = Array.from({ length: Math.ceil((options.users - c) / connections) }, (_, i) => c + i * connections);
    let turn = 0;
    while (Date.now() < endAt) {
      const events: WatchEvent[] = [];
      for (let i = 0; i < options.batch; i++) {
        const event = simulation.next(owned[turn++ % owned.length]);
        events.push({ ...event, id: `${runId}-${++eventNumber}` });
      }
      if (interval > 0) {
        const wait = due - Date.now();
        due = Math.max(due, Date.now() - 1000) + interval * events.length; // fall behind by a second at most
        if (wait > 0) await sleep(wait);
      }
      counters.sent += events.length;
      if (await deliver(options, events, counters)) {
        counters.acknowledged += events.length;
        for (const event of events) expected.apply(event);
      } else {
        counters.failed += events.length;
        // Unknown whether it was stored: later events of those pairs would be judged against a guess.
        break;
      }
    }
  };
  await Promise.all(Array.from({ length: connections }, (_, c) => connection(c)));
  stopDisplay();
  agent.destroy();

  const seconds = (Date.now() - started) / 1000;
  const differences = options.verify ? await verify(options, expected) : [];
  if (options.json) {
    const summary = {
      seed: options.seed,
      sent: counters.acknowledged,
      seconds,
      eventsPerSecond: Math.round(counters.acknowledged / seconds),
      retries: counters.retries,
      duplicates: counters.duplicates,
      failed: counters.failed,
      ...(counters.failed > 0 ? { lastError: counters.lastError } : {}),
      ...(options.verify
        ? { verify: { users: expected.users.size, movies: expected.movies.size, pairs: expected.pairs.size, differences } }
        : {}),
    };
    process.stdout.write(`${JSON.stringify(summary, null, 2)}\n`);
  } else {
    process.stdout.write(
      `sent ${counters.acknowledged} events in ${seconds.toFixed(1)} s (${Math.round(counters.acknowledged / seconds)}/s); ` +
        `${counters.retries} retries, ${counters.duplicates} acknowledged as duplicates, ${counters.failed} failed\n`,
    );
    if (counters.failed > 0) process.stdout.write(`last error: ${counters.lastError}\n`);
    if (options.verify) {
      process.stdout.write(
        `verify: ${expected.users.size} users, ${expected.movies.size} movies, ${expected.pairs.size} pairs checked, ` +
          `${differences.length} difference(s)\n`,
      );
      for (const line of differences.slice(0, 20)) process.stdout.write(`  ${line}\n`);
      if (differences.length > 20) process.stdout.write(`  ... and ${differences.length - 20} more\n`);
    }
  }
  if (counters.failed > 0 || differences.length > 0) process.exitCode = 1;
}

export function registerGenerate(program: Command): void {
  const command = program
    .command('generate')
    .description('simulate players sending heartbeats to a server; --verify then checks its totals')
    .addOption(envOption('--url <url>', 'where to POST events').default('http://localhost:8000/'))
    .addOption(envOption('--users <n>', 'simulated users').argParser(integer(1, 10_000_000)).default(100))
    .addOption(envOption('--movies <n>', 'movies to choose from').argParser(integer(1, 10_000_000)).default(20))
    .addOption(envOption('--rate <events/s>', 'events a second; 0 sends as fast as the server answers').argParser(integer(0, 10_000_000)).default(500))
    .addOption(envOption('--duration <seconds>', 'how long to send').argParser(integer(1, 86_400)).default(10))
    .addOption(envOption('--seed <n>', 'random seed; the same seed replays the same players (default: random)').argParser(integer(0, 2 ** 31 - 1)))
    .addOption(envOption('--connections <n>', 'requests in flight at once').argParser(integer(1, 1000)).default(8))
    .addOption(envOption('--batch <n>', 'events a request').argParser(integer(1, 10_000)).default(1))
    .addOption(envOption('--verify', 'afterwards, compare every user, movie and pair with the server; exit 1 on any difference'))
    .addOption(envOption('--json', 'print the summary as JSON; progress as plain lines'));
  for (const option of accountingOptions()) command.addOption(option);
  command
    .addOption(envOption('--ingest-token <token>', 'bearer token for POST'))
    .addOption(envOption('--read-token <token>', 'bearer token for the reads of --verify'))
    .action((options: GenerateOptions) => run({ ...options, seed: options.seed ?? randomInt(2 ** 31 - 1) }));
}
