// What the HTTP layer hands events to and asks about the writer: the ingest
// queue itself when one process serves (IngestQueue), or a link to the writer
// process when several workers do (../workers/writer-link.ts).
import type { ReceivedEvent } from '../store/store.ts';
import type { IngestResult } from './queue.ts';

/** Where the writer is, as a probe or the dashboard reads it. */
export interface SinkState {
  /** Events queued and not yet committed. */
  depth: number;
  /** Events the writer stored since it started; duplicates of a stored id are not counted. */
  committedEvents: number;
  duplicateEvents: number;
  /** The last flush's failure, until a flush succeeds. */
  lastError: Error | undefined;
}

export interface EventSink {
  /** Events the queue holds at most: a larger batch could never be taken. */
  readonly capacity: number;
  /** Queues one request's events; settles when they are committed and durable, or refused. */
  submit(events: ReceivedEvent[]): Promise<IngestResult>;
  state(): SinkState | Promise<SinkState>;
  /** Sets a movie's duration (SPEC section 7); settles once it is durable. */
  setDuration(slug: string, duration: number): Promise<void>;
  /** Tries a write now; throws StoreBusyError while another writer holds the lock, or why it cannot write. */
  checkWritable(): Promise<void>;
}
