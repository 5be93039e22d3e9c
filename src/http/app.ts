// The HTTP API of SPEC section 3, assembled: the routes of ./routes/, the
// access guard before them, and the dispatch that answers ingest and plain
// lookups without polka's routing.
import type { IncomingMessage, ServerResponse } from 'node:http';
import polka, { type Request } from 'polka';
import { EpisodeLog, type Logger } from '../log.ts';
import { answerCounting, type Guard, type On } from './answering.ts';
import { bearerCheck } from './auth.ts';
import { BodyBudget, discardRest } from './body.ts';
import { waitBehindWrites } from './connection-order.ts';
import { errorAnswers } from './errors.ts';
import { badRequest, HttpProblem, notFound } from './problem.ts';
import { healthRoutes, type HealthSources } from './routes/health.ts';
import { countRefused, INGEST_PATHS, ingestRoutes } from './routes/ingest.ts';
import { analyticsRoutes } from './routes/analytics.ts';
import { lookupRoutes } from './routes/lookups.ts';
import { pageRoutes } from './routes/pages.ts';

/** The app's options; what the health routes read of them is in HealthSources. */
export interface AppOptions extends HealthSources {
  ingestToken?: string;
  readToken?: string;
  /** Largest request body, in bytes. */
  bodyLimit: number;
  /** Most bytes of all the bodies being read at once, as received; past it a POST gets 503 busy-reading. */
  bodyMemory?: number;
  log: Logger;
  /** Where faults that repeat are logged as episodes; one of its own on `log` when not given. */
  episodes?: EpisodeLog;
}

export const DEFAULT_BODY_MEMORY = 64 * 1024 * 1024;

/** Paths anyone may read, token or not: health, and the API's own description. */
function isPublic(method: string | undefined, path: string): boolean {
  return path === '/livez' || path === '/readyz' || path === '/openapi.json' || path === '/docs' ||
    path.startsWith('/docs/') || path.startsWith('/problems/') || path.startsWith('/dashboard/') || (path === '/' && method === 'GET');
}

/**
 * A request target in absolute form (`POST http://host/events`, sent by some
 * proxies) as the origin form the routes know: RFC 9112 section 3.2.2 has a
 * server accept both.
 */
function originForm(target: string): string {
  if (!/^https?:\/\//i.test(target)) return target;
  try {
    const url = new URL(target);
    return url.pathname + url.search;
  } catch {
    return target;
  }
}

export function createApp(options: AppOptions) {
  const { isClosing, log, metrics } = options;
  const checkIngest = bearerCheck(options.ingestToken, 'ingest');
  const checkRead = bearerCheck(options.readToken, 'reading');
  const episodes = options.episodes ?? new EpisodeLog(log);
  const { onError, answerProblem } = errorAnswers(log, episodes, (req, kind) => countRefused(metrics, req, kind));
  const { answerThen, observe } = answerCounting(metrics, onError);

  const app = polka<Request>({
    onError,
    onNoMatch(req, res) {
      discardRest(req);
      const allow = INGEST_PATHS.has(req.path) ? 'POST' : undefined;
      if (allow && req.method !== 'POST') {
        answerProblem(req, res, new HttpProblem(405, 'method-not-allowed', 'Method not allowed', `${req.path} takes POST`, {
          headers: { Allow: allow },
        }));
        return;
      }
      answerProblem(req, res, notFound(`no route for ${req.method} ${req.path}`));
    },
  });

  /** Every route, as `METHOD /path/:param`: the OpenAPI test checks that the document has each one. */
  const routes: string[] = [];
  const on: On = (method, path, handler) => {
    routes.push(`${method} ${path}`);
    if (method === 'GET') app.get(path, handler);
    else if (method === 'PUT') app.put(path, handler);
    else app.post(path, handler);
  };

  /** What every request goes through before its route: the closing notice, and access. */
  const guard: Guard = (req, path, res) => {
    // Draining or closing: each answer tells its client to reconnect, so that no idle connection is cut under it at the end.
    if (isClosing() || options.isDraining?.()) res.setHeader('Connection', 'close');
    if (isPublic(req.method, path)) return;
    // A write (events, a movie's duration) takes the ingest token; a read the read token.
    (req.method === 'POST' || req.method === 'PUT' ? checkIngest : checkRead)?.(req);
  };

  app.use((req, res, next) => {
    // polka leaves a malformed %-escape as it was; refuse it rather than look up the raw text.
    for (const segment of req.path.split('/')) {
      try {
        decodeURIComponent(segment);
      } catch {
        throw badRequest(`the path segment ${JSON.stringify(segment)} is not valid percent-encoding`);
      }
    }
    guard(req, req.path, res);
    next();
  });

  const bodyLimits = { maxBytes: options.bodyLimit, budget: new BodyBudget(options.bodyMemory ?? DEFAULT_BODY_MEMORY) };
  const write = ingestRoutes(on, { sink: options.sink, log, bodyLimits, guard, answerThen });
  healthRoutes(on, options);
  pageRoutes(app, on);
  const plainLookup = lookupRoutes(on, { store: options.store, guard, answerThen });
  analyticsRoutes(on, { store: options.store, sink: options.sink, bodyLimits });

  const handle = (req: IncomingMessage, res: ServerResponse) => {
    if (waitBehindWrites(req, () => handle(req, res))) return;
    const started = metrics ? performance.now() : 0;
    if (req.url !== undefined && req.url.charCodeAt(0) !== 47 /* '/' */) req.url = originForm(req.url);
    // Ingest skips polka's routing too: its paths have no parameters, and nothing but its handler can answer them.
    if (req.method === 'POST' && INGEST_PATHS.has(req.url ?? '')) {
      write(req, res, started);
      return;
    }
    // A plain lookup is counted when it is answered, at the end of the turn.
    if (req.method === 'GET' && plainLookup(req, res, started)) return;
    app.handler(req as Request, res, undefined as never);
    observe(req, res, started);
  };
  return Object.assign(handle, { routes });
}
