// The writer's side of its workers: each worker's requests go into the one
// ingest queue, in the order they arrive, and each request's outcome goes
// back to its worker once its batch is committed and durable. The writer
// also answers what only it knows: the queue's state, whether the database
// takes writes, and /metrics for the whole service.
import { FlushError, QueueClosedError, QueueFullError, type IngestQueue } from '../ingest/queue.ts';
import { Metrics, type MetricsSnapshot } from '../metrics.ts';
import { StoreBusyError } from '../store/store.ts';
import { Asking, unflatten, type Channel, type Outcome, type Questions, type Refusal, type ToWorker, type ToWriter, type WorkerQuestions } from './protocol.ts';

/** How long the writer waits for a worker's share of /metrics before it answers without it. */
const SNAPSHOT_TIMEOUT_MS = 2_000;

export type WorkerChannel = Channel<ToWorker> & { isConnected(): boolean };

interface Attached {
  channel: WorkerChannel;
  asking: Asking<ToWorker>;
  outbox: Outcome[];
  /** Its share of /metrics at the last scrape: used while it does not answer, and kept in part once it is gone. */
  lastShare?: MetricsSnapshot;
}

function refusalOf(error: unknown): Refusal {
  if (error instanceof QueueFullError) return 'queue-full';
  if (error instanceof QueueClosedError) return 'closed';
  if (error instanceof FlushError) return 'flush-failed';
  return 'internal';
}

export class WriterService {
  private readonly attached = new Set<Attached>();
  /** The counters and histograms of workers that are gone, so that no counter of /metrics goes back when one dies. */
  private retired: Promise<MetricsSnapshot | undefined> = Promise.resolve(undefined);

  constructor(
    private readonly queue: IngestQueue,
    private readonly metrics: Metrics,
  ) {}

  /** Serves a worker; returns what to call with each of its messages, and when it is gone. */
  attach(channel: WorkerChannel): { received: (message: ToWriter) => void; gone: () => void; asking: Asking<ToWorker> } {
    const worker: Attached = { channel, asking: new Asking(channel), outbox: [] };
    this.attached.add(worker);
    return {
      asking: worker.asking,
      received: (message) => this.received(worker, message),
      gone: () => {
        this.attached.delete(worker);
        worker.asking.abandon('the worker is gone');
        const last = worker.lastShare;
        if (last) this.retired = this.retired.then((retired) => Metrics.lasting(retired ? [retired, last] : [last]));
      },
    };
  }

  private received(worker: Attached, message: ToWriter): void {
    switch (message.t) {
      case 'submit':
        for (const item of message.items) {
          const request = item[0];
          this.queue.submit(unflatten(item)).then(
            ({ accepted, duplicates }) => this.reply(worker, [request, accepted, duplicates]),
            (error: Error) => this.reply(worker, [request, refusalOf(error), error.message]),
          );
        }
        return;
      case 'ask':
        worker.asking.answer(message.id, () => this.answer(message.what, message.args ?? []));
        return;
      case 'answer':
        worker.asking.settle(message.id, message.value, message.error);
        return;
    }
  }

  /** Outcomes settled together (one batch's) go back in one message. */
  private reply(worker: Attached, outcome: Outcome): void {
    if (worker.outbox.length === 0) {
      setImmediate(() => {
        const items = worker.outbox;
        worker.outbox = [];
        // A worker that died has no client to answer; its events are committed all the same.
        if (worker.channel.isConnected()) worker.channel.send({ t: 'outcomes', items }, () => undefined);
      });
    }
    worker.outbox.push(outcome);
  }

  private async answer(what: keyof Questions, args: unknown[]): Promise<Questions[typeof what]> {
    switch (what) {
      case 'state': {
        const { depth, committedEvents, duplicateEvents, lastError } = this.queue.state();
        return { depth, committedEvents, duplicateEvents, lastError: lastError?.message ?? null } satisfies Questions['state'];
      }
      case 'writable':
        try {
          await this.queue.checkWritable();
          return null;
        } catch (error) {
          return { busy: error instanceof StoreBusyError, message: (error as Error).message } satisfies Questions['writable'];
        }
      case 'metrics':
        return this.metricsText();
      case 'setDuration':
        try {
          await this.queue.setDuration(String(args[0]), Number(args[1]));
          return null;
        } catch (error) {
          return { busy: error instanceof StoreBusyError, message: (error as Error).message } satisfies Questions['setDuration'];
        }
    }
  }

  /**
   * The writer's metrics and every worker's, as one service's. A worker
   * that does not answer in time counts with its last share, and one that
   * is gone with its counters as they were.
   */
  async metricsText(): Promise<string> {
    const shares = await Promise.all(
      [...this.attached].map(async (w) => {
        try {
          w.lastShare = await w.asking.ask<WorkerQuestions['snapshot']>('snapshot', SNAPSHOT_TIMEOUT_MS);
        } catch {
          // slow or stopped: its last share
        }
        return w.lastShare;
      }),
    );
    const retired = await this.retired;
    const snapshots = [await this.metrics.snapshot(), ...shares, retired].filter((s) => s !== undefined);
    return Metrics.combined(snapshots);
  }

  /** Asks every worker when /readyz was last probed on it. */
  async lastProbe(): Promise<number> {
    const times = await Promise.all(
      [...this.attached].map((w) => w.asking.ask<number>('probedAt', SNAPSHOT_TIMEOUT_MS).catch(() => 0)),
    );
    return Math.max(0, ...times);
  }

  /** Tells every worker. */
  broadcast(message: ToWorker): void {
    for (const w of this.attached) if (w.channel.isConnected()) w.channel.send(message, () => undefined);
  }
}
