// The analytics of SPEC section 7 against the real server on a real SQLite
// file, every figure checked against a brute force: players of the generator's
// model (src/generator/players.ts) play, pause, seek and rewind; their events
// are posted in batches and one by one; each pair's covered seconds are then
// counted one second at a time in a Set, and every stats, retention, time
// series and viewers-now answer must equal what those Sets and the stored
// receive times say (the server runs in this process, and its clock is moved
// so that the events fall in several minutes, hours and days). Then the same
// answers after `watchtime rebuild`, the figures of another rule after an
// online one, the API's refusals, and a duration set through a worker of
// `serve --workers 2`.
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import Database from 'better-sqlite3';
import type { WatchEvent } from '../src/event.ts';
import { seededRandom, Simulation } from '../src/generator/players.ts';
import type { RunningServer } from '../src/server.ts';
import { startRound } from '../src/analytics/follow.ts';
import { SqliteFollowing } from '../src/store/sqlite-analytics.ts';
import { SqliteStore } from '../src/store/sqlite.ts';
import { cleanupAfter, cli, connection, get, post, request, serve, serverProcess, tempDir, type Answer } from './helpers.ts';

const MAX_STEP = 120;
const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;
const INTERVALS = { minute: MINUTE, hour: HOUR, day: DAY } as const;
type Interval = keyof typeof INTERVALS;
const bucketOf = (ms: number, size: number) => Math.floor(ms / size) * size;
const iso = (ms: number) => new Date(ms).toISOString();
const enc = encodeURIComponent;

// ---------------------------------------------------------------------------
// What the server stored, and the brute force over it.

/** An event as the events table holds it, with its receive time (ms). */
interface Stored extends WatchEvent {
  seq: number;
  receivedAt: number;
}

function storedEvents(db: string): Stored[] {
  const conn = new Database(db, { readonly: true });
  try {
    return conn
      .prepare(
        'SELECT e.seq, u.name AS user, m.slug, e.at, e.received_at AS receivedAt ' +
          'FROM events e JOIN users u ON u.id = e.user_id JOIN movies m ON m.id = e.movie_id ORDER BY e.seq',
      )
      .all() as Stored[];
  } finally {
    conn.close();
  }
}

const pairKey = (user: string, slug: string) => JSON.stringify([user, slug]);

interface BrutePair {
  user: string;
  slug: string;
  position: number;
  watched: number;
  furthest: number;
  /** Every second a credited event covered, one by one. */
  seconds: Set<number>;
}

type Scope = { kind: 'service' } | { kind: 'movie'; slug: string } | { kind: 'user'; user: string };

const seriesPath = (scope: Scope) =>
  scope.kind === 'service' ? '/timeseries' : scope.kind === 'movie' ? `/movies/${enc(scope.slug)}/timeseries` : `/users/${enc(scope.user)}/timeseries`;

/** SPEC section 7 computed the slow way, from the stored events in their order. */
class BruteForce {
  readonly pairs = new Map<string, BrutePair>();
  readonly maxAt = new Map<string, number>();
  /** The seconds each stored event credited, by index. */
  readonly credited: number[] = [];
  readonly lastSeq: number;

  constructor(
    readonly events: Stored[],
    readonly maxStep = MAX_STEP,
  ) {
    for (const { user, slug, at } of events) {
      const key = pairKey(user, slug);
      let pair = this.pairs.get(key);
      if (pair === undefined) this.pairs.set(key, (pair = { user, slug, position: 0, watched: 0, furthest: 0, seconds: new Set() }));
      const prev = pair.position;
      const step = at - prev;
      const credit = step > 0 && step <= maxStep ? step : 0;
      if (credit > 0) {
        for (let s = prev; s < at; s++) pair.seconds.add(s);
        pair.furthest = Math.max(pair.furthest, at);
      }
      pair.watched += credit;
      pair.position = at;
      this.credited.push(credit);
      this.maxAt.set(slug, Math.max(this.maxAt.get(slug) ?? 0, at));
    }
    this.lastSeq = events.at(-1)?.seq ?? 0;
  }

  get movies(): string[] {
    return [...this.maxAt.keys()];
  }

  get users(): string[] {
    return [...new Set(this.events.map((e) => e.user))];
  }

  pairsOf(slug: string): BrutePair[] {
    return [...this.pairs.values()].filter((p) => p.slug === slug);
  }

  duration(slug: string, durations: Map<string, number>): number {
    return durations.get(slug) ?? this.maxAt.get(slug)!;
  }

  stats(slug: string, durations: Map<string, number>) {
    const duration = this.duration(slug, durations);
    const watching = this.pairsOf(slug).filter((p) => p.seconds.size > 0);
    const viewers = watching.length;
    const coverage = watching.reduce((sum, p) => sum + p.seconds.size, 0);
    const watchTime = this.pairsOf(slug).reduce((sum, p) => sum + p.watched, 0);
    // coverage >= 0.9 * duration, in integers: 0.9 * 70 is 63.00000000000001 in floating point.
    const completed = watching.filter((p) => 10 * p.seconds.size >= 9 * duration).length;
    return {
      slug,
      duration,
      durationSource: durations.has(slug) ? 'set' : 'observed',
      watchTime,
      viewers,
      coverage,
      rewatched: watchTime - coverage,
      completed,
      completionRate: viewers === 0 ? 0 : completed / viewers,
      averageCoverage: viewers === 0 ? 0 : coverage / viewers,
      asOf: this.lastSeq,
      lagEvents: 0,
    };
  }

  retention(slug: string, points: number, durations: Map<string, number>) {
    const duration = this.duration(slug, durations);
    const pairs = this.pairsOf(slug);
    const viewers = pairs.filter((p) => p.seconds.size > 0).length;
    return {
      slug,
      duration,
      viewers,
      points: Array.from({ length: points }, (_, i) => {
        const second = Math.floor((i * duration) / points);
        const here = pairs.filter((p) => p.seconds.has(second)).length;
        return { second, viewers: here, share: viewers === 0 ? 0 : here / viewers };
      }),
      asOf: this.lastSeq,
      lagEvents: 0,
    };
  }

  /** Every bucket of [from, to): the seconds credited, the users credited and the events received in it. */
  series(scope: Scope, interval: Interval, from: number, to: number) {
    const size = INTERVALS[interval];
    const buckets = new Map<number, { watchTime: number; users: Set<string>; events: number }>();
    for (let start = from; start < to; start += size) buckets.set(start, { watchTime: 0, users: new Set(), events: 0 });
    this.events.forEach((e, i) => {
      if (scope.kind === 'movie' && e.slug !== scope.slug) return;
      if (scope.kind === 'user' && e.user !== scope.user) return;
      const bucket = buckets.get(bucketOf(e.receivedAt, size));
      if (bucket === undefined) return;
      bucket.events += 1;
      bucket.watchTime += this.credited[i];
      if (this.credited[i] > 0) bucket.users.add(e.user);
    });
    return {
      interval,
      from: iso(from),
      to: iso(to),
      buckets: [...buckets].map(([start, b]) => ({ start: iso(start), watchTime: b.watchTime, viewers: b.users.size, events: b.events })),
      asOf: this.lastSeq,
      lagEvents: 0,
    };
  }

  /** Users with an event received at or after `since`; per movie, the users with an event of it then. */
  viewersSince(since: number) {
    const users = new Set<string>();
    const byMovie = new Map<string, Set<string>>();
    for (const e of this.events) {
      if (e.receivedAt < since) continue;
      users.add(e.user);
      if (!byMovie.has(e.slug)) byMovie.set(e.slug, new Set());
      byMovie.get(e.slug)!.add(e.user);
    }
    return { viewers: users.size, movies: new Map([...byMovie].map(([slug, u]) => [slug, u.size])) };
  }
}

/** A pair's covered seconds as runs [start, end), the way they read best in a failure. */
function runsOf(seconds: Set<number>): number[] {
  const sorted = [...seconds].sort((a, b) => a - b);
  const runs: number[] = [];
  for (const s of sorted) {
    if (runs.length > 0 && runs[runs.length - 1] === s) runs[runs.length - 1] = s + 1;
    else runs.push(s, s + 1);
  }
  return runs;
}

/**
 * The follower's own pair rows, the only place a pair's coverage and furthest
 * second are kept: in a file of their own beside the database
 * (<db>-analytics), or in the database itself where there is none.
 */
function pairCoverageRows(db: string) {
  const followed = existsSync(`${db}-analytics`) ? `${db}-analytics` : db;
  const names = new Database(db, { readonly: true });
  const conn = new Database(followed, { readonly: true });
  try {
    const users = new Map((names.prepare('SELECT id, name FROM users').all() as { id: number; name: string }[]).map((r) => [r.id, r.name]));
    const movies = new Map((names.prepare('SELECT id, slug FROM movies').all() as { id: number; slug: string }[]).map((r) => [r.id, r.slug]));
    const rows = conn.prepare('SELECT user_id, movie_id, position, watched, coverage, furthest, intervals FROM pair_coverage').all() as {
      user_id: number;
      movie_id: number;
      position: number;
      watched: number;
      coverage: number;
      furthest: number;
      intervals: Buffer;
    }[];
    return rows.map(({ user_id, movie_id, intervals, ...row }) => ({
      user: users.get(user_id)!,
      slug: movies.get(movie_id)!,
      ...row,
      runs: Array.from({ length: intervals.length / 4 }, (_, i) => intervals.readInt32LE(i * 4)),
    }));
  } finally {
    conn.close();
    names.close();
  }
}

/** A sample of /metrics, by its series' name. */
async function metric(base: string, name: string): Promise<number> {
  const { body } = await get(base, '/metrics');
  const match = new RegExp(`^${name} (\\S+)$`, 'm').exec(body);
  assert.ok(match, `/metrics has ${name}`);
  return Number(match[1]);
}

// ---------------------------------------------------------------------------
// Talking to the server.

/** Waits until an answer says the analytics include every stored event. */
async function caughtUp(base: string, headers: Record<string, string> = {}): Promise<{ asOf: number }> {
  for (let i = 0; i < 600; i++) {
    const { status, body } = await get(base, '/viewers', headers);
    assert.equal(status, 200);
    if (body.lagEvents === 0) return body;
    await sleep(20);
  }
  assert.fail('the analytics never caught up (lagEvents stayed above 0)');
}

function ndjson(events: object[]): string {
  return events.map((e) => JSON.stringify(e)).join('\n') + '\n';
}

const postTo = (base: string, pathname: '/' | '/events', body: string, contentType: string) =>
  request(`${base}${pathname}`, { method: 'POST', headers: { 'content-type': contentType }, body });

/**
 * Posts one player's stream of events in order, in requests of every kind:
 * one event, a JSON batch, an NDJSON batch, and a batch with client ids that
 * is then sent again (a retry, all duplicates). Returns how many it stored.
 */
async function sendStream(base: string, events: WatchEvent[], random: () => number, tag: string, onlySingles = false): Promise<number> {
  let sent = 0;
  for (let i = 0, n = 0; i < events.length; n++) {
    const roll = onlySingles ? 0 : random();
    const size = roll < 0.15 ? 1 : 2 + Math.floor(random() * 300);
    const chunk = events.slice(i, i + size);
    i += chunk.length;
    let answer: Answer;
    if (chunk.length === 1) {
      answer = await postTo(base, roll < 0.07 ? '/' : '/events', JSON.stringify(chunk[0]), 'application/json');
    } else if (roll < 0.5) {
      answer = await post(base, chunk);
    } else if (roll < 0.85) {
      answer = await postTo(base, '/', ndjson(chunk), 'application/x-ndjson');
    } else {
      const withIds = chunk.map((e, k) => ({ ...e, id: `${tag}-${n}-${k}` }));
      answer = await post(base, withIds);
      assert.equal(answer.status, 200, JSON.stringify(answer.body));
      assert.deepEqual(answer.body, { accepted: chunk.length, duplicates: 0 });
      answer = await post(base, withIds);
      assert.deepEqual(answer.body, { accepted: 0, duplicates: chunk.length }, 'a retry stores nothing again');
      sent += chunk.length;
      continue;
    }
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
    assert.deepEqual(answer.body, { accepted: chunk.length, duplicates: 0 });
    sent += chunk.length;
  }
  return sent;
}

/** A problem+json answer of this status; with `parameter`, one that names it. */
function assertProblem(answer: Answer, status: number, parameter?: string, what = '') {
  assert.equal(answer.status, status, `${what}: ${JSON.stringify(answer.body)}`);
  assert.equal(answer.headers.get('content-type'), 'application/problem+json', what);
  assert.equal(answer.body.status, status, what);
  if (parameter !== undefined) {
    const named = (answer.body.errors ?? []).find((e: { pointer: string }) => e.pointer === `/${parameter}`);
    assert.ok(named, `${what}: an error points at /${parameter}: ${JSON.stringify(answer.body)}`);
    assert.match(named.message, new RegExp(`\\b${parameter}\\b`), `${what}: the message names ${parameter}`);
  }
}

const put = (base: string, slug: string, body: string, headers: Record<string, string> = { 'content-type': 'application/json' }) =>
  request(`${base}/movies/${enc(slug)}`, { method: 'PUT', headers, body });

// ---------------------------------------------------------------------------
// The players.

/**
 * Receive times are the server's clock, Date.now in this process: the play is
 * sent in four phases, the clock moved forward between them (never back, and
 * only while nothing is queued), so that the buckets of every interval hold
 * events in several minutes, hours and days. The last phase is now.
 */
const PHASE_SHIFTS = [-(26 * HOUR + 7 * MINUTE), -(26 * HOUR + 4 * MINUTE), -(2 * HOUR + MINUTE), 0];

const ODD_USER = 'ann/é %?#&+';
const ODD_SLUG = 'x/y%z é';
const e = (user: string, slug: string, at: number): WatchEvent => ({ user, slug, at });
/**
 * Hand-made pairs at the rule's edges, one list a phase: a pair that only
 * seeks, pauses and rewinds (no coverage: a movie without viewers), a first
 * step of 121 (not credited) and of 120 (credited), a rewind then replay, a
 * movie whose every `at` is 0 (duration 0), the largest `at` there is, names
 * that need decoding, and movies watched only now (more movies now than the
 * top 10).
 */
const EDGE_PHASES: WatchEvent[][] = [
  [
    e('edge-d', 'edge-huge', 2147483500),
    e('edge-a', 'edge-nocover', 500), e('edge-a', 'edge-nocover', 500), e('edge-b', 'edge-nocover', 121),
    e('edge-a', 'edge-bounds', 120), e('edge-b', 'edge-bounds', 60), e('edge-b', 'edge-bounds', 30),
    e('edge-c', 'edge-zero', 0),
  ],
  [
    e('edge-d', 'edge-huge', 2147483600),
    e('edge-a', 'edge-nocover', 0),
    e('edge-a', 'edge-bounds', 240), e('edge-b', 'edge-bounds', 90),
    e(ODD_USER, ODD_SLUG, 30), e(ODD_USER, ODD_SLUG, 60), e(ODD_USER, ODD_SLUG, 90),
  ],
  [
    e('edge-b', 'edge-bounds', 90), e('edge-b', 'edge-bounds', 200), e('edge-b', 'edge-bounds', 150), e('edge-a', 'edge-bounds', 360),
    e('edge-c', 'edge-zero', 0), e('edge-c', 'edge-bounds', 1),
  ],
  [
    e('edge-d', 'edge-huge', 2147483647),
    e('edge-a', 'edge-nocover', 0), e(ODD_USER, ODD_SLUG, 150), e('edge-c', 'edge-bounds', 1),
    e('edge-a', 'edge-late-1', 30), e('edge-a', 'edge-late-2', 30), e('edge-c', 'edge-late-3', 0),
  ],
];

/** Heartbeats every 5 s (long pauses, many rewinds), every 60 s (some users complete a movie), every 120 s (steps of 119, 120 and 121). */
const players = () => [
  { sim: new Simulation({ users: 6, movies: 3, seed: 101, heartbeat: 5 }), perPhase: 150 },
  { sim: new Simulation({ users: 4, movies: 2, seed: 204, heartbeat: 60 }), perPhase: 120 },
  { sim: new Simulation({ users: 3, movies: 2, seed: 303, heartbeat: 120 }), perPhase: 30 },
];

// ---------------------------------------------------------------------------

describe('analytics against a brute force (SQLite)', () => {
  const cleanup = cleanupAfter();
  let db: string;
  let server: RunningServer;
  let model: BruteForce;
  /** Durations set with PUT /movies/{slug}. */
  const durations = new Map<string, number>();
  /**
   * The ranges a series is asked for, empty buckets around the events
   * included: one over all of them, from two buckets before the first to two
   * after the last; but a movie's or a user's minutes around each phase
   * apart (26 hours of minutes are 1,500 buckets, each checked against the
   * API's schema too).
   */
  const rangesOf = (scope: Scope, interval: Interval) => {
    const size = INTERVALS[interval];
    const starts = [...new Set(model.events.map((x) => bucketOf(x.receivedAt, size)))].sort((a, b) => a - b);
    if (interval !== 'minute' || scope.kind === 'service') return [{ from: starts[0] - 2 * size, to: starts.at(-1)! + 3 * size }];
    const ranges: { from: number; to: number }[] = [];
    for (const start of starts) {
      const last = ranges.at(-1);
      if (last !== undefined && start - 2 * size <= last.to) last.to = start + 3 * size;
      else ranges.push({ from: start - 2 * size, to: start + 3 * size });
    }
    return ranges;
  };
  const scopes = (): Scope[] => [
    { kind: 'service' },
    ...model.movies.map((slug) => ({ kind: 'movie' as const, slug })),
    ...model.users.map((user) => ({ kind: 'user' as const, user })),
  ];
  const seriesQuery = (scope: Scope, interval: Interval, { from, to }: { from: number; to: number }) =>
    `${seriesPath(scope)}?interval=${interval}&from=${iso(from)}&to=${iso(to)}`;

  test('players play, pause, seek and rewind; every figure equals the brute force over the events sent', async () => {
    db = path.join(tempDir(cleanup), 'w.db');
    const realNow = Date.now;
    let shift = PHASE_SHIFTS[0];
    Date.now = () => realNow() + shift;
    try {
      server = await serve(cleanup, db);
      const base = server.url;
      const sims = players();
      /** Each user's events go through one stream, so a pair's events arrive in the order played. */
      const streamOf = new Map<string, number>();
      const sentByPair = new Map<string, number[]>();
      let sent = 0;
      for (const [phase, phaseShift] of PHASE_SHIFTS.entries()) {
        assert.ok(phaseShift >= shift, 'the clock only moves forward');
        shift = phaseShift;
        const streams: WatchEvent[][] = [[], [], [], EDGE_PHASES[phase]];
        for (const { sim, perPhase } of sims) {
          for (let k = 0; k < perPhase; k++) {
            for (let u = 0; u < sim.userCount; u++) {
              const event = sim.next(u);
              if (!streamOf.has(event.user)) streamOf.set(event.user, streamOf.size % 3);
              streams[streamOf.get(event.user)!].push(event);
            }
          }
        }
        for (const stream of streams) {
          for (const { user, slug, at } of stream) {
            const key = pairKey(user, slug);
            if (!sentByPair.has(key)) sentByPair.set(key, []);
            sentByPair.get(key)!.push(at);
          }
        }
        const counts = await Promise.all(streams.map((stream, s) => sendStream(base, stream, seededRandom(99 + 10 * phase + s), `p${phase}s${s}`, s === 3)));
        sent += counts.reduce((a, b) => a + b, 0);
      }
      shift = 0;

      // What the server stored is what was sent: every event once, each pair's in the order played.
      const events = storedEvents(db);
      assert.equal(events.length, sent);
      const storedByPair = new Map<string, number[]>();
      for (const { user, slug, at } of events) {
        const key = pairKey(user, slug);
        if (!storedByPair.has(key)) storedByPair.set(key, []);
        storedByPair.get(key)!.push(at);
      }
      assert.deepEqual(storedByPair, sentByPair);
      model = new BruteForce(events);

      // The run is worth checking: every kind of step, boundaries, completions, and buckets in several minutes, hours and days.
      const steps = { play: 0, pause: 0, seek: 0, rewind: 0, step120: 0, step121: 0 };
      for (const ats of sentByPair.values()) {
        ats.forEach((at, i) => {
          const step = at - (i === 0 ? 0 : ats[i - 1]);
          if (step === 0) steps.pause++;
          else if (step < 0) steps.rewind++;
          else if (step > MAX_STEP) steps.seek++;
          else steps.play++;
          if (step === 120) steps.step120++;
          if (step === 121) steps.step121++;
        });
      }
      for (const [kind, count] of Object.entries(steps)) assert.ok(count >= 20, `${kind}: ${count}`);
      assert.ok(model.movies.some((slug) => model.stats(slug, durations).completed > 0), 'some pair completes a movie of its observed duration');
      assert.ok(model.movies.some((slug) => model.stats(slug, durations).rewatched > 0));
      for (const interval of ['minute', 'hour', 'day'] as const) {
        const busy = new Set(events.map((x) => bucketOf(x.receivedAt, INTERVALS[interval])));
        assert.ok(busy.size >= 2, `events in ${busy.size} ${interval} buckets`);
      }

      const progress = await caughtUp(base);
      assert.equal(progress.asOf, model.lastSeq, 'asOf is the number of the last event');
      await checkEverything(base, 'observed durations', model);

      // Durations set: smaller than observed (more complete), larger (the curve's tail is empty), set twice (the last counts),
      // and 167 s for a pair that covered 150: 90 % is 150.3, so 150 s is not complete.
      const [a0, , a2] = sims[0].sim.movies.map((m) => m.slug);
      const c0 = sims[2].sim.movies[0].slug;
      const wanted: [string, number][] = [['edge-bounds', 50], ['edge-bounds', 200], [a0, 1000], [a2, 777], [c0, 2 * model.maxAt.get(c0)!], [ODD_SLUG, 167]];
      for (const [slug, duration] of wanted) {
        const answer = await put(base, slug, JSON.stringify({ duration }));
        assert.equal(answer.status, 200, JSON.stringify(answer.body));
        assert.deepEqual(answer.body, { slug, duration });
        durations.set(slug, duration);
      }
      assert.ok(model.movies.some((slug) => durations.has(slug) && model.stats(slug, durations).completed > model.stats(slug, new Map()).completed));
      await checkEverything(base, 'durations set', model, { series: false });

      // Viewers now: the users with an event in the last 120 s, here those of the last phase (the one before is 2 hours old).
      const before = Date.now();
      const now = (await get(base, '/viewers')).body;
      const since = before - 120_000;
      assert.ok(
        events.every((x) => x.receivedAt < since - 60_000 || x.receivedAt > Date.now() - 120_000 + 1_000),
        'no event is near the edge of the window, whenever the server read its clock',
      );
      const expected = model.viewersSince(since);
      assert.equal(expected.viewers, model.users.length - 1, 'every user but edge-b played in the last phase');
      assert.equal(now.viewers, expected.viewers);
      assert.equal(now.windowSeconds, 120);
      assert.equal(now.asOf, model.lastSeq);
      assert.equal(now.lagEvents, 0);
      checkTopMovies(now.movies, expected.movies);
    } finally {
      Date.now = realNow;
    }
  });

  /** The 10 movies with the most viewers now, most first, each with its count; ties at the cut may go either way. */
  function checkTopMovies(answered: { slug: string; viewers: number }[], expected: Map<string, number>) {
    assert.equal(answered.length, Math.min(10, expected.size));
    assert.ok(expected.size > 10, `more movies than the top 10 are watched now (${expected.size})`);
    for (const { slug, viewers } of answered) assert.equal(viewers, expected.get(slug), slug);
    const counts = answered.map((m) => m.viewers);
    assert.deepEqual(counts, [...counts].sort((a, b) => b - a), 'most viewers first');
    const cut = counts.at(-1)!;
    for (const [slug, viewers] of expected) if (viewers > cut) assert.ok(answered.some((m) => m.slug === slug), `${slug} (${viewers}) is in the top 10`);
  }

  /** Pairs, movies and series against the brute force; `series: false` for a change that cannot move them (a duration). */
  async function checkEverything(base: string, when: string, model: BruteForce, { series = true } = {}) {
    checkPairs(when, model);
    await checkMoviesAndSeries(base, when, model, series);
  }

  /** Per pair: the follower's rows against the Sets. */
  function checkPairs(when: string, model: BruteForce) {
    const rows = pairCoverageRows(db);
    assert.equal(rows.length, model.pairs.size, `${when}: one row a pair`);
    for (const row of rows) {
      const pair = model.pairs.get(pairKey(row.user, row.slug))!;
      assert.deepEqual(
        row,
        { user: pair.user, slug: pair.slug, position: pair.position, watched: pair.watched, coverage: pair.seconds.size, furthest: pair.furthest, runs: runsOf(pair.seconds) },
        `${when}: pair ${row.user} ${row.slug}`,
      );
    }
  }

  async function checkMoviesAndSeries(base: string, when: string, model: BruteForce, series: boolean) {
    for (const slug of model.movies) {
      const stats = await get(base, `/movies/${enc(slug)}/stats`);
      assert.equal(stats.status, 200);
      assert.deepEqual(stats.body, model.stats(slug, durations), `${when}: stats of ${slug}`);
      for (const points of [undefined, 1, 7, 1000]) {
        const retention = await get(base, `/movies/${enc(slug)}/retention${points === undefined ? '' : `?points=${points}`}`);
        assert.equal(retention.status, 200);
        assert.deepEqual(retention.body, model.retention(slug, points ?? 100, durations), `${when}: retention of ${slug}, ${points} points`);
      }
    }

    if (!series) return;
    for (const scope of scopes()) {
      const mine = model.events
        .map((x, i) => ({ ...x, credit: model.credited[i] }))
        .filter((x) => (scope.kind === 'movie' ? x.slug === scope.slug : scope.kind === 'user' ? x.user === scope.user : true));
      for (const interval of ['minute', 'hour', 'day'] as const) {
        const sums = { events: 0, watchTime: 0 };
        for (const range of rangesOf(scope, interval)) {
          const answer = await get(base, seriesQuery(scope, interval, range));
          assert.equal(answer.status, 200);
          const expected = model.series(scope, interval, range.from, range.to);
          assert.deepEqual(answer.body, expected, `${when}: ${interval} series of ${JSON.stringify(scope)} from ${iso(range.from)}`);
          for (const bucket of answer.body.buckets) {
            sums.events += bucket.events;
            sums.watchTime += bucket.watchTime;
          }
        }
        // Summed over the ranges, which hold every event: the totals.
        assert.deepEqual(sums, { events: mine.length, watchTime: mine.reduce((s, x) => s + x.credit, 0) }, `${when}: ${interval} sums of ${JSON.stringify(scope)}`);
      }
    }

    // No range: the last 48 buckets up to the one holding now (hour when no interval is named).
    for (const interval of [undefined, 'minute', 'hour', 'day'] as const) {
      const size = INTERVALS[interval ?? 'hour'];
      for (let attempt = 0; ; attempt++) {
        const before = Date.now();
        const answer = await get(base, `/timeseries${interval ? `?interval=${interval}` : ''}`);
        if (bucketOf(before, size) !== bucketOf(Date.now(), size) && attempt < 3) continue; // the bucket turned meanwhile
        const to = bucketOf(before, size) + size;
        assert.deepEqual(answer.body, model.series({ kind: 'service' }, interval ?? 'hour', to - 48 * size, to), `${when}: default range, ${interval}`);
        break;
      }
    }
  }

  test('rebuilt: the follower derives the same answers again from the events; durations set survive', async () => {
    assert.ok(model, 'the brute-force run came first');
    const base = server.url;
    const paths = [
      '/viewers',
      ...model.movies.flatMap((slug) => [`/movies/${enc(slug)}/stats`, `/movies/${enc(slug)}/retention`, `/movies/${enc(slug)}/retention?points=1000`]),
      // Every scope's hours and days, the service's minutes (the pairs' rows are compared in full below).
      ...scopes().flatMap((scope) =>
        (scope.kind === 'service' ? (['minute', 'hour', 'day'] as const) : (['hour', 'day'] as const)).flatMap((interval) =>
          rangesOf(scope, interval).map((range) => seriesQuery(scope, interval, range)),
        ),
      ),
    ];
    const answers = async (url: string) => {
      const out = new Map<string, unknown>();
      for (const p of paths) {
        const answer = await get(url, p);
        assert.equal(answer.status, 200, p);
        out.set(p, answer.body);
      }
      return out;
    };
    const before = await answers(base);

    await server.close();
    const run = await cli(['rebuild', '--db', db]);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, new RegExp(`^rebuilt ${model.events.length} events under accounting progress`));

    server = await serve(cleanup, db);
    const progress = await caughtUp(server.url);
    assert.equal(progress.asOf, model.lastSeq);
    // The answers are the follower's of this process, derived again from the first event, not what the last one left.
    assert.equal(await metric(server.url, 'watchtime_analytics_events_total'), model.events.length, 'the new follower applied every event');
    const after = await answers(server.url);
    for (const p of paths) assert.deepEqual(after.get(p), before.get(p), p);
    for (const [slug, duration] of durations) {
      const { body } = await get(server.url, `/movies/${enc(slug)}/stats`);
      assert.deepEqual([body.duration, body.durationSource], [duration, 'set'], `the duration of ${slug} survived`);
    }
    checkPairs('rebuilt', model);
  });

  test('rebuilt under another rule while the server runs: its follower derives the figures of the new rule', async () => {
    assert.ok(model, 'the brute-force run came first');
    const run = await cli(['rebuild', '--db', db, '--max-step', '60']);
    assert.equal(run.code, 0, run.stderr);
    const progress = await caughtUp(server.url);
    assert.equal(progress.asOf, model.lastSeq);
    const stricter = new BruteForce(model.events, 60);
    assert.ok(
      model.movies.some((slug) => stricter.stats(slug, durations).coverage < model.stats(slug, durations).coverage),
      'steps of 61 to 120 s no longer count',
    );
    await checkEverything(server.url, 'max step 60, rebuilt online', stricter);
  });

  test(
    "a bucket's figures do not depend on where `to` falls inside it",
    async () => {
      assert.ok(model, 'the brute-force run came first');
      let cases = 0;
      for (const scope of scopes()) {
        for (const interval of ['hour', 'day'] as const) {
          const size = INTERVALS[interval];
          // A bucket that holds the scope's events in two minutes or more; `to` just before the start of the last of them.
          const minutes = new Map<number, Set<number>>();
          for (const x of model.events) {
            if ((scope.kind === 'movie' && x.slug !== scope.slug) || (scope.kind === 'user' && x.user !== scope.user)) continue;
            const bucket = bucketOf(x.receivedAt, size);
            if (!minutes.has(bucket)) minutes.set(bucket, new Set());
            minutes.get(bucket)!.add(bucketOf(x.receivedAt, MINUTE));
          }
          for (const [bucket, starts] of minutes) {
            if (starts.size < 2) continue;
            cases++;
            const to = Math.max(...starts) - 1;
            const whole = await get(server.url, `${seriesPath(scope)}?interval=${interval}&from=${iso(bucket)}&to=${iso(bucket + size)}`);
            const cut = await get(server.url, `${seriesPath(scope)}?interval=${interval}&from=${iso(bucket)}&to=${iso(to)}`);
            assert.deepEqual(cut.body.buckets, whole.body.buckets, `${interval} ${JSON.stringify(scope)}, to=${iso(to)}`);
          }
        }
      }
      assert.ok(cases > 0);
    },
  );
});

// ---------------------------------------------------------------------------

describe('analytics refusals through HTTP', () => {
  test('unknown names 404; bad points, interval, from, to and ranges 400 naming the parameter', async (t) => {
    const cleanup = cleanupAfter(t);
    const base = (await serve(cleanup, path.join(tempDir(cleanup), 'w.db'))).url;
    for (const event of [e('ann', 'alien', 60), e('ann', 'alien', 120), e('bob', 'alien', 30)]) assert.equal((await post(base, event)).status, 200);
    await caughtUp(base);

    for (const pathname of ['/movies/nope/stats', '/movies/nope/retention', '/movies/nope/timeseries', '/users/nobody/timeseries']) {
      const answer = await get(base, pathname);
      assertProblem(answer, 404, undefined, pathname);
      assert.match(answer.body.type, /\/problems\/not-found$/);
    }
    // A movie known but a user asked for as a movie, and the other way round.
    assertProblem(await get(base, '/users/alien/timeseries'), 404, undefined, 'a movie is no user');
    assertProblem(await get(base, '/movies/ann/stats'), 404, undefined, 'a user is no movie');

    for (const points of ['0', '1001', '1.5', 'abc', '-1', '1e2']) {
      assertProblem(await get(base, `/movies/alien/retention?points=${points}`), 400, 'points', `points=${points}`);
    }
    assert.equal((await get(base, '/movies/alien/retention?points=1000')).body.points.length, 1000);
    assert.equal((await get(base, '/movies/alien/retention?points=1')).body.points.length, 1);

    for (const series of ['/timeseries', '/movies/alien/timeseries', '/users/ann/timeseries']) {
      assertProblem(await get(base, `${series}?interval=week`), 400, 'interval', `${series} interval=week`);
      assertProblem(await get(base, `${series}?from=yesterday`), 400, 'from', `${series} from=yesterday`);
      assertProblem(await get(base, `${series}?from=2026-13-01`), 400, 'from', `${series} from=2026-13-01`);
      assertProblem(await get(base, `${series}?from=2026-01-02&to=tomorrow`), 400, 'to', `${series} to=tomorrow`);
      assertProblem(await get(base, `${series}?from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z`), 400, undefined, `${series} to before from`);
      assertProblem(await get(base, `${series}?from=2026-02-01&to=2026-02-01`), 400, undefined, `${series} to equal to from`);
      // Date.parse reads 2026-02-30 as March 2nd: an impossible date is refused, not moved.
      assertProblem(await get(base, `${series}?from=2026-02-30`), 400, 'from', `${series} from=2026-02-30`);
    }

    // At most 44,640 buckets at once: 31 days of minutes answer, one minute more does not, and the refusal says the limit.
    // (Read without the schema check of every bucket, which takes seconds for 44,640 of them.)
    const month = await fetch(`${base}/timeseries?interval=minute&from=2026-01-01T00:00:00Z&to=2026-02-01T00:00:00Z`);
    assert.equal(month.status, 200);
    assert.equal(((await month.json()) as { buckets: unknown[] }).buckets.length, 44_640);
    for (const query of ['interval=minute&from=2026-01-01T00:00:00Z&to=2026-02-01T00:01:00Z', 'interval=day&from=1900-01-01&to=2100-01-01']) {
      const tooMany = await get(base, `/timeseries?${query}`);
      assertProblem(tooMany, 400, undefined, query);
      assert.match(JSON.stringify(tooMany.body), /44,?640/, 'the refusal says the limit');
    }
  });

  test('PUT /movies/{slug}: a bad duration is 400 and stores nothing; the ingest token guards it', async (t) => {
    const cleanup = cleanupAfter(t);
    const dir = tempDir(cleanup);
    const base = (await serve(cleanup, path.join(dir, 'w.db'))).url;
    assert.equal((await post(base, [e('ann', 'alien', 60), e('ann', 'alien', 90)])).status, 200);
    await caughtUp(base);
    const source = async () => {
      const { body } = await get(base, '/movies/alien/stats');
      return { duration: body.duration, durationSource: body.durationSource };
    };
    const bad = [
      ['{"duration":0}', 'duration'],
      ['{"duration":-1}', 'duration'],
      ['{"duration":1.5}', 'duration'],
      ['{"duration":"10"}', 'duration'],
      ['{"duration":2147483648}', 'duration'],
      ['{"duration":null}', 'duration'],
      ['{}', 'duration'],
      ['{"length":10}', 'duration'],
      ['not json', undefined],
      ['', undefined],
      ['[10]', undefined],
      ['null', undefined],
    ] as const;
    for (const expected of [{ duration: 90, durationSource: 'observed' }, { duration: 4000, durationSource: 'set' }]) {
      if (expected.durationSource === 'set') assert.equal((await put(base, 'alien', '{"duration":4000}')).status, 200);
      for (const [body, parameter] of bad) {
        assertProblem(await put(base, 'alien', body), 400, parameter, `PUT ${body}`);
        assert.deepEqual(await source(), expected, `nothing stored after PUT ${body}`);
      }
      const plain = await put(base, 'alien', '{"duration":10}', { 'content-type': 'text/plain' });
      assert.ok(plain.status === 400 || plain.status === 415, `a body that is not JSON by its type: ${plain.status}`);
      assert.deepEqual(await source(), expected);
    }

    // With an ingest token, a duration is a write like an event: 401 without it or with another, 200 with it; reads stay open.
    const guarded = (await serve(cleanup, path.join(dir, 'guarded.db'), { ingestToken: 'sesame' })).url;
    const auth = { authorization: 'Bearer sesame' };
    assert.equal((await post(guarded, e('ann', 'alien', 60), 'application/json', auth)).status, 200);
    await caughtUp(guarded);
    const json = { 'content-type': 'application/json' };
    for (const headers of [json, { ...json, authorization: 'Bearer sesam' }, { ...json, authorization: 'sesame' }]) {
      assertProblem(await put(guarded, 'alien', '{"duration":300}', headers), 401, undefined, JSON.stringify(headers));
      const { body } = await get(guarded, '/movies/alien/stats');
      assert.deepEqual([body.duration, body.durationSource], [60, 'observed'], 'a refused PUT stored nothing');
    }
    const ok = await put(guarded, 'alien', '{"duration":300}', { ...json, ...auth });
    assert.equal(ok.status, 200);
    assert.deepEqual(ok.body, { slug: 'alien', duration: 300 });
    const { body } = await get(guarded, '/movies/alien/stats');
    assert.deepEqual([body.duration, body.durationSource, body.viewers, body.completed], [300, 'set', 1, 0]);
  });

  test('under sum accounting: stats and retention 409, time series and viewers now answer with the sum of at', async (t) => {
    const cleanup = cleanupAfter(t);
    const db = path.join(tempDir(cleanup), 'sum.db');
    const base = (await serve(cleanup, db, { rule: { accounting: 'sum' } })).url;
    const events = [e('ann', 'alien', 60), e('ann', 'alien', 120), e('bob', 'alien', 0), e('ann', 'brazil', 10), e('bob', 'alien', 45), e('cid', 'brazil', 0), e('dan', 'alien', 5)];
    assert.equal((await post(base, events.slice(0, 3))).status, 200);
    for (const event of events.slice(3)) assert.equal((await post(base, event)).status, 200);
    const progress = await caughtUp(base);
    assert.equal(progress.asOf, events.length);

    for (const pathname of ['/movies/alien/stats', '/movies/alien/retention', '/movies/brazil/retention?points=5']) {
      const answer = await get(base, pathname);
      assertProblem(answer, 409, undefined, pathname);
      assert.match(answer.body.type, /\/problems\/coverage-needs-progress$/);
      assert.match(answer.body.detail, /sum/);
    }
    // The unknown is still 404, and a bad parameter still 400.
    assertProblem(await get(base, '/movies/nope/stats'), 404);

    const stored = storedEvents(db);
    assert.deepEqual(stored.map(({ user, slug, at }) => ({ user, slug, at })), events);
    for (const interval of ['minute', 'hour', 'day'] as const) {
      const size = INTERVALS[interval];
      const from = bucketOf(stored[0].receivedAt, size) - size;
      const to = bucketOf(stored.at(-1)!.receivedAt, size) + 2 * size;
      for (const scope of [{ kind: 'service' }, { kind: 'movie', slug: 'alien' }, { kind: 'movie', slug: 'brazil' }, { kind: 'user', user: 'ann' }, { kind: 'user', user: 'bob' }, { kind: 'user', user: 'cid' }] as Scope[]) {
        const answer = await get(base, `${seriesPath(scope)}?interval=${interval}&from=${iso(from)}&to=${iso(to)}`);
        assert.equal(answer.status, 200);
        const buckets = new Map<number, { watchTime: number; users: Set<string>; events: number }>();
        for (let start = from; start < to; start += size) buckets.set(start, { watchTime: 0, users: new Set(), events: 0 });
        for (const x of stored) {
          if ((scope.kind === 'movie' && x.slug !== scope.slug) || (scope.kind === 'user' && x.user !== scope.user)) continue;
          const bucket = buckets.get(bucketOf(x.receivedAt, size))!;
          bucket.events += 1;
          bucket.watchTime += x.at; // sum: an event credits its at
          if (x.at > 0) bucket.users.add(x.user);
        }
        assert.deepEqual(answer.body, {
          interval,
          from: iso(from),
          to: iso(to),
          buckets: [...buckets].map(([start, b]) => ({ start: iso(start), watchTime: b.watchTime, viewers: b.users.size, events: b.events })),
          asOf: events.length,
          lagEvents: 0,
        }, `${interval} ${JSON.stringify(scope)}`);
      }
    }
    const total = (await get(base, '/timeseries?interval=day')).body.buckets.reduce((s: number, b: { watchTime: number }) => s + b.watchTime, 0);
    assert.equal(total, 60 + 120 + 0 + 10 + 45 + 0 + 5);

    const now = await get(base, '/viewers');
    assert.equal(now.status, 200);
    assert.deepEqual(now.body, {
      viewers: 4,
      windowSeconds: 120,
      movies: [{ slug: 'alien', viewers: 3 }, { slug: 'brazil', viewers: 2 }],
      asOf: events.length,
      lagEvents: 0,
    });
  });
});

// ---------------------------------------------------------------------------

describe('the analytics file beside a SQLite database', () => {
  /** A movie's stats and its live totals: the analytics must agree with the totals once caught up. */
  const agree = async (base: string, slug: string) => {
    await caughtUp(base);
    const [stats, totals] = [await get(base, `/movies/${slug}/stats`), await get(base, `/movies/${slug}/watch-time`)];
    assert.equal(stats.body.watchTime, totals.body.watchTime, `${slug}: the analytics' watch time is the totals'`);
    return stats.body;
  };

  test('a database put back from an older copy is followed again from its first event, not from the newer cursor', async (t) => {
    const cleanup = cleanupAfter(t);
    const dir = tempDir(cleanup);
    const db = path.join(dir, 'w.db');
    let server = await serve(cleanup, db);
    assert.equal((await post(server.url, [e('ann', 'alien', 60), e('ann', 'alien', 120), e('bob', 'alien', 30)])).status, 200);
    await agree(server.url, 'alien');
    await server.close();
    assert.equal((await cli(['backup', '--db', db, '--to', path.join(dir, 'copy.db')])).code, 0);

    // Events the copy does not hold, followed into the analytics file.
    server = await serve(cleanup, db);
    assert.equal((await post(server.url, [e('ghost', 'alien', 100), e('ghost', 'alien', 200)])).status, 200);
    await agree(server.url, 'alien');
    await server.close();

    // The copy takes events of its own (served as a file of its own), numbered as the lost ones were and past them.
    const copy = path.join(dir, 'copy.db');
    server = await serve(cleanup, copy);
    assert.equal((await post(server.url, [e('cid', 'alien', 10), e('cid', 'alien', 20), e('cid', 'alien', 30)])).status, 200);
    await server.close();
    // Put back in place; the analytics file of the database as it was stays, its cursor within the copy's events.
    for (const suffix of ['-wal', '-shm']) rmSync(`${db}${suffix}`, { force: true });
    copyFileSync(copy, db);
    server = await serve(cleanup, db);
    const stats = await agree(server.url, 'alien');
    // ann 120 + bob 30 + cid 30; ghost's 200 belonged to the database as it was.
    assert.equal(stats.watchTime, 180);
    assert.equal(stats.viewers, 3);
  });

  test('a damaged analytics file is removed and derived again; one deleted while the server runs is derived again', async (t) => {
    const cleanup = cleanupAfter(t);
    const db = path.join(tempDir(cleanup), 'w.db');
    writeFileSync(`${db}-analytics`, Buffer.alloc(8192, 7));
    const server = await serve(cleanup, db);
    assert.equal((await post(server.url, [e('ann', 'alien', 60), e('ann', 'alien', 120)])).status, 200);
    assert.equal((await agree(server.url, 'alien')).coverage, 120);
    assert.ok((await metric(server.url, 'watchtime_analytics_round_failures_total')) >= 1, 'the damaged file is counted as a failed round');

    for (const suffix of ['', '-wal', '-shm']) rmSync(`${db}-analytics${suffix}`, { force: true });
    assert.equal((await post(server.url, [e('bob', 'alien', 90)])).status, 200);
    const stats = await agree(server.url, 'alien');
    assert.equal(stats.coverage, 210);
    assert.ok(existsSync(`${db}-analytics`), 'made again');
  });

  test('a request pipelined behind a duration PUT on its connection reads the duration it set', async (t) => {
    const cleanup = cleanupAfter(t);
    const server = await serve(cleanup, path.join(tempDir(cleanup), 'w.db'));
    const { port } = new URL(server.url);
    for (const duration of [301, 302, 303]) {
      const body = JSON.stringify({ duration });
      const text = await new Promise<string>((resolve, reject) => {
        const socket = net.connect(Number(port), '127.0.0.1', () =>
          socket.write(
            `PUT /movies/pm HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}` +
              'GET /movies/pm/stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n',
          ),
        );
        let received = '';
        socket.on('data', (d) => (received += d));
        socket.on('end', () => resolve(received));
        socket.on('error', reject);
      });
      assert.deepEqual(text.match(/"duration":\d+/g), [`"duration":${duration}`, `"duration":${duration}`], text);
    }
  });
});

// ---------------------------------------------------------------------------


/** Which worker answered a request, from the debug line it logged for it. */
function workerOf(stderr: string, requestId: string): number | undefined {
  for (const line of stderr.split('\n')) {
    if (!line.startsWith('{')) continue;
    const parsed = JSON.parse(line) as { reqId?: string; worker?: number };
    if (parsed.reqId === requestId) return parsed.worker;
  }
  return undefined;
}

async function until(what: string, check: () => boolean) {
  for (let i = 0; i < 400; i++) {
    if (check()) return;
    await sleep(25);
  }
  assert.fail(`waited in vain for ${what}`);
}

describe('analytics with serve --workers 2', () => {
  test('a duration PUT through either worker goes to the writer, and stats read through either worker show it', async (t) => {
    const cleanup = cleanupAfter(t);
    const db = path.join(tempDir(cleanup), 'w.db');
    const server = serverProcess(['--db', db, '--workers', '2', '--log-level', 'debug']);
    cleanup(() => server.child.kill('SIGKILL'));
    const base = await server.listening;
    const clients = Array.from({ length: 6 }, () => connection(base));
    cleanup(() => clients.forEach((c) => c.close()));

    // Each connection's worker, from the debug line of a 404 it answered.
    const byWorker = new Map<number, ReturnType<typeof connection>>();
    for (const [i, client] of clients.entries()) {
      const answer = await client.get(`/nothing-here-${i}`);
      assert.equal(answer.status, 404);
      const id = answer.headers['x-request-id'] as string;
      await until('the 404 to be logged', () => workerOf(server.stderr(), id) !== undefined);
      byWorker.set(workerOf(server.stderr(), id)!, client);
    }
    assert.deepEqual([...byWorker.keys()].sort(), [1, 2], 'the connections reached both workers');
    const one = byWorker.get(1)!;
    const two = byWorker.get(2)!;

    assert.deepEqual((await one.post([e('ann', 'film', 60), e('ann', 'film', 120), e('bob', 'film', 100)])).body, { accepted: 3, duplicates: 0 });
    for (let i = 0; ; i++) {
      if ((await two.get('/viewers')).body.lagEvents === 0) break;
      assert.ok(i < 400, 'the analytics caught up');
      await sleep(20);
    }
    const stats = async (client: ReturnType<typeof connection>, slug: string) => {
      const { status, body } = await client.get(`/movies/${slug}/stats`);
      assert.equal(status, 200);
      return [body.duration, body.durationSource, body.viewers, body.completed];
    };
    for (const client of [one, two]) assert.deepEqual(await stats(client, 'film'), [120, 'observed', 2, 1]);

    for (const [writer, reader, duration] of [[one, two, 1000], [two, one, 130], [one, one, 110]] as const) {
      const answer = await writer.put('/movies/film', JSON.stringify({ duration }));
      assert.equal(answer.status, 200, JSON.stringify(answer.body));
      assert.deepEqual(answer.body, { slug: 'film', duration });
      // At once, through the other worker as well as this one.
      const completed = [120, 100].filter((coverage) => 10 * coverage >= 9 * duration).length; // ann covered [0, 120), bob [0, 100)
      for (const client of [reader, writer]) assert.deepEqual(await stats(client, 'film'), [duration, 'set', 2, completed], `duration ${duration}`);
    }
    // A movie named first by its duration.
    assert.equal((await two.put('/movies/later', '{"duration":42}')).status, 200);
    assert.deepEqual(await stats(one, 'later'), [42, 'set', 0, 0]);
    // A bad one through a worker stores nothing.
    assert.equal((await one.put('/movies/film', '{"duration":0}')).status, 400);
    assert.deepEqual(await stats(two, 'film'), [110, 'set', 2, 2]);

    // The writer stored them: the file says so.
    const conn = new Database(db, { readonly: true });
    try {
      assert.deepEqual(conn.prepare('SELECT slug, duration FROM movies ORDER BY slug').all(), [{ slug: 'film', duration: 110 }, { slug: 'later', duration: 42 }]);
    } finally {
      conn.close();
    }
  });
});

// ---------------------------------------------------------------------------

describe("the follower's rounds", () => {
  /**
   * 25,000 events of 300 users over 30 movies, received over three days:
   * many times what a round reads at once, with every kind of step.
   */
  function eventsDatabase(file: string): void {
    const random = seededRandom(7);
    const store = new SqliteStore(file);
    try {
      store.initSettings({ accounting: 'progress', maxStep: MAX_STEP });
      const positions = new Map<string, number>();
      let receivedAt = Date.parse('2026-03-01T22:00:00Z');
      for (let batch = 0; batch < 25; batch++) {
        const events = Array.from({ length: 1000 }, () => {
          receivedAt += Math.floor(random() * 20_000);
          const user = `u${Math.floor(random() * 300)}`;
          const slug = `m${Math.floor(random() * 30)}`;
          const key = `${user} ${slug}`;
          const was = positions.get(key) ?? 0;
          const steps = [5, 10, 60, MAX_STEP, MAX_STEP + 1, 0, -30, 1000];
          const at = Math.max(0, was + steps[Math.floor(random() * steps.length)]);
          positions.set(key, at);
          return { user, slug, at, receivedAt };
        });
        store.ingest(events);
      }
    } finally {
      store.close();
    }
  }

  /** Every row of the analytics file but the cursor's mark; retention as the curve's changes that are not 0. */
  function analyticsRows(db: string) {
    const conn = new Database(`${db}-analytics`, { readonly: true });
    try {
      const all = (sql: string) => conn.prepare(sql).raw().all() as unknown[][];
      return {
        cursor: all('SELECT cursor, generation FROM follow_state'),
        pairs: all('SELECT * FROM pair_coverage ORDER BY movie_id, user_id'),
        movies: all('SELECT * FROM movie_coverage ORDER BY movie_id'),
        retention: all('SELECT * FROM retention_changes WHERE delta <> 0 ORDER BY movie_id, second'),
        series: all('SELECT * FROM series ORDER BY scope, id, interval, start'),
        seen: all('SELECT * FROM series_viewers ORDER BY scope, id, interval, start, user_id'),
      };
    } finally {
      conn.close();
    }
  }

  /** Follows a copy of the database in rounds of `limit`, `interrupted` as the thread's is when it stops; the rounds' sizes. */
  function follow(source: string, copy: string, limit: number, interrupted?: () => boolean): number[] {
    copyFileSync(source, copy);
    const following = new SqliteFollowing(copy, interrupted);
    try {
      const sizes: number[] = [];
      for (let full = true; full; ) {
        const round = following.followRound(limit, startRound);
        sizes.push(round.applied);
        full = round.full;
      }
      return sizes;
    } finally {
      following.close();
    }
  }

  test('any cut of the events into rounds writes the same analytics: one round, rounds of 97, rounds cut by an interruption', (t) => {
    const cleanup = cleanupAfter(t);
    const dir = tempDir(cleanup);
    const source = path.join(dir, 'events.db');
    eventsDatabase(source);
    const stored = storedEvents(source);
    assert.equal(stored.length, 25_000);
    assert.ok(stored.at(-1)!.receivedAt - stored[0].receivedAt > 2 * DAY, 'the events span days');

    assert.deepEqual(follow(source, path.join(dir, 'one.db'), 1_000_000), [25_000], 'one round reads its events in several slices');
    const small = follow(source, path.join(dir, 'small.db'), 97);
    assert.equal(small.length, Math.ceil(25_000 / 97) + (25_000 % 97 === 0 ? 1 : 0));
    // Interrupted, a round commits the slice it read and says it is full: the next one goes on from there.
    const cut = follow(source, path.join(dir, 'cut.db'), 1_000_000, () => true);
    assert.ok(cut.length > 2 && cut.every((n) => n > 0 && n < 25_000), `rounds of a slice each: ${cut.join(', ')}`);
    assert.equal(cut.reduce((a, b) => a + b, 0), 25_000);

    const one = analyticsRows(path.join(dir, 'one.db'));
    assert.equal(one.cursor[0][0], stored.at(-1)!.seq);
    assert.ok(one.pairs.length > 5_000 && one.retention.length > 1_000 && one.seen.length > 10_000, 'the rows are worth comparing');
    assert.deepEqual(analyticsRows(path.join(dir, 'small.db')), one, 'rounds of 97');
    assert.deepEqual(analyticsRows(path.join(dir, 'cut.db')), one, 'rounds cut by an interruption');
  });
});
