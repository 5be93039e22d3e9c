// What the service needs from a database. SQLite implements it now; the
// answers may be promises so that a networked database can implement it too.
import type { AccountingRule } from '../accounting.ts';
import type { WatchEvent } from '../event.ts';
import type { MovieTotals, PairTotals, UserMovie, UserTotals } from '../http/schemas.ts';

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

export interface ReceivedEvent extends WatchEvent {
  /** When the server received the request, in milliseconds since the epoch. */
  receivedAt: number;
}

// The answers' shapes are the API's schemas (src/http/schemas.ts).
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

export interface Store {
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
  /** Folds a write-ahead log back into the database, where there is one to fold (SQLite). */
  checkpoint?(): void;
  close(): Awaitable<void>;
}
