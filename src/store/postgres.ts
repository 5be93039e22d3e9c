// The PostgreSQL store: several stateless servers over one database. Why it
// stays exact under concurrency is argued in docs/postgres.md ("Why the totals
// stay exact across servers"); in short, a batch reads its pairs, then takes
// its events' numbers, applies the rule in JS through the same tally as SQLite,
// and writes everything back only where no other batch wrote its pairs since,
// or tries again: two round trips, with several batches in flight over the pool.
import { setTimeout as sleep } from 'node:timers/promises';
import { LRUCache } from 'lru-cache';
import pg from 'pg';
import type { AccountingRule } from '../accounting.ts';
import { PostgresAnalytics } from './postgres-analytics.ts';
import { page, withIsoTime, type Row } from './rows.ts';
import { migrations, namedQueries } from './sql-files.ts';
import { advance, pairKey, Tally, type PairRow, type TotalDelta } from './tally.ts';
import {
  processHost,
  rebuildStateOf,
  StoreBusyError,
  StoreUnavailableError,
  type MigrationStep,
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
  'readSettings', 'writeSettings', 'nameIds', 'readBatch', 'writeBatch', 'movie', 'user', 'pair', 'userMovies', 'userId', 'topMovies',
  'eventsStored', 'rebuildState',
] as const;
type QueryName = (typeof QUERY_NAMES)[number];
const Q = namedQueries('postgres', QUERY_NAMES);
const R = namedQueries(
  'postgres',
  [
    'createNext', 'lastCommittedSeq', 'snapshotPairs', 'insertNextPairs', 'sumNextTotals', 'eventsAfter', 'nextPairs', 'writeNext', 'swap',
    'startRebuild', 'rebuildProgress', 'rebuildProgressInTransaction', 'rebuildFailed', 'writeRule',
  ] as const,
  'rebuild.sql',
);
/** Events left for the swap, which holds every batch back, to apply at most. */
const CATCH_UP_UNDER_LOCK = 5_000;

/** A movie's totals are kept in this many parts (see movie_totals in the schema). */
const MOVIE_PARTS = 16;
/** A batch that meets another batch's write of its pairs, a deadlock, a lost connection or a racing id is tried this often. */
const ATTEMPTS = 5;
/** Names whose ids a server remembers, of each kind: more than the users a platform has playing at once. */
const NAME_IDS = 250_000;
/**
 * Batches in flight at once, each on a connection of its own: a database a
 * millisecond away then costs latency, not throughput. The pool has as many
 * again for reads.
 */
const BATCHES_IN_FLIGHT = 4;
/** Serializes migrations of servers that start at once. */
const MIGRATION_LOCK = 7_477_001;
/** Every batch's write holds it shared (watchtime_write_batch); a rebuild takes it alone to see no batch writing. */
const BATCHES_LOCK = 7_477_002;
/** An analytics follower's round holds it (sql/postgres/analytics.sql: followLock); a rebuild's swap takes it to reset the analytics. */
const FOLLOWER_LOCK = 7_477_003;

// bigint and numeric columns as numbers: every count and time here is far below 2^53.
const types = {
  getTypeParser: (oid: number, format?: 'text' | 'binary') =>
    oid === 20 || oid === 1700 ? (v: string) => Number(v) : pg.types.getTypeParser(oid, format as 'text'),
};

/** The database is away: a connection refused, lost or timed out, or the server shutting down. */
function unreachable(error: unknown): boolean {
  const code = (error as { code?: string }).code ?? '';
  return (
    (code.startsWith('08') && code !== '08P01') || // a connection exception, but not a message the server refused
    code === '57P01' || // admin shutdown
    code === 'ECONNREFUSED' ||
    code === 'ECONNRESET' ||
    /Connection terminated|connection timeout/i.test((error as Error).message ?? '')
  );
}

/** A PostgreSQL error code worth a new attempt of the whole batch. */
function retryable(error: unknown): boolean {
  const code = (error as { code?: string }).code ?? '';
  return (
    code === '40001' || // another batch wrote a pair meanwhile, or a rebuild moved the fence
    code === '40P01' || // deadlock detected
    code === '23505' || // an id or a pair that another batch stored meanwhile
    unreachable(error)
  );
}

export class PostgresStore implements Store {
  private readonly knownUserIds = new LRUCache<string, number>({ max: NAME_IDS });
  private readonly knownMovieIds = new LRUCache<string, number>({ max: NAME_IDS });

  readonly batchesInFlight = BATCHES_IN_FLIGHT;
  private retries = 0;
  readonly analytics: PostgresAnalytics;

  private constructor(
    private readonly pool: pg.Pool,
    readonly label: string,
  ) {
    this.analytics = new PostgresAnalytics(pool, { transaction: (work, begin) => this.transaction(work, begin), unreachable });
  }

  /** Connects, and applies the migrations unless read-only. */
  static async open(
    url: string,
    options: OpenOptions & { readonly?: boolean; connections?: number } = {},
  ): Promise<PostgresStore> {
    const pool = new pg.Pool({ connectionString: url, max: options.connections ?? 2 * BATCHES_IN_FLIGHT, types, connectionTimeoutMillis: 5_000 });
    // A connection that the database drops (a restart) must not end the process: a query in flight
    // fails with the error, and the pool makes new connections when the database is back.
    pool.on('error', () => undefined);
    pool.on('connect', (client) => client.on('error', () => undefined));
    const store = new PostgresStore(pool, new URL(url).pathname.slice(1) || url);
    try {
      if (!options.readonly) {
        // Told once all of them committed: they are applied in one transaction.
        for (const step of await store.migrate()) options.onMigration?.(step);
      }
    } catch (error) {
      await pool.end();
      throw error;
    }
    return store;
  }

  /** Applies the migrations this database lacks; returns them, timed. */
  private async migrate(): Promise<MigrationStep[]> {
    return this.transaction(async (client) => {
      // Two servers starting at once: the second waits here, then finds the work done.
      await client.query('SELECT pg_advisory_xact_lock($1)', [MIGRATION_LOCK]);
      await client.query('CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY)');
      const done = new Set((await client.query('SELECT version FROM schema_migrations')).rows.map((r) => r.version));
      const applied: MigrationStep[] = [];
      for (const step of migrations('postgres').filter((s) => !done.has(s.version))) {
        const started = performance.now();
        await client.query(step.sql);
        await client.query('INSERT INTO schema_migrations (version) VALUES ($1)', [step.version]);
        applied.push({ version: step.version, name: step.name, ms: performance.now() - started });
      }
      return applied;
    });
  }

  private async transaction<T>(work: (client: pg.PoolClient) => Promise<T>, begin = 'BEGIN'): Promise<T> {
    const client = await this.pool.connect();
    let committing = false;
    try {
      await client.query(begin);
      const result = await work(client);
      committing = true;
      await client.query('COMMIT');
      client.release();
      return result;
    } catch (error) {
      if (!committing) await client.query('ROLLBACK').catch(() => undefined);
      // Whether a COMMIT that failed took effect is unknown: say so, so that nobody tries again blindly.
      if (committing) (error as { commitUnknown?: boolean }).commitUnknown = true;
      // Not back into the pool: after an error the connection may be broken.
      client.release(true);
      throw error;
    }
  }

  private async query<R extends pg.QueryResultRow>(name: QueryName, params: unknown[] = []): Promise<R[]> {
    return (await this.pool.query<R>(Q[name], params)).rows;
  }

  /** A lookup's rows; a database that is away is a 503 to the client, not a fault of the server. */
  private async read<R extends pg.QueryResultRow>(name: QueryName, params: unknown[]): Promise<R[]> {
    try {
      return await this.query<R>(name, params);
    } catch (error) {
      if (unreachable(error)) throw new StoreUnavailableError(`the database cannot be reached: ${(error as Error).message}`);
      throw error;
    }
  }

  async settings(): Promise<AccountingRule | undefined> {
    return (await this.query<AccountingRule>('readSettings'))[0];
  }

  async initSettings(rule: AccountingRule): Promise<void> {
    await this.query('writeSettings', [rule.accounting, rule.maxStep]);
  }

  async ingest(events: ReceivedEvent[]): Promise<boolean[]> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.ingestOnce(events);
      } catch (error) {
        const unknown = (error as { commitUnknown?: boolean }).commitUnknown;
        if (unknown || attempt >= ATTEMPTS || !retryable(error)) throw error;
        this.retries += 1;
        await sleep(attempt * 20 * Math.random());
      }
    }
  }

  private async ingestOnce(events: ReceivedEvent[]): Promise<boolean[]> {
    const duplicate = new Array<boolean>(events.length).fill(false);
    const seen = new Set<string>();
    const fresh: number[] = [];
    events.forEach((event, i) => {
      if (event.id !== undefined) {
        if (seen.has(event.id)) {
          duplicate[i] = true;
          return;
        }
        seen.add(event.id);
      }
      fresh.push(i);
    });
    const { users, movies } = await this.ids(fresh.map((i) => events[i]));
    // Each fresh event's ids, by its place in `fresh`.
    const userOf = fresh.map((i) => users.get(events[i].user)!);
    const movieOf = fresh.map((i) => movies.get(events[i].slug)!);
    const pairs = new Map<string, [number, number]>();
    fresh.forEach((_, n) => pairs.set(pairKey(userOf[n], movieOf[n]), [userOf[n], movieOf[n]]));
    const sorted = [...pairs.values()].sort((a, b) => a[0] - b[0] || a[1] - b[1]);

    const clientIds = fresh.flatMap((i) => (events[i].id === undefined ? [] : [events[i].id!]));

    const client = await this.pool.connect();
    let writing = false;
    try {
      const read = await client.query({
        name: 'watchtime_read_batch',
        text: Q.readBatch,
        values: [integerArray(sorted.map((p) => p[0])), integerArray(sorted.map((p) => p[1])), textArray(clientIds), fresh.length],
      });
      const batch = read.rows[0].batch as ReadBatch;
      const known = new Set(batch.known);
      const stored = new Map<string, PairRow>();
      for (const [userId, movieId, position, watched, count, lastSeq, updatedAt] of batch.pairs) {
        stored.set(pairKey(userId, movieId), { position, watched, events: count, lastSeq, updatedAt });
      }
      const tally = new Tally(batch.rule, (u, m) => stored.get(pairKey(u, m)));
      const columns = { seq: [] as number[], user: [] as number[], movie: [] as number[], at: [] as number[], receivedAt: [] as number[], id: [] as (string | null)[] };
      fresh.forEach((i, n) => {
        const e = events[i];
        if (e.id !== undefined && known.has(e.id)) {
          duplicate[i] = true;
          return;
        }
        const seq = batch.seqs[n];
        tally.apply(seq, userOf[n], movieOf[n], e.at, e.receivedAt);
        columns.seq.push(seq);
        columns.user.push(userOf[n]);
        columns.movie.push(movieOf[n]);
        columns.at.push(e.at);
        columns.receivedAt.push(e.receivedAt);
        columns.id.push(e.id ?? null);
      });
      // In (user, movie) order: batches that meet on pairs meet in one order.
      const written = [...tally.pairs.values()].sort((a, b) => a.userId - b.userId || a.movieId - b.movieId);
      writing = true;
      await client.query({
        name: 'watchtime_write_batch',
        text: Q.writeBatch,
        values: [
          batch.rule.fence,
          ...[columns.seq, columns.user, columns.movie, columns.at, columns.receivedAt].map(integerArray),
          textArray(columns.id),
          ...pairColumns(written).map(integerArray),
          // The last number each stored pair held when read: written only if it still does. None for a new pair.
          integerArray(written.map((p) => (p.stored ? stored.get(pairKey(p.userId, p.movieId))!.lastSeq : null))),
          ...deltaColumns(tally.movies).map(integerArray),
          // The connection's own part: batches on other connections write other rows of a hot movie.
          (client as unknown as { processID: number }).processID % MOVIE_PARTS,
        ],
      });
      client.release();
      return duplicate;
    } catch (error) {
      // An error the server reports on a live connection ends the transaction uncommitted (the write is one
      // statement, its own transaction); a lost connection (class 08, or 57P: the server shutting down)
      // leaves it unknown. By code: the severity's words are translated (lc_messages).
      const refused = error instanceof pg.DatabaseError && !/^(08|57P)/.test(error.code ?? '');
      if (writing && !refused) (error as { commitUnknown?: boolean }).commitUnknown = true;
      client.release(refused ? undefined : true);
      throw error;
    }
  }

  /** Ids of the events' names: remembered, or added where missing and read, in one round trip. */
  private async ids(events: ReceivedEvent[]): Promise<{ users: Map<string, number>; movies: Map<string, number> }> {
    const users = new Map<string, number>();
    const movies = new Map<string, number>();
    const missing = { users: new Set<string>(), movies: new Set<string>() };
    for (const e of events) {
      recall(this.knownUserIds, e.user, users, missing.users);
      recall(this.knownMovieIds, e.slug, movies, missing.movies);
    }
    if (missing.users.size + missing.movies.size > 0) {
      const found = (await this.query<{ ids: { users: [string, number][]; movies: [string, number][] } }>('nameIds', [[...missing.users], [...missing.movies]]))[0].ids;
      learn(this.knownUserIds, found.users, users);
      learn(this.knownMovieIds, found.movies, movies);
    }
    return { users, movies };
  }

  batchRetries(): number {
    return this.retries;
  }

  async movie(slug: string): Promise<MovieTotals | undefined> {
    return this.one<MovieTotals>('movie', [slug]);
  }

  async user(name: string): Promise<UserTotals | undefined> {
    return this.one<UserTotals>('user', [name]);
  }

  async pair(user: string, slug: string): Promise<PairTotals | undefined> {
    return this.one<PairTotals>('pair', [user, slug]);
  }

  private async one<T extends { updatedAt: string }>(name: QueryName, params: string[]): Promise<T | undefined> {
    const row = (await this.read<Row<T>>(name, params))[0];
    return row && withIsoTime(row);
  }

  async userMovies(user: string, limit: number, offset: number): Promise<Page<UserMovie> | undefined> {
    const id = (await this.read<{ id: number }>('userId', [user]))[0]?.id;
    if (id === undefined) return undefined;
    return page(await this.read<Row<UserMovie>>('userMovies', [id, limit + 1, offset]), limit);
  }

  async topMovies(limit: number, offset: number): Promise<Page<MovieTotals>> {
    return page(await this.read<Row<MovieTotals>>('topMovies', [limit + 1, offset]), limit);
  }

  /**
   * Recomputes every total from the events beside the live ones, while
   * servers go on taking events, then swaps them in:
   * 1. for an instant, holds alone the lock that every batch's write holds
   *    shared (BATCHES_LOCK) and moves the fence: no batch is writing, and a
   *    batch that took its numbers before tries again with new ones, so every
   *    event up to the last number taken is committed, or never will be;
   * 2. builds next_* from those events, one pair at a time in number order,
   *    through advance() as live ingest does;
   * 3. catches up with the events that arrived meanwhile, in rounds;
   * 4. holds that lock again, catches up with the last few, swaps the
   *    tables in and empties the analytics, which the follower derives
   *    again under the new rule. Readers see the old totals or the new,
   *    never a mix.
   */
  async rebuild(rule: AccountingRule, onProgress?: (progress: RebuildProgress) => void): Promise<RebuildProgress> {
    const upTo = await this.transaction((client) => this.lastCommittedSeq(client));
    const total = (await this.pool.query<{ n: number }>('SELECT count(*)::bigint AS n FROM events WHERE seq <= $1', [upTo])).rows[0].n;
    const me = [Date.now(), process.pid, processHost()] as const;
    await this.pool.query(R.startRebuild, [me[0], total, me[1], me[2]]);
    try {
      return await this.rebuildFrom(upTo, total, rule, onProgress);
    } catch (error) {
      // A server no longer counts it as running; how far it went stays. A killed rebuild
      // leaves its start behind: a server tells it by its process (store.ts: rebuildRunning).
      await this.pool.query(R.rebuildFailed, [...me, Date.now()]).catch(() => undefined);
      throw error;
    }
  }

  private async rebuildFrom(
    upTo: number,
    total: number,
    rule: AccountingRule,
    onProgress?: (progress: RebuildProgress) => void,
  ): Promise<RebuildProgress> {
    /**
     * Where the rebuild is, for a server to read: in the transaction of a catch-up round, or
     * else on its own on another connection than the snapshot pass's, whose transaction
     * commits only at the end of the pass.
     */
    const record = (done: number, total: number, client?: pg.PoolClient) =>
      (client ?? this.pool).query(client ? R.rebuildProgressInTransaction : R.rebuildProgress, [done, total, Date.now()]);
    onProgress?.({ done: 0, total });
    await this.pool.query(R.createNext);
    let done = 0;
    await this.transaction(async (client) => {
      await client.query(R.snapshotPairs, [upTo]);
      for (;;) {
        const rows = (await client.query('FETCH 5000 FROM pairs')).rows;
        if (rows.length === 0) break;
        const pairs = rows.map((r) => {
          const pair: PairRow = { position: 0, watched: 0, events: 0, lastSeq: r.lastSeq, updatedAt: r.updatedAt };
          for (const at of r.ats as number[]) advance(rule, pair, at);
          return { userId: r.userId as number, movieId: r.movieId as number, ...pair };
        });
        await client.query(R.insertNextPairs, pairColumns(pairs));
        done += pairs.reduce((sum, p) => sum + p.events, 0);
        await record(done, total);
        onProgress?.({ done, total });
      }
      await client.query('CLOSE pairs');
      await client.query(R.sumNextTotals);
    });
    await record(done, total);
    // Catch up without the lock while many events arrived, so that the swap holds it briefly.
    let from = upTo;
    for (let round = 0; round < 20; round++) {
      const to = await this.transaction((client) => this.lastCommittedSeq(client));
      if (to - from < CATCH_UP_UNDER_LOCK) break;
      done += await this.transaction(async (client) => {
        const applied = await this.catchUp(client, rule, from, to);
        await record(done + applied, Math.max(total, done + applied), client);
        return applied;
      });
      from = to;
      onProgress?.({ done, total: Math.max(total, done) });
    }
    await this.transaction(async (client) => {
      // First, before the batches' lock: a follower's round under way ends (ingest goes on meanwhile), and no
      // other starts until the swap, which resets the analytics, commits.
      await client.query('SELECT pg_advisory_xact_lock($1)', [FOLLOWER_LOCK]);
      const to = await this.lastCommittedSeq(client);
      done += await this.catchUp(client, rule, from, to);
      await client.query(R.swap);
      await client.query(R.writeRule, [rule.accounting, rule.maxStep, Date.now(), done]);
    });
    return { done, total: done };
  }

  async rebuildState(): Promise<RebuildState> {
    return rebuildStateOf((await this.query<RebuildRow>('rebuildState'))[0]);
  }

  /** Holds the batches' lock alone (until the transaction ends), moves the fence, and gives the highest committed number. */
  private async lastCommittedSeq(client: pg.PoolClient): Promise<number> {
    await client.query('SELECT pg_advisory_xact_lock($1)', [BATCHES_LOCK]);
    return (await client.query<{ seq: number }>(R.lastCommittedSeq)).rows[0].seq;
  }

  /** Applies the events numbered (from, to] to the next_* tables; returns how many. */
  private async catchUp(client: pg.PoolClient, rule: AccountingRule, from: number, to: number): Promise<number> {
    const events = (await client.query(R.eventsAfter, [from, to])).rows;
    if (events.length === 0) return 0;
    const keys = new Map<string, [number, number]>();
    for (const e of events) keys.set(pairKey(e.userId, e.movieId), [e.userId, e.movieId]);
    const stored = new Map<string, PairRow>();
    const [us, ms] = [[...keys.values()].map((k) => k[0]), [...keys.values()].map((k) => k[1])];
    for (const row of (await client.query(R.nextPairs, [us, ms])).rows) stored.set(pairKey(row.userId, row.movieId), row);
    const tally = new Tally(rule, (u, m) => stored.get(pairKey(u, m)));
    for (const e of events) tally.apply(e.seq, e.userId, e.movieId, e.at, e.receivedAt);
    await client.query(R.writeNext, [...pairColumns([...tally.pairs.values()]), ...deltaColumns(tally.movies)]);
    return events.length;
  }

  async eventsStored(): Promise<number> {
    return (await this.query<{ n: number }>('eventsStored'))[0].n;
  }

  async sizeBytes(): Promise<number> {
    return (await this.pool.query<{ n: number }>('SELECT pg_database_size(current_database()) AS n')).rows[0].n;
  }

  async probeWritable(): Promise<void> {
    try {
      await this.pool.query('UPDATE settings SET accounting = accounting WHERE id = 1');
    } catch (error) {
      // A lock timeout is not a fault of the database.
      if ((error as { code?: string }).code === '55P03') throw new StoreBusyError((error as Error).message);
      throw error;
    }
  }

  async close(): Promise<void> {
    await this.pool.end();
  }
}

type PairOut = PairRow & { userId: number; movieId: number };

/** A name's id into `ids` from what the server remembers, or the name into `missing`. */
function recall(known: LRUCache<string, number>, name: string, ids: Map<string, number>, missing: Set<string>): void {
  if (ids.has(name)) return;
  const id = known.get(name);
  if (id === undefined) missing.add(name);
  else ids.set(name, id);
}

/** Ids the database gave, into `ids` and remembered. */
function learn(known: LRUCache<string, number>, found: [string, number][], ids: Map<string, number>): void {
  for (const [name, id] of found) {
    ids.set(name, id);
    known.set(name, id);
  }
}

/** What watchtime_read_batch returns: the rule and the fence, the client ids already stored, the stored pairs, the numbers. */
interface ReadBatch {
  rule: AccountingRule & { fence: number };
  known: string[];
  /** [userId, movieId, position, watched, events, lastSeq, updatedAt] */
  pairs: [number, number, number, number, number, number, number][];
  seqs: number[];
}

/**
 * Whole numbers (or nulls) as an array's text, which PostgreSQL parses as the
 * parameter's type: pg's own conversion of an array quotes each element.
 */
function integerArray(values: (number | null)[]): string {
  return `{${values.map((v) => v ?? 'NULL').join(',')}}`;
}

/** Strings (or nulls) as an array's text: each element quoted, with its quotes and backslashes escaped. */
function textArray(values: (string | null)[]): string {
  return `{${values.map((v) => (v === null ? 'NULL' : `"${v.replace(/[\\"]/g, '\\$&')}"`)).join(',')}}`;
}

/** A batch's pairs as the column arrays that unnest takes. */
function pairColumns(pairs: PairOut[]): number[][] {
  return [pairs.map((p) => p.userId), pairs.map((p) => p.movieId), pairs.map((p) => p.position), pairs.map((p) => p.watched),
    pairs.map((p) => p.events), pairs.map((p) => p.lastSeq), pairs.map((p) => p.updatedAt)];
}

/** Users' or movies' deltas as column arrays, in key order: the order their rows are locked in. */
function deltaColumns(deltas: Map<number, TotalDelta>): number[][] {
  const rows = [...deltas].sort((a, b) => a[0] - b[0]);
  return [rows.map(([id]) => id), rows.map(([, d]) => d.watched), rows.map(([, d]) => d.pairs),
    rows.map(([, d]) => d.events), rows.map(([, d]) => d.lastSeq), rows.map(([, d]) => d.updatedAt)];
}
