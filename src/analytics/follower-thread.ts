// The SQLite follower on a thread of its own (SPEC section 7), started by the
// writer. It reads <db> and writes <db>-analytics (src/store/sqlite-analytics.ts),
// so it never takes the database's write lock; and it runs at the lowest CPU
// priority, so that on a busy core ingest goes first and the analytics catch
// up when the load eases.
import { setPriority } from 'node:os';
import { fileURLToPath } from 'node:url';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import type { RoundDone, StartRound } from '../store/analytics-rows.ts';
import { AnalyticsFileGoneError, analyticsFileOf, isDamagedFile, removeAnalyticsFile, SqliteFollowing } from '../store/sqlite-analytics.ts';
import { startRound } from './follow.ts';
import { Follower, type RunningFollower } from './follower.ts';

/**
 * Events a round takes at most on the thread, where no event loop of requests
 * waits for it. The larger a round, the more of its events fall on pairs,
 * seconds and minutes it has met already, and the fewer rows it writes an
 * event: heartbeats of 100,000 players, whom a round of a million meets ten
 * times each, cost 3 to 4 µs an event in such rounds and about 7 in rounds
 * of 300,000 (docs/performance.md). A follower that keeps up takes small
 * rounds (what arrived since the last); one that has fallen behind takes
 * large ones, and catches up the faster. (The store also ends a round once
 * it holds 48 MiB: sqlite-analytics.ts.)
 */
export const THREAD_ROUND_EVENTS = 1_000_000;

/** A small young generation: a round's garbage is collected often rather than let grow the server's RSS. */
const resourceLimits = { maxYoungGenerationSizeMb: 8 };

/** How long a stopping server's follower may go on following what is stored. */
const CATCH_UP_AT_STOP_MS = 2_000;

interface Setup {
  databaseFile: string;
  /** Events applied, all time: the writer reads it for the lag metric. */
  applied: BigInt64Array;
  /** Set to 1 by the writer when it stops: the round under way commits what it has read and ends. */
  stopping: Int32Array;
}

type FromThread = { t: 'error'; message: string; stack?: string } | { t: 'ready' };

/**
 * Starts the follower of a SQLite file on a thread; `onError` hears of rounds
 * that failed. It is ready once the thread has opened its files (or failed to,
 * which it reports): the server's files are all open when it listens.
 */
export function startFollowerThread(databaseFile: string, onError: (error: Error) => void): RunningFollower {
  // This module's own file, .ts under tsx and .js once compiled.
  const here = fileURLToPath(import.meta.url);
  const applied = new BigInt64Array(new SharedArrayBuffer(8));
  const stopping = new Int32Array(new SharedArrayBuffer(4));
  const workerData = { databaseFile, applied, stopping } satisfies Setup;
  // Under tsx (the tests), the thread registers tsx's loader first: a thread does not inherit one registered at run time.
  const worker = here.endsWith('.ts')
    ? new Worker(`import('tsx/esm/api').then(({ register }) => { register(); return import(${JSON.stringify(import.meta.url)}); })`, { eval: true, workerData, resourceLimits })
    : new Worker(here, { workerData, resourceLimits });
  let opened: () => void;
  const ready = new Promise<void>((resolve) => (opened = resolve));
  worker.on('message', (message: FromThread) => {
    if (message.t === 'ready') opened();
    else onError(Object.assign(new Error(message.message), { stack: message.stack }));
  });
  worker.on('error', onError);
  const exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
  void exited.then(() => opened());
  return {
    ready,
    applied: () => Number(Atomics.load(applied, 0)),
    stop: async () => {
      // The thread is busy in a round, not listening: the flag is what it sees first.
      Atomics.store(stopping, 0, 1);
      worker.postMessage('stop');
      await exited;
    },
  };
}

/** How long the thread waits before it tries again to open an analytics file it could not. */
const REOPEN_MS = 5_000;

async function runThread(): Promise<void> {
  const { databaseFile, applied, stopping } = workerData as Setup;
  /** Once stopping, rounds end at once, but for the catch-up's own until this time. */
  let catchUpUntil = 0;
  const interrupted = () => Atomics.load(stopping, 0) === 1 && Date.now() >= catchUpUntil;
  const report = (error: unknown) =>
    parentPort!.postMessage({ t: 'error', message: (error as Error).message, stack: (error as Error).stack } satisfies FromThread);
  const analyticsFile = analyticsFileOf(databaseFile);
  /** The follower's connections: made again when the file went, and the file made again when it is damaged. */
  const open = (): SqliteFollowing | undefined => {
    try {
      return new SqliteFollowing(databaseFile, interrupted);
    } catch (error) {
      if (!isDamagedFile(error)) {
        report(new Error(`cannot open the analytics file ${analyticsFile}: ${(error as Error).message}; trying again in ${REOPEN_MS / 1000} s`));
        return undefined;
      }
      report(new Error(`${analyticsFile} is damaged (${(error as Error).message}): removed, to be derived again from the events`));
      removeAnalyticsFile(analyticsFile);
      return new SqliteFollowing(databaseFile, interrupted);
    }
  };
  // Opened at the server's priority, which waits for it before it listens; then the lowest.
  let following = open();
  parentPort!.postMessage({ t: 'ready' } satisfies FromThread);
  try {
    setPriority(19); // On Linux, this thread only.
  } catch {
    // Not allowed here: the same priority as ingest.
  }
  /** A round on the file, counted in `applied`; a file gone or damaged is closed (and removed) to be made again. */
  const followRound = (limit: number, start: StartRound): RoundDone => {
    following ??= open();
    if (following === undefined) throw new Error(`the analytics file ${analyticsFile} cannot be opened`);
    try {
      const round = following.followRound(limit, start);
      Atomics.add(applied, 0, BigInt(round.applied));
      return round;
    } catch (error) {
      if (error instanceof AnalyticsFileGoneError || isDamagedFile(error)) {
        following.close();
        following = undefined;
        if (isDamagedFile(error)) removeAnalyticsFile(analyticsFile);
      }
      throw error;
    }
  };
  const follower = new Follower(
    { followRound },
    {
      roundEvents: THREAD_ROUND_EVENTS,
      failedMs: REOPEN_MS,
      onError: (error) => {
        if (Atomics.load(stopping, 0) === 0) report(new Error(`analytics file ${analyticsFile}: ${(error as Error).message}`));
      },
    },
  ).start();
  parentPort!.once('message', async () => {
    await follower.stop();
    // A server that stops leaves the analytics caught up with what it stored, when that is quick.
    catchUpUntil = Date.now() + CATCH_UP_AT_STOP_MS;
    try {
      for (let full = true; following && full && Date.now() < catchUpUntil; ) full = followRound(THREAD_ROUND_EVENTS, startRound).full;
    } catch {
      // Derived again at the next start.
    }
    following?.close();
    parentPort!.close();
  });
}

// Imported by the writer, this module only starts threads; as a thread's module, it follows.
if (!isMainThread && (workerData as Partial<Setup> | undefined)?.databaseFile !== undefined) await runThread();
