// The SQLite follower on a thread of its own (SPEC section 7), started by the
// writer. It reads <db> and writes <db>-analytics (src/store/sqlite-analytics.ts),
// so it never takes the database's write lock; and it runs at the lowest CPU
// priority, so that on a busy core ingest goes first and the analytics catch
// up when the load eases.
import { setPriority } from 'node:os';
import { fileURLToPath } from 'node:url';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { SqliteFollowing } from '../store/sqlite-analytics.ts';
import { followChunk } from './follow.ts';
import { Follower } from './follower.ts';

/**
 * Events a round takes at most on the thread: no event loop of requests to
 * hold up, and the larger a round, the more of its writes fall on the same rows.
 */
export const THREAD_ROUND_EVENTS = 5_000;

/** How long a stopping server's follower may go on following what is stored. */
const CATCH_UP_AT_STOP_MS = 2_000;

interface Setup {
  databaseFile: string;
}

type FromThread = { t: 'error'; message: string; stack?: string } | { t: 'stopped' };

export interface FollowerThread {
  /** Events the thread applied, all time. */
  applied(): number;
  stop(): Promise<void>;
}

/** Starts the follower of a SQLite file on a thread; `onError` hears of rounds that failed. */
export function startFollowerThread(databaseFile: string, onError: (error: Error) => void): FollowerThread {
  // This module's own file, .ts under tsx and .js once compiled.
  const here = fileURLToPath(import.meta.url);
  const applied = new BigInt64Array(new SharedArrayBuffer(8));
  const workerData = { databaseFile, applied } satisfies Setup & { applied: BigInt64Array };
  // Under tsx (the tests), the thread registers tsx's loader first: a thread does not inherit one registered at run time.
  const worker = here.endsWith('.ts')
    ? new Worker(`import('tsx/esm/api').then(({ register }) => { register(); return import(${JSON.stringify(import.meta.url)}); })`, { eval: true, workerData })
    : new Worker(here, { workerData });
  worker.on('message', (message: FromThread) => {
    if (message.t === 'error') onError(Object.assign(new Error(message.message), { stack: message.stack }));
  });
  worker.on('error', onError);
  const exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
  return {
    applied: () => Number(Atomics.load(applied, 0)),
    stop: async () => {
      worker.postMessage('stop');
      await exited;
    },
  };
}

async function runThread(): Promise<void> {
  const { databaseFile, applied } = workerData as Setup & { applied: BigInt64Array };
  try {
    setPriority(19); // On Linux, this thread only.
  } catch {
    // Not allowed here: the same priority as ingest.
  }
  const following = new SqliteFollowing(databaseFile);
  const follower = new Follower(
    {
      followRound: (limit, apply) => {
        const n = following.followRound(limit, apply);
        Atomics.add(applied, 0, BigInt(n));
        return n;
      },
    },
    {
      roundEvents: THREAD_ROUND_EVENTS,
      onError: (error) => parentPort!.postMessage({ t: 'error', message: (error as Error).message, stack: (error as Error).stack } satisfies FromThread),
    },
  ).start();
  parentPort!.once('message', async () => {
    await follower.stop();
    // A server that stops leaves the analytics caught up with what it stored, when that is quick.
    const until = Date.now() + CATCH_UP_AT_STOP_MS;
    while (Date.now() < until && following.followRound(THREAD_ROUND_EVENTS, followChunk) > 0);
    following.close();
    parentPort!.close();
  });
}

// Imported by the writer, this module only starts threads; as a thread's module, it follows.
if (!isMainThread && (workerData as Partial<Setup> | undefined)?.databaseFile !== undefined) await runThread();
