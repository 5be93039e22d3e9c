// The analytics half of the PostgreSQL store (SPEC section 7): the follower's
// round in one transaction, after its horizon moved in one of its own, and the
// answers' reads, each from one snapshot so that a figure and its asOf agree.
// Why a round reads only up to the horizon: sql/postgres/004_analytics.sql and
// docs/postgres.md ("The analytics follower").
import type pg from 'pg';
import type { AccountingRule } from '../accounting.ts';
import {
  decodeIntervals,
  encodeIntervals,
  pairKeyOf,
  SCOPE,
  type AnalyticsProgress,
  type AnalyticsSnapshot,
  type AnalyticsStore,
  type FollowedEvent,
  type MovieAnalyticsRow,
  type PairAnalytics,
  type RoundDone,
  type SeriesRow,
  type SeriesScope,
  type StartRound,
  type ViewersNowRow,
} from './analytics-rows.ts';
import { namedQueries } from './sql-files.ts';
import { StoreUnavailableError } from './store.ts';

const QUERY_NAMES = [
  'followHorizon', 'followLock', 'followState', 'eventsAfter', 'pairStates', 'writeRound', 'progress', 'snapshot', 'movie',
  'completed', 'series', 'viewersSince', 'setDuration',
] as const;
const A = namedQueries('postgres', QUERY_NAMES, 'analytics.sql');

/** What the store lends its analytics. */
export interface PostgresHelpers {
  /** Runs `work` in a transaction that `begin` opens (BEGIN unless told); commits, or rolls back and throws. */
  transaction<T>(work: (client: pg.PoolClient) => Promise<T>, begin?: string): Promise<T>;
  /** The database is away: a connection refused, lost or timed out. */
  unreachable(error: unknown): boolean;
}

type ProgressRow = AnalyticsProgress & AccountingRule;

/** Events a round reads at a time: their arithmetic holds the event loop about a millisecond. */
const READ_EVENTS = 1_000;

const snapshotOf = ({ asOf, lagEvents, accounting, maxStep }: ProgressRow): AnalyticsSnapshot => ({ asOf, lagEvents, rule: { accounting, maxStep } });

export class PostgresAnalytics implements AnalyticsStore {
  constructor(
    private readonly pool: pg.Pool,
    private readonly helpers: PostgresHelpers,
  ) {}

  async followRound(limit: number, start: StartRound): Promise<RoundDone> {
    await this.pool.query(A.followHorizon);
    return this.helpers.transaction(async (client) => {
      // Another server's follower is in a round: this one has nothing to do.
      if (!(await client.query<{ mine: boolean }>(A.followLock)).rows[0].mine) return { applied: 0, full: false };
      const state = (await client.query<{ cursor: number; horizon: number } & AccountingRule>(A.followState)).rows[0];
      const pairs = new Map<string, PairAnalytics>();
      /** Pairs whose states were asked for: new pairs are not asked again. */
      const met = new Set<string>();
      const round = start({ accounting: state.accounting, maxStep: state.maxStep }, (userId, movieId) => pairs.get(pairKeyOf(userId, movieId)));
      // Read a slice at a time: between slices, the event loop serves requests.
      let cursor = state.cursor;
      let applied = 0;
      while (applied < limit) {
        const want = Math.min(READ_EVENTS, limit - applied);
        const events = (await client.query<FollowedEvent>(A.eventsAfter, [cursor, state.horizon, want])).rows;
        if (events.length === 0) break;
        const asked = new Map<string, [number, number]>();
        for (const { userId, movieId } of events) {
          const key = pairKeyOf(userId, movieId);
          if (!met.has(key)) {
            met.add(key);
            asked.set(key, [userId, movieId]);
          }
        }
        if (asked.size > 0) {
          const stored = await client.query<Omit<PairAnalytics, 'intervals'> & { intervals: Buffer }>(A.pairStates, [
            integers([...asked.values()].map((k) => k[0])),
            integers([...asked.values()].map((k) => k[1])),
          ]);
          for (const row of stored.rows) pairs.set(pairKeyOf(row.userId, row.movieId), { ...row, intervals: decodeIntervals(row.intervals) });
        }
        for (const e of events) round.add(e.seq, e.userId, e.movieId, e.at, e.receivedAt);
        applied += events.length;
        if (events.length < want) break;
        cursor = events[events.length - 1].seq;
      }
      if (applied === 0) return { applied: 0, full: false };
      const write = round.finish();
      const { pairs: ps, movies: ms, retention: rs, series: ss } = write;
      const ns = write.seen.flatMap(({ users, ...bucket }) => users.map((userId) => ({ ...bucket, userId })));
      await client.query(A.writeRound, [
        ...[ps.map((p) => p.userId), ps.map((p) => p.movieId), ps.map((p) => p.position), ps.map((p) => p.watched),
          ps.map((p) => p.coverage), ps.map((p) => p.furthest)].map(integers),
        ps.map((p) => encodeIntervals(p.intervals)),
        integers(ps.map((p) => p.lastReceivedAt)),
        integers(ps.map((p) => p.lastCreditedAt)),
        ...[ms.map((m) => m.movieId), ms.map((m) => m.viewers), ms.map((m) => m.coverage), ms.map((m) => m.watched),
          ms.map((m) => m.events), ms.map((m) => m.maxAt)].map(integers),
        ...[0, 1, 2].map((k) => integers(rs.map((r) => r[k]))),
        ...[ns.map((n) => n.scope), ns.map((n) => n.id), ns.map((n) => n.interval), ns.map((n) => n.start), ns.map((n) => n.userId)].map(integers),
        ...[ss.map((s) => s.scope), ss.map((s) => s.id), ss.map((s) => s.interval), ss.map((s) => s.start), ss.map((s) => s.watched),
          ss.map((s) => s.events)].map(integers),
        write.cursor,
      ]);
      return { applied, full: applied === limit };
    });
  }

  async progress(): Promise<AnalyticsProgress> {
    const { asOf, lagEvents } = (await this.read(() => this.pool.query<ProgressRow>(A.progress))).rows[0];
    return { asOf, lagEvents };
  }

  async movie(slug: string, completedFrom: (duration: number) => number, withRetention: boolean): Promise<MovieAnalyticsRow | undefined> {
    return this.read(() =>
      this.helpers.transaction(async (client) => {
        type Row = Omit<MovieAnalyticsRow, keyof AnalyticsSnapshot | 'completed'> & ProgressRow & { id: number };
        const row = (await client.query<Row>(A.movie, [slug])).rows[0];
        if (row === undefined) return undefined;
        const { id, asOf, lagEvents, accounting, maxStep, ...movie } = row;
        const more = await client.query<{ completed: number; retention: [number, number][] | null }>(A.completed, [
          id,
          completedFrom(movie.durationSet ?? movie.maxAt),
          withRetention,
        ]);
        const { completed, retention } = more.rows[0];
        return { ...snapshotOf({ asOf, lagEvents, accounting, maxStep }), ...movie, completed, retention: retention ?? undefined };
      }, A.snapshot),
    );
  }

  async series(
    scope: SeriesScope,
    interval: number,
    bucketMs: number,
    from: number,
    to: number,
  ): Promise<(AnalyticsSnapshot & { rows: SeriesRow[] }) | undefined> {
    const code = SCOPE[scope.kind];
    const name = scope.kind === 'movie' ? scope.slug : scope.kind === 'user' ? scope.user : '';
    const params = [code, name, scope.kind === 'user' ? 0 : interval, bucketMs, from, to];
    const row = (await this.read(() => this.pool.query<ProgressRow & { id: number | null; rows: SeriesRow[] }>(A.series, params))).rows[0];
    if (row.id === null) return undefined;
    return { ...snapshotOf(row), rows: row.rows };
  }

  async viewersSince(since: number, top: number): Promise<ViewersNowRow> {
    const row = (await this.read(() => this.pool.query<ViewersNowRow>(A.viewersSince, [since, top]))).rows[0];
    const { asOf, lagEvents, viewers, movies } = row;
    return { asOf, lagEvents, viewers, movies };
  }

  async setDuration(slug: string, duration: number): Promise<void> {
    await this.read(() => this.pool.query(A.setDuration, [slug, duration]));
  }

  /** As the store's lookups: a database that is away is a 503 to the client, not a fault of the server. */
  private async read<T>(work: () => Promise<T>): Promise<T> {
    try {
      return await work();
    } catch (error) {
      if (this.helpers.unreachable(error)) throw new StoreUnavailableError(`the database cannot be reached: ${(error as Error).message}`);
      throw error;
    }
  }
}

/**
 * Whole numbers (or nulls) as an array's text, as postgres.ts writes a
 * batch's: pg's own conversion quotes each element.
 */
function integers(values: (number | null)[]): string {
  return `{${values.map((v) => v ?? 'NULL').join(',')}}`;
}
