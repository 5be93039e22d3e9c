// The bounded in-memory queue between HTTP requests and the database, with
// group commit: the events of every request that arrived during one turn of
// the event loop are committed in one transaction, and each request is
// answered once that transaction has committed. A long turn does not make a
// batch wait: it is flushed as soon as it holds batchSize events or its oldest
// event is flushMs old.
import { StoreBusyError, type ReceivedEvent, type Store } from '../store/store.ts';
import type { EventSink, SinkState } from './sink.ts';

export interface IngestResult {
  accepted: number;
  duplicates: number;
}

export interface QueueOptions {
  /** Events a transaction takes at most (a request is never split). */
  batchSize: number;
  /** Events queued at most; past it requests are refused. */
  queueSize: number;
  /**
   * The oldest event of a batch waits at most this long before the flush
   * starts, and a flush that found the database locked is retried this often.
   */
  flushMs: number;
  /** How long events may wait for a locked database before they are refused. */
  lockWaitMs: number;
  /**
   * Told of each committed batch: its events, how many were duplicates, the
   * seconds from the start of its commit until it was durable, and of those
   * the seconds after the commit's part on the event loop (SQLite's sync).
   */
  onFlushed?: (events: number, duplicates: number, seconds: number, syncSeconds: number) => void;
  /** Told of each batch whose transaction failed. */
  onFailed?: (error: Error) => void;
}

/** The queue cannot take the request now: 503 with Retry-After. */
export class QueueFullError extends Error {}
/** The server is stopping and takes no more events. */
export class QueueClosedError extends Error {}
/** The transaction holding these events failed; none of them was stored. */
export class FlushError extends Error {}

/**
 * How long a failed flush keeps the server unready even though a probe write
 * works: a small probe can fit on a disk that a batch no longer fits on.
 */
const FAILURE_MEMORY_MS = 5_000;

interface Waiting {
  events: ReceivedEvent[];
  enqueuedAt: number;
  resolve: (result: IngestResult) => void;
  reject: (error: Error) => void;
}

export interface QueueStats {
  /** Events queued and not yet committed. */
  depth: number;
  /** Events this server stored; a duplicate of a stored id is not stored again, so it is not counted. */
  committedEvents: number;
  duplicateEvents: number;
  batches: number;
  failedBatches: number;
  /** The last flush's failure, until a flush succeeds. */
  lastError: Error | undefined;
}

export class IngestQueue implements EventSink {
  private waiting: Waiting[] = [];
  private depth = 0;
  private flushing = false;
  private scheduled = false;
  /** The last flush found the database locked: wait for the retry timer. */
  private locked = false;
  private closed = false;
  private drained: (() => void)[] = [];
  private committedEvents = 0;
  private duplicateEvents = 0;
  private batches = 0;
  private failedBatches = 0;
  private lastError: Error | undefined;
  private lastErrorAt = 0;

  constructor(
    private readonly store: Store,
    private readonly options: QueueOptions,
  ) {}

  /** Queues one request's events; settles when they are committed or refused. */
  submit(events: ReceivedEvent[]): Promise<IngestResult> {
    if (this.closed) return Promise.reject(new QueueClosedError('the server is shutting down'));
    if (this.depth + events.length > this.options.queueSize) {
      return Promise.reject(
        new QueueFullError(`the ingest queue holds ${this.depth} of ${this.options.queueSize} events; retry shortly`),
      );
    }
    const enqueuedAt = Date.now();
    const settled = new Promise<IngestResult>((resolve, reject) => {
      this.waiting.push({ events, enqueuedAt, resolve, reject });
    });
    this.depth += events.length;
    const full = this.depth >= this.options.batchSize;
    const old = enqueuedAt - this.waiting[0].enqueuedAt >= this.options.flushMs;
    if ((full || old) && !this.flushing && !this.locked) void this.flush();
    else this.schedule(0);
    return settled;
  }

  stats(): QueueStats {
    return {
      depth: this.depth,
      committedEvents: this.committedEvents,
      duplicateEvents: this.duplicateEvents,
      batches: this.batches,
      failedBatches: this.failedBatches,
      lastError: this.lastError,
    };
  }

  get capacity(): number {
    return this.options.queueSize;
  }

  state(): SinkState {
    const { depth, committedEvents, duplicateEvents, lastError } = this.stats();
    return { depth, committedEvents, duplicateEvents, lastError };
  }

  /**
   * Tries a write now. Success clears a flush failure older than a few
   * seconds: the server becomes ready again by itself when a fault goes,
   * with or without traffic.
   */
  async checkWritable(): Promise<void> {
    if (this.flushing) return;
    try {
      await this.store.probeWritable();
      if (Date.now() - this.lastErrorAt > FAILURE_MEMORY_MS) this.lastError = undefined;
    } catch (error) {
      if (!(error instanceof StoreBusyError)) this.failed(error as Error);
      throw error;
    }
  }

  private failed(error: Error): void {
    this.lastError = error;
    this.lastErrorAt = Date.now();
  }

  /** Refuses new events and settles once every queued one is committed or refused. */
  close(): Promise<void> {
    this.closed = true;
    if (this.waiting.length === 0 && !this.flushing) return Promise.resolve();
    return new Promise((resolve) => this.drained.push(resolve));
  }

  private schedule(delayMs: number): void {
    if (this.scheduled || this.flushing || this.waiting.length === 0) return;
    this.scheduled = true;
    // setImmediate runs after the poll phase: what arrived in this turn is batched, and an idle server waits for nothing.
    const run = () => {
      this.scheduled = false;
      void this.flush();
    };
    if (delayMs > 0) setTimeout(run, delayMs);
    else setImmediate(run);
  }

  private takeBatch(): Waiting[] {
    let count = 0;
    let take = 0;
    while (take < this.waiting.length) {
      const size = this.waiting[take].events.length;
      if (take > 0 && count + size > this.options.batchSize) break;
      count += size;
      take += 1;
    }
    return this.waiting.splice(0, take);
  }

  private async flush(): Promise<void> {
    // A flush that started in submit() may have left nothing for the scheduled one.
    if (this.flushing || this.waiting.length === 0) return;
    const batch = this.takeBatch();
    const events = batch.length === 1 ? batch[0].events : batch.flatMap((w) => w.events);
    this.flushing = true;
    this.locked = false;
    let retryInMs = 0;
    const started = process.hrtime.bigint();
    try {
      const durable = this.store.ingest(events);
      const committed = process.hrtime.bigint();
      const duplicate = await durable;
      const done = process.hrtime.bigint();
      const seconds = Number(done - started) / 1e9;
      let i = 0;
      let batchDuplicates = 0;
      for (const waiting of batch) {
        let duplicates = 0;
        for (let end = i + waiting.events.length; i < end; i++) if (duplicate[i]) duplicates += 1;
        waiting.resolve({ accepted: waiting.events.length - duplicates, duplicates });
        batchDuplicates += duplicates;
      }
      this.duplicateEvents += batchDuplicates;
      this.options.onFlushed?.(events.length, batchDuplicates, seconds, Number(done - committed) / 1e9);
      this.committedEvents += events.length - batchDuplicates;
      this.depth -= events.length;
      this.batches += 1;
      this.lastError = undefined;
    } catch (error) {
      if (error instanceof StoreBusyError && Date.now() - batch[0].enqueuedAt < this.options.lockWaitMs) {
        // Locked by another writer: keep the events, in order, and try again shortly.
        this.waiting.unshift(...batch);
        this.locked = true;
        retryInMs = this.options.flushMs;
      } else {
        this.depth -= events.length;
        this.failedBatches += 1;
        this.failed(error as Error);
        this.options.onFailed?.(error as Error);
        const reason = new FlushError(`the events could not be stored: ${(error as Error).message}`);
        for (const waiting of batch) waiting.reject(reason);
      }
    } finally {
      this.flushing = false;
    }
    if (this.waiting.length > 0) this.schedule(retryInMs);
    else for (const resolve of this.drained.splice(0)) resolve();
  }
}
