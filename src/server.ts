// Starts and stops the service: one process that serves and writes, or
// (serve --workers N) a writer process and N HTTP workers (src/workers/).
import { setTimeout as sleep } from 'node:timers/promises';
import { httpSettings, LIFECYCLE_DEFAULTS, PROBED_WITHIN_MS, type ServerConfig } from './config.ts';
import { createApp, DEFAULT_BODY_MEMORY } from './http/app.ts';
import { closeConnections, isLoopback, listen, urlOf } from './http/listen.ts';
import { createLogger, EpisodeLog, type Logger } from './log.ts';
import { startWorkers } from './workers/primary.ts';
import { openWriter } from './writer.ts';

export { LIFECYCLE_DEFAULTS, type ServerConfig };

export interface RunningServer {
  url: string;
  port: number;
  /** Stops accepting, flushes the queue, checkpoints and closes the database. */
  close(options?: { drain?: boolean }): Promise<void>;
  /** Where the server logs: with workers, the writer's lines say so. */
  log: Logger;
}

interface Started {
  port: number;
  settingsInForce: object;
  close(options?: { drain?: boolean }): Promise<void>;
}

export async function startServer(config: ServerConfig, log: Logger = createLogger()): Promise<RunningServer> {
  const workers = config.workers ?? 1;
  // With workers, this process is the writer, and its lines say so beside the workers'.
  if (workers > 1) log = log.child({ role: 'writer' });
  const started = workers > 1 ? await startWorkers({ ...config, workers }, log) : await startAlone(config, log);
  const url = urlOf(config.host, started.port);
  log.info(
    {
      ...started.settingsInForce,
      host: config.host,
      port: started.port,
      workers,
      flushMs: config.flushMs,
      batchSize: config.batchSize,
      queueSize: config.queueSize,
      bodyMemory: config.bodyMemory ?? DEFAULT_BODY_MEMORY,
      ingestToken: Boolean(config.ingestToken),
      readToken: Boolean(config.readToken),
      drainMs: config.drainMs ?? LIFECYCLE_DEFAULTS.drainMs,
      closeGraceMs: config.closeGraceMs ?? LIFECYCLE_DEFAULTS.closeGraceMs,
      keepAliveMs: config.keepAliveMs ?? LIFECYCLE_DEFAULTS.keepAliveMs,
    },
    `listening on ${config.host}:${started.port} (${url})${workers > 1 ? ` with ${workers} HTTP workers` : ''}`,
  );
  if (!config.ingestToken && !isLoopback(config.host)) {
    log.warn(
      { host: config.host },
      'ingest is open to anyone who reaches this address (no --ingest-token); set one (or WATCHTIME_INGEST_TOKEN_FILE) unless the network is yours',
    );
  }
  return { url, port: started.port, close: started.close, log };
}

/** One process serves HTTP and writes. */
async function startAlone(config: ServerConfig, log: Logger): Promise<Started> {
  const writer = await openWriter(config, log, { http: true });
  const { queue, metrics } = writer;
  const drainMs = config.drainMs ?? LIFECYCLE_DEFAULTS.drainMs;
  const closeGraceMs = config.closeGraceMs ?? LIFECYCLE_DEFAULTS.closeGraceMs;
  const keepAliveMs = config.keepAliveMs ?? LIFECYCLE_DEFAULTS.keepAliveMs;
  const episodes = new EpisodeLog(log, config.episodes);
  let closing = false;
  let draining = false;
  let probedAt = -Infinity;
  const handler = createApp({
    store: writer.store,
    sink: queue,
    ...httpSettings(config),
    isClosing: () => closing,
    isDraining: () => draining,
    onReadinessProbe: () => (probedAt = Date.now()),
    log,
    episodes,
    metrics,
  });
  const { server, port } = await listen({ ...config, keepAliveMs }, handler).catch(async (error) => {
    await writer.store.close();
    throw error;
  });

  let closed: Promise<void> | undefined;
  const close = ({ drain = true } = {}) =>
    (closed ??= (async () => {
      if (drain && drainMs > 0 && Date.now() - probedAt < PROBED_WITHIN_MS) {
        draining = true;
        log.info({ drainMs }, 'draining: /readyz answers 503 while requests are still served');
        await sleep(drainMs);
      }
      closing = true;
      await closeConnections(server, queue.close(), closeGraceMs);
      await writer.close(log);
      episodes.close();
      const stats = queue.stats();
      log.info({ committedEvents: stats.committedEvents, batches: stats.batches }, 'stopped');
    })());

  return { port, settingsInForce: writer.settingsInForce, close };
}
