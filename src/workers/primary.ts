// serve --workers N: this process is the writer and N HTTP workers
// (node:cluster processes) share the port. Processes rather than threads:
// Node 20 cannot share a listening port between threads, and a worker that
// crashes takes nothing of the writer with it. The writer keeps the one
// ingest queue, the group commit and the accounting; a worker that dies is
// started again; the service stops when the writer is told to.
import cluster, { type Worker } from 'node:cluster';
import { extname } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { BODY_LIMIT, LIFECYCLE_DEFAULTS, PROBED_WITHIN_MS, type ServerConfig } from '../config.ts';
import { DEFAULT_BODY_MEMORY } from '../http/app.ts';
import type { Logger } from '../log.ts';
import { openWriter } from '../writer.ts';
import type { ToWorker, ToWriter, WorkerSetup } from './protocol.ts';
import { WriterService } from './writer-service.ts';

/** A worker that dies sooner than this after its start is started again after a pause that doubles, up to MAX_RESTART_PAUSE_MS. */
const STEADY_MS = 5_000;
const MAX_RESTART_PAUSE_MS = 30_000;
/** How long past the grace a worker may take to stop before it is killed. */
const STOP_MARGIN_MS = 5_000;

export interface Workers {
  port: number;
  /** The database and the rule in force, for the start's log line. */
  settingsInForce: object;
  /** Drains (if a probe watched) and stops the workers, then commits what is left and closes the database. */
  close(options?: { drain?: boolean }): Promise<void>;
}

/** Runs the writer in this process and N workers beside it; settles once every worker listens. */
export async function startWorkers(config: ServerConfig & { workers: number }, log: Logger): Promise<Workers> {
  /** Workers listening, by number; `forked` holds those starting too. */
  const live = new Map<number, Worker>();
  const forked = new Set<Worker>();
  let restarts = 0;
  const writer = await openWriter(config, log, { http: false, workers: () => live.size, workerRestarts: () => restarts });
  const service = new WriterService(writer.queue, writer.metrics);
  // --body-memory bounds the service's bodies in all: each worker takes its share, and at least one largest body.
  const bodyMemory = Math.max(BODY_LIMIT, Math.floor((config.bodyMemory ?? DEFAULT_BODY_MEMORY) / config.workers));
  const workerConfig: ServerConfig = { ...config, bodyMemory };
  const here = fileURLToPath(import.meta.url);
  cluster.setupPrimary({ exec: here.replace(/primary\.[jt]s$/, `worker-main${extname(here)}`), execArgv: process.execArgv });

  let closing = false;
  let failedToStart: ((error: Error) => void) | undefined;
  const restartPause = new Map<number, number>();

  /** Starts worker `n` (1..N); settles with its port once it listens. */
  const fork = (n: number): Promise<number> =>
    new Promise((resolve, reject) => {
      const worker = cluster.fork();
      forked.add(worker);
      const startedAt = Date.now();
      const attached = service.attach({
        send: (message: ToWorker, callback) => worker.send(message, undefined, callback ?? (() => undefined)),
        isConnected: () => worker.isConnected(),
      });
      worker.on('message', (message: ToWriter) => {
        if (message.t === 'ready') {
          const setup: WorkerSetup = { config: workerConfig, worker: n, logLevel: log.level as WorkerSetup['logLevel'] };
          worker.send({ t: 'start', setup } satisfies ToWorker);
        } else if (message.t === 'listening') {
          live.set(n, worker);
          resolve(message.port);
        } else if (message.t === 'failed') {
          reject(new Error(message.message));
        } else attached.received(message);
      });
      worker.on('exit', (code, signal) => {
        attached.gone();
        forked.delete(worker);
        if (live.get(n) === worker) live.delete(n);
        reject(new Error(`worker ${n} exited (${signal ?? `code ${code}`}) before it listened`));
        if (closing) return;
        const pause = Date.now() - startedAt < STEADY_MS ? Math.min(Math.max(1_000, 2 * (restartPause.get(n) ?? 0)), MAX_RESTART_PAUSE_MS) : 0;
        restartPause.set(n, pause);
        restarts += 1;
        log.error({ worker: n, pid: worker.process.pid, code, signal, restartInMs: pause },
          `worker ${n} died (${signal ?? `exit code ${code}`}); its open requests got no answer, the events it handed over are committed; starting another`);
        setTimeout(() => {
          if (!closing) fork(n).catch((error: Error) => failedToStart?.(error));
        }, pause).unref();
      });
    });

  const stopWorkers = async () => {
    closing = true;
    const exited = [...forked].map((w) => new Promise((resolve) => (w.isDead() ? resolve(undefined) : w.once('exit', resolve))));
    service.broadcast({ t: 'close' });
    const limit = (config.closeGraceMs ?? LIFECYCLE_DEFAULTS.closeGraceMs) + STOP_MARGIN_MS;
    const timer = setTimeout(() => {
      for (const w of forked) w.process.kill('SIGKILL');
    }, limit);
    await Promise.all(exited);
    clearTimeout(timer);
  };

  let port: number;
  try {
    const ports = await Promise.all(Array.from({ length: config.workers }, (_, i) => fork(i + 1)));
    port = ports[0];
  } catch (error) {
    await stopWorkers();
    await writer.close(log);
    throw error;
  }
  // A worker that cannot start again (its database gone, say) is logged; the others serve on.
  failedToStart = (error) => log.error({ err: error }, 'a worker could not be started again');

  let closed: Promise<void> | undefined;
  const close = ({ drain = true } = {}) =>
    (closed ??= (async () => {
      const drainMs = config.drainMs ?? LIFECYCLE_DEFAULTS.drainMs;
      if (drain && drainMs > 0 && Date.now() - (await service.lastProbe()) < PROBED_WITHIN_MS) {
        service.broadcast({ t: 'drain' });
        log.info({ drainMs }, 'draining: /readyz answers 503 while requests are still served');
        await sleep(drainMs);
      }
      await stopWorkers();
      await writer.close(log);
      const stats = writer.queue.stats();
      log.info({ committedEvents: stats.committedEvents, batches: stats.batches }, 'stopped');
    })());

  return { port, close, settingsInForce: writer.settingsInForce };
}
