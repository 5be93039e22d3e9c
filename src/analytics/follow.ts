// The follower's arithmetic (SPEC section 7): what a run of stored events, in
// their order, adds to the analytics. A store starts a round with the rule
// and a way to load a pair's state as the last round left it, adds the events
// it reads in order, and writes what finish() returns with the new cursor in
// one transaction. What a round writes depends on nothing else, so any cut of
// the events into rounds gives the same figures.
import { credit, type AccountingRule } from '../accounting.ts';
import {
  INTERVAL_CODE,
  SCOPE,
  type ChunkWrite,
  type MovieDelta,
  type PairAnalytics,
  type PairLoader,
  type RoundArithmetic,
  type SeenBucket,
  type SeriesDelta,
} from '../store/analytics-rows.ts';
import { BUCKET_MS, INTERVALS } from './buckets.ts';
import { cover } from './coverage.ts';

interface MinuteTally {
  watched: number;
  events: number;
}

/**
 * Users a credited event may have added to a bucket, by the bucket's start
 * plus its interval's code (starts are whole minutes, so the sum names one).
 */
type SeenUsers = Map<number, number[]>;

/**
 * A minute's tally kept where the events are looked up anyway (the pair, the
 * movie) until their events move on to another minute: then it goes to a map
 * of minutes, touched once a minute rather than once an event.
 */
interface Tallying extends MinuteTally {
  minute: number;
}

/** What a round adds to one movie: its pairs by user, its retention changes by second, its minutes, its buckets' users. */
interface MovieRound extends Tallying {
  delta: MovieDelta;
  /** Its pairs' places in the round's arrays, by user. */
  pairs: Map<number, number>;
  retention: Map<number, number>;
  minutes: Map<number, MinuteTally>;
  seen: SeenUsers;
}

/**
 * Roughly the bytes a round holds for each thing it holds, as measured in a
 * round of heartbeats (pairs) and in one whose pairs move to another minute
 * every event (minutes, users in buckets); a minute counts its row in
 * finish() too, which such a round holds for a moment beside the rest.
 */
const HELD_BYTES = { pair: 350, minute: 200, retentionChange: 50, bucketUser: 10 } as const;

/** Adds a tally's minute to the map, at `key`; returns the bytes a new entry holds. */
const fold = (minutes: Map<number, MinuteTally>, key: number, { watched, events }: MinuteTally) => {
  const row = minutes.get(key);
  if (row) {
    row.watched += watched;
    row.events += events;
    return 0;
  }
  minutes.set(key, { watched, events });
  return HELD_BYTES.minute;
};

/** Starts a tally's next minute; returns the one it ends. */
const moveOn = (at: Tallying, minute: number): Tallying => {
  const ended = { minute: at.minute, watched: at.watched, events: at.events };
  at.minute = minute;
  at.watched = 0;
  at.events = 0;
  return ended;
};

/** A pair the follower has not met before. */
const newPair = (userId: number, movieId: number, receivedAt: number): PairAnalytics => ({
  userId, movieId, position: 0, watched: 0, coverage: 0, furthest: 0, intervals: [], lastReceivedAt: receivedAt, lastCreditedAt: null,
});

const see = (seen: SeenUsers, bucket: number, userId: number) => {
  const users = seen.get(bucket);
  if (users) users.push(userId);
  else seen.set(bucket, [userId]);
};

/**
 * Shifts the change at `second`; returns the bytes held more (or fewer). A
 * change that comes back to 0 goes: a pair's -1 where its coverage ended is
 * its next event's +1 where it goes on, so a round holds about two a pair
 * rather than one an event.
 */
const shift = (retention: Map<number, number>, second: number, by: number) => {
  const was = retention.get(second);
  if (was === undefined) {
    retention.set(second, by);
    return HELD_BYTES.retentionChange;
  }
  if (was + by === 0) {
    retention.delete(second);
    return -HELD_BYTES.retentionChange;
  }
  retention.set(second, was + by);
  return 0;
};

const ascending = (a: number, b: number) => a - b;
type BucketKey = Pick<SeriesDelta, 'scope' | 'id' | 'interval' | 'start'>;
const inKeyOrder = (a: BucketKey, b: BucketKey) => a.scope - b.scope || a.id - b.id || a.interval - b.interval || a.start - b.start;

function distinctAscending(numbers: number[]): number[] {
  const sorted = Float64Array.from(numbers).sort();
  const distinct: number[] = [];
  for (let i = 0; i < sorted.length; i++) if (i === 0 || sorted[i] !== sorted[i - 1]) distinct.push(sorted[i]);
  return distinct;
}

/**
 * One round of the follower. Keyed by number (a movie, then a user), since a
 * round of heartbeats meets every one of 100,000 pairs ten times: the larger
 * a round, the more of its events fall on pairs, seconds and minutes it has
 * met already, and the fewer rows it writes an event.
 */
class FollowRound implements RoundArithmetic {
  private readonly movies = new Map<number, MovieRound>();
  /**
   * The pairs met, by place: their states, and their users' minute tallies in
   * arrays of numbers rather than an object each (a round may hold 100,000).
   */
  private readonly states: PairAnalytics[] = [];
  private minutes = new Float64Array(1024);
  private watched = new Float64Array(1024);
  private events = new Float64Array(1024);
  /** Each user's minutes that its pairs' tallies moved on from, by user and minute. */
  private readonly userMinutes = new Map<number, Map<number, MinuteTally>>();
  private readonly serviceSeen: SeenUsers = new Map();
  private readonly progress: boolean;
  private cursor = 0;
  held = 0;

  constructor(
    private readonly rule: AccountingRule,
    private readonly load: PairLoader,
  ) {
    this.progress = rule.accounting === 'progress';
  }

  add(seq: number, userId: number, movieId: number, at: number, receivedAt: number): void {
    const minute = Math.floor(receivedAt / BUCKET_MS.minute);
    let movie = this.movies.get(movieId);
    if (movie === undefined) {
      const delta = { movieId, viewers: 0, coverage: 0, watched: 0, events: 0, maxAt: 0 };
      movie = { delta, pairs: new Map(), retention: new Map(), minutes: new Map(), seen: new Map(), minute, watched: 0, events: 0 };
      this.movies.set(movieId, movie);
    }
    let place = movie.pairs.get(userId);
    if (place === undefined) {
      place = this.meet(this.load(userId, movieId) ?? newPair(userId, movieId, receivedAt), minute);
      movie.pairs.set(userId, place);
    }
    const pair = this.states[place];
    const totals = movie.delta;

    const prev = pair.position;
    const credited = credit(this.rule, prev, at);
    // A credited step under progress covers [prev, at) (coveredBy in coverage.ts); under sum, none.
    if (this.progress && credited > 0) {
      // A pair's first covered seconds: an array of two, not one grown to hold them.
      const pieces = pair.intervals.length === 0 ? (pair.intervals = [prev, at]) : cover(pair.intervals, prev, at);
      let added = 0;
      for (let k = 0; k < pieces.length; k += 2) {
        added += pieces[k + 1] - pieces[k];
        this.held += shift(movie.retention, pieces[k], 1) + shift(movie.retention, pieces[k + 1], -1);
      }
      if (pair.coverage === 0 && added > 0) totals.viewers += 1;
      pair.coverage += added;
      totals.coverage += added;
      if (at > pair.furthest) pair.furthest = at;
    }
    pair.position = at;
    pair.watched += credited;
    pair.lastReceivedAt = receivedAt;
    totals.watched += credited;
    totals.events += 1;
    if (at > totals.maxAt) totals.maxAt = at;

    if (movie.minute !== minute) {
      const ended = moveOn(movie, minute);
      this.held += fold(movie.minutes, ended.minute, ended);
    }
    movie.watched += credited;
    movie.events += 1;
    if (this.minutes[place] !== minute) {
      this.foldUser(userId, { minute: this.minutes[place], watched: this.watched[place], events: this.events[place] });
      this.minutes[place] = minute;
      this.watched[place] = 0;
      this.events[place] = 0;
    }
    this.watched[place] += credited;
    this.events[place] += 1;
    if (credited > 0) {
      // A user counts once a bucket: a bucket the pair's latest credited event was in already counts them.
      const last = pair.lastCreditedAt;
      for (const interval of INTERVALS) {
        const size = BUCKET_MS[interval];
        const start = Math.floor(receivedAt / size) * size;
        if (last !== null && Math.floor(last / size) * size === start) break; // and so do the longer buckets
        see(movie.seen, start + INTERVAL_CODE[interval], userId);
        see(this.serviceSeen, start + INTERVAL_CODE[interval], userId);
        this.held += 2 * HELD_BYTES.bucketUser;
      }
      pair.lastCreditedAt = receivedAt;
    }
    this.cursor = seq;
  }

  /** Takes a pair into the round; returns its place. */
  private meet(state: PairAnalytics, minute: number): number {
    const place = this.states.length;
    if (place === this.minutes.length) {
      const grown = (from: Float64Array) => {
        const to = new Float64Array(2 * from.length);
        to.set(from);
        return to;
      };
      this.minutes = grown(this.minutes);
      this.watched = grown(this.watched);
      this.events = grown(this.events);
    }
    this.states.push(state);
    this.minutes[place] = minute;
    this.watched[place] = 0;
    this.events[place] = 0;
    this.held += HELD_BYTES.pair;
    return place;
  }

  private foldUser(userId: number, tallied: MinuteTally & { minute: number }): void {
    let minutes = this.userMinutes.get(userId);
    if (minutes === undefined) this.userMinutes.set(userId, (minutes = new Map()));
    this.held += fold(minutes, tallied.minute, tallied);
  }

  /** What the round writes, each kind in its table's key order: a B-tree takes sorted writes on the fewest pages. */
  finish(): ChunkWrite {
    const pairs: PairAnalytics[] = [];
    const userRows: SeriesDelta[] = [];
    const movies: MovieDelta[] = [];
    const retention: [number, number, number][] = [];
    const series = new Map<string, SeriesDelta>();
    const addSeries = (scope: number, id: number, interval: number, start: number, { watched, events }: MinuteTally) => {
      const key = `${scope}:${id}:${interval}:${start}`;
      const row = series.get(key);
      if (row) {
        row.watched += watched;
        row.events += events;
      } else series.set(key, { scope, id, interval, start, watched, events });
    };
    for (const movieId of [...this.movies.keys()].sort(ascending)) {
      const movie = this.movies.get(movieId)!;
      movies.push(movie.delta);
      for (const userId of [...movie.pairs.keys()].sort(ascending)) {
        const place = movie.pairs.get(userId)!;
        pairs.push(this.states[place]);
        const start = this.minutes[place] * BUCKET_MS.minute;
        userRows.push({ scope: SCOPE.user, id: userId, interval: INTERVAL_CODE.minute, start, watched: this.watched[place], events: this.events[place] });
      }
      fold(movie.minutes, movie.minute, movie);
      for (const second of [...movie.retention.keys()].sort(ascending)) {
        retention.push([movieId, second, movie.retention.get(second)!]);
      }
      // A movie's hours and days, and the service's minutes (whose hours and days follow), are summed from its minutes.
      for (const [minute, row] of movie.minutes) {
        const ms = minute * BUCKET_MS.minute;
        for (const interval of INTERVALS) {
          const start = Math.floor(ms / BUCKET_MS[interval]) * BUCKET_MS[interval];
          addSeries(SCOPE.movie, movieId, INTERVAL_CODE[interval], start, row);
          addSeries(SCOPE.service, 0, INTERVAL_CODE[interval], start, row);
        }
      }
    }
    for (const [userId, minutes] of this.userMinutes) {
      for (const [minute, { watched, events }] of minutes) {
        userRows.push({ scope: SCOPE.user, id: userId, interval: INTERVAL_CODE.minute, start: minute * BUCKET_MS.minute, watched, events });
      }
    }
    // The service's and the movies' rows, then the users' (scope 2), each user's minute once.
    const rows = [...series.values()].sort(inKeyOrder);
    for (const row of userRows.sort(inKeyOrder)) {
      const last = rows[rows.length - 1];
      if (last && inKeyOrder(last, row) === 0) {
        last.watched += row.watched;
        last.events += row.events;
      } else rows.push(row);
    }
    const seen: SeenBucket[] = [];
    const addSeen = (scope: number, id: number, users: SeenUsers) => {
      for (const [bucket, ids] of users) {
        const interval = ((bucket % BUCKET_MS.minute) + BUCKET_MS.minute) % BUCKET_MS.minute; // a start before 1970 is negative
        seen.push({ scope, id, interval, start: bucket - interval, users: distinctAscending(ids) });
      }
    };
    addSeen(SCOPE.service, 0, this.serviceSeen);
    for (const [movieId, movie] of this.movies) addSeen(SCOPE.movie, movieId, movie.seen);
    return { pairs, movies, retention, series: rows, seen: seen.sort(inKeyOrder), cursor: this.cursor };
  }
}

/** Starts a follower round under the rule; `load` gives a pair's state as the last round left it (undefined: a new pair). */
export const startRound = (rule: AccountingRule, load: PairLoader): RoundArithmetic => new FollowRound(rule, load);

/** The coverage from which a pair counts as having completed a movie of this duration: 90 %, and at least a second. */
export function completedFrom(duration: number): number {
  return Math.max(1, Math.ceil((9 * duration) / 10));
}
