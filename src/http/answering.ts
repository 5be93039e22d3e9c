// What the routes are given by the app: how a route is registered, the
// access guard, the metrics, and how an answer outside polka's routing (the
// fast paths) is run, its failure answered and the answer counted.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Request } from 'polka';
import { routeOf } from '../metrics.ts';

/** What the app counts: the Metrics of ../metrics.ts, or any other that does the same. */
export interface HttpMetrics {
  /** An ingest request refused, with its events when the body was read. */
  refused(reason: string, events?: number): void;
  answered(route: string, method: string, status: number, seconds: number): void;
  /** The text of GET /metrics, and its Content-Type. */
  text(): Promise<string>;
  readonly contentType: string;
}

/** Registers a route with polka, and in the app's list of routes. */
export type On = (method: 'GET' | 'POST' | 'PUT', path: string, handler: (req: Request, res: ServerResponse) => void | Promise<void>) => void;

/** The app's guard (see app.ts): polka runs it as middleware, and the fast paths, which skip polka, run it themselves. */
export type Guard = (req: IncomingMessage, path: string, res: ServerResponse) => void;

/** Runs what answers a request (ingest, a plain lookup) outside polka: see answerCounting. */
export type AnswerThen = (
  req: IncomingMessage,
  res: ServerResponse,
  started: number,
  route: string,
  work: () => void | Promise<void>,
) => void;

export function answerCounting(
  metrics: HttpMetrics | undefined,
  onError: (error: unknown, req: IncomingMessage, res: ServerResponse) => void,
) {
  const record = (req: IncomingMessage, res: ServerResponse, started: number, route?: string) =>
    metrics?.answered(route ?? routeOf(req.url ?? ''), req.method ?? '', res.statusCode, (performance.now() - started) / 1000);

  /**
   * Runs what answers a request (ingest, a plain lookup), answers its failure
   * as a problem, and counts the answer once `work` settles, by which time it
   * has been written: a 'finish' listener a request cost a few percent.
   */
  const answerThen: AnswerThen = (req, res, started, route, work) => {
    const answered = () => record(req, res, started, route);
    const fail = (error: unknown) => {
      onError(error, req, res);
      answered();
    };
    try {
      const done = work();
      if (done instanceof Promise) done.then(answered, fail);
      else answered();
    } catch (error) {
      fail(error);
    }
  };

  /** Counts a routed answer in the metrics: now if it has been written, else once it is. */
  const observe = (req: IncomingMessage, res: ServerResponse, started: number) => {
    if (!metrics) return;
    if (res.writableEnded) record(req, res, started);
    else res.once('finish', () => record(req, res, started));
  };

  return { answerThen, observe };
}
