// A worker's side of the writer: the EventSink the worker's HTTP app hands
// events to. Requests go to the writer many to a message, and each is
// settled by the writer's outcome, sent once its batch is committed and
// durable. A message costs each side about 20 µs of CPU whatever it holds
// (docs/performance.md), so while the writer still commits this worker's
// last message, new requests wait for its outcomes and then go together:
// the writer could not have committed them sooner, as it commits one batch
// at a time. An idle worker sends at the end of its turn.
import { FlushError, QueueClosedError, QueueFullError, type IngestResult } from '../ingest/queue.ts';
import type { EventSink, SinkState } from '../ingest/sink.ts';
import { StoreBusyError, type ReceivedEvent } from '../store/store.ts';
import { Asking, flatten, type Channel, type Outcome, type Questions, type Refusal, type Submission, type ToWriter } from './protocol.ts';

/** How long a question to the writer (a probe, a scrape) may take before it fails. */
const ASK_TIMEOUT_MS = 5_000;
/** Events sent before the writer died may have been committed: a retry with the same ids is answered as duplicates. */
const WRITER_GONE = 'the writer process is gone; events sent to it may or may not be stored';

interface Pending {
  resolve: (result: IngestResult) => void;
  reject: (error: Error) => void;
  events: number;
}

const refusals: Record<Refusal, (message: string) => Error> = {
  'queue-full': (message) => new QueueFullError(message),
  closed: (message) => new QueueClosedError(message),
  'flush-failed': (message) => new FlushError(message),
  internal: (message) => new Error(message),
};

/** The writer, as a worker reaches it: its own `process`. */
export type WriterChannel = Channel<ToWriter> & { connected: boolean };

export class WriterLink implements EventSink {
  private readonly pending = new Map<number, Pending>();
  private outbox: Submission[] = [];
  private nextRequest = 1;
  /** Requests sent and not yet settled. */
  private sent = 0;
  private sendScheduled = false;
  private holdTimer: NodeJS.Timeout | undefined;
  /** Events sent and not yet settled: bounded like the writer's queue, so that a slow writer cannot fill this worker's memory. */
  private inFlight = 0;
  private closed = false;
  private drained: (() => void)[] = [];
  readonly asking: Asking<ToWriter>;

  constructor(
    private readonly writer: WriterChannel,
    readonly capacity: number,
    /** The longest a request waits here while the writer commits earlier ones (the writer's --flush-ms). */
    private readonly holdMs: number,
  ) {
    this.asking = new Asking(writer);
  }

  submit(events: ReceivedEvent[]): Promise<IngestResult> {
    if (this.closed) return Promise.reject(new QueueClosedError('the server is shutting down'));
    if (this.inFlight + events.length > this.capacity) {
      return Promise.reject(
        new QueueFullError(`this worker has ${this.inFlight} of ${this.capacity} events waiting for the writer; retry shortly`),
      );
    }
    const request = this.nextRequest++;
    this.outbox.push(flatten(request, events));
    if (this.sent === 0) this.sendAtTurnEnd();
    else this.holdTimer ??= setTimeout(this.send, this.holdMs);
    this.inFlight += events.length;
    return new Promise((resolve, reject) => this.pending.set(request, { resolve, reject, events: events.length }));
  }

  /** After the poll phase, so that the requests read together go together. */
  private sendAtTurnEnd(): void {
    if (this.sendScheduled) return;
    this.sendScheduled = true;
    setImmediate(this.send);
  }

  private readonly send = () => {
    this.sendScheduled = false;
    clearTimeout(this.holdTimer);
    this.holdTimer = undefined;
    const items = this.outbox;
    if (items.length === 0) return;
    this.outbox = [];
    if (!this.writer.connected) {
      for (const [request] of items) this.settle([request, 'flush-failed', WRITER_GONE]);
      return;
    }
    this.sent += items.length;
    this.writer.send({ t: 'submit', items }, () => undefined);
  };

  /** The writer's outcomes for requests of this worker. */
  settled(outcomes: Outcome[]): void {
    for (const outcome of outcomes) {
      if (this.pending.has(outcome[0])) this.sent -= 1;
      this.settle(outcome);
    }
    // The writer has committed all it had of ours: what waited goes now.
    if (this.sent === 0 && this.outbox.length > 0) this.sendAtTurnEnd();
    if (this.pending.size === 0) for (const resolve of this.drained.splice(0)) resolve();
  }

  private settle(outcome: Outcome): void {
    const pending = this.pending.get(outcome[0]);
    if (!pending) return;
    this.pending.delete(outcome[0]);
    this.inFlight -= pending.events;
    if (typeof outcome[1] === 'number') pending.resolve({ accepted: outcome[1], duplicates: outcome[2] as number });
    else pending.reject(refusals[outcome[1]](outcome[2] as string));
  }

  async state(): Promise<SinkState> {
    const s = await this.asking.ask<Questions['state']>('state', ASK_TIMEOUT_MS);
    return { ...s, lastError: s.lastError === null ? undefined : new Error(s.lastError) };
  }

  async checkWritable(): Promise<void> {
    const why = await this.asking.ask<Questions['writable']>('writable', ASK_TIMEOUT_MS);
    if (why) throw why.busy ? new StoreBusyError(why.message) : new Error(why.message);
  }

  async setDuration(slug: string, duration: number): Promise<void> {
    const why = await this.asking.ask<Questions['setDuration']>('setDuration', ASK_TIMEOUT_MS, [slug, duration]);
    if (why) throw why.busy ? new StoreBusyError(why.message) : new Error(why.message);
  }

  /** The whole service's /metrics, which the writer gathers from every worker. */
  metrics(): Promise<string> {
    return this.asking.ask<string>('metrics', ASK_TIMEOUT_MS);
  }

  /** Refuses new events and settles once every one sent has its outcome. */
  close(): Promise<void> {
    this.closed = true;
    if (this.pending.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.drained.push(resolve));
  }
}
