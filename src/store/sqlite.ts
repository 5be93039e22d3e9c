// The embedded store: one SQLite file in WAL mode, written by one connection.
import { accessSync, constants, existsSync, mkdirSync, realpathSync, statSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { LRUCache } from 'lru-cache';
import type { AccountingRule } from '../accounting.ts';
import { pairAnswerKey, ReadCache, UNKNOWN } from './read-cache.ts';
import { page, withIsoTime, type Row } from './rows.ts';
import { SqliteAnalytics } from './sqlite-analytics.ts';
import { rebuildOnline } from './sqlite-rebuild.ts';
import { ServeLock, type ServeAddress } from './serve-lock.ts';
import { migrations, namedQueries } from './sql-files.ts';
import { pairKey, Tally, writeTally, type PairRow } from './tally.ts';
import { WalSync } from './wal-sync.ts';
import {
  rebuildStateOf,
  StoreBusyError,
  type MovieTotals,
  type OpenOptions,
  type Page,
  type RebuildRow,
  type PairTotals,
  type RebuildProgress,
  type RebuildState,
  type ReceivedEvent,
  type Store,
  type UserMovie,
  type UserTotals,
} from './store.ts';

const QUERY_NAMES = [
  'readSettings', 'writeSettings', 'lastSeq', 'clientIdExists', 'userId', 'insertUser', 'movieId',
  'insertMovie', 'insertEvent', 'pairState', 'insertPair', 'updatePair', 'addToMovie',
  'movie', 'user', 'pair', 'userMovies', 'topMovies', 'touchSettings', 'dataVersion', 'rebuildState',
] as const;
type QueryName = (typeof QUERY_NAMES)[number];

/**
 * Entries each in-memory cache keeps at most; past it the least recently used
 * goes. A miss costs one indexed read of a few microseconds. Under batches
 * from a million users, 100,000 of each (and a 32 MiB page cache) took the
 * server to 233 MB of RSS; 50,000 (and 16 MiB) to 173-209 MB, and 181 MB with
 * the heap bound of bin/watchtime, at the same rates.
 */
const CACHE_ENTRIES = 50_000;
/**
 * SQLite's page cache, in KiB. With millions of users a batch touches pages
 * all over the aggregate tables; 16 MiB holds their upper B-tree levels and
 * the hot leaves, and the kernel's file cache serves the rest without I/O.
 */
const PAGE_CACHE_KIB = 16 * 1024;

/** How long opening waits for another connection's write (a migration, the switch to WAL). */
const OPEN_WAIT_MS = 5_000;

/** The database is missing, or not one this version of watchtime can use. */
export class DatabaseUnusableError extends Error {}

export interface SqliteOptions extends OpenOptions {
  /** For command-line queries: never writes, never migrates. */
  readonly?: boolean;
  /**
   * How long a write waits for another connection's write to finish. The
   * server uses 0 and retries from its queue, so its event loop never blocks.
   */
  busyTimeoutMs?: number;
  /**
   * For the server: commits do not wait for the disk, and ingest() settles
   * once the WAL is synced on the thread pool, so the event loop serves
   * requests meanwhile. Otherwise every commit syncs before it returns.
   */
  syncInBackground?: boolean;
  /**
   * For the server: take the file's serve lock (./serve-lock.ts), refusing
   * the file while another server holds it; released at close().
   */
  serveLock?: ServeAddress;
}

/** Tables every watchtime database has from its first migration on. */
const OUR_TABLES = ['settings', 'events', 'users', 'movies'];

const latestVersion = (steps: { version: number }[]) => steps.at(-1)?.version ?? 0;

export class SqliteStore implements Store {
  private readonly db: Database.Database;
  private readonly q: Record<QueryName, Database.Statement>;
  private readonly ingestBatch: Database.Transaction<(events: ReceivedEvent[]) => BatchOutcome>;
  private readonly probe: Database.Transaction<() => void>;
  private readonly walSync: WalSync | undefined;
  readonly analytics: SqliteAnalytics;
  private readonly serveLock: ServeLock | undefined;
  /**
   * The file's real path: what its -wal, -shm and lock files are named
   * after. SQLite follows a symbolic link to name its WAL; so must we.
   */
  readonly real: string;

  constructor(readonly file: string, options: SqliteOptions = {}) {
    const readonly = options.readonly ?? false;
    this.real = realFile(file);
    if (!readonly) checkWritable(this.real);
    try {
      this.db = new Database(this.real, { readonly, fileMustExist: readonly });
    } catch (error) {
      throw new DatabaseUnusableError(`cannot open the database ${file}: ${(error as Error).message}`);
    }
    try {
      // While opening, wait for another process that is creating or migrating the same file (servers started
      // together); the server's own timeout (0: never block the event loop) applies from the end of the constructor.
      this.db.pragma(`busy_timeout = ${OPEN_WAIT_MS}`);
      this.db.pragma(`cache_size = -${PAGE_CACHE_KIB}`);
      if (readonly) {
        this.checkOurs();
        this.checkSchema();
      } else {
        // Before anything is written to it: another application's file stays as it was.
        this.checkOurs();
        if (options.serveLock) this.serveLock = ServeLock.take(this.real, options.serveLock);
        this.db.pragma('journal_mode = WAL');
        // An acknowledged event survives a power cut, not only a crash: every commit is
        // synced, by SQLite (FULL) or by WalSync before the batch is answered.
        if (options.syncInBackground) this.walSync = new WalSync(`${this.real}-wal`);
        this.db.pragma(`synchronous = ${this.walSync ? 'NORMAL' : 'FULL'}`);
        // The WAL is checkpointed every 1000 pages; this truncates it back after a burst.
        this.db.pragma('journal_size_limit = 67108864');
        this.migrate(options.onMigration);
      }
      const sql = namedQueries('sqlite', QUERY_NAMES);
      this.q = Object.fromEntries(QUERY_NAMES.map((name) => [name, this.db.prepare(sql[name])])) as Record<
        QueryName,
        Database.Statement
      >;
      for (const name of ['lastSeq', 'clientIdExists', 'userId', 'insertUser', 'movieId', 'insertMovie', 'dataVersion'] as const) {
        this.q[name].pluck();
      }
      this.ingestBatch = this.db.transaction((events: ReceivedEvent[]) => this.applyBatch(events));
      this.db.pragma(`busy_timeout = ${options.busyTimeoutMs ?? OPEN_WAIT_MS}`);
      this.probe = this.db.transaction(() => void this.q.touchSettings.run());
      this.analytics = new SqliteAnalytics(this.db, this.real, whenBusy, () => this.walSync?.afterCommit());
    } catch (error) {
      this.db.close();
      this.serveLock?.release();
      throw unusable(file, error);
    }
  }

  private schemaVersion(): number {
    return this.db.pragma('user_version', { simple: true }) as number;
  }

  private migrate(onMigration: OpenOptions['onMigration']): void {
    const steps = migrations('sqlite');
    // A newer schema was refused by checkOurs, before the switch to WAL.
    const current = this.schemaVersion();
    for (const step of steps.filter((s) => s.version > current)) {
      const started = performance.now();
      this.db.transaction(() => {
        this.db.exec(step.sql);
        this.db.pragma(`user_version = ${step.version}`);
      }).immediate();
      onMigration?.({ version: step.version, name: step.name, ms: performance.now() - started });
    }
  }

  /**
   * Refuses, before anything is written to it, a file that is not a
   * watchtime database: one that holds anything (a table, a view, a trigger)
   * or records a schema version without holding our tables, or records a
   * schema newer than this watchtime knows.
   */
  private checkOurs(): void {
    const { version, objects, ours } = schemaOf(this.db);
    if (objects.length === 0 && version === 0) return; // new, or empty: ours to make
    if (!ours) {
      const holds = objects.length === 0 ? 'nothing' : objects.slice(0, 5).map((o) => `${o.type} ${o.name}`).join(', ');
      throw new DatabaseUnusableError(
        `${this.file} is not a watchtime database (schema version ${version}, it holds ${holds}); ` +
          'another application\'s file is left as it is',
      );
    }
    const latest = latestVersion(migrations('sqlite'));
    if (version > latest) {
      throw new DatabaseUnusableError(`${this.file} has schema version ${version}, newer than this watchtime knows (${latest}); upgrade watchtime`);
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
  // again: ids never change (a rebuild keeps them), and pair states are
  // forgotten whenever another connection commits. Least recently used first
  // out, so the cost of a lookup stays flat however many users there are.
  private readonly knownUserIds = new LRUCache<string, number>({ max: CACHE_ENTRIES });
  private readonly knownMovieIds = new LRUCache<string, number>({ max: CACHE_ENTRIES });
  private readonly knownPairs = new LRUCache<string, PairRow>({ max: CACHE_ENTRIES });
  private readonly answers = new ReadCache();
  private dataVersion = -1;
  private noticedThisTurn = false;

  ingest(events: ReceivedEvent[]): boolean[] | Promise<boolean[]> {
    // IMMEDIATE: a busy database fails at BEGIN, before anything is done.
    const outcome = whenBusy(() => this.ingestBatch.immediate(events));
    // Committed: only now may the caches hold what the batch created.
    for (const [name, id] of outcome.userIds) this.knownUserIds.set(name, id);
    for (const [slug, id] of outcome.movieIds) this.knownMovieIds.set(slug, id);
    for (const [key, pair] of outcome.tally.pairs) {
      const { position, watched, events, lastSeq, updatedAt } = pair;
      this.knownPairs.set(key, { position, watched, events, lastSeq, updatedAt });
    }
    this.answers.update(outcome.tally, outcome.userIds, outcome.movieIds);
    return this.walSync ? this.walSync.afterCommit().then(() => outcome.duplicate) : outcome.duplicate;
  }

  /**
   * Forgets what another connection's commit may have made stale: every kept
   * answer and every pair state. Not only a rebuild's swap: any other writer
   * (a second server, a script) may have moved a pair, and applying the rule
   * from a remembered position would credit the wrong step. Checked inside
   * the batch's transaction, so no commit can come between the check and
   * the batch.
   */
  private noticeOtherWriters(): void {
    const version = this.q.dataVersion.get() as number;
    if (version === this.dataVersion) return; // nobody else committed
    this.dataVersion = version;
    this.answers.clear();
    this.knownPairs.clear();
  }

  private applyBatch(events: ReceivedEvent[]): BatchOutcome {
    // Read inside the transaction: a rebuild may have changed the rule since the last batch.
    const rule = this.settings();
    if (rule === undefined) throw new Error('the database has no accounting settings');
    this.noticeOtherWriters();
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
      tally.apply(seq, userId, movieId, event.at, event.receivedAt);
    }
    writeTally(tally, this.q);
    return { duplicate, userIds, movieIds, tally };
  }

  private readonly loadPair = (userId: number, movieId: number): PairRow | undefined =>
    this.q.pairState.get(userId, movieId) as PairRow | undefined;

  movie(slug: string): MovieTotals | undefined {
    return this.kept(this.answers.movies, slug, () => one<MovieTotals>(this.q.movie, slug));
  }

  user(name: string): UserTotals | undefined {
    return this.kept(this.answers.users, name, () => one<UserTotals>(this.q.user, name));
  }

  pair(user: string, slug: string): PairTotals | undefined {
    return this.kept(this.answers.pairs, pairAnswerKey(user, slug), () => one<PairTotals>(this.q.pair, user, slug));
  }

  /**
   * Looks for other connections' commits once a callback of the event loop
   * (the flag falls with its microtasks): a lookup sees every commit made
   * before the callback that serves it began, which came after its request
   * was read; the lookups a turn gathers and answers in one callback pay
   * for one check. Once a turn was not enough: a lookup routed by polka is
   * answered while its request is read, in the poll phase, and the flag of
   * the turn before was still up (an HTTP worker then served an answer from
   * before a write it had been told of).
   */
  private noticeOtherWritersThisTurn(): void {
    if (this.noticedThisTurn) return;
    this.noticedThisTurn = true;
    queueMicrotask(() => (this.noticedThisTurn = false));
    this.noticeOtherWriters();
  }

  /** The kept answer, or the database's, kept for next time. */
  private kept<T extends {}>(answers: LRUCache<string, T | typeof UNKNOWN>, key: string, read: () => T | undefined): T | undefined {
    this.noticeOtherWritersThisTurn();
    const kept = answers.get(key);
    if (kept !== undefined) return kept === UNKNOWN ? undefined : kept;
    const answer = read();
    answers.set(key, answer ?? UNKNOWN);
    return answer;
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
    const result = whenBusy(() => rebuildOnline(this.db, this.real, rule, onProgress));
    this.knownPairs.clear();
    this.answers.clear();
    return result;
  }

  rebuildState(): RebuildState {
    return rebuildStateOf(this.q.rebuildState.get() as RebuildRow);
  }

  probeWritable(): void {
    // A real commit of an unchanged row: it fails as a batch would on a full disk or a read-only file.
    whenBusy(() => this.probe.immediate());
  }

  eventsStored(): number {
    return this.q.lastSeq.get() as number;
  }

  sizeBytes(): number {
    const size = (suffix: string) => statSync(`${this.real}${suffix}`, { throwIfNoEntry: false })?.size ?? 0;
    return size('') + size('-wal');
  }

  /** Copies the WAL into the database and empties it. */
  checkpoint(): void {
    this.db.pragma('wal_checkpoint(TRUNCATE)');
  }

  close(): void {
    this.walSync?.close();
    this.analytics?.close();
    if (this.db.open) this.db.close();
    // Last: the next server may start once this one has let go of the file.
    this.serveLock?.release();
  }
}

/**
 * Refuses, in one line, a file this process may not write, before SQLite
 * opens it: SQLite would open it read-only without a word and fail later,
 * at the first write. It also creates the -wal and -shm files beside it.
 */
function checkWritable(file: string): void {
  const dir = path.dirname(path.resolve(file));
  try {
    mkdirSync(dir, { recursive: true });
    accessSync(dir, constants.W_OK);
    // The -wal and -shm too: left by another user (root's `watchtime query`), they make every commit fail.
    for (const each of [file, `${file}-wal`, `${file}-shm`]) if (existsSync(each)) accessSync(each, constants.W_OK);
  } catch (error) {
    const { code, path: denied } = error as NodeJS.ErrnoException;
    throw new DatabaseUnusableError(
      `cannot write the database ${file}: ${code ?? (error as Error).message} on ${denied ?? dir} ` +
        '(serving and rebuilding write the file and create its -wal and -shm beside it; `watchtime query` only reads)',
    );
  }
}

/**
 * The real path of the database file, and what cannot be one: an empty --db
 * (an unset shell variable) or an in-memory database would lose every event,
 * and a file with several hard links has several WALs and no common lock.
 */
function realFile(file: string): string {
  if (file.trim() === '' || file === ':memory:' || file.startsWith('file:')) {
    throw new DatabaseUnusableError(`--db must name a database file, not ${JSON.stringify(file)}`);
  }
  const found = statSync(file, { throwIfNoEntry: false });
  if (found === undefined) {
    // New: its folder may exist under another name.
    const dir = path.dirname(path.resolve(file));
    return existsSync(dir) ? path.join(realpathSync(dir), path.basename(file)) : path.resolve(file);
  }
  if (found.isDirectory()) throw new DatabaseUnusableError(`${file} is a folder; --db names the database file`);
  if (found.nlink > 1) {
    throw new DatabaseUnusableError(
      `${file} has ${found.nlink} hard links: SQLite names its WAL and its locks after the path, so two names of one file would each have their own; keep one name`,
    );
  }
  return realpathSync(file);
}

/**
 * What a SQLite file holds, to tell a watchtime database, of any schema
 * version, from another application's file: `ours` when it records a
 * schema version and holds our tables. The store and the backup both ask.
 */
export function schemaOf(db: Database.Database): { version: number; objects: { type: string; name: string }[]; ours: boolean } {
  const objects = db.prepare("SELECT type, name FROM sqlite_schema WHERE name NOT LIKE 'sqlite_%'").all() as { type: string; name: string }[];
  const version = db.pragma('user_version', { simple: true }) as number;
  const tables = objects.filter((o) => o.type === 'table').map((o) => o.name);
  return { version, objects, ours: version > 0 && OUR_TABLES.every((name) => tables.includes(name)) };
}

/**
 * What an error of opening a file says to an operator, in one line, for the
 * errors that are theirs to fix; undefined for any other.
 */
export function openProblem(file: string, error: unknown): string | undefined {
  if (!(error instanceof Database.SqliteError)) return undefined;
  if (error.code === 'SQLITE_NOTADB') return `${file} is not a SQLite database, so not a watchtime one`;
  // A reader of a WAL file needs its -shm, which exists while a server runs, and is made by the first reader otherwise.
  if (error.code === 'SQLITE_READONLY_DIRECTORY') {
    return (
      `cannot read ${file} as this user: SQLite must create ${path.basename(file)}-shm beside it and may not write in ` +
      `${path.dirname(path.resolve(file))}; run as the file's owner, or while its server runs`
    );
  }
  return undefined;
}

/** An error of opening the file, as one line that says which file; other errors as they are. */
function unusable(file: string, error: unknown): unknown {
  if (!(error instanceof Database.SqliteError)) return error;
  return new DatabaseUnusableError(openProblem(file, error) ?? `cannot use the database ${file}: ${error.message} (${error.code})`);
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
  known: LRUCache<string, number>,
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

/** One answer row, or undefined, with its time as ISO 8601. */
function one<T extends { updatedAt: string }>(statement: Database.Statement, ...params: string[]): T | undefined {
  const row = statement.get(...params) as Row<T> | undefined;
  return row && withIsoTime(row);
}
