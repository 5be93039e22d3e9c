// The embedded store: one SQLite file in WAL mode, written by one connection.
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import type { AccountingRule } from '../accounting.ts';
import { migrations, namedQueries } from './sql-files.ts';
import { pairKey, Tally, type PairRow } from './tally.ts';
import {
  StoreBusyError,
  type MovieTotals,
  type Page,
  type PairTotals,
  type RebuildProgress,
  type ReceivedEvent,
  type Store,
  type UserMovie,
  type UserTotals,
} from './store.ts';

const QUERY_NAMES = [
  'readSettings', 'writeSettings', 'lastSeq', 'clientIdExists', 'userId', 'insertUser', 'movieId',
  'insertMovie', 'insertEvent', 'pairState', 'insertPair', 'updatePair', 'addToUser', 'addToMovie', 'eventsAfter',
  'resetUsers', 'resetMovies', 'resetPairs', 'movie', 'user', 'pair', 'userMovies', 'topMovies', 'touchSettings',
  'dataVersion',
] as const;
type QueryName = (typeof QUERY_NAMES)[number];

/** Events rebuild reads at a time. */
const REBUILD_CHUNK = 50_000;
/** Pairs rebuild keeps in memory before it writes them out, to bound its memory. */
const REBUILD_PAIRS_IN_MEMORY = 200_000;
/** Entries each in-memory cache keeps at most; past it the oldest goes. */
const CACHE_ENTRIES = 100_000;

/** The database is missing, or not one this version of watchtime can use. */
export class DatabaseUnusableError extends Error {}

export interface SqliteOptions {
  /** For command-line queries: never writes, never migrates. */
  readonly?: boolean;
  /**
   * How long a write waits for another connection's write to finish. The
   * server uses 0 and retries from its queue, so its event loop never blocks.
   */
  busyTimeoutMs?: number;
}

type Row<T> = Omit<T, 'updatedAt'> & { updatedAt: number };

const latestVersion = (steps: { version: number }[]) => steps.at(-1)?.version ?? 0;

function withIsoTime<T extends { updatedAt: string }>(row: Row<T>): T {
  return { ...row, updatedAt: new Date(row.updatedAt).toISOString() } as T;
}

export class SqliteStore implements Store {
  private readonly db: Database.Database;
  private readonly q: Record<QueryName, Database.Statement>;
  private readonly ingestBatch: Database.Transaction<(events: ReceivedEvent[]) => BatchOutcome>;
  private readonly probe: Database.Transaction<() => void>;

  constructor(readonly file: string, options: SqliteOptions = {}) {
    const readonly = options.readonly ?? false;
    if (!readonly) mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
    try {
      this.db = new Database(file, { readonly, fileMustExist: readonly });
    } catch (error) {
      throw new DatabaseUnusableError(`cannot open the database ${file}: ${(error as Error).message}`);
    }
    try {
      this.db.pragma(`busy_timeout = ${options.busyTimeoutMs ?? 5000}`);
      if (readonly) {
        this.checkSchema();
      } else {
        this.db.pragma('journal_mode = WAL');
        // Every commit is fsynced: an acknowledged event survives a power cut, not only a crash.
        this.db.pragma('synchronous = FULL');
        // The WAL is checkpointed every 1000 pages; this truncates it back after a burst.
        this.db.pragma('journal_size_limit = 67108864');
        this.migrate();
      }
      const sql = namedQueries('sqlite', QUERY_NAMES);
      this.q = Object.fromEntries(QUERY_NAMES.map((name) => [name, this.db.prepare(sql[name])])) as Record<
        QueryName,
        Database.Statement
      >;
      for (const name of ['lastSeq', 'clientIdExists', 'userId', 'insertUser', 'movieId', 'insertMovie', 'dataVersion'] as const) {
        this.q[name].pluck();
      }
      this.q.eventsAfter.raw();
      this.ingestBatch = this.db.transaction((events: ReceivedEvent[]) => this.applyBatch(events));
      this.probe = this.db.transaction(() => void this.q.touchSettings.run());
    } catch (error) {
      this.db.close();
      throw error;
    }
  }

  private schemaVersion(): number {
    return this.db.pragma('user_version', { simple: true }) as number;
  }

  private migrate(): void {
    const steps = migrations('sqlite');
    const latest = latestVersion(steps);
    const current = this.schemaVersion();
    if (current > latest) {
      throw new DatabaseUnusableError(
        `${this.file} has schema version ${current}, newer than this watchtime knows (${latest}); upgrade watchtime`,
      );
    }
    for (const step of steps.filter((s) => s.version > current)) {
      this.db.transaction(() => {
        this.db.exec(step.sql);
        this.db.pragma(`user_version = ${step.version}`);
      }).immediate();
    }
  }

  private checkSchema(): void {
    const latest = latestVersion(migrations('sqlite'));
    const current = this.schemaVersion();
    if (current === 0) throw new DatabaseUnusableError(`${this.file} is not a watchtime database`);
    if (current !== latest) {
      throw new DatabaseUnusableError(
        `${this.file} has schema version ${current}, this watchtime uses ${latest}; start the server on it once to migrate`,
      );
    }
  }

  settings(): AccountingRule | undefined {
    return this.q.readSettings.get() as AccountingRule | undefined;
  }

  initSettings(rule: AccountingRule): void {
    this.q.writeSettings.run(rule);
  }

  // What the last committed batches left, so that a batch need not look it up
  // again: ids never change, and pair states change only through this
  // connection or a rebuild, which PRAGMA data_version reveals.
  private readonly knownUserIds = new Map<string, number>();
  private readonly knownMovieIds = new Map<string, number>();
  private readonly knownPairs = new Map<string, PairRow>();
  private dataVersion = -1;

  ingest(events: ReceivedEvent[]): boolean[] {
    // IMMEDIATE: a busy database fails at BEGIN, before anything is done.
    const outcome = whenBusy(() => this.ingestBatch.immediate(events));
    // Committed: only now may the caches hold what the batch created.
    for (const [name, id] of outcome.userIds) remember(this.knownUserIds, name, id);
    for (const [slug, id] of outcome.movieIds) remember(this.knownMovieIds, slug, id);
    for (const [key, pair] of outcome.tally.pairs) {
      remember(this.knownPairs, key, { position: pair.position, watched: pair.watched, events: pair.events });
    }
    return outcome.duplicate;
  }

  private applyBatch(events: ReceivedEvent[]): BatchOutcome {
    // Read inside the transaction: a rebuild may have changed the rule since the last batch.
    const rule = this.settings();
    if (rule === undefined) throw new Error('the database has no accounting settings');
    const version = this.q.dataVersion.get() as number;
    if (version !== this.dataVersion) {
      this.knownPairs.clear(); // another connection wrote: a rebuild
      this.dataVersion = version;
    }
    let seq = this.q.lastSeq.get() as number;
    const tally = new Tally(rule, (userId, movieId) => this.knownPairs.get(pairKey(userId, movieId)) ?? this.loadPair(userId, movieId));
    const userIds = new Map<string, number>();
    const movieIds = new Map<string, number>();
    const clientIds = new Set<string>();
    const duplicate = new Array<boolean>(events.length).fill(false);

    for (let i = 0; i < events.length; i++) {
      const event = events[i];
      const clientId = event.id ?? null;
      if (clientId !== null) {
        if (clientIds.has(clientId) || this.q.clientIdExists.get(clientId) !== undefined) {
          duplicate[i] = true;
          continue;
        }
        clientIds.add(clientId);
      }
      const userId = idOf(userIds, this.knownUserIds, event.user, this.q.userId, this.q.insertUser);
      const movieId = idOf(movieIds, this.knownMovieIds, event.slug, this.q.movieId, this.q.insertMovie);
      seq += 1;
      this.q.insertEvent.run(seq, userId, movieId, event.at, event.receivedAt, clientId);
      tally.apply(seq, userId, movieId, event.at);
    }
    this.write(tally);
    return { duplicate, userIds, movieIds, tally };
  }

  private readonly loadPair = (userId: number, movieId: number): PairRow | undefined =>
    this.q.pairState.get(userId, movieId) as PairRow | undefined;

  private write(tally: Tally): void {
    const { insertPair, updatePair, addToUser, addToMovie } = this.q;
    for (const p of tally.pairs.values()) {
      if (p.stored) updatePair.run(p.position, p.watched, p.events, p.lastSeq, p.userId, p.movieId);
      else insertPair.run(p.userId, p.movieId, p.position, p.watched, p.events, p.lastSeq);
    }
    for (const [id, d] of tally.users) addToUser.run(d.watched, d.pairs, d.events, d.lastSeq, id);
    for (const [id, d] of tally.movies) addToMovie.run(d.watched, d.pairs, d.events, d.lastSeq, id);
  }

  movie(slug: string): MovieTotals | undefined {
    return one<MovieTotals>(this.q.movie, slug);
  }

  user(name: string): UserTotals | undefined {
    return one<UserTotals>(this.q.user, name);
  }

  pair(user: string, slug: string): PairTotals | undefined {
    return one<PairTotals>(this.q.pair, user, slug);
  }

  userMovies(user: string, limit: number, offset: number): Page<UserMovie> | undefined {
    const userId = this.q.userId.get(user) as number | undefined;
    if (userId === undefined) return undefined;
    return page(this.q.userMovies.all(userId, limit + 1, offset) as Row<UserMovie>[], limit);
  }

  topMovies(limit: number, offset: number): Page<MovieTotals> {
    return page(this.q.topMovies.all(limit + 1, offset) as Row<MovieTotals>[], limit);
  }

  rebuild(rule: AccountingRule, onProgress?: (progress: RebuildProgress) => void): RebuildProgress {
    const run = this.db.transaction(() => {
      const total = this.q.lastSeq.get() as number;
      this.q.resetUsers.run();
      this.q.resetMovies.run();
      this.q.resetPairs.run();
      let done = 0;
      let after = 0;
      onProgress?.({ done, total });
      // Pairs stay in memory across chunks; when there are too many they are
      // written out, and read back from this same transaction when met again.
      let tally = new Tally(rule, this.loadPair);
      for (;;) {
        const rows = this.q.eventsAfter.all(after, REBUILD_CHUNK) as [number, number, number, number][];
        if (rows.length === 0) break;
        for (const [seq, userId, movieId, at] of rows) tally.apply(seq, userId, movieId, at);
        if (tally.pairs.size > REBUILD_PAIRS_IN_MEMORY) {
          this.write(tally);
          tally = new Tally(rule, this.loadPair);
        }
        after = rows[rows.length - 1][0];
        done += rows.length;
        onProgress?.({ done, total });
      }
      this.write(tally);
      this.q.writeSettings.run(rule);
      return { done, total };
    });
    this.knownPairs.clear();
    return run.immediate();
  }

  probeWritable(): void {
    // A real commit of an unchanged row: it fails as a batch would on a full disk or a read-only file.
    whenBusy(() => this.probe.immediate());
  }

  /** Copies the WAL into the database and empties it. */
  checkpoint(): void {
    this.db.pragma('wal_checkpoint(TRUNCATE)');
  }

  close(): void {
    if (this.db.open) this.db.close();
  }
}

/** Runs `fn`, turning SQLite's lock errors into the store's own. */
function whenBusy<T>(fn: () => T): T {
  try {
    return fn();
  } catch (error) {
    const code = (error as { code?: string }).code;
    if (code === 'SQLITE_BUSY' || code === 'SQLITE_LOCKED') throw new StoreBusyError((error as Error).message);
    throw error;
  }
}

interface BatchOutcome {
  duplicate: boolean[];
  /** The ids the batch used, to remember once it has committed. */
  userIds: Map<string, number>;
  movieIds: Map<string, number>;
  tally: Tally;
}

/** The id of a name: from this batch, from what earlier batches left, from the table, or newly added. */
function idOf(
  batch: Map<string, number>,
  known: Map<string, number>,
  name: string,
  select: Database.Statement,
  insert: Database.Statement,
): number {
  let id = batch.get(name);
  if (id === undefined) {
    id = (known.get(name) ?? select.get(name) ?? insert.get(name)) as number;
    batch.set(name, id);
  }
  return id;
}

/** Adds to a bounded cache, dropping the oldest entry when it is full. */
function remember<V>(cache: Map<string, V>, key: string, value: V): void {
  cache.delete(key);
  if (cache.size >= CACHE_ENTRIES) cache.delete(cache.keys().next().value!);
  cache.set(key, value);
}

/** One answer row, or undefined, with its time as ISO 8601. */
function one<T extends { updatedAt: string }>(statement: Database.Statement, ...params: string[]): T | undefined {
  const row = statement.get(...params) as Row<T> | undefined;
  return row && withIsoTime(row);
}

function page<T extends { updatedAt: string }>(rows: Row<T>[], limit: number): Page<T> {
  return { items: rows.slice(0, limit).map(withIsoTime<T>), more: rows.length > limit };
}
