// The writer: the one writable store, its ingest queue and what it measures.
// The one-process server holds one; with workers, the primary process does.
import { describeRule, resolveRule, sameRule, SettingsMismatchError } from './accounting.ts';
import type { ServerConfig } from './config.ts';
import { Follower, type RunningFollower } from './analytics/follower.ts';
import { startFollowerThread } from './analytics/follower-thread.ts';
import { IngestQueue } from './ingest/queue.ts';
import { droppedLogLines, type Logger } from './log.ts';
import { Metrics } from './metrics.ts';
import { describeDb, openStore } from './store/open.ts';
import { SqliteStore } from './store/sqlite.ts';
import type { Store } from './store/store.ts';

/** How long events wait for a database locked by a rebuild before they are refused. */
const LOCK_WAIT_MS = 30_000;

export interface Writer {
  store: Store;
  queue: IngestQueue;
  metrics: Metrics;
  /** The database and the rule in force, for the start's log line. */
  settingsInForce: { db: string; accounting: string; maxStep: number };
  /** Commits what is queued, refusing more, then checkpoints and closes the database. */
  close(log: Logger): Promise<void>;
}

export async function openWriter(
  config: ServerConfig,
  log: Logger,
  /** http: whether this process also serves HTTP (its metrics then hold both sides); workers: how many serve it otherwise. */
  serving: { http: true } | { http: false; workers: () => number; workerRestarts: () => number },
): Promise<Writer> {
  // busyTimeout 0: a locked database must not block the event loop; the queue retries instead.
  // serveLock: one serving process per SQLite file (PostgreSQL takes none).
  const store = await openStore(config.db, {
    busyTimeoutMs: 0,
    syncInBackground: true,
    serveLock: { host: config.host, port: config.port },
    onMigration: ({ version, name, ms }) =>
      log.info({ db: describeDb(config.db), version, name, ms: Math.round(ms) }, `applied schema migration ${version} (${name})`),
  });
  let settingsInForce: Writer['settingsInForce'];
  try {
    const stored = await store.settings();
    const rule = resolveRule(stored, config.rule);
    if (stored === undefined) await store.initSettings(rule);
    else if (!sameRule(stored, rule)) {
      throw new SettingsMismatchError(
        `${describeDb(config.db)} was computed with accounting ${describeRule(stored)}, not ${describeRule(rule)}. ` +
          `Run \`watchtime rebuild --db ${describeDb(config.db)} --accounting ${rule.accounting} --max-step ${rule.maxStep}\` ` +
          'to recompute it under the new rule, or start without those options to keep the stored one.',
      );
    }
    settingsInForce = { db: describeDb(config.db), accounting: rule.accounting, maxStep: rule.maxStep };
  } catch (error) {
    await store.close();
    throw error;
  }

  const queue = new IngestQueue(store, {
    batchSize: config.batchSize,
    queueSize: config.queueSize,
    flushMs: config.flushMs,
    lockWaitMs: LOCK_WAIT_MS,
    onFlushed: (events, duplicates, seconds, syncSeconds) => metrics.flushed(events, duplicates, seconds, syncSeconds),
    onFailed: () => metrics.flushFailed(),
  });
  const metrics = new Metrics({
    process: serving.http ? 'server' : 'writer',
    http: serving.http,
    writer: {
      queueDepth: () => queue.stats().depth,
      queueCapacity: config.queueSize,
      databaseBytes: () => store.sizeBytes(),
      rebuild: store.rebuildState ? () => store.rebuildState!() : undefined,
      batchRetries: store.batchRetries ? () => store.batchRetries!() : undefined,
      analytics: () => store.analytics.progress(),
      analyticsFailures: () => analyticsFailures,
      analyticsApplied: () => follower.applied(),
      workers: serving.http ? undefined : serving.workers,
      workerRestarts: serving.http ? undefined : serving.workerRestarts,
    },
    droppedLogLines: () => droppedLogLines.count,
  });

  // The analytics follow the events off the ingest path (SPEC section 7): on SQLite on a thread of
  // their own, writing a file of their own; on PostgreSQL here, one server's follower at a time.
  const onFollowerError = (error: unknown) => {
    analyticsFailures += 1;
    log.warn({ err: error }, `an analytics round failed: ${(error as Error).message}`);
  };
  let analyticsFailures = 0;
  const follower: RunningFollower =
    store instanceof SqliteStore
      ? startFollowerThread(store.real, onFollowerError)
      : new Follower(store.analytics, {
          ingestIdle: () => queue.stats().depth === 0,
          rebuilding: async () => (await store.rebuildState?.())?.running ?? false,
          onError: onFollowerError,
        }).start();
  await follower.ready;

  const close = async (log: Logger) => {
    await queue.close();
    // The follower may catch up with the last flush; its connection to the analytics file, the last one, folds
    // that file's WAL in, and the writer's, the last to the database, folds the database's.
    // Where the analytics stand once the follower stops: where they stood, and what it followed while stopping
    // (ingest has closed). Read before the readers' connection closes, as after it a read would open it again.
    const before = await (async () => store.analytics.progress())().catch(() => undefined); // SQLite's throws, PostgreSQL's rejects
    store.analytics.close?.();
    const [stopping, appliedBefore] = [Date.now(), follower.applied()];
    await follower.stop();
    const followed = follower.applied() - appliedBefore;
    const where = before && { asOf: before.asOf + followed, lagEvents: Math.max(0, before.lagEvents - followed) };
    log.info({ ...where, followedWhileStopping: followed, ms: Date.now() - stopping }, 'analytics follower stopped');
    try {
      store.checkpoint?.();
    } catch (error) {
      log.warn({ err: error }, 'checkpoint at shutdown failed (the WAL is kept and replayed at next open)');
    }
    await store.close();
  };
  return { store, queue, metrics, settingsInForce, close };
}
