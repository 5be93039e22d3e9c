// The order of requests on one connection (RFC 9112 section 9.3): a request
// pipelined behind a write waits for that write's answer.
import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';

/** A connection's writes not yet answered, and the requests that came after them on it. */
interface ConnectionWrites {
  pending: number;
  after: (() => void)[];
}
const WRITES = Symbol('watchtime.writes');
type TrackedSocket = Socket & { [WRITES]?: ConnectionWrites };
/** Requests a connection may pipeline behind a write before it is read no further. */
const MAX_WAITING_BEHIND_A_WRITE = 32;

/**
 * Runs a write, counted as in flight on its connection until it settles: a
 * request pipelined behind it waits (RFC 9112 section 9.3), so that a lookup
 * never answers from before a write it follows, nor a later write overtakes it.
 */
export async function tracked(req: IncomingMessage, work: () => Promise<void>): Promise<void> {
  const socket = req.socket as TrackedSocket;
  const writes = (socket[WRITES] ??= { pending: 0, after: [] });
  writes.pending += 1;
  try {
    await work();
  } finally {
    writes.pending -= 1;
    if (writes.pending === 0 && writes.after.length > 0) {
      const waiting = writes.after.splice(0);
      if (socket.isPaused()) socket.resume();
      for (const next of waiting) next();
    }
  }
}

/**
 * Holds a request back while a write before it on its connection is in
 * flight: `run` is called once that write is answered. Returns false, and
 * does nothing, when there is none.
 */
export function waitBehindWrites(req: IncomingMessage, run: () => void): boolean {
  const writes = (req.socket as TrackedSocket)[WRITES];
  if (writes === undefined || writes.pending === 0) return false;
  writes.after.push(run);
  // A client that pipelines without end behind a write that waits (a locked database) is read no further.
  if (writes.after.length === MAX_WAITING_BEHIND_A_WRITE) req.socket.pause();
  return true;
}
