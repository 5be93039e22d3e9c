// What the analytics follower (src/analytics/) reads from a store and hands
// back to it, and what the analytics answers are made of. Both stores write
// and read the same rows; the arithmetic stays in src/analytics/.
import type { AccountingRule } from '../accounting.ts';
import type { Awaitable } from './store.ts';

/** An event as the follower reads it: by its number, after the follower's cursor. */
export interface FollowedEvent {
  seq: number;
  userId: number;
  movieId: number;
  at: number;
  receivedAt: number;
}

/** A pair's analytics state, as the follower left it. */
export interface PairAnalytics {
  userId: number;
  movieId: number;
  /** The pair's position as of the follower's cursor (its own, not the live totals'). */
  position: number;
  watched: number;
  /** Distinct seconds covered: the sum of `intervals`' lengths. */
  coverage: number;
  furthest: number;
  /** Covered seconds as flattened [start, end) intervals (src/analytics/coverage.ts). */
  intervals: number[];
  /** Receive time of the pair's latest event, ms since the epoch: who is watching now. */
  lastReceivedAt: number;
  /** Receive time of the pair's latest credited event, or null: which buckets already count the user. */
  lastCreditedAt: number | null;
}

/** Time series scopes as stored: the service, a movie, a user. */
export const SCOPE = { service: 0, movie: 1, user: 2 } as const;
/** Buckets as stored. A user's series keeps minutes only; hours and days are summed from them. */
export const INTERVAL_CODE = { minute: 0, hour: 1, day: 2 } as const;

export interface SeriesDelta {
  scope: number;
  id: number;
  interval: number;
  start: number;
  watched: number;
  events: number;
}

/** Users who may be new to a bucket of the service's or a movie's series: distinct, ascending. */
export interface SeenBucket {
  scope: number;
  id: number;
  interval: number;
  start: number;
  users: number[];
}

export interface MovieDelta {
  movieId: number;
  viewers: number;
  coverage: number;
  watched: number;
  events: number;
  maxAt: number;
}

/** What one follower round writes, in one transaction with its cursor. */
export interface ChunkWrite {
  pairs: PairAnalytics[];
  movies: MovieDelta[];
  /** [movieId, second, delta]: changes of how many pairs cover a second. */
  retention: [number, number, number][];
  series: SeriesDelta[];
  /** Each user inserted (new to the bucket) adds a viewer to the bucket's series row. */
  seen: SeenBucket[];
  /** The number of the last event applied. */
  cursor: number;
}

/** A pair's state as the last round left it, or undefined for a pair not followed yet. */
export type PairLoader = (userId: number, movieId: number) => PairAnalytics | undefined;

/** The follower's arithmetic over one round (src/analytics/follow.ts): the events added in order, then what to write. */
export interface RoundArithmetic {
  add(seq: number, userId: number, movieId: number, at: number, receivedAt: number): void;
  /** Roughly the bytes of memory it holds until finish(): what bounds a round. */
  readonly held: number;
  finish(): ChunkWrite;
}

export type StartRound = (rule: AccountingRule, load: PairLoader) => RoundArithmetic;

/** What a round did: the events it applied, and whether it stopped at a limit with more events waiting, perhaps. */
export interface RoundDone {
  applied: number;
  full: boolean;
}

export const pairKeyOf = (userId: number, movieId: number) => `${userId}:${movieId}`;

/** Where the analytics have got: the last event included, and the events stored after it. */
export interface AnalyticsProgress {
  asOf: number;
  lagEvents: number;
}

export interface AnalyticsSnapshot extends AnalyticsProgress {
  rule: AccountingRule;
}

export interface MovieAnalyticsRow extends AnalyticsSnapshot {
  slug: string;
  /** Set by PUT /movies/{slug}, or null. */
  durationSet: number | null;
  /** The largest `at` among the movie's events followed. */
  maxAt: number;
  viewers: number;
  coverage: number;
  watched: number;
  /** Pairs with coverage of at least the threshold asked for. */
  completed: number;
  /** [second, delta] in second order, when asked for. */
  retention?: [number, number][];
}

export interface SeriesRow {
  start: number;
  watched: number;
  events: number;
  viewers: number;
}

export type SeriesScope = { kind: 'service' } | { kind: 'movie'; slug: string } | { kind: 'user'; user: string };

export interface ViewersNowRow extends AnalyticsProgress {
  viewers: number;
  movies: { slug: string; viewers: number }[];
}

/** The analytics half of a store (SPEC section 7). */
export interface AnalyticsStore {
  /**
   * One follower round, in one transaction: the events after the cursor (at
   * most `limit`) through a round `start`s, its writes and the new cursor.
   * None applied when none are waiting or another follower holds the round
   * (PostgreSQL).
   */
  followRound(limit: number, start: StartRound): Awaitable<RoundDone>;
  progress(): Awaitable<AnalyticsProgress>;
  /** A movie's analytics, or undefined for a movie never seen; `completedFrom(duration)` is the coverage that counts as completed. */
  movie(slug: string, completedFrom: (duration: number) => number, withRetention: boolean): Awaitable<MovieAnalyticsRow | undefined>;
  /** A scope's series rows in [from, to) by buckets of `bucketMs`; undefined for an unknown movie or user. */
  series(scope: SeriesScope, interval: number, bucketMs: number, from: number, to: number): Awaitable<(AnalyticsSnapshot & { rows: SeriesRow[] }) | undefined>;
  /** Users with an event received at or after `since` (ms), and the `top` movies with the most of them. */
  viewersSince(since: number, top: number): Awaitable<ViewersNowRow>;
  /** Sets a movie's duration, adding the movie if it is new. */
  setDuration(slug: string, duration: number): Awaitable<void>;
  /** Closes what the analytics opened of their own (SQLite: the readers' connection to the analytics file); reads open it again. */
  close?(): void;
}

/** Intervals as stored: 32-bit little-endian integers (an `at` is at most 2^31 - 1). */
export function encodeIntervals(intervals: number[]): Buffer {
  const buffer = Buffer.allocUnsafe(intervals.length * 4);
  for (let i = 0; i < intervals.length; i++) buffer.writeInt32LE(intervals[i], i * 4);
  return buffer;
}

export function decodeIntervals(buffer: Uint8Array): number[] {
  const view = Buffer.from(buffer.buffer, buffer.byteOffset, buffer.byteLength);
  const intervals = new Array<number>(view.length / 4);
  for (let i = 0; i < intervals.length; i++) intervals[i] = view.readInt32LE(i * 4);
  return intervals;
}
