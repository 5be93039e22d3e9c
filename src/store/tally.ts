// Applies the accounting rule to a run of events in arrival order and keeps
// what must be written back: each touched pair once, and one delta per user
// and per movie, so a batch updates each aggregate row once.
import { credit, type AccountingRule } from '../accounting.ts';

export interface PairRow {
  position: number;
  watched: number;
  events: number;
}

export interface PairState extends PairRow {
  userId: number;
  movieId: number;
  lastSeq: number;
  /** Whether the pair has a row already (update it) or is new (insert it). */
  stored: boolean;
}

export interface TotalDelta {
  watched: number;
  events: number;
  /** Pairs that appeared: the user's new movies, or the movie's new viewers. */
  pairs: number;
  lastSeq: number;
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

  apply(seq: number, userId: number, movieId: number, at: number): void {
    const key = pairKey(userId, movieId);
    let pair = this.pairs.get(key);
    let isNewPair = false;
    if (pair === undefined) {
      const stored = this.loadPair(userId, movieId);
      isNewPair = stored === undefined;
      pair = { userId, movieId, position: 0, watched: 0, events: 0, lastSeq: 0, ...stored, stored: !isNewPair };
      this.pairs.set(key, pair);
    }
    const credited = credit(this.rule, pair.position, at);
    pair.position = at;
    pair.watched += credited;
    pair.events += 1;
    pair.lastSeq = seq;
    addTo(this.users, userId, credited, isNewPair, seq);
    addTo(this.movies, movieId, credited, isNewPair, seq);
  }
}

function addTo(deltas: Map<number, TotalDelta>, id: number, credited: number, isNewPair: boolean, seq: number): void {
  let delta = deltas.get(id);
  if (delta === undefined) {
    delta = { watched: 0, events: 0, pairs: 0, lastSeq: 0 };
    deltas.set(id, delta);
  }
  delta.watched += credited;
  delta.events += 1;
  if (isNewPair) delta.pairs += 1;
  delta.lastSeq = seq;
}
