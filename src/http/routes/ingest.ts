// POST / and POST /events (SPEC section 1): the body read, parsed and checked,
// its events handed to the sink, and the answer given once they are committed.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { MAX_BATCH_EVENTS, validateBatch } from '../../event.ts';
import type { EventSink } from '../../ingest/sink.ts';
import type { Logger } from '../../log.ts';
import { routeOf } from '../../metrics.ts';
import type { ReceivedEvent } from '../../store/store.ts';
import type { AnswerThen, Guard, HttpMetrics, On } from '../answering.ts';
import { bodyFormat, readBody, type BodyLimits } from '../body.ts';
import { tracked } from '../connection-order.ts';
import { CLIENT_CLOSED_REQUEST } from '../errors.ts';
import { invalid, parseEvents } from '../parse-events.ts';
import { badRequest, sendJson } from '../problem.ts';

export const INGEST_PATHS = new Set(['/', '/events']);

/**
 * How many events a refused request held, for the metrics; set only on
 * refusal, so the accepted pay nothing. Keyed by request, so one map serves
 * every app in the process; countRefused reads it, for onError (../errors.ts).
 */
const eventsRefused = new WeakMap<IncomingMessage, number>();

/** Counts a request to an ingest path answered with a problem, with its events when its body was read. */
export function countRefused(metrics: HttpMetrics | undefined, req: IncomingMessage, reason: string): void {
  if (req.method === 'POST' && INGEST_PATHS.has(routeOf(req.url ?? ''))) metrics?.refused(reason, eventsRefused.get(req));
}

export interface IngestOptions {
  sink: EventSink;
  log: Logger;
  bodyLimits: BodyLimits;
  guard: Guard;
  answerThen: AnswerThen;
}

/** Registers the ingest routes; returns the fast path, for a POST that the app answers before polka's routing. */
export function ingestRoutes(on: On, { sink, log, bodyLimits, guard, answerThen }: IngestOptions) {
  const maxBatch = Math.min(MAX_BATCH_EVENTS, sink.capacity);
  // A batch the queue could never hold is the client's to split, not a 503 to retry for ever.
  const maxBatchWhy = maxBatch < MAX_BATCH_EVENTS ? ' on this server (its --queue-size)' : '';
  const ingest = async (req: IncomingMessage, res: ServerResponse) => {
    const receivedAt = Date.now();
    const format = bodyFormat(req);
    const text = await readBody(req, bodyLimits);
    const { values, single } = parseEvents(text, format, maxBatch, maxBatchWhy);
    try {
      await accept(req, res, values, single, receivedAt);
    } catch (error) {
      eventsRefused.set(req, values.length);
      throw error;
    }
  };

  /** A request's events, parsed: checked, queued, and answered once committed. */
  const accept = async (req: IncomingMessage, res: ServerResponse, values: unknown[], single: boolean, receivedAt: number) => {
    if (values.length === 0) throw badRequest('the body holds no event', [{ pointer: '', message: 'a batch needs at least one event' }]);
    const checked = validateBatch(values, single);
    if ('errors' in checked) {
      const detail = single
        ? 'the event is invalid; nothing was stored'
        : `${checked.invalid} of ${values.length} events are invalid; nothing was stored`;
      throw invalid('invalid-event', detail, checked.errors);
    }
    // Stamped in place rather than copied: under load the queue holds many events.
    const events = checked.events as ReceivedEvent[];
    for (const event of events) event.receivedAt = receivedAt;
    const result = await sink.submit(events);
    if (req.socket.destroyed) {
      // Committed, and counted as accepted; only the answer is lost. A retry with the same ids is a duplicate.
      res.statusCode = CLIENT_CLOSED_REQUEST;
      log.debug({ method: req.method, url: req.url, status: CLIENT_CLOSED_REQUEST, ...result }, 'the client left before the answer to its committed events');
      return;
    }
    sendJson(res, 200, result);
  };

  // The same ingest for what polka routes (a query string, a trailing slash), counted as a write alike.
  const routedIngest = (req: IncomingMessage, res: ServerResponse) => tracked(req, () => ingest(req, res));
  on('POST', '/', routedIngest);
  on('POST', '/events', routedIngest);

  /** Ingest on the fast path, a write its connection waits for (tracked). */
  const write = (req: IncomingMessage, res: ServerResponse, started: number) =>
    answerThen(req, res, started, req.url!, () =>
      tracked(req, () => {
        guard(req, req.url!, res);
        return ingest(req, res);
      }),
    );
  return write;
}
