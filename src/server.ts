// Starts and stops the service: store, ingest queue, HTTP server.
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { describeRule, resolveRule, sameRule, SettingsMismatchError, type RequestedRule } from './accounting.ts';
import { createApp, DEFAULT_BODY_MEMORY } from './http/app.ts';
import { IngestQueue } from './ingest/queue.ts';
import { Metrics } from './metrics.ts';
import { createLogger, type Logger } from './log.ts';
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
}

/** A 10,000-event batch of 200-character names fits with room to spare. */
const BODY_LIMIT = 16 * 1024 * 1024;
/** How long events wait for a database locked by a rebuild before they are refused. */
const LOCK_WAIT_MS = 30_000;
/** How long shutdown waits for open requests after the queue is flushed. */
const CLOSE_GRACE_MS = 5_000;

export interface RunningServer {
  url: string;
  port: number;
  /** Stops accepting, flushes the queue, checkpoints and closes the database. */
  close(): Promise<void>;
}

export async function startServer(config: ServerConfig, log: Logger = createLogger()): Promise<RunningServer> {
  // busyTimeout 0: a locked database must not block the event loop; the queue retries instead.
  // serveLock: one serving process per SQLite file (PostgreSQL takes none).
  const store = await openStore(config.db, { busyTimeoutMs: 0, syncInBackground: true, serveLock: { host: config.host, port: config.port } });
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
    onFlushed: (events, duplicates, seconds) => metrics.flushed(events, duplicates, seconds),
  });
  const metrics = new Metrics({ queueDepth: () => queue.stats().depth, databaseBytes: () => store.sizeBytes() });
  let closing = false;
  const handler = createApp({
    store,
    queue,
    ingestToken: config.ingestToken,
    readToken: config.readToken,
    bodyLimit: BODY_LIMIT,
    bodyMemory: config.bodyMemory,
    isClosing: () => closing,
    log,
    metrics,
  });
  const { headersMs, requestMs } = config.timeouts ?? { headersMs: 10_000, requestMs: 30_000 };
  const server = createServer(
    {
      headersTimeout: headersMs,
      requestTimeout: requestMs,
      keepAliveTimeout: 5_000,
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
    },
    `listening on ${config.host}:${port} (${url})`,
  );

  let closed: Promise<void> | undefined;
  const close = () =>
    (closed ??= (async () => {
      closing = true;
      const connectionsDone = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      await queue.close();
      // Connections busy until now go idle once answered: close them as they do, the stragglers at the end of the grace.
      const sweep = setInterval(() => server.closeIdleConnections(), 20);
      const grace = setTimeout(() => server.closeAllConnections(), CLOSE_GRACE_MS);
      await connectionsDone;
      clearInterval(sweep);
      clearTimeout(grace);
      try {
        store.checkpoint?.();
      } catch (error) {
        log.warn({ err: error }, 'checkpoint at shutdown failed (the WAL is kept and replayed at next open)');
      }
      await store.close();
      const stats = queue.stats();
      log.info({ committedEvents: stats.committedEvents, batches: stats.batches }, 'stopped');
    })());

  return { url, port, close };
}
