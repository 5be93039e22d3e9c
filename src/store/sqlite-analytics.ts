// The analytics half of the SQLite store (SPEC section 7): the follower's
// round in one IMMEDIATE transaction, and the answers' reads, each in one
// read transaction so that a figure and its asOf agree.
import type Database from 'better-sqlite3';
import type { AccountingRule } from '../accounting.ts';
import {
  decodeIntervals,
  encodeIntervals,
  pairKeyOf,
  SCOPE,
  type AnalyticsProgress,
  type AnalyticsSnapshot,
  type AnalyticsStore,
  type ChunkApplier,
  type FollowedEvent,
  type MovieAnalyticsRow,
  type PairAnalytics,
  type SeriesRow,
  type SeriesScope,
  type ViewersNowRow,
} from './analytics-rows.ts';
import { namedQueries } from './sql-files.ts';
import type { Awaitable } from './store.ts';

const QUERY_NAMES = [
  'cursor', 'setCursor', 'eventsAfter', 'pairState', 'writePair', 'addToMovie', 'addRetention', 'addSeen', 'addSeries',
  'progress', 'movie', 'completed', 'retention', 'movieId', 'userId', 'series', 'viewersSince', 'topMoviesSince',
  'setDuration',
] as const;
type QueryName = (typeof QUERY_NAMES)[number];

/** What a rebuild's swap runs so that the follower derives the analytics again (one script). */
export const resetAnalyticsSql = () => namedQueries('sqlite', ['reset'], 'analytics.sql').reset;

export class SqliteAnalytics implements AnalyticsStore {
  private readonly q: Record<QueryName, Database.Statement>;
  private readonly round: Database.Transaction<(limit: number, apply: ChunkApplier) => number>;

  constructor(
    private readonly db: Database.Database,
    /** Turns SQLite's lock errors into the store's own. */
    private readonly whenBusy: <T>(fn: () => T) => T,
    /** Settles once a commit is on disk (the server syncs the WAL off the event loop). */
    private readonly durable: () => Awaitable<void> = () => undefined,
  ) {
    const sql = namedQueries('sqlite', QUERY_NAMES, 'analytics.sql');
    this.q = Object.fromEntries(QUERY_NAMES.map((name) => [name, db.prepare(sql[name])])) as Record<QueryName, Database.Statement>;
    for (const name of ['cursor', 'completed', 'movieId', 'userId', 'viewersSince'] as const) this.q[name].pluck();
    this.round = db.transaction((limit: number, apply: ChunkApplier) => this.followInside(limit, apply));
  }

  followRound(limit: number, apply: ChunkApplier): number {
    return this.whenBusy(() => this.round.immediate(limit, apply));
  }

  private followInside(limit: number, apply: ChunkApplier): number {
    const cursor = this.q.cursor.get() as number;
    const events = this.q.eventsAfter.all(cursor, limit) as FollowedEvent[];
    if (events.length === 0) return 0;
    const pairs = new Map<string, PairAnalytics>();
    for (const { userId, movieId } of events) {
      const key = pairKeyOf(userId, movieId);
      if (pairs.has(key)) continue;
      const row = this.q.pairState.get(userId, movieId) as (Omit<PairAnalytics, 'intervals'> & { intervals: Buffer }) | undefined;
      if (row) pairs.set(key, { ...row, userId, movieId, intervals: decodeIntervals(row.intervals) });
    }
    const write = apply(this.rule(), events, pairs);
    const q = this.q;
    for (const p of write.pairs) {
      q.writePair.run(p.userId, p.movieId, p.position, p.watched, p.coverage, p.furthest, encodeIntervals(p.intervals), p.lastReceivedAt, p.lastCreditedAt);
    }
    for (const m of write.movies) q.addToMovie.run(m.movieId, m.viewers, m.coverage, m.watched, m.events, m.maxAt);
    for (const [movieId, second, delta] of write.retention) q.addRetention.run(movieId, second, delta);
    const newViewers = new Map<string, number>();
    for (const s of write.seen) {
      if (q.addSeen.run(s.scope, s.id, s.interval, s.start, s.userId).changes === 0) continue;
      const key = `${s.scope}:${s.id}:${s.interval}:${s.start}`;
      newViewers.set(key, (newViewers.get(key) ?? 0) + 1);
    }
    for (const s of write.series) {
      const viewers = newViewers.get(`${s.scope}:${s.id}:${s.interval}:${s.start}`) ?? 0;
      q.addSeries.run(s.scope, s.id, s.interval, s.start, s.watched, s.events, viewers);
    }
    q.setCursor.run(write.cursor);
    return events.length;
  }

  private rule(): AccountingRule {
    const { accounting, maxStep } = this.q.progress.get() as AccountingRule;
    return { accounting, maxStep };
  }

  private snapshot(): AnalyticsSnapshot {
    const { asOf, lagEvents, accounting, maxStep } = this.q.progress.get() as AnalyticsProgress & AccountingRule;
    return { asOf, lagEvents, rule: { accounting, maxStep } };
  }

  progress(): AnalyticsProgress {
    const { asOf, lagEvents } = this.snapshot();
    return { asOf, lagEvents };
  }

  movie(slug: string, completedFrom: (duration: number) => number, withRetention: boolean): MovieAnalyticsRow | undefined {
    return this.db.transaction(() => {
      const row = this.q.movie.get(slug) as (Omit<MovieAnalyticsRow, keyof AnalyticsSnapshot | 'completed'> & { id: number }) | undefined;
      if (row === undefined) return undefined;
      const { id, ...movie } = row;
      const completed = this.q.completed.get(id, completedFrom(movie.durationSet ?? movie.maxAt)) as number;
      const retention = withRetention ? (this.q.retention.raw().all(id) as [number, number][]) : undefined;
      return { ...this.snapshot(), ...movie, completed, retention };
    })();
  }

  series(scope: SeriesScope, interval: number, bucketMs: number, from: number, to: number): (AnalyticsSnapshot & { rows: SeriesRow[] }) | undefined {
    return this.db.transaction(() => {
      let id = 0;
      if (scope.kind !== 'service') {
        const found = (scope.kind === 'movie' ? this.q.movieId.get(scope.slug) : this.q.userId.get(scope.user)) as number | undefined;
        if (found === undefined) return undefined;
        id = found;
      }
      const code = SCOPE[scope.kind];
      const rows = this.q.series.all({ scope: code, id, interval: scope.kind === 'user' ? 0 : interval, size: bucketMs, from, to }) as SeriesRow[];
      return { ...this.snapshot(), rows };
    })();
  }

  viewersSince(since: number, top: number): ViewersNowRow {
    return this.db.transaction(() => {
      const viewers = this.q.viewersSince.get(since) as number;
      const movies = this.q.topMoviesSince.all(since, top) as { slug: string; viewers: number }[];
      return { ...this.progress(), viewers, movies };
    })();
  }

  setDuration(slug: string, duration: number): Awaitable<void> {
    this.whenBusy(() => this.q.setDuration.run(slug, duration));
    return this.durable();
  }
}
