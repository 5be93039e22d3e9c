// The SQLite follower on a thread of its own (SPEC section 7), started by the
// writer. It reads <db> and writes <db>-analytics (src/store/sqlite-analytics.ts),
// so it never takes the database's write lock; and it runs at the lowest CPU
// priority, so that on a busy core ingest goes first and the analytics catch
// up when the load eases.
import { setPriority } from 'node:os';
import { fileURLToPath } from 'node:url';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { AnalyticsFileGoneError, analyticsFileOf, isDamagedFile, removeAnalyticsFile, SqliteFollowing } from '../store/sqlite-analytics.ts';
import { followChunk } from './follow.ts';
import { Follower, type RunningFollower } from './follower.ts';

/**
 * Events a round takes at most on the thread: no event loop of requests to
 * hold up, and the larger a round, the more of its writes fall on the same
 * rows and pages. Heartbeats of 100,000 players had 1,168 bytes an event
 * written to disk in rounds of 5,000 and 454 in rounds of 20,000.
 */
export const THREAD_ROUND_EVENTS = 20_000;

/** A small young generation: a round's garbage is collected often rather than let grow the server's RSS. */
const resourceLimits = { maxYoungGenerationSizeMb: 8 };

/** How long a stopping server's follower may go on following what is stored. */
const CATCH_UP_AT_STOP_MS = 2_000;

interface Setup {
  databaseFile: string;
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
  const workerData = { databaseFile, applied } satisfies Setup & { applied: BigInt64Array };
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
      worker.postMessage('stop');
      await exited;
    },
  };
}

/** How long the thread waits before it tries again to open an analytics file it could not. */
const REOPEN_MS = 5_000;

async function runThread(): Promise<void> {
  const { databaseFile, applied } = workerData as Setup & { applied: BigInt64Array };
  const report = (error: unknown) =>
    parentPort!.postMessage({ t: 'error', message: (error as Error).message, stack: (error as Error).stack } satisfies FromThread);
  const analyticsFile = analyticsFileOf(databaseFile);
  /** The follower's connections: made again when the file went, and the file made again when it is damaged. */
  const open = (): SqliteFollowing | undefined => {
    try {
      return new SqliteFollowing(databaseFile);
    } catch (error) {
      if (!isDamagedFile(error)) {
        report(new Error(`cannot open the analytics file ${analyticsFile}: ${(error as Error).message}; trying again in ${REOPEN_MS / 1000} s`));
        return undefined;
      }
      report(new Error(`${analyticsFile} is damaged (${(error as Error).message}): removed, to be derived again from the events`));
      removeAnalyticsFile(analyticsFile);
      return new SqliteFollowing(databaseFile);
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
  let stopping = false;
  const follower = new Follower(
    {
      followRound: (limit, apply) => {
        following ??= open();
        if (following === undefined) throw new Error(`the analytics file ${analyticsFile} cannot be opened`);
        try {
          const n = following.followRound(limit, apply);
          Atomics.add(applied, 0, BigInt(n));
          return n;
        } catch (error) {
          if (error instanceof AnalyticsFileGoneError || isDamagedFile(error)) {
            following.close();
            following = undefined;
            if (isDamagedFile(error)) removeAnalyticsFile(analyticsFile);
          }
          throw error;
        }
      },
    },
    {
      roundEvents: THREAD_ROUND_EVENTS,
      failedMs: REOPEN_MS,
      onError: (error) => {
        if (!stopping) report(new Error(`analytics file ${analyticsFile}: ${(error as Error).message}`));
      },
    },
  ).start();
  parentPort!.once('message', async () => {
    stopping = true;
    await follower.stop();
    // A server that stops leaves the analytics caught up with what it stored, when that is quick.
    const until = Date.now() + CATCH_UP_AT_STOP_MS;
    try {
      while (following && Date.now() < until && following.followRound(THREAD_ROUND_EVENTS, followChunk) > 0);
    } catch {
      // Derived again at the next start.
    }
    following?.close();
    parentPort!.close();
  });
}

// Imported by the writer, this module only starts threads; as a thread's module, it follows.
if (!isMainThread && (workerData as Partial<Setup> | undefined)?.databaseFile !== undefined) await runThread();
