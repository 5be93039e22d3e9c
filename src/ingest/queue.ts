// The bounded in-memory queue between HTTP requests and the database, with
// group commit: the events of every request that arrived during one turn of
// the event loop are committed in one transaction, and each request is
// answered once that transaction has committed. A long turn does not make a
// batch wait: it is flushed as soon as it holds batchSize events or its oldest
// event is flushMs old. A store over the network (PostgreSQL) takes several
// batches at once: a further one starts when its events are that full or that
// old, and never with an event of a pair that a batch in flight holds, so
// that each pair's events still commit in the order they arrived.
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
  /** The request's pairs, when batches run side by side. */
  pairs: string[] | undefined;
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
  /** Events queued or in flight. */
  private depth = 0;
  /** Events queued and not yet in a batch. */
  private waitingEvents = 0;
  private inFlight = 0;
  private readonly maxInFlight: number;
  /** The pairs of the batches in flight. */
  private readonly busyPairs = new Set<string>();
  private scheduled = false;
  private dueTimer: NodeJS.Timeout | undefined;
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
  ) {
    this.maxInFlight = store.batchesInFlight ?? 1;
  }

  /** Queues one request's events; settles when they are committed or refused. */
  submit(events: ReceivedEvent[]): Promise<IngestResult> {
    if (this.closed) return Promise.reject(new QueueClosedError('the server is shutting down'));
    if (this.depth + events.length > this.options.queueSize) {
      return Promise.reject(
        new QueueFullError(`the ingest queue holds ${this.depth} of ${this.options.queueSize} events; retry shortly`),
      );
    }
    const enqueuedAt = Date.now();
    const pairs = this.maxInFlight > 1 ? events.map((e) => `${e.user}\n${e.slug}`) : undefined;
    const settled = new Promise<IngestResult>((resolve, reject) => {
      this.waiting.push({ events, enqueuedAt, pairs, resolve, reject });
    });
    this.depth += events.length;
    this.waitingEvents += events.length;
    // Beside a batch in flight, a request starts a further one only if it fills it: the oldest waiting may be
    // held behind its pair, and each new request would then start a batch of its own. The timer sees to age.
    if (this.inFlight === 0 ? this.due() : this.waitingEvents >= this.options.batchSize) this.pump();
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

  /** Sets a movie's duration: not an event, so not queued; a database locked by a rebuild refuses it (503, busy). */
  async setDuration(slug: string, duration: number): Promise<void> {
    await this.store.analytics.setDuration(slug, duration);
  }

  /**
   * Tries a write now. Success clears a flush failure older than a few
   * seconds: the server becomes ready again by itself when a fault goes,
   * with or without traffic.
   */
  async checkWritable(): Promise<void> {
    if (this.inFlight > 0) return;
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
    if (this.waiting.length === 0 && this.inFlight === 0) return Promise.resolve();
    return new Promise((resolve) => this.drained.push(resolve));
  }

  /** Whether the waiting events fill a batch or the oldest has waited flushMs. */
  private due(): boolean {
    if (this.waiting.length === 0) return false;
    return this.waitingEvents >= this.options.batchSize || Date.now() - this.waiting[0].enqueuedAt >= this.options.flushMs;
  }

  /**
   * Starts what may start now: a batch whenever none is in flight, and a
   * further one, up to the store's limit, once its events are due.
   */
  private pump(): void {
    while (this.waiting.length > 0 && !this.locked && this.inFlight < this.maxInFlight) {
      if (this.inFlight > 0 && !this.due()) {
        this.schedule(0);
        return;
      }
      const batch = this.takeBatch();
      if (batch.length === 0) return; // every waiting request has a pair in flight: a commit brings us back
      void this.commit(batch);
    }
  }

  private schedule(delayMs: number): void {
    if (this.waiting.length === 0 || this.inFlight >= this.maxInFlight) return;
    if (delayMs === 0 && this.inFlight > 0) {
      // A further batch: when the oldest waiting event is due, unless a commit comes first.
      if (this.dueTimer === undefined) {
        const wait = Math.max(1, this.waiting[0].enqueuedAt + this.options.flushMs - Date.now());
        this.dueTimer = setTimeout(() => {
          this.dueTimer = undefined;
          this.pump();
        }, wait);
      }
      return;
    }
    if (this.scheduled) return;
    this.scheduled = true;
    // setImmediate runs after the poll phase: what arrived in this turn is batched, and an idle server waits for nothing.
    const run = () => {
      this.scheduled = false;
      this.locked = false;
      this.pump();
    };
    if (delayMs > 0) setTimeout(run, delayMs);
    else setImmediate(run);
  }

  private takeBatch(): Waiting[] {
    let count = 0;
    let take = 0;
    if (this.maxInFlight === 1) {
      while (take < this.waiting.length) {
        const size = this.waiting[take].events.length;
        if (take > 0 && count + size > this.options.batchSize) break;
        count += size;
        take += 1;
      }
      this.waitingEvents -= count;
      return this.waiting.splice(0, take);
    }
    // Requests with a pair in flight, or behind one that has, wait: a pair's events keep their order.
    const taken: Waiting[] = [];
    const left: Waiting[] = [];
    const blocked = new Set<string>();
    let i = 0;
    for (; i < this.waiting.length; i++) {
      const waiting = this.waiting[i];
      if (taken.length > 0 && count + waiting.events.length > this.options.batchSize) break;
      if (waiting.pairs!.some((pair) => this.busyPairs.has(pair) || blocked.has(pair))) {
        for (const pair of waiting.pairs!) blocked.add(pair);
        left.push(waiting);
      } else {
        taken.push(waiting);
        count += waiting.events.length;
      }
    }
    for (const waiting of taken) for (const pair of waiting.pairs!) this.busyPairs.add(pair);
    this.waiting = i < this.waiting.length ? left.concat(this.waiting.slice(i)) : left;
    this.waitingEvents -= count;
    return taken;
  }

  private async commit(batch: Waiting[]): Promise<void> {
    const events = batch.length === 1 ? batch[0].events : batch.flatMap((w) => w.events);
    this.inFlight += 1;
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
        this.waitingEvents += events.length;
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
      this.inFlight -= 1;
      if (this.maxInFlight > 1) for (const waiting of batch) for (const pair of waiting.pairs!) this.busyPairs.delete(pair);
    }
    this.schedule(retryInMs);
    if (this.waiting.length === 0 && this.inFlight === 0) {
      clearTimeout(this.dueTimer);
      this.dueTimer = undefined;
      for (const resolve of this.drained.splice(0)) resolve();
    }
  }
}
