// Online rebuild of the SQLite store. The new totals are built in next_*
// tables beside the live ones while a server goes on writing:
//   1. from a snapshot: every event up to the last one stored when the rebuild
//      starts, read one pair at a time in (user, movie) order, so memory holds
//      a chunk of pairs and the movies, whatever the number of events;
//   2. catch-up: the events that arrived meanwhile, in arrival order, in short
//      transactions;
//   3. swap: the last few events and the table swap in one short transaction,
//      so readers see the old totals or the new ones, never a mix.
// Every write transaction is short, so a server's batch waits for one at most.
// Each also records in the settings row how far the rebuild is (rebuild.sql:
// startRebuild, rebuildProgress, writeRule), for a server to read.
import Database from 'better-sqlite3';
import type { AccountingRule } from '../accounting.ts';
import { namedQueries } from './sql-files.ts';
import { processHost, type RebuildProgress } from './store.ts';
import { advance, Tally, writeTally, type PairRow, type TallyWriters, type TotalDelta } from './tally.ts';

const QUERY_NAMES = [
  'createNext', 'dropNext', 'lastSeq', 'pairsUpTo', 'eventsAfter', 'swap', 'writeRule', 'startRebuild', 'rebuildProgress',
  'rebuildFailed',
] as const;
/** Live ingest's statements, which the rebuild runs on its next_* tables. */
const WRITE_NAMES = ['pairState', 'insertPair', 'updatePair', 'addToMovie'] as const;

/** The same statements over the next_* tables. */
function onNextTables<Name extends string>(queries: Record<Name, string>): Record<Name, string> {
  const renamed = Object.entries(queries).map(([name, sql]) => [
    name,
    (sql as string).replace(/\b(user_movies|movie_totals)\b/g, 'next_$1'),
  ]);
  return Object.fromEntries(renamed) as Record<Name, string>;
}

/** Rows one write transaction takes: a few tens of milliseconds. */
const WRITE_CHUNK = 10_000;
/**
 * The sort's memory, in KiB, and its helper threads: past that memory the
 * sorter spills to temporary files. Measured on 10 million events, two
 * helpers with 4 MiB sort faster than none with 32 MiB, in less memory.
 */
const SORT_CACHE_KIB = 4 * 1024;
const SORT_THREADS = 2;
/** The writer's page cache while rebuilding, in KiB: the next_* tables are written in key order and need little. */
const WRITE_CACHE_KIB = 8 * 1024;

export function rebuildOnline(
  db: Database.Database,
  file: string,
  rule: AccountingRule,
  onProgress?: (progress: RebuildProgress) => void,
): RebuildProgress {
  const sql = { ...namedQueries('sqlite', QUERY_NAMES, 'rebuild.sql'), ...onNextTables(namedQueries('sqlite', WRITE_NAMES)) };
  const cacheSize = db.pragma('cache_size', { simple: true }) as number;
  db.pragma(`cache_size = -${WRITE_CACHE_KIB}`);
  const me = { startedAt: Date.now(), pid: process.pid, host: processHost() };
  // Events are never changed or removed, so those up to here are a fixed set.
  const snapshotSeq = db.transaction(() => {
    db.exec(sql.createNext);
    const seq = db.prepare(sql.lastSeq).pluck().get() as number;
    db.prepare(sql.startRebuild).run({ now: me.startedAt, total: seq, pid: me.pid, host: me.host });
    return seq;
  }).immediate();
  try {
    const progressStatement = db.prepare(sql.rebuildProgress);
    /** Where the rebuild is, for a server to read; run inside the transaction of the chunk it counts. */
    const record = (done: number, total: number) => void progressStatement.run(done, total, Date.now());
    const writers: TallyWriters = {
      insertPair: db.prepare(sql.insertPair),
      updatePair: db.prepare(sql.updatePair),
      addToMovie: db.prepare(sql.addToMovie),
    };
    const progress = { done: 0, total: snapshotSeq };
    onProgress?.({ ...progress });
    progress.done = buildFromSnapshot(db, file, sql.pairsUpTo, snapshotSeq, rule, writers, {
      record: (done) => record(done, snapshotSeq),
      report: (done) => onProgress?.({ done, total: snapshotSeq }),
    });

    const catchUp = new CatchUp(db, sql, rule, writers, snapshotSeq);
    const report = (applied: number) => {
      progress.done += applied;
      progress.total = Math.max(progress.total, progress.done);
      onProgress?.({ ...progress });
    };
    // While a chunk comes back full, more may be waiting: apply it beside the live writes.
    for (let applied = WRITE_CHUNK; applied === WRITE_CHUNK; report(applied)) {
      applied = db.transaction(() => {
        const n = catchUp.next();
        record(progress.done + n, Math.max(progress.total, progress.done + n));
        return n;
      }).immediate();
    }
    db.transaction(() => {
      for (let applied = WRITE_CHUNK; applied === WRITE_CHUNK; report(applied)) applied = catchUp.next();
      db.exec(sql.swap);
      db.prepare(sql.writeRule).run({ ...rule, now: Date.now(), done: progress.done });
    }).immediate();
    return progress;
  } catch (error) {
    try {
      db.exec(sql.dropNext);
    } catch {
      // The next rebuild drops them first anyway.
    }
    try {
      // A server no longer counts it as running; how far it went stays.
      db.prepare(sql.rebuildFailed).run({ ...me, now: Date.now() });
    } catch {
      // A killed rebuild leaves its start behind too: a server tells it by its process (store.ts: rebuildRunning).
    }
    throw error;
  } finally {
    db.pragma(`cache_size = ${cacheSize}`);
  }
}

/** Pass 1: every pair's events up to `snapshotSeq`, one pair a row. Returns the events read. */
function buildFromSnapshot(
  db: Database.Database,
  file: string,
  pairsUpTo: string,
  snapshotSeq: number,
  rule: AccountingRule,
  writers: TallyWriters,
  progress: {
    /** Inside each chunk's transaction: the events applied so far, for a server to read. */
    record: (done: number) => void;
    /** After each chunk's commit: the same, for the caller. */
    report: (done: number) => void;
  },
): number {
  // A second connection reads while the first writes the chunks.
  const reader = new Database(file, { readonly: true });
  try {
    reader.pragma(`cache_size = -${SORT_CACHE_KIB}`);
    reader.pragma(`threads = ${SORT_THREADS}`);
    const pairs: unknown[][] = [];
    const movies = new Map<number, TotalDelta>();
    let done = 0;
    const write = () =>
      db.transaction(() => {
        for (const row of pairs) writers.insertPair.run(...row);
        progress.record(done);
      }).immediate();

    const rows = reader.prepare(pairsUpTo).raw().iterate(snapshotSeq) as Iterable<
      [number, number, string, number, number, number]
    >;
    for (const [userId, movieId, ats, events, lastSeq, updatedAt] of rows) {
      const pair: PairRow = { position: 0, watched: 0, events: 0, lastSeq, updatedAt };
      for (const at of ats.split(',')) advance(rule, pair, Number(at));
      if (pair.events !== events) throw new Error(`rebuild read ${pair.events} of the ${events} events of a pair`);
      pairs.push([userId, movieId, pair.position, pair.watched, pair.events, lastSeq, updatedAt]);
      let movie = movies.get(movieId);
      if (movie === undefined) movies.set(movieId, (movie = emptyTotals()));
      addPair(movie, pair);
      done += events;
      if (pairs.length >= WRITE_CHUNK) {
        write();
        pairs.length = 0;
        progress.report(done);
      }
    }
    write();
    const movieRows = [...movies];
    for (let i = 0; i < movieRows.length; i += WRITE_CHUNK) {
      db.transaction(() => {
        for (const [id, d] of movieRows.slice(i, i + WRITE_CHUNK)) {
          writers.addToMovie.run(id, d.watched, d.pairs, d.events, d.lastSeq, d.updatedAt);
        }
        progress.record(done);
      }).immediate();
    }
    progress.report(done);
    return done;
  } finally {
    reader.close();
  }
}

const emptyTotals = (): TotalDelta => ({ watched: 0, events: 0, pairs: 0, lastSeq: 0, updatedAt: 0 });

function addPair(totals: TotalDelta, pair: PairRow): void {
  totals.watched += pair.watched;
  totals.events += pair.events;
  totals.pairs += 1;
  if (pair.lastSeq > totals.lastSeq) {
    totals.lastSeq = pair.lastSeq;
    totals.updatedAt = pair.updatedAt;
  }
}

/** Pass 2: the events stored after the snapshot, in arrival order, onto the next_* tables. */
class CatchUp {
  private readonly eventsAfter: Database.Statement;
  private readonly pairState: Database.Statement;

  constructor(
    db: Database.Database,
    sql: Record<'eventsAfter' | 'pairState', string>,
    private readonly rule: AccountingRule,
    private readonly writers: TallyWriters,
    private caught: number,
  ) {
    this.eventsAfter = db.prepare(sql.eventsAfter).raw();
    this.pairState = db.prepare(sql.pairState);
  }

  /** Applies up to WRITE_CHUNK events; returns how many. Call it inside a write transaction. */
  next(): number {
    const rows = this.eventsAfter.all(this.caught, WRITE_CHUNK) as [number, number, number, number, number][];
    if (rows.length === 0) return 0;
    const tally = new Tally(this.rule, (userId, movieId) => this.pairState.get(userId, movieId) as PairRow | undefined);
    for (const [seq, userId, movieId, at, receivedAt] of rows) tally.apply(seq, userId, movieId, at, receivedAt);
    writeTally(tally, this.writers);
    this.caught = rows[rows.length - 1][0];
    return rows.length;
  }
}
