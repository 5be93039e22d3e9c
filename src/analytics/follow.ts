// The follower's arithmetic (SPEC section 7): what a run of stored events, in
// their order, adds to the analytics. Pure: the stores read the events and
// the pairs' states, call followChunk inside their transaction and write what
// it returns with the new cursor, so any cut of the events into rounds gives
// the same figures.
import { credit, type AccountingRule } from '../accounting.ts';
import {
  INTERVAL_CODE,
  pairKeyOf,
  SCOPE,
  type ChunkWrite,
  type FollowedEvent,
  type MovieDelta,
  type PairAnalytics,
  type SeenCandidate,
  type SeriesDelta,
} from '../store/analytics-rows.ts';
import { BUCKET_MS, INTERVALS } from './buckets.ts';
import { cover, coveredBy } from './coverage.ts';

/** Minutes since the epoch fit in 26 bits until 2097: a movie's or a user's minute is one number. */
const MINUTE_SPAN = 2 ** 26;

interface MinuteTally {
  watched: number;
  events: number;
}

export function followChunk(rule: AccountingRule, events: FollowedEvent[], pairs: Map<string, PairAnalytics>): ChunkWrite {
  const touched = new Map<string, PairAnalytics>();
  const movies = new Map<number, MovieDelta>();
  const retention = new Map<string, [number, number, number]>();
  // Tallied by minute first, a number a movie or a user: the hours, the days and the service are summed from them.
  const movieMinutes = new Map<number, MinuteTally>();
  const userMinutes = new Map<number, MinuteTally>();
  const seen: SeenCandidate[] = [];

  const tally = (minutes: Map<number, MinuteTally>, key: number, watched: number) => {
    const row = minutes.get(key);
    if (row) {
      row.watched += watched;
      row.events += 1;
    } else minutes.set(key, { watched, events: 1 });
  };
  const shiftRetention = (movieId: number, second: number, by: number) => {
    const key = `${movieId}:${second}`;
    const change = retention.get(key);
    if (change) change[2] += by;
    else retention.set(key, [movieId, second, by]);
  };

  for (const event of events) {
    const { userId, movieId, at, receivedAt } = event;
    const key = pairKeyOf(userId, movieId);
    let pair = touched.get(key) ?? pairs.get(key);
    if (pair === undefined) {
      pair = { userId, movieId, position: 0, watched: 0, coverage: 0, furthest: 0, intervals: [], lastReceivedAt: receivedAt, lastCreditedAt: null };
    }
    touched.set(key, pair);
    let movie = movies.get(movieId);
    if (movie === undefined) movies.set(movieId, (movie = { movieId, viewers: 0, coverage: 0, watched: 0, events: 0, maxAt: 0 }));

    const prev = pair.position;
    const credited = credit(rule, prev, at);
    const covered = coveredBy(rule, prev, at);
    if (covered) {
      const pieces = cover(pair.intervals, covered[0], covered[1]);
      let added = 0;
      for (let k = 0; k < pieces.length; k += 2) {
        added += pieces[k + 1] - pieces[k];
        shiftRetention(movieId, pieces[k], 1);
        shiftRetention(movieId, pieces[k + 1], -1);
      }
      if (pair.coverage === 0 && added > 0) movie.viewers += 1;
      pair.coverage += added;
      movie.coverage += added;
      pair.furthest = Math.max(pair.furthest, at);
    }
    pair.position = at;
    pair.watched += credited;
    pair.lastReceivedAt = receivedAt;
    movie.watched += credited;
    movie.events += 1;
    movie.maxAt = Math.max(movie.maxAt, at);

    const minute = Math.floor(receivedAt / BUCKET_MS.minute);
    tally(movieMinutes, movieId * MINUTE_SPAN + minute, credited);
    tally(userMinutes, userId * MINUTE_SPAN + minute, credited);
    if (credited > 0) {
      // A user counts once a bucket: a bucket the pair's latest credited event was in already counts them.
      const last = pair.lastCreditedAt;
      for (const interval of INTERVALS) {
        const size = BUCKET_MS[interval];
        const start = Math.floor(receivedAt / size) * size;
        if (last !== null && Math.floor(last / size) * size === start) break; // and so do the longer buckets
        const code = INTERVAL_CODE[interval];
        seen.push({ scope: SCOPE.movie, id: movieId, interval: code, start, userId });
        seen.push({ scope: SCOPE.service, id: 0, interval: code, start, userId });
      }
      pair.lastCreditedAt = receivedAt;
    }
  }

  return {
    pairs: [...touched.values()],
    movies: [...movies.values()],
    retention: [...retention.values()].filter((change) => change[2] !== 0),
    series: seriesOf(movieMinutes, userMinutes),
    seen,
    cursor: events.length > 0 ? events[events.length - 1].seq : 0,
  };
}

/** The series rows a round adds to: each movie's and the service's minutes, hours and days, and each user's minutes. */
function seriesOf(movieMinutes: Map<number, MinuteTally>, userMinutes: Map<number, MinuteTally>): SeriesDelta[] {
  const rows = new Map<string, SeriesDelta>();
  const add = (scope: number, id: number, interval: number, start: number, { watched, events }: MinuteTally) => {
    const key = `${scope}:${id}:${interval}:${start}`;
    const row = rows.get(key);
    if (row) {
      row.watched += watched;
      row.events += events;
    } else rows.set(key, { scope, id, interval, start, watched, events });
  };
  for (const [key, tally] of movieMinutes) {
    const movieId = Math.floor(key / MINUTE_SPAN);
    const ms = (key % MINUTE_SPAN) * BUCKET_MS.minute;
    for (const interval of INTERVALS) {
      const start = Math.floor(ms / BUCKET_MS[interval]) * BUCKET_MS[interval];
      add(SCOPE.movie, movieId, INTERVAL_CODE[interval], start, tally);
      add(SCOPE.service, 0, INTERVAL_CODE[interval], start, tally);
    }
  }
  const minuteCode = INTERVAL_CODE.minute;
  const series = [...rows.values()];
  for (const [key, { watched, events }] of userMinutes) {
    series.push({ scope: SCOPE.user, id: Math.floor(key / MINUTE_SPAN), interval: minuteCode, start: (key % MINUTE_SPAN) * BUCKET_MS.minute, watched, events });
  }
  return series;
}

/** The coverage from which a pair counts as having completed a movie of this duration: 90 %, and at least a second. */
export function completedFrom(duration: number): number {
  return Math.max(1, Math.ceil((9 * duration) / 10));
}
