// What the service needs from a database. SQLite implements it now; the
// answers may be promises so that a networked database can implement it too.
import { readlinkSync } from 'node:fs';
import { hostname } from 'node:os';
import type { AccountingRule } from '../accounting.ts';
import type { AnalyticsStore } from './analytics-rows.ts';
import type { WatchEvent } from '../event.ts';
import type { MovieTotals, PairTotals, UserMovie, UserTotals } from '../totals.ts';

export type Awaitable<T> = T | Promise<T>;

/** Why a lookup found nothing: the same words from the HTTP API and the command line. */
export const nothingFor = {
  movie: (slug: string) => `no events for the movie ${JSON.stringify(slug)}`,
  user: (user: string) => `no events for the user ${JSON.stringify(user)}`,
  pair: (user: string, slug: string) =>
    `no events for the user ${JSON.stringify(user)} in the movie ${JSON.stringify(slug)}`,
};

/** Another connection (a rebuild) holds the write lock; trying again later may work. */
export class StoreBusyError extends Error {}

/** The database cannot be reached (a networked one that is away); trying again later may work. */
export class StoreUnavailableError extends Error {}

export interface ReceivedEvent extends WatchEvent {
  /** When the server received the request, in milliseconds since the epoch. */
  receivedAt: number;
}

// The answers' shapes are the domain's (src/totals.ts), which the API publishes.
export type { MovieTotals, PairTotals, UserMovie, UserTotals };

export interface Page<T> {
  items: T[];
  /** Whether rows follow this page. */
  more: boolean;
}

export interface RebuildProgress {
  done: number;
  total: number;
}

/**
 * Where a rebuild of the database is, as the rebuild (a process of its own)
 * records it in the database. Times in milliseconds since the epoch.
 */
export interface RebuildState {
  /** A rebuild has started and has neither swapped nor failed, and its process is alive (see rebuildRunning). */
  running: boolean;
  /** Events the running rebuild, or the last one, has applied. */
  done: number;
  /** Events it has to apply: those stored when it started, and those that arrived since. */
  total: number;
  /**
   * When the running rebuild started. Null once it swapped or failed; set
   * with `running` false, a rebuild that was killed (kill -9, out of memory, power loss).
   */
  startedAt: number | null;
  /** When a rebuild last swapped its totals in; null if none ever did. */
  lastSwapAt: number | null;
  /** Rebuilds swapped in on this database, all time. */
  generation: number;
}

/** A schema migration a store applied when it opened the database. */
export interface MigrationStep {
  version: number;
  /** The file's name without its number: `004_rebuild_state.sql` is `rebuild_state`. */
  name: string;
  /** How long it took, in milliseconds. */
  ms: number;
}

/** What a writable store takes besides its own options. */
export interface OpenOptions {
  /** Called once for each migration applied at open, after it committed, in version order. */
  onMigration?: (step: MigrationStep) => void;
}

/**
 * How long a rebuild that runs on another host (or in another pid namespace)
 * may go without writing its progress before a server counts it as dead. It
 * writes with every chunk (10,000 pairs or events on SQLite, 5,000 pairs on
 * PostgreSQL); its longest silence is the grouping of all the events before
 * its first chunk, measured on SQLite at half a second a million events: ten
 * minutes is about a billion.
 */
export const REBUILD_SILENT_MS = 10 * 60_000;

/** Where a process id means the same process: this host and its pid namespace (containers have their own). */
let thisHostKey: string | undefined;
export function processHost(): string {
  if (thisHostKey === undefined) {
    let namespace = '';
    try {
      namespace = readlinkSync('/proc/self/ns/pid'); // e.g. pid:[4026531836]
    } catch {
      // not Linux: the host name alone
    }
    thisHostKey = namespace ? `${hostname()} ${namespace}` : hostname();
  }
  return thisHostKey;
}

/** Whether a process of this host and pid namespace is alive. */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM'; // alive, another user's
  }
}

/**
 * The stale-progress rule. A rebuild clears its start when it swaps, and when
 * it fails with an error; only a killed one leaves it behind. So a recorded
 * start means running, unless its process is known to be gone: on this host
 * and pid namespace, the process no longer exists; elsewhere, it has written
 * nothing for REBUILD_SILENT_MS.
 */
export function rebuildRunning(
  row: { startedAt: number | null; progressAt: number | null; pid: number | null; host: string | null },
  now = Date.now(),
): boolean {
  if (row.startedAt === null) return false;
  if (row.pid !== null && row.host === processHost()) return alive(row.pid);
  return now - (row.progressAt ?? row.startedAt) <= REBUILD_SILENT_MS;
}

/** What queries.sql's rebuildState reads, on both stores. */
export interface RebuildRow {
  generation: number;
  lastSwapAt: number | null;
  startedAt: number | null;
  done: number;
  total: number;
  progressAt: number | null;
  pid: number | null;
  host: string | null;
}

export function rebuildStateOf(row: RebuildRow): RebuildState {
  const { generation, lastSwapAt, startedAt, done, total } = row;
  return { running: rebuildRunning(row), done, total, startedAt, lastSwapAt, generation };
}

export interface Store {
  /**
   * Batches the ingest queue may have in flight at once (1 unless told). The
   * queue keeps a pair's events out of a batch while another holds that pair,
   * so each pair's events still commit in the order they arrived.
   */
  readonly batchesInFlight?: number;
  /** The rule the aggregates were computed under; undefined for a new database. */
  settings(): Awaitable<AccountingRule | undefined>;
  /** Records the rule of a new database. */
  initSettings(rule: AccountingRule): Awaitable<void>;
  /**
   * Stores and applies the events in order, in one transaction. Returns, per
   * event, whether it was a duplicate of an id already stored (and skipped).
   */
  ingest(events: ReceivedEvent[]): Awaitable<boolean[]>;
  movie(slug: string): Awaitable<MovieTotals | undefined>;
  user(name: string): Awaitable<UserTotals | undefined>;
  pair(user: string, slug: string): Awaitable<PairTotals | undefined>;
  /** The user's movies, most recently watched first; undefined for an unknown user. */
  userMovies(user: string, limit: number, offset: number): Awaitable<Page<UserMovie> | undefined>;
  topMovies(limit: number, offset: number): Awaitable<Page<MovieTotals>>;
  /** Recomputes every aggregate from the events under `rule`, atomically. */
  rebuild(rule: AccountingRule, onProgress?: (progress: RebuildProgress) => void): Awaitable<RebuildProgress>;
  /** Throws when the database cannot take a write now. */
  probeWritable(): Awaitable<void>;
  /** Events stored, all time. */
  eventsStored(): Awaitable<number>;
  /** Bytes the database takes. */
  sizeBytes(): Awaitable<number>;
  /**
   * Where a rebuild (this process's or another's) is, read from the database
   * in one row: cheap enough for every scrape of /metrics.
   */
  rebuildState?(): Awaitable<RebuildState>;
  /** Batches tried again, all time, after meeting another batch's write, a deadlock or a lost connection (PostgreSQL). */
  batchRetries?(): number;
  /** SPEC section 7: the follower's rounds and the analytics' reads. */
  readonly analytics: AnalyticsStore;
  /** Folds a write-ahead log back into the database, where there is one to fold (SQLite). */
  checkpoint?(): void;
  close(): Awaitable<void>;
}
