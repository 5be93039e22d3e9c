// The analytics half of the SQLite store (SPEC section 7). The follower's
// rounds read the events of <db> and write what they add to a file of their
// own, <db>-analytics (sql/sqlite/analytics-schema.sql), with its cursor in
// the same transaction: deriving the analytics never takes <db>'s write lock,
// so ingest never waits for it, and the server runs it on a thread of its
// own (src/analytics/follower-thread.ts). The answers read both files.
import { existsSync, readFileSync, rmSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { LRUCache } from 'lru-cache';
import type { AccountingRule } from '../accounting.ts';
import {
  decodeIntervals,
  encodeIntervals,
  pairKeyOf,
  SCOPE,
  type AnalyticsProgress,
  type AnalyticsSnapshot,
  type AnalyticsStore,
  type ChunkWrite,
  type MovieAnalyticsRow,
  type PairAnalytics,
  type RoundDone,
  type SeriesRow,
  type SeriesScope,
  type StartRound,
  type ViewersNowRow,
} from './analytics-rows.ts';
import { namedQueries } from './sql-files.ts';
import type { Awaitable } from './store.ts';

/** The analytics file of a database file. */
export const analyticsFileOf = (databaseFile: string) => `${databaseFile}-analytics`;

/** The analytics file is not the one a follower opened: it must open it again (and derive it again). */
export class AnalyticsFileGoneError extends Error {}

const inodeOf = (file: string) => statSync(file, { throwIfNoEntry: false })?.ino;

/** The errors of a file that is not a (sound) SQLite database: derived data, so it can be removed and derived again. */
export function isDamagedFile(error: unknown): boolean {
  const code = (error as { code?: string }).code;
  return code === 'SQLITE_NOTADB' || code === 'SQLITE_CORRUPT';
}

/** Removes an analytics file and its WAL and shared memory, to derive it again. */
export function removeAnalyticsFile(file: string): void {
  for (const suffix of ['', '-wal', '-shm']) rmSync(`${file}${suffix}`, { force: true });
}

/** The analytics file's schema; a file of another version is emptied and followed again. */
const ANALYTICS_SCHEMA_VERSION = 2;
const SCHEMA_SQL = fileURLToPath(new URL('../../sql/sqlite/analytics-schema.sql', import.meta.url));

/**
 * Pair states the follower keeps between rounds, so that the small rounds of
 * a follower that keeps up read from the file only pairs they have not met
 * lately: every pair of 100,000 players who come round every few seconds.
 * With 50,000 (as the other caches keep), such rounds missed every time, and
 * took twice as long an event.
 */
const KEPT_PAIRS = 120_000;
/** Events a round reads from <db> at a time: a round of a million events never holds them all. */
const READ_EVENTS = 2_000;
/**
 * A round stops reading once it holds about this much memory (it may pass it
 * by a read; follow.ts counts it): the heartbeats of 100,000 pairs hold about
 * 40 MB, and a round's writes add half as much again for a moment.
 */
const ROUND_HELD_BYTES = 48 * 1024 * 1024;

/** How many numbers an event is in eventsAfter's array: seq, userId, movieId, at, receivedAt. */
const EVENT_NUMBERS = 5;

/** The events of eventsAfter's array (null: none), by number: SQLite builds it in the subquery's order, but does not promise it. */
function eventsOf(json: string | null): number[] {
  if (json === null) return [];
  const events = JSON.parse(json) as number[];
  for (let i = EVENT_NUMBERS; i < events.length; i += EVENT_NUMBERS) {
    if (events[i] < events[i - EVENT_NUMBERS]) {
      const rows = Array.from({ length: events.length / EVENT_NUMBERS }, (_, k) => events.slice(k * EVENT_NUMBERS, (k + 1) * EVENT_NUMBERS));
      return rows.sort((a, b) => a[0] - b[0]).flat();
    }
  }
  return events;
}

type PairRow = Omit<PairAnalytics, 'intervals' | 'userId' | 'movieId'> & { intervals: Buffer };

const FOLLOW_QUERIES = [
  'followed', 'eventsAfter', 'markOf', 'state', 'setState', 'pairState', 'writePair', 'addToMovie', 'addRetention', 'addSeen', 'addSeries',
] as const;
type FollowQuery = (typeof FOLLOW_QUERIES)[number];
const READ_QUERIES = ['state', 'movieCoverage', 'completed', 'retention', 'series', 'viewersSince', 'moviesSince'] as const;
const MAIN_QUERIES = ['followed', 'markOf', 'movie', 'movieId', 'userId', 'slug', 'setDuration'] as const;
const EVENT_QUERIES = new Set<string>(['followed', 'eventsAfter', 'markOf']);

interface FollowState {
  cursor: number;
  generation: number;
  mark: string;
}

/** Whether the analytics file's state is of this database as it is: the same rebuild generation, the same event at its cursor. */
const stateHolds = (state: FollowState, followed: Followed, markOf: Database.Statement) =>
  state.generation === followed.generation && state.cursor <= followed.lastSeq && (state.cursor === 0 || markOf.get(state.cursor) === state.mark);

type Statements<Name extends string> = Record<Name, Database.Statement>;
function prepare<Name extends string>(names: readonly Name[], on: (name: Name) => Database.Database): Statements<Name> {
  const sql = namedQueries('sqlite', names, 'analytics.sql');
  return Object.fromEntries(names.map((name) => [name, on(name).prepare(sql[name])])) as Statements<Name>;
}

interface Followed extends AccountingRule {
  generation: number;
  lastSeq: number;
}

/**
 * The follower's rounds over one database file: a read-only connection to
 * <db> and a writable one to <db>-analytics, made (or emptied, see the
 * schema's comment) here.
 */
export class SqliteFollowing {
  private readonly events: Database.Database;
  private readonly analytics: Database.Database;
  private readonly q: Statements<FollowQuery>;
  private readonly reset: string;
  private readonly round: Database.Transaction<(limit: number, start: StartRound) => RoundDone>;
  private readonly kept = new LRUCache<string, PairAnalytics>({ max: KEPT_PAIRS });
  /** The analytics file's data_version after this follower's last round: another writer of it voids the kept states. */
  private keptAt = -1;

  /** The analytics file, and the inode this follower writes: another (the file deleted or replaced) means starting again. */
  readonly file: string;
  private readonly inode: number | undefined;

  constructor(
    databaseFile: string,
    /** Whether a round should stop reading and commit what it has (the thread's follower, stopping). */
    private readonly interrupted: () => boolean = () => false,
  ) {
    this.file = analyticsFileOf(databaseFile);
    this.events = new Database(databaseFile, { readonly: true, fileMustExist: true });
    this.analytics = new Database(this.file);
    try {
      this.analytics.pragma('journal_mode = WAL');
      // Derived data: a power cut may lose the last rounds, which the follower derives again.
      this.analytics.pragma('synchronous = NORMAL');
      // Half the database's page cache: the follower's rounds touch fewer pages than ingest's batches.
      this.analytics.pragma('cache_size = -8192');
      // A large round's transaction grows the WAL by the pages it writes; this truncates it back after the checkpoint.
      this.analytics.pragma('journal_size_limit = 67108864');
      if (this.analytics.pragma('user_version', { simple: true }) !== ANALYTICS_SCHEMA_VERSION) {
        // A new file, or another version's: nothing in it is worth keeping.
        const tables = this.analytics.prepare("SELECT name FROM sqlite_schema WHERE type = 'table'").pluck().all() as string[];
        for (const table of tables) this.analytics.exec(`DROP TABLE IF EXISTS "${table}"`);
        this.analytics.exec(readFileSync(SCHEMA_SQL, 'utf8'));
        this.analytics.pragma(`user_version = ${ANALYTICS_SCHEMA_VERSION}`);
      }
      this.q = prepare(FOLLOW_QUERIES, (name) => (EVENT_QUERIES.has(name) ? this.events : this.analytics));
      this.q.markOf.pluck();
      this.q.eventsAfter.pluck();
      this.inode = inodeOf(this.file);
      this.reset = namedQueries('sqlite', ['reset'], 'analytics.sql').reset;
      this.round = this.analytics.transaction((limit, apply) => this.roundInside(limit, apply));
    } catch (error) {
      this.close();
      throw error;
    }
  }

  /**
   * One round: the events after the cursor (at most `limit`; fewer once it
   * holds ROUND_HELD_BYTES, or is interrupted), applied and written with the
   * new cursor, in one IMMEDIATE transaction of the analytics file, so that
   * two followers of one file cannot both apply the same events.
   */
  followRound(limit: number, start: StartRound): RoundDone {
    if (inodeOf(this.file) !== this.inode) throw new AnalyticsFileGoneError(`${this.file} was deleted or replaced while followed`);
    try {
      return this.round.immediate(limit, start);
    } catch (error) {
      // The round changed kept states in place; it did not commit them.
      this.kept.clear();
      throw error;
    }
  }

  private roundInside(asked: number, start: StartRound): RoundDone {
    const limit = Math.max(1, asked);
    if (this.analytics.pragma('data_version', { simple: true }) !== this.keptAt) this.kept.clear();
    const followed = this.q.followed.get() as Followed | undefined;
    if (followed === undefined) return { applied: 0, full: false }; // a database without settings yet
    let state = this.q.state.get() as FollowState | undefined;
    if (state !== undefined && !stateHolds(state, followed, this.q.markOf)) {
      // A rebuild swapped since (another rule, perhaps), or the database was put back from a backup.
      this.analytics.exec(this.reset);
      this.kept.clear();
      state = undefined;
    }
    const round = start({ accounting: followed.accounting, maxStep: followed.maxStep }, (userId, movieId) => this.pairOf(userId, movieId));
    let cursor = state?.cursor ?? 0;
    let applied = 0;
    let full = false;
    for (;;) {
      const want = Math.min(READ_EVENTS, limit - applied);
      const events = eventsOf(this.q.eventsAfter.get(cursor, want) as string | null);
      for (let i = 0; i < events.length; i += EVENT_NUMBERS) round.add(events[i], events[i + 1], events[i + 2], events[i + 3], events[i + 4]);
      const read = events.length / EVENT_NUMBERS;
      applied += read;
      if (read < want) break;
      cursor = events[events.length - EVENT_NUMBERS];
      if (applied >= limit || round.held >= ROUND_HELD_BYTES || this.interrupted()) {
        full = true;
        break;
      }
    }
    if (applied === 0) {
      if (state === undefined) this.q.setState.run(0, followed.generation, '');
      return { applied, full };
    }
    const write = round.finish();
    this.store(write, followed.generation, this.q.markOf.get(write.cursor) as string);
    for (const pair of write.pairs) this.kept.set(pairKeyOf(pair.userId, pair.movieId), pair);
    this.keptAt = this.analytics.pragma('data_version', { simple: true }) as number;
    return { applied, full };
  }

  /** A pair's state as the last round left it: kept, or read from the file. */
  private pairOf(userId: number, movieId: number): PairAnalytics | undefined {
    const kept = this.kept.get(pairKeyOf(userId, movieId));
    if (kept) return kept;
    const row = this.q.pairState.get(movieId, userId) as PairRow | undefined;
    return row && { ...row, userId, movieId, intervals: decodeIntervals(row.intervals) };
  }

  private store(write: ChunkWrite, generation: number, mark: string): void {
    const q = this.q;
    for (const p of write.pairs) {
      q.writePair.run(p.userId, p.movieId, p.position, p.watched, p.coverage, p.furthest, encodeIntervals(p.intervals), p.lastReceivedAt, p.lastCreditedAt);
    }
    for (const m of write.movies) q.addToMovie.run(m.movieId, m.viewers, m.coverage, m.watched, m.events, m.maxAt);
    for (const [movieId, second, delta] of write.retention) q.addRetention.run(movieId, second, delta);
    const newViewers = new Map<string, number>();
    for (const { scope, id, interval, start, users } of write.seen) {
      const added = q.addSeen.run(scope, id, interval, start, JSON.stringify(users)).changes;
      if (added > 0) newViewers.set(`${scope}:${id}:${interval}:${start}`, added);
    }
    for (const s of write.series) {
      const viewers = newViewers.get(`${s.scope}:${s.id}:${s.interval}:${s.start}`) ?? 0;
      q.addSeries.run(s.scope, s.id, s.interval, s.start, s.watched, s.events, viewers);
    }
    q.setState.run(write.cursor, generation, mark);
  }

  close(): void {
    for (const db of [this.events, this.analytics]) if (db?.open) db.close();
  }
}

/**
 * The answers: names, durations and the last event from <db> (the store's
 * connection), the rest from <db>-analytics, read-only, opened once the
 * follower has made it. Before that, nothing is followed yet: every movie
 * and user has empty analytics, and lagEvents counts every event.
 */
export class SqliteAnalytics implements AnalyticsStore {
  private readonly main: Statements<(typeof MAIN_QUERIES)[number]>;
  private file: { db: Database.Database; q: Statements<(typeof READ_QUERIES)[number]>; inode: number | undefined } | undefined;
  private following: SqliteFollowing | undefined;

  constructor(
    private readonly db: Database.Database,
    private readonly databaseFile: string,
    /** Turns SQLite's lock errors into the store's own. */
    private readonly whenBusy: <T>(fn: () => T) => T,
    /** Settles once a commit is on disk (the server syncs the WAL off the event loop). */
    private readonly durable: () => Awaitable<void> = () => undefined,
  ) {
    this.main = prepare(MAIN_QUERIES, () => db);
    for (const name of ['movieId', 'userId', 'slug', 'markOf'] as const) this.main[name].pluck();
  }

  /** Rounds in this process, on connections of their own (the benchmark; the server follows on a thread). */
  followRound(limit: number, start: StartRound): RoundDone {
    this.following ??= new SqliteFollowing(this.databaseFile);
    return this.following.followRound(limit, start);
  }

  private analytics() {
    const path = analyticsFileOf(this.databaseFile);
    const inode = inodeOf(path);
    if (this.file !== undefined && this.file.inode !== inode) {
      // Deleted or replaced (the follower derives a new one): read the new one, or nothing yet.
      this.file.db.close();
      this.file = undefined;
    }
    if (this.file === undefined && inode !== undefined) {
      let db: Database.Database | undefined;
      try {
        db = new Database(path, { readonly: true, fileMustExist: true });
        const q = prepare(READ_QUERIES, () => db!);
        for (const name of ['completed', 'viewersSince'] as const) q[name].pluck();
        this.file = { db, q, inode };
      } catch {
        db?.close(); // made but not yet given its tables, or damaged (the follower makes it again): as if absent
      }
    }
    return this.file;
  }

  /** Where the analytics are, with the rule and the number of the last event stored. */
  private snapshot(): AnalyticsSnapshot {
    const followed = this.main.followed.get() as Followed | undefined;
    const rule = { accounting: followed?.accounting ?? 'progress', maxStep: followed?.maxStep ?? 120 };
    const state = this.analytics()?.q.state.get() as FollowState | undefined;
    // Figures of another generation or of another database's events are stale until the follower begins again.
    const asOf = state && followed && stateHolds(state, followed, this.main.markOf) ? state.cursor : 0;
    return { asOf, lagEvents: (followed?.lastSeq ?? 0) - asOf, rule };
  }

  /** Reads of both files, each at one moment: the figures and their asOf agree. */
  private reading<T>(read: (file: ReturnType<SqliteAnalytics['analytics']>, snapshot: AnalyticsSnapshot) => T): T {
    const file = this.analytics();
    const inFile = () => read(file, this.snapshot());
    return this.db.transaction(() => (file ? file.db.transaction(inFile)() : inFile()))();
  }

  progress(): AnalyticsProgress {
    const { asOf, lagEvents } = this.reading((_, snapshot) => snapshot);
    return { asOf, lagEvents };
  }

  movie(slug: string, completedFrom: (duration: number) => number, withRetention: boolean): MovieAnalyticsRow | undefined {
    return this.reading((file, snapshot) => {
      const movie = this.main.movie.get(slug) as { id: number; duration: number | null } | undefined;
      if (movie === undefined) return undefined;
      const fresh = snapshot.asOf > 0 && file !== undefined;
      const row = (fresh ? file.q.movieCoverage.get(movie.id) : undefined) as { maxAt: number; viewers: number; coverage: number; watched: number } | undefined;
      const figures = row ?? { maxAt: 0, viewers: 0, coverage: 0, watched: 0 };
      const completed = fresh ? (file.q.completed.get(movie.id, completedFrom(movie.duration ?? figures.maxAt)) as number) : 0;
      const retention = withRetention ? (fresh ? (file.q.retention.raw().all(movie.id) as [number, number][]) : []) : undefined;
      return { ...snapshot, slug, durationSet: movie.duration, ...figures, completed, retention };
    });
  }

  series(scope: SeriesScope, interval: number, bucketMs: number, from: number, to: number): (AnalyticsSnapshot & { rows: SeriesRow[] }) | undefined {
    return this.reading((file, snapshot) => {
      let id = 0;
      if (scope.kind !== 'service') {
        const found = (scope.kind === 'movie' ? this.main.movieId.get(scope.slug) : this.main.userId.get(scope.user)) as number | undefined;
        if (found === undefined) return undefined;
        id = found;
      }
      const query = { scope: SCOPE[scope.kind], id, interval: scope.kind === 'user' ? 0 : interval, size: bucketMs, from, to };
      const rows = file && snapshot.asOf > 0 ? (file.q.series.all(query) as SeriesRow[]) : [];
      return { ...snapshot, rows };
    });
  }

  viewersSince(since: number, top: number): ViewersNowRow {
    return this.reading((file, { asOf, lagEvents }) => {
      if (file === undefined || asOf === 0) return { asOf, lagEvents, viewers: 0, movies: [] };
      const viewers = file.q.viewersSince.get(since) as number;
      const watched = (file.q.moviesSince.all(since) as { movieId: number; viewers: number }[]).map(({ movieId, viewers }) => ({
        slug: this.main.slug.get(movieId) as string,
        viewers,
      }));
      // Ties by the slug's bytes, as PostgreSQL's COLLATE "C" orders them.
      const movies = watched.sort((a, b) => b.viewers - a.viewers || Buffer.compare(Buffer.from(a.slug), Buffer.from(b.slug))).slice(0, top);
      return { asOf, lagEvents, viewers, movies };
    });
  }

  setDuration(slug: string, duration: number): Awaitable<void> {
    this.whenBusy(() => this.main.setDuration.run(slug, duration));
    return this.durable();
  }

  close(): void {
    this.following?.close();
    this.following = undefined;
    this.file?.db.close();
    this.file = undefined;
  }
}
