// What a failed request is answered: a problem (RFC 9457, ./problem.ts) with
// the log line its kind deserves, or nothing for a client that has gone.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { FlushError, QueueClosedError, QueueFullError } from '../ingest/queue.ts';
import { StoreBusyError, StoreUnavailableError } from '../store/store.ts';
import type { EpisodeLog, Logger } from '../log.ts';
import { ClientGoneError, discardRest } from './body.ts';
import { HttpProblem, sendProblem, serviceUnavailable } from './problem.ts';
import { requestId } from './request-id.ts';

/** HTTP's own status for a client that closed its request before the answer (nginx's). */
export const CLIENT_CLOSED_REQUEST = 499;

function toProblem(error: unknown): HttpProblem {
  if (error instanceof HttpProblem) return error;
  if (error instanceof QueueFullError) return serviceUnavailable('queue-full', 'Ingest queue full', error.message);
  if (error instanceof QueueClosedError) return serviceUnavailable('shutting-down', 'Shutting down', error.message);
  // Busy: a write outside the queue (a movie's duration) met another process's write lock (a rebuild).
  if (error instanceof FlushError || error instanceof StoreUnavailableError || error instanceof StoreBusyError) {
    return serviceUnavailable('storage-unavailable', 'Storage unavailable', error.message);
  }
  return new HttpProblem(500, 'internal', 'Internal error', 'the server failed to answer; see its log');
}

/**
 * The app's answers to failures: `onError` for what a handler threw (polka's
 * and the fast paths'), `answerProblem` for a problem made on purpose.
 * `refused` is told the kind of each problem answered, for the ingest
 * refusals' metrics.
 */
export function errorAnswers(log: Logger, episodes: EpisodeLog, refused: (req: IncomingMessage, kind: string) => void) {
  const onError = (error: unknown, req: IncomingMessage, res: ServerResponse) => {
    // Nobody to answer: the client's fault, not the server's, so no problem, no stack and no refusal counted.
    if (error instanceof ClientGoneError) {
      res.statusCode = error.status;
      log.debug({ method: req.method, url: req.url, status: error.status }, error.message);
      return;
    }
    // Whatever of the body is still coming is read and dropped, so that the client gets this answer.
    discardRest(req);
    const problem = toProblem(error);
    refused(req, problem.kind);
    // A lookup of a name with no events is an answer, not a refusal: no log line.
    if (problem.kind === 'not-found') sendProblem(res, problem, requestId(req));
    else answerProblem(req, res, problem, problem.kind === 'internal' ? error : undefined);
  };

  /**
   * Answers a problem, with the request's id as its `instance`, and logs it.
   * A client's fault (4xx) is a debug line: every scanner's 404 is not news,
   * and the metrics count them all. The server's own (5xx) is an episode: its
   * first request in full, at error for a fault (a failed commit, a bug) and
   * at warn for overload, then counts while it lasts, then a line as it ends.
   * /readyz's 503 is a probe's answer, not a refusal.
   */
  const answerProblem = (req: IncomingMessage, res: ServerResponse, problem: HttpProblem, fault?: unknown) => {
    const id = requestId(req);
    const fields = { reqId: id, method: req.method, url: req.url, status: problem.status, type: problem.kind, detail: problem.detail };
    if (fault !== undefined) {
      const error = fault as Error;
      episodes.occurred(`internal: ${error.name}: ${String(error.message).slice(0, 100)}`, 'error', { ...fields, err: fault }, 'request failed');
    } else if (problem.status < 500 || problem.kind === 'not-ready') {
      log.debug(fields, 'request refused');
    } else {
      episodes.occurred(problem.kind, problem.kind === 'storage-unavailable' ? 'error' : 'warn', fields, 'request refused');
    }
    sendProblem(res, problem, id);
  };

  return { onError, answerProblem };
}
