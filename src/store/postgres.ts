// The PostgreSQL store: several stateless servers over one database. Why it
// stays exact under concurrency is argued in the README ("Several servers on
// PostgreSQL"); in short, a batch locks its pairs in one global order, takes
// its events' numbers while it holds them, applies the rule in JS through the
// same tally as SQLite, and writes everything back in one statement.
import { setTimeout as sleep } from 'node:timers/promises';
import { LRUCache } from 'lru-cache';
import pg from 'pg';
import type { AccountingRule } from '../accounting.ts';
import { migrations, namedQueries } from './sql-files.ts';
import { advance, pairKey, Tally, type PairRow } from './tally.ts';
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

export const isPostgresUrl = (db: string) => /^postgres(ql)?:\/\//i.test(db);

const QUERY_NAMES = [
  'readSettings', 'writeSettings', 'knownClientIds', 'addUsers', 'userIds', 'addMovies', 'movieIds', 'addPairs',
  'lockPairs', 'takeSeqs', 'writeBatch', 'movie', 'user', 'pair', 'userMovies', 'userId', 'topMovies',
] as const;
type QueryName = (typeof QUERY_NAMES)[number];
const Q = namedQueries('postgres', QUERY_NAMES);

/** A movie's totals are kept in this many parts (see movie_totals in the schema). */
const MOVIE_PARTS = 16;
/** A batch that meets a deadlock, a serialization failure, a lost connection or a racing id is tried this often. */
const ATTEMPTS = 5;
const NAME_IDS = 100_000;
/** Serializes migrations of servers that start at once. */
const MIGRATION_LOCK = 7_477_001;

// bigint and numeric columns as numbers: every count and time here is far below 2^53.
const types = {
  getTypeParser: (oid: number, format?: 'text' | 'binary') =>
    oid === 20 || oid === 1700 ? (v: string) => Number(v) : pg.types.getTypeParser(oid, format as 'text'),
};

/** A PostgreSQL error code worth a new attempt of the whole batch. */
function retryable(error: unknown): boolean {
  const code = (error as { code?: string }).code ?? '';
  return (
    code === '40001' || // serialization failure
    code === '40P01' || // deadlock detected
    code === '23505' || // an id that another server stored meanwhile
    code.startsWith('08') || // connection exception
    code === '57P01' || // admin shutdown
    code === 'ECONNREFUSED' ||
    code === 'ECONNRESET' ||
    /Connection terminated|connection timeout/i.test((error as Error).message ?? '')
  );
}

type Row<T> = Omit<T, 'updatedAt'> & { updatedAt: number };
const withIsoTime = <T extends { updatedAt: string }>(row: Row<T>): T =>
  ({ ...row, updatedAt: new Date(row.updatedAt).toISOString() }) as T;

export class PostgresStore implements Store {
  private readonly knownUserIds = new LRUCache<string, number>({ max: NAME_IDS });
  private readonly knownMovieIds = new LRUCache<string, number>({ max: NAME_IDS });

  private constructor(
    private readonly pool: pg.Pool,
    readonly label: string,
  ) {}

  /** Connects, and applies the migrations unless read-only. */
  static async open(url: string, options: { readonly?: boolean; connections?: number } = {}): Promise<PostgresStore> {
    const pool = new pg.Pool({ connectionString: url, max: options.connections ?? 4, types, connectionTimeoutMillis: 5_000 });
    // A connection that the database drops (a restart) must not end the process: a query in flight
    // fails with the error, and the pool makes new connections when the database is back.
    pool.on('error', () => undefined);
    pool.on('connect', (client) => client.on('error', () => undefined));
    const store = new PostgresStore(pool, new URL(url).pathname.slice(1) || url);
    try {
      if (!options.readonly) await store.migrate();
    } catch (error) {
      await pool.end();
      throw error;
    }
    return store;
  }

  private async migrate(): Promise<void> {
    await this.transaction(async (client) => {
      // Two servers starting at once: the second waits here, then finds the work done.
      await client.query('SELECT pg_advisory_xact_lock($1)', [MIGRATION_LOCK]);
      await client.query('CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY)');
      const done = new Set((await client.query('SELECT version FROM schema_migrations')).rows.map((r) => r.version));
      for (const step of migrations('postgres').filter((s) => !done.has(s.version))) {
        await client.query(step.sql);
        await client.query('INSERT INTO schema_migrations (version) VALUES ($1)', [step.version]);
      }
    });
  }

  private async transaction<T>(work: (client: pg.PoolClient) => Promise<T>): Promise<T> {
    const client = await this.pool.connect();
    let committing = false;
    try {
      await client.query('BEGIN');
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
        await sleep(attempt * 20 * Math.random());
      }
    }
  }

  private async ingestOnce(events: ReceivedEvent[]): Promise<boolean[]> {
    const duplicate = new Array<boolean>(events.length).fill(false);
    const clientIds = events.flatMap((e) => (e.id === undefined ? [] : [e.id]));
    const stored = clientIds.length === 0 ? new Set<string>() : new Set((await this.query<{ client_id: string }>('knownClientIds', [clientIds])).map((r) => r.client_id));
    const seen = new Set<string>();
    const fresh: ReceivedEvent[] = [];
    events.forEach((event, i) => {
      if (event.id !== undefined) {
        if (stored.has(event.id) || seen.has(event.id)) {
          duplicate[i] = true;
          return;
        }
        seen.add(event.id);
      }
      fresh.push(event);
    });
    if (fresh.length === 0) return duplicate;

    // Names get their ids outside the batch's transaction: ids never change, so there is nothing to lock.
    const userIds = await this.ids(this.knownUserIds, fresh.map((e) => e.user), 'addUsers', 'userIds');
    const movieIds = await this.ids(this.knownMovieIds, fresh.map((e) => e.slug), 'addMovies', 'movieIds');

    const pairs = new Map<string, [number, number]>();
    for (const e of fresh) {
      const u = userIds.get(e.user)!;
      const m = movieIds.get(e.slug)!;
      pairs.set(pairKey(u, m), [u, m]);
    }
    const sorted = [...pairs.values()].sort((a, b) => a[0] - b[0] || a[1] - b[1]);
    const us = sorted.map((p) => p[0]);
    const ms = sorted.map((p) => p[1]);

    await this.transaction(async (client) => {
      // FOR SHARE: a rebuild's swap (FOR UPDATE) waits for running batches and holds new ones back.
      const rule = (await client.query<AccountingRule>(`${Q.readSettings.replace(/;$/, '')} FOR SHARE`)).rows[0];
      if (rule === undefined) throw new Error('the database has no accounting settings');
      await client.query(Q.addPairs, [us, ms]);
      const locked = new Map<string, PairRow>();
      for (const row of (await client.query(Q.lockPairs, [us, ms])).rows) {
        // A placeholder (no events yet) is a new pair to the rule.
        if (row.events > 0) locked.set(pairKey(row.userId, row.movieId), row);
      }
      const seqs = (await client.query<{ seq: number }>(Q.takeSeqs, [fresh.length])).rows.map((r) => r.seq);
      const tally = new Tally(rule, (u, m) => locked.get(pairKey(u, m)));
      const columns = { seq: [] as number[], user: [] as number[], movie: [] as number[], at: [] as number[], receivedAt: [] as number[], id: [] as (string | null)[] };
      fresh.forEach((e, i) => {
        const u = userIds.get(e.user)!;
        const m = movieIds.get(e.slug)!;
        tally.apply(seqs[i], u, m, e.at, e.receivedAt);
        columns.seq.push(seqs[i]);
        columns.user.push(u);
        columns.movie.push(m);
        columns.at.push(e.at);
        columns.receivedAt.push(e.receivedAt);
        columns.id.push(e.id ?? null);
      });
      const p = [...tally.pairs.values()];
      const users = [...tally.users].sort((a, b) => a[0] - b[0]);
      const movies = [...tally.movies].sort((a, b) => a[0] - b[0]);
      await client.query(Q.writeBatch, [
        columns.seq, columns.user, columns.movie, columns.at, columns.receivedAt, columns.id,
        p.map((x) => x.userId), p.map((x) => x.movieId), p.map((x) => x.position), p.map((x) => x.watched),
        p.map((x) => x.events), p.map((x) => x.lastSeq), p.map((x) => x.updatedAt),
        users.map(([id]) => id), users.map(([, d]) => d.watched), users.map(([, d]) => d.pairs),
        users.map(([, d]) => d.events), users.map(([, d]) => d.lastSeq), users.map(([, d]) => d.updatedAt),
        movies.map(([id]) => id), movies.map(([, d]) => d.watched), movies.map(([, d]) => d.pairs),
        movies.map(([, d]) => d.events), movies.map(([, d]) => d.lastSeq), movies.map(([, d]) => d.updatedAt),
        // The connection's own part: batches on other connections write other rows of a hot movie.
        (client as unknown as { processID: number }).processID % MOVIE_PARTS,
      ]);
    });
    return duplicate;
  }

  /** Ids of names: remembered, or read, or added then read. */
  private async ids(known: LRUCache<string, number>, names: string[], add: QueryName, read: QueryName): Promise<Map<string, number>> {
    const ids = new Map<string, number>();
    const missing: string[] = [];
    for (const name of new Set(names)) {
      const id = known.get(name);
      if (id === undefined) missing.push(name);
      else ids.set(name, id);
    }
    if (missing.length > 0) {
      await this.query(add, [missing]);
      for (const row of await this.query<{ name: string; id: number }>(read, [missing])) {
        ids.set(row.name, row.id);
        known.set(row.name, row.id);
      }
    }
    return ids;
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
    const row = (await this.query<Row<T>>(name, params))[0];
    return row && withIsoTime(row);
  }

  async userMovies(user: string, limit: number, offset: number): Promise<Page<UserMovie> | undefined> {
    const id = (await this.query<{ id: number }>('userId', [user]))[0]?.id;
    if (id === undefined) return undefined;
    return page(await this.query<Row<UserMovie>>('userMovies', [id, limit + 1, offset]), limit);
  }

  async topMovies(limit: number, offset: number): Promise<Page<MovieTotals>> {
    return page(await this.query<Row<MovieTotals>>('topMovies', [limit + 1, offset]), limit);
  }

  /**
   * Recomputes every total from the events, in one transaction that holds
   * the settings row: batches wait for it, readers see the old totals until
   * it commits. Pairs come out of PostgreSQL one at a time, grouped and in
   * seq order, and the rule is applied through advance(), as live ingest does.
   */
  async rebuild(rule: AccountingRule, onProgress?: (progress: RebuildProgress) => void): Promise<RebuildProgress> {
    return this.transaction(async (client) => {
      await client.query('SELECT 1 FROM settings WHERE id = 1 FOR UPDATE');
      const total = (await client.query<{ n: number }>('SELECT count(*)::bigint AS n FROM events')).rows[0].n;
      onProgress?.({ done: 0, total });
      // DELETE, not TRUNCATE: readers go on seeing the old rows until the commit.
      await client.query('DELETE FROM user_movies; DELETE FROM user_totals; DELETE FROM movie_totals');
      await client.query(`DECLARE pairs NO SCROLL CURSOR FOR
        SELECT user_id, movie_id, array_agg(at ORDER BY seq) AS ats, max(seq) AS last_seq,
          (array_agg(received_at ORDER BY seq DESC))[1] AS updated_at
        FROM events GROUP BY user_id, movie_id`);
      let done = 0;
      for (;;) {
        const rows = (await client.query('FETCH 5000 FROM pairs')).rows;
        if (rows.length === 0) break;
        const out = rows.map((r) => {
          const pair: PairRow = { position: 0, watched: 0, events: 0, lastSeq: r.last_seq, updatedAt: r.updated_at };
          for (const at of r.ats as number[]) advance(rule, pair, at);
          return { userId: r.user_id as number, movieId: r.movie_id as number, ...pair };
        });
        await client.query(
          `INSERT INTO user_movies (user_id, movie_id, position, watched, events, last_seq, updated_at)
           SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::int[], $4::bigint[], $5::bigint[], $6::bigint[], $7::bigint[])`,
          [out.map((p) => p.userId), out.map((p) => p.movieId), out.map((p) => p.position), out.map((p) => p.watched),
            out.map((p) => p.events), out.map((p) => p.lastSeq), out.map((p) => p.updatedAt)],
        );
        done += out.reduce((sum, p) => sum + p.events, 0);
        onProgress?.({ done, total });
      }
      await client.query('CLOSE pairs');
      // A user's and a movie's totals are sums over their pairs: no rule in them.
      await client.query(`INSERT INTO user_totals (user_id, watched, movies, events, last_seq, updated_at)
        SELECT user_id, sum(watched), count(*), sum(events), max(last_seq), (array_agg(updated_at ORDER BY last_seq DESC))[1]
        FROM user_movies GROUP BY user_id`);
      await client.query(`INSERT INTO movie_totals (movie_id, part, watched, viewers, events, last_seq, updated_at)
        SELECT movie_id, 0, sum(watched), count(*), sum(events), max(last_seq), (array_agg(updated_at ORDER BY last_seq DESC))[1]
        FROM user_movies GROUP BY movie_id`);
      await client.query('UPDATE settings SET accounting = $1, max_step = $2, generation = generation + 1 WHERE id = 1', [
        rule.accounting,
        rule.maxStep,
      ]);
      return { done, total };
    });
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

function page<T extends { updatedAt: string }>(rows: Row<T>[], limit: number): Page<T> {
  return { items: rows.slice(0, limit).map(withIsoTime<T>), more: rows.length > limit };
}
