// Applies the accounting rule to a run of events in arrival order and keeps
// what must be written back: each touched pair once, and one delta per user
// and per movie, so a batch updates each aggregate row once (and each answer
// kept in memory).
import { credit, type AccountingRule } from '../accounting.ts';

/** What a pair, a user or a movie row keeps of its latest event. */
export interface Latest {
  lastSeq: number;
  /** The latest event's receive time, in milliseconds since the epoch. */
  updatedAt: number;
}

export interface PairRow extends Latest {
  position: number;
  watched: number;
  events: number;
}

export interface PairState extends PairRow {
  userId: number;
  movieId: number;
  /** Whether the pair has a row already (update it) or is new (insert it). */
  stored: boolean;
}

export interface TotalDelta extends Latest {
  watched: number;
  events: number;
  /** Pairs that appeared: the user's new movies, or the movie's new viewers. */
  pairs: number;
}

/** Moves a pair to `at` under the rule, counting the event; returns the seconds credited. */
export function advance(rule: AccountingRule, pair: PairRow, at: number): number {
  const credited = credit(rule, pair.position, at);
  pair.position = at;
  pair.watched += credited;
  pair.events += 1;
  return credited;
}

export const pairKey = (userId: number, movieId: number) => `${userId}:${movieId}`;

export class Tally {
  readonly pairs = new Map<string, PairState>();
  readonly users = new Map<number, TotalDelta>();
  readonly movies = new Map<number, TotalDelta>();

  constructor(
    private readonly rule: AccountingRule,
    /** The pair as stored before this tally, or undefined for a new pair. */
    private readonly loadPair: (userId: number, movieId: number) => PairRow | undefined,
  ) {}

  apply(seq: number, userId: number, movieId: number, at: number, receivedAt: number): void {
    const key = pairKey(userId, movieId);
    let pair = this.pairs.get(key);
    let isNewPair = false;
    if (pair === undefined) {
      const stored = this.loadPair(userId, movieId);
      isNewPair = stored === undefined;
      pair = { userId, movieId, position: 0, watched: 0, events: 0, lastSeq: 0, updatedAt: 0, ...stored, stored: !isNewPair };
      this.pairs.set(key, pair);
    }
    const credited = advance(this.rule, pair, at);
    pair.lastSeq = seq;
    pair.updatedAt = receivedAt;
    addTo(this.users, userId, credited, isNewPair, seq, receivedAt);
    addTo(this.movies, movieId, credited, isNewPair, seq, receivedAt);
  }
}

function addTo(
  deltas: Map<number, TotalDelta>,
  id: number,
  credited: number,
  isNewPair: boolean,
  seq: number,
  receivedAt: number,
): void {
  let delta = deltas.get(id);
  if (delta === undefined) {
    delta = { watched: 0, events: 0, pairs: 0, lastSeq: 0, updatedAt: 0 };
    deltas.set(id, delta);
  }
  delta.watched += credited;
  delta.events += 1;
  if (isNewPair) delta.pairs += 1;
  delta.lastSeq = seq;
  delta.updatedAt = receivedAt;
}

/** A prepared statement, as far as writeTally needs one. */
interface Runnable {
  run(...params: unknown[]): unknown;
}

/** The statements that write a tally into one set of SQLite's aggregate tables (the live ones, or a rebuild's). */
export interface TallyWriters {
  insertPair: Runnable;
  updatePair: Runnable;
  addToMovie: Runnable;
}

/**
 * Writes each touched pair once, and one delta per movie. SQLite keeps no
 * user row (a user's totals are summed from its pairs), so the user deltas
 * serve the kept answers and PostgreSQL only.
 */
export function writeTally(tally: Tally, { insertPair, updatePair, addToMovie }: TallyWriters): void {
  for (const p of tally.pairs.values()) {
    if (p.stored) updatePair.run(p.position, p.watched, p.events, p.lastSeq, p.updatedAt, p.userId, p.movieId);
    else insertPair.run(p.userId, p.movieId, p.position, p.watched, p.events, p.lastSeq, p.updatedAt);
  }
  for (const [id, d] of tally.movies) addToMovie.run(id, d.watched, d.pairs, d.events, d.lastSeq, d.updatedAt);
}
