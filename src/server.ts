// Starts and stops the service: store, ingest queue, HTTP server.
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { describeRule, resolveRule, sameRule, SettingsMismatchError, type RequestedRule } from './accounting.ts';
import { createApp, DEFAULT_BODY_MEMORY } from './http/app.ts';
import { IngestQueue } from './ingest/queue.ts';
import { Metrics } from './metrics.ts';
import { setTimeout as sleep } from 'node:timers/promises';
import { createLogger, droppedLogLines, EpisodeLog, type EpisodeTiming, type Logger } from './log.ts';
import { describeDb, openStore } from './store/open.ts';

export interface ServerConfig {
  host: string;
  port: number;
  db: string;
  /** Only what the operator asked for; the rest comes from the database. */
  rule: RequestedRule;
  ingestToken?: string;
  readToken?: string;
  flushMs: number;
  batchSize: number;
  queueSize: number;
  /** Most bytes of request bodies being read at once (default 64 MiB). */
  bodyMemory?: number;
  /** Slow clients are cut off: headers must arrive within headersMs, the whole request within requestMs. */
  timeouts?: { headersMs: number; requestMs: number };
  /**
   * Shutdown's lame duck: how long /readyz answers 503 while requests are
   * still served, so that a load balancer sees the server leave. Only when
   * something probed /readyz in the last minute: with nobody watching there
   * is nobody to tell, and the server stops at once.
   */
  drainMs?: number;
  /** Shutdown: how long open requests may take once the queue is flushed. */
  closeGraceMs?: number;
  /** How long an idle keep-alive connection is kept: longer than a load balancer's own idle timeout (60 s for most). */
  keepAliveMs?: number;
  /** How faults that repeat are summed up in the log (tests shorten it). */
  episodes?: EpisodeTiming;
}

export const LIFECYCLE_DEFAULTS = { drainMs: 5_000, closeGraceMs: 5_000, keepAliveMs: 65_000 } as const;
/** A readiness probe this recent means a load balancer is watching, and the shutdown drains for it. */
const PROBED_WITHIN_MS = 60_000;

/** A 10,000-event batch of 200-character names fits with room to spare. */
const BODY_LIMIT = 16 * 1024 * 1024;
/** How long events wait for a database locked by a rebuild before they are refused. */
const LOCK_WAIT_MS = 30_000;

export interface RunningServer {
  url: string;
  port: number;
  /** Stops accepting, flushes the queue, checkpoints and closes the database. */
  close(options?: { drain?: boolean }): Promise<void>;
}

export async function startServer(config: ServerConfig, log: Logger = createLogger()): Promise<RunningServer> {
  // busyTimeout 0: a locked database must not block the event loop; the queue retries instead.
  // serveLock: one serving process per SQLite file (PostgreSQL takes none).
  const store = await openStore(config.db, {
    busyTimeoutMs: 0,
    syncInBackground: true,
    serveLock: { host: config.host, port: config.port },
    onMigration: ({ version, name, ms }) =>
      log.info({ db: describeDb(config.db), version, name, ms: Math.round(ms) }, `applied schema migration ${version} (${name})`),
  });
  let settingsInForce = {};
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
    queueDepth: () => queue.stats().depth,
    queueCapacity: config.queueSize,
    databaseBytes: () => store.sizeBytes(),
    droppedLogLines: () => droppedLogLines.count,
    rebuild: store.rebuildState ? () => store.rebuildState!() : undefined,
  });
  const drainMs = config.drainMs ?? LIFECYCLE_DEFAULTS.drainMs;
  const closeGraceMs = config.closeGraceMs ?? LIFECYCLE_DEFAULTS.closeGraceMs;
  const keepAliveMs = config.keepAliveMs ?? LIFECYCLE_DEFAULTS.keepAliveMs;
  const episodes = new EpisodeLog(log, config.episodes);
  let closing = false;
  let draining = false;
  let probedAt = -Infinity;
  const handler = createApp({
    store,
    sink: queue,
    ingestToken: config.ingestToken,
    readToken: config.readToken,
    bodyLimit: BODY_LIMIT,
    bodyMemory: config.bodyMemory,
    isClosing: () => closing,
    isDraining: () => draining,
    onReadinessProbe: () => (probedAt = Date.now()),
    log,
    episodes,
    metrics,
  });
  const { headersMs, requestMs } = config.timeouts ?? { headersMs: 10_000, requestMs: 30_000 };
  const server = createServer(
    {
      headersTimeout: headersMs,
      requestTimeout: requestMs,
      keepAliveTimeout: keepAliveMs,
      // Node checks those timeouts on this tick, every 30 s by default: far too coarse.
      connectionsCheckingInterval: Math.min(1_000, headersMs / 2),
    },
    handler,
  );
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(config.port, config.host, () => {
      server.off('error', reject);
      resolve();
    });
  }).catch(async (error) => {
    await store.close();
    throw error;
  });
  const { port } = server.address() as AddressInfo;
  const shownHost = config.host === '0.0.0.0' || config.host === '::' ? 'localhost' : config.host;
  const url = `http://${shownHost.includes(':') ? `[${shownHost}]` : shownHost}:${port}`;
  log.info(
    {
      ...settingsInForce,
      host: config.host,
      port,
      flushMs: config.flushMs,
      batchSize: config.batchSize,
      queueSize: config.queueSize,
      bodyMemory: config.bodyMemory ?? DEFAULT_BODY_MEMORY,
      ingestToken: Boolean(config.ingestToken),
      readToken: Boolean(config.readToken),
      drainMs,
      closeGraceMs,
      keepAliveMs,
    },
    `listening on ${config.host}:${port} (${url})`,
  );
  if (!config.ingestToken && !isLoopback(config.host)) {
    log.warn(
      { host: config.host },
      'ingest is open to anyone who reaches this address (no --ingest-token); set one (or WATCHTIME_INGEST_TOKEN_FILE) unless the network is yours',
    );
  }

  let closed: Promise<void> | undefined;
  const close = ({ drain = true } = {}) =>
    (closed ??= (async () => {
      if (drain && drainMs > 0 && Date.now() - probedAt < PROBED_WITHIN_MS) {
        draining = true;
        log.info({ drainMs }, 'draining: /readyz answers 503 while requests are still served');
        await sleep(drainMs);
      }
      closing = true;
      const connectionsDone = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      await queue.close();
      // Connections busy until now go idle once answered: close them as they do, the stragglers at the end of the grace.
      const sweep = setInterval(() => server.closeIdleConnections(), 20);
      const grace = setTimeout(() => server.closeAllConnections(), closeGraceMs);
      await connectionsDone;
      clearInterval(sweep);
      clearTimeout(grace);
      try {
        store.checkpoint?.();
      } catch (error) {
        log.warn({ err: error }, 'checkpoint at shutdown failed (the WAL is kept and replayed at next open)');
      }
      await store.close();
      episodes.close();
      const stats = queue.stats();
      log.info({ committedEvents: stats.committedEvents, batches: stats.batches }, 'stopped');
    })());

  return { url, port, close };
}

const isLoopback = (host: string) => host === 'localhost' || host === '::1' || host.startsWith('127.');
