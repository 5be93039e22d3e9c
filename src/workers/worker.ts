// An HTTP worker: a process forked by the writer (node:cluster), which
// shares its port. It reads, checks and answers requests; its events go to
// the writer, and its lookups to its own read-only connection. It stops
// when the writer says so, or at once when the writer is gone; signals are
// the writer's to act on (Ctrl-C reaches every process of the group).
import { httpSettings, LIFECYCLE_DEFAULTS, type ServerConfig } from '../config.ts';
import { createApp } from '../http/app.ts';
import { closeConnections, listen } from '../http/listen.ts';
import { createLogger, droppedLogLines, EpisodeLog, type Logger } from '../log.ts';
import { Metrics } from '../metrics.ts';
import { openStore } from '../store/open.ts';
import type { ToWorker, WorkerSetup } from './protocol.ts';
import { WriterLink, type WriterChannel } from './writer-link.ts';

export async function runWorker(): Promise<void> {
  const writer = process as unknown as WriterChannel;
  for (const signal of ['SIGINT', 'SIGTERM'] as const) process.on(signal, () => undefined);
  const setup = await new Promise<WorkerSetup>((resolve) => {
    const first = (message: ToWorker) => {
      // Told to stop before it started (a shutdown just after a restart): nothing to answer.
      if (message.t === 'close') process.exit(0);
      if (message.t !== 'start') return;
      process.off('message', first);
      resolve(message.setup);
    };
    process.on('message', first);
    writer.send({ t: 'ready' });
  });
  const log = createLogger(setup.logLevel).child({ role: 'http', worker: setup.worker });
  try {
    await serve(writer, setup.config, setup.worker, log);
  } catch (error) {
    // The writer logs why, once, and stops the service.
    const { message, code } = error as NodeJS.ErrnoException;
    writer.send({ t: 'failed', message, code }, () => process.exit(1));
  }
}

async function serve(writer: WriterChannel, config: ServerConfig, worker: number, log: Logger): Promise<void> {
  const store = await openStore(config.db, { readonly: true });
  const link = new WriterLink(writer, config.queueSize, config.flushMs);
  const metrics = new Metrics({ process: `worker-${worker}`, http: true, droppedLogLines: () => droppedLogLines.count });
  let closing = false;
  let draining = false;
  let probedAt = 0;
  const handler = createApp({
    store,
    sink: link,
    ...httpSettings(config),
    isClosing: () => closing,
    isDraining: () => draining,
    onReadinessProbe: () => (probedAt = Date.now()),
    log,
    episodes: new EpisodeLog(log, config.episodes),
    // /metrics is the whole service's: the writer gathers every worker's share.
    metrics: {
      refused: (reason, events) => metrics.refused(reason, events),
      answered: (route, method, status, seconds) => metrics.answered(route, method, status, seconds),
      contentType: metrics.contentType,
      text: () => link.metrics(),
    },
  });
  const keepAliveMs = config.keepAliveMs ?? LIFECYCLE_DEFAULTS.keepAliveMs;
  const { server, port } = await listen({ ...config, keepAliveMs }, handler);

  const close = async () => {
    closing = true;
    await closeConnections(server, link.close(), config.closeGraceMs ?? LIFECYCLE_DEFAULTS.closeGraceMs);
    await store.close();
    process.exit(0);
  };
  process.on('message', (message: ToWorker) => {
    switch (message.t) {
      case 'outcomes':
        link.settled(message.items);
        return;
      case 'ask':
        link.asking.answer(message.id, () => (message.what === 'snapshot' ? metrics.snapshot() : probedAt));
        return;
      case 'answer':
        link.asking.settle(message.id, message.value, message.error);
        return;
      case 'drain':
        draining = true;
        return;
      case 'close':
        void close().catch((error) => {
          log.error({ err: error }, 'worker shutdown failed');
          process.exit(1);
        });
        return;
    }
  });
  writer.send({ t: 'listening', port });
}
