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
/**
 * Every HEARTBEAT_MS the writer asks each worker a question; a worker that
 * has not answered within HUNG_MS (stopped, or in an endless loop) is killed
 * and started again. Parsing the largest body takes well under a second.
 */
const HEARTBEAT_MS = 2_000;
const HUNG_MS = 10_000;

/** A worker ended before it listened; its exit has been logged. */
class WorkerExitedError extends Error {}

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
  /**
   * The port workers are told to listen on, which is node:cluster's key for
   * the listening socket it shares. It closes that socket when its last
   * worker goes; a worker started after that must bind the port found at
   * start, not --port 0's next random one.
   */
  let listenPort = config.port;
  let foundPort: number | undefined;
  const here = fileURLToPath(import.meta.url);
  cluster.setupPrimary({ exec: here.replace(/primary\.[jt]s$/, `worker-main${extname(here)}`), execArgv: process.execArgv });

  let closing = false;
  let failedToStart: ((error: Error & { worker?: number }) => void) | undefined;
  const restartPause = new Map<number, number>();

  /** Starts worker `n` (1..N); settles with its port once it listens. */
  const fork = (n: number): Promise<number> =>
    new Promise((resolve, reject) => {
      if (live.size === 0 && foundPort !== undefined) listenPort = foundPort;
      const listenOn = listenPort;
      const worker = cluster.fork();
      forked.add(worker);
      const startedAt = Date.now();
      const attached = service.attach({
        send: (message: ToWorker, callback) => worker.send(message, undefined, callback ?? (() => undefined)),
        isConnected: () => worker.isConnected(),
      });
      worker.on('message', (message: ToWriter) => {
        if (message.t === 'ready') {
          // Started during a shutdown: it has taken no request, and goes at once.
          if (closing) return void worker.send({ t: 'close' } satisfies ToWorker);
          const setup: WorkerSetup = { config: { ...workerConfig, port: listenOn }, worker: n, logLevel: log.level as WorkerSetup['logLevel'] };
          worker.send({ t: 'start', setup } satisfies ToWorker);
        } else if (message.t === 'listening') {
          live.set(n, worker);
          if (restartPause.has(n)) log.info({ worker: n, pid: worker.process.pid }, `worker ${n} started again (pid ${worker.process.pid})`);
          resolve(message.port);
        } else if (message.t === 'failed') {
          reject(Object.assign(new Error(message.message), { code: message.code }));
        } else attached.received(message);
      });
      const heartbeat = setInterval(() => {
        if (closing || !live.has(n)) return;
        attached.asking.ask('probedAt', HUNG_MS).catch(() => {
          if (closing || worker.isDead()) return;
          log.error({ worker: n, pid: worker.process.pid }, `worker ${n} has not answered for ${HUNG_MS / 1000} s; killing it`);
          worker.process.kill('SIGKILL');
        });
      }, HEARTBEAT_MS);
      worker.on('exit', (code, signal) => {
        clearInterval(heartbeat);
        attached.gone();
        forked.delete(worker);
        if (live.get(n) === worker) live.delete(n);
        reject(new WorkerExitedError(`worker ${n} exited (${signal ?? `code ${code}`}) before it listened`));
        if (closing) return;
        const pause = Date.now() - startedAt < STEADY_MS ? Math.min(Math.max(1_000, 2 * (restartPause.get(n) ?? 0)), MAX_RESTART_PAUSE_MS) : 0;
        restartPause.set(n, pause);
        restarts += 1;
        log.error({ worker: n, pid: worker.process.pid, code, signal, restartInMs: pause },
          `worker ${n} died (${signal ?? `exit code ${code}`}); its open requests got no answer, the events it handed over are committed; starting another`);
        // Referenced: with every worker dead, this timer is what keeps the writer running until they are back.
        setTimeout(() => {
          if (!closing) fork(n).catch((error: Error) => failedToStart?.(Object.assign(error, { worker: n })));
        }, pause);
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
    port = foundPort = ports[0];
  } catch (error) {
    await stopWorkers();
    await writer.close(log);
    throw error;
  }
  // A worker that says why it cannot start again (its database gone, say) is logged; the others serve on, and it is
  // tried again after its pause. One that died while starting has had its line already.
  failedToStart = (error) => {
    if (!(error instanceof WorkerExitedError)) log.error({ worker: error.worker, detail: error.message }, 'a worker could not start again');
  };

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
