// The messages between the writer (the primary process) and its HTTP
// workers, over node:cluster's IPC channel (JSON lines on a Unix socket).
// Events travel flattened: a JSON array of strings and numbers costs less
// to write and to read than as many objects.
import type { ReceivedEvent } from '../store/store.ts';
import type { MetricsSnapshot } from '../metrics.ts';
import type { ServerConfig } from '../config.ts';
import type { LogLevel } from '../log.ts';

/** One request's events: its number on the worker, when it was received, then user, slug, at, id (or null) for each. */
export type Submission = [request: number, receivedAt: number, ...flat: (string | number | null)[]];

/** Why the writer refused a request: the worker answers it as the one-process server would. */
export type Refusal = 'queue-full' | 'closed' | 'flush-failed' | 'internal';

/** [request, accepted, duplicates] once committed, or [request, refusal, message]. */
export type Outcome = [request: number, accepted: number, duplicates: number] | [request: number, refusal: Refusal, message: string];

/** What the writer answers to a worker's question. */
export interface Questions {
  state: { depth: number; committedEvents: number; duplicateEvents: number; lastError: string | null };
  /** null: writable; else why not, and whether another writer (a rebuild) holds the lock. */
  writable: { busy: boolean; message: string } | null;
  /** The text of /metrics for the whole service. */
  metrics: string;
  /** A movie's duration set (its arguments: slug, duration); null once durable, else why not. */
  setDuration: { busy: boolean; message: string } | null;
}

/** What a worker answers to the writer's question. */
export interface WorkerQuestions {
  snapshot: MetricsSnapshot;
  /** When /readyz was last probed on this worker, in ms since the epoch; 0 for never. */
  probedAt: number;
}

/** The worker's configuration: the server's, and its own number (1..N) for its log lines. */
export interface WorkerSetup {
  config: ServerConfig;
  worker: number;
  logLevel: LogLevel;
}

export type ToWriter =
  /** The worker listens for messages: those sent before are lost (an ES module's code runs after the channel opens). */
  | { t: 'ready' }
  | { t: 'submit'; items: Submission[] }
  | { t: 'ask'; id: number; what: keyof Questions; args?: unknown[] }
  | { t: 'answer'; id: number; value?: unknown; error?: string }
  | { t: 'listening'; port: number }
  /** The worker could not start; `code` is the error's (EADDRINUSE: the port is taken). */
  | { t: 'failed'; message: string; code?: string };

export type ToWorker =
  | { t: 'start'; setup: WorkerSetup }
  | { t: 'outcomes'; items: Outcome[] }
  | { t: 'ask'; id: number; what: keyof WorkerQuestions }
  | { t: 'answer'; id: number; value?: unknown; error?: string }
  | { t: 'drain' }
  | { t: 'close' };

export function flatten(request: number, events: ReceivedEvent[]): Submission {
  const item: Submission = [request, events[0].receivedAt];
  for (const e of events) item.push(e.user, e.slug, e.at, e.id ?? null);
  return item;
}

export function unflatten(item: Submission): ReceivedEvent[] {
  const receivedAt = item[1];
  const events: ReceivedEvent[] = [];
  for (let i = 2; i < item.length; i += 4) {
    const id = item[i + 3] as string | null;
    const event: ReceivedEvent = { user: item[i] as string, slug: item[i + 1] as string, at: item[i + 2] as number, receivedAt };
    if (id !== null) event.id = id;
    events.push(event);
  }
  return events;
}

/** A process at the other end of the channel: the worker's `process`, or the writer's `cluster.Worker`. */
export interface Channel<Out> {
  send(message: Out, callback?: (error: Error | null) => void): boolean;
}

/**
 * Questions over a channel, each answered once: `ask` sends one and settles
 * with its answer; `answer` replies to one received. Unanswered questions
 * fail when the other end goes (`abandon`) or after `timeoutMs`.
 */
export class Asking<Out extends { t: string }> {
  private next = 1;
  private readonly waiting = new Map<number, { resolve: (value: unknown) => void; reject: (error: Error) => void; timer: NodeJS.Timeout }>();

  constructor(private readonly channel: Channel<Out>) {}

  ask<T>(what: string, timeoutMs: number, args?: unknown[]): Promise<T> {
    const id = this.next++;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(id);
        reject(new Error(`no answer to ${what} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiting.set(id, { resolve: resolve as (value: unknown) => void, reject, timer });
      // A channel already closed fails the question by its timeout, not by an 'error' event that nothing handles.
      this.channel.send({ t: 'ask', id, what, args } as unknown as Out, () => undefined);
    });
  }

  /** An answer to one of ours arrived. */
  settle(id: number, value: unknown, error: string | undefined): void {
    const waiting = this.waiting.get(id);
    if (!waiting) return; // timed out
    this.waiting.delete(id);
    clearTimeout(waiting.timer);
    if (error === undefined) waiting.resolve(value);
    else waiting.reject(new Error(error));
  }

  /** Answers a question of the other end with what `work` gives. */
  answer(id: number, work: () => unknown): void {
    Promise.resolve()
      .then(work)
      .then(
        (value) => this.channel.send({ t: 'answer', id, value } as unknown as Out, () => undefined),
        (error: Error) => this.channel.send({ t: 'answer', id, error: error.message } as unknown as Out, () => undefined),
      )
      .catch(() => undefined); // the other end went away
  }

  abandon(why: string): void {
    for (const [id, waiting] of this.waiting) {
      clearTimeout(waiting.timer);
      waiting.reject(new Error(why));
      this.waiting.delete(id);
    }
  }
}
