// The HTTP API of SPEC section 3: routes, access checks and error answers.
import type { IncomingMessage, ServerResponse } from 'node:http';
import polka, { type Request } from 'polka';
import sirv from 'sirv';
import { checkName, MAX_BATCH_EVENTS, validateBatch } from '../event.ts';
import { FlushError, QueueClosedError, QueueFullError, type IngestQueue } from '../ingest/queue.ts';
import { nothingFor, StoreBusyError, type ReceivedEvent, type Store } from '../store/store.ts';
import { EpisodeLog, type Logger } from '../log.ts';
import { LOOKUP_ROUTES, routeOf, type Metrics } from '../metrics.ts';
import { bearerCheck } from './auth.ts';
import { tracked, waitBehindWrites } from './connection-order.ts';
import { DASHBOARD, DOCS_PAGE, problemPage, sendHtml, SWAGGER_UI, UPLOT } from './pages.ts';
import { nameParam, pageLinks, pageParams } from './params.ts';
import { requestId } from './request-id.ts';
import { invalid, parseEvents } from './parse-events.ts';
import { openApiDocument, PROBLEM_TYPES } from './openapi.ts';
import { BodyBudget, bodyFormat, ClientGoneError, discardRest, readBody } from './body.ts';
import { badRequest, HttpProblem, notFound, notFoundProblem, sendJson, sendProblem, serviceUnavailable } from './problem.ts';

export interface AppOptions {
  store: Store;
  queue: IngestQueue;
  ingestToken?: string;
  readToken?: string;
  /** Largest request body, in bytes. */
  bodyLimit: number;
  /** Most bytes of all the bodies being read at once, as received; past it a POST gets 503 busy-reading. */
  bodyMemory?: number;
  /** True once shutdown has begun and the server no longer takes connections. */
  isClosing: () => boolean;
  /** True while the server, told to stop, still serves but tells load balancers to go (the lame duck). */
  isDraining?: () => boolean;
  /** Told of each readiness probe: the shutdown waits for a load balancer only if one is watching. */
  onReadinessProbe?: () => void;
  log: Logger;
  /** Where faults that repeat are logged as episodes; one of its own on `log` when not given. */
  episodes?: EpisodeLog;
  metrics?: Metrics;
}

const INGEST_PATHS = new Set(['/', '/events']);
export const DEFAULT_BODY_MEMORY = 64 * 1024 * 1024;
/** HTTP's own status for a client that closed its request before the answer (nginx's). */
const CLIENT_CLOSED_REQUEST = 499;

/** Paths anyone may read, token or not: health, and the API's own description. */
function isPublic(method: string | undefined, path: string): boolean {
  return path === '/livez' || path === '/readyz' || path === '/openapi.json' || path === '/docs' ||
    path.startsWith('/docs/') || path.startsWith('/problems/') || path.startsWith('/dashboard/') || (path === '/' && method === 'GET');
}

/** The three lookups' paths, without query: a movie's slug, or a user's name and maybe a slug. */
const LOOKUP_PATH = /^\/(?:movies\/([^/?#]+)\/watch-time|users\/([^/?#]+)\/(?:watch-time|movies\/([^/?#]+)\/latest-moment))$/;

/** A path segment decoded, if it decodes to a valid name. */
function plainName(segment: string): string | undefined {
  let name = segment;
  if (segment.includes('%')) {
    try {
      name = decodeURIComponent(segment);
    } catch {
      return undefined;
    }
  }
  return checkName(name, 'user').length === 0 ? name : undefined;
}

function toProblem(error: unknown): HttpProblem {
  if (error instanceof HttpProblem) return error;
  if (error instanceof QueueFullError) return serviceUnavailable('queue-full', 'Ingest queue full', error.message);
  if (error instanceof QueueClosedError) return serviceUnavailable('shutting-down', 'Shutting down', error.message);
  if (error instanceof FlushError) return serviceUnavailable('storage-unavailable', 'Storage unavailable', error.message);
  return new HttpProblem(500, 'internal', 'Internal error', 'the server failed to answer; see its log');
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
  const { store, queue, isClosing, log, metrics } = options;
  const checkIngest = bearerCheck(options.ingestToken, 'ingest');
  const checkRead = bearerCheck(options.readToken, 'reading');
  const bodyLimits = { maxBytes: options.bodyLimit, budget: new BodyBudget(options.bodyMemory ?? DEFAULT_BODY_MEMORY) };

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
    if (req.method === 'POST' && INGEST_PATHS.has(routeOf(req.url ?? ''))) metrics?.refused(problem.kind, eventsRefused.get(req));
    // A lookup of a name with no events is an answer, not a refusal: no log line.
    if (problem.kind === 'not-found') sendProblem(res, problem, requestId(req));
    else answerProblem(req, res, problem, problem.kind === 'internal' ? error : undefined);
  };

  const episodes = options.episodes ?? new EpisodeLog(log);

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
  const on = (method: 'GET' | 'POST', path: string, handler: (req: Request, res: ServerResponse) => void | Promise<void>) => {
    routes.push(`${method} ${path}`);
    if (method === 'GET') app.get(path, handler);
    else app.post(path, handler);
  };

  /** What every request goes through before its route: the closing notice, and access. */
  const guard = (req: IncomingMessage, path: string, res: ServerResponse) => {
    // Draining or closing: each answer tells its client to reconnect, so that no idle connection is cut under it at the end.
    if (isClosing() || options.isDraining?.()) res.setHeader('Connection', 'close');
    if (isPublic(req.method, path)) return;
    (req.method === 'POST' ? checkIngest : checkRead)?.(req);
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

  const maxBatch = Math.min(MAX_BATCH_EVENTS, queue.capacity);
  // A batch the queue could never hold is the client's to split, not a 503 to retry for ever.
  const maxBatchWhy = maxBatch < MAX_BATCH_EVENTS ? ' on this server (its --queue-size)' : '';
  /** How many events a refused request held, for the metrics; set only on refusal, so the accepted pay nothing. */
  const eventsRefused = new WeakMap<IncomingMessage, number>();
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
    const result = await queue.submit(events);
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

  on('GET', '/livez', (_req, res) => sendJson(res, 200, { status: 'live' }));

  // The dashboard: GET / from a browser (POST / stays ingest), its files and uPlot's, and what it polls.
  on('GET', '/', (req, res) => {
    if (!/text\/html/.test(req.headers.accept ?? '')) {
      throw new HttpProblem(406, 'not-acceptable', 'Not acceptable', 'GET / is the dashboard, for a browser (Accept: text/html); POST / takes events');
    }
    res.writeHead(302, { Location: '/dashboard/' });
    res.end();
  });
  app.use('/dashboard/uplot', sirv(UPLOT, { dev: false, etag: true, maxAge: 3600 }));
  app.use('/dashboard', sirv(DASHBOARD, { dev: false, etag: true }));
  on('GET', '/stats', async (_req, res) => {
    const stats = queue.stats();
    sendJson(res, 200, {
      eventsStored: await store.eventsStored(),
      eventsCommitted: stats.committedEvents,
      duplicates: stats.duplicateEvents,
      queue: { depth: stats.depth, capacity: queue.capacity },
      accounting: await store.settings(),
      time: new Date().toISOString(),
    });
  });

  // The API's description and its reference page, served from this process: no CDN.
  const document = JSON.stringify(openApiDocument());
  on('GET', '/openapi.json', (_req, res) => {
    res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(document) });
    res.end(document);
  });
  on('GET', '/docs', (_req, res) => sendHtml(res, DOCS_PAGE));
  app.use('/docs/assets', sirv(SWAGGER_UI, { dev: false, etag: true, maxAge: 3600 }));
  on('GET', '/problems/:kind', (req, res) => {
    // hasOwn: the kind is the client's, and a plain object's lookup would find `constructor` on its prototype.
    const found = Object.hasOwn(PROBLEM_TYPES, req.params.kind) ? PROBLEM_TYPES[req.params.kind] : undefined;
    if (!found) throw notFound(`no problem type ${JSON.stringify(req.params.kind)}`);
    sendHtml(res, problemPage(req.params.kind, found));
  });

  on('GET', '/metrics', async (_req, res) => {
    if (!metrics) throw notFound('this server keeps no metrics');
    const text = await metrics.text();
    res.writeHead(200, { 'Content-Type': metrics.registry.contentType, 'Content-Length': Buffer.byteLength(text) });
    res.end(text);
  });

  /**
   * Readiness: whether a load balancer should send this server traffic now.
   * Only what is this server's own says no: it is draining or shutting
   * down, or its ingest queue is full. Storage that cannot be written is
   * said (`degraded`), not a no: on SQLite there is no other server to send
   * the traffic to and reads are still served, and on PostgreSQL every
   * server shares the database, so taking them all out would serve nothing.
   */
  on('GET', '/readyz', async (_req, res) => {
    options.onReadinessProbe?.();
    const reasons: string[] = [];
    let database = 'writable';
    try {
      await queue.checkWritable();
    } catch (error) {
      database =
        error instanceof StoreBusyError
          ? 'locked by another writer (a rebuild); events wait in the queue'
          : `not writable: ${(error as Error).message}`;
    }
    const stats = queue.stats();
    if (database === 'writable' && stats.lastError) database = `a flush failed in the last seconds: ${stats.lastError.message}`;
    const queueState = { depth: stats.depth, capacity: queue.capacity };
    if (options.isDraining?.()) reasons.push('draining: the server is stopping and still serves; send new requests elsewhere');
    if (isClosing()) reasons.push('the server is shutting down');
    if (stats.depth >= queue.capacity) reasons.push('the ingest queue is full');
    // A database that cannot be reached cannot say its rule either; `database` already says why.
    const accounting = await Promise.resolve(store.settings()).catch(() => undefined);
    if (reasons.length > 0) {
      throw new HttpProblem(503, 'not-ready', 'Not ready', reasons.join('; '), {
        extra: { queue: queueState, database, accounting },
      });
    }
    const status = database === 'writable' || database.startsWith('locked') ? 'ready' : 'degraded';
    sendJson(res, 200, { status, queue: queueState, database, accounting });
  });

  // The three lookups: through polka's routes, and answered before polka for plain requests (plainLookup).
  const lookups = {
    movie: { find: ([slug]: string[]) => store.movie(slug), missing: ([slug]: string[]) => nothingFor.movie(slug) },
    user: { find: ([user]: string[]) => store.user(user), missing: ([user]: string[]) => nothingFor.user(user) },
    pair: {
      find: ([user, slug]: string[]) => store.pair(user, slug),
      missing: ([user, slug]: string[]) => nothingFor.pair(user, slug),
    },
  };
  type Lookup = keyof typeof lookups;
  /** A lookup's answer; a name with no events is an answer too (404), made without an Error and not logged. */
  const sendLookup = (req: IncomingMessage, res: ServerResponse, kind: Lookup, names: string[], found: object | undefined) => {
    if (found) sendJson(res, 200, found);
    else sendProblem(res, notFoundProblem(lookups[kind].missing(names)), requestId(req));
  };
  const lookupRoute = (kind: Lookup, fields: ('user' | 'slug')[]) => async (req: Request, res: ServerResponse) => {
    const names = fields.map((field) => nameParam(req, field));
    sendLookup(req, res, kind, names, await lookups[kind].find(names));
  };

  on('GET', '/movies/:slug/watch-time', lookupRoute('movie', ['slug']));
  on('GET', '/users/:user/watch-time', lookupRoute('user', ['user']));
  on('GET', '/users/:user/movies/:slug/latest-moment', lookupRoute('pair', ['user', 'slug']));

  /** A plain lookup read in this turn of the event loop, to be answered at its end. */
  interface PendingLookup {
    req: IncomingMessage;
    res: ServerResponse;
    kind: Lookup;
    names: string[];
    started: number;
  }
  let pending: PendingLookup[] = [];

  const answerLookup = ({ req, res, kind, names, started }: PendingLookup) =>
    answerThen(req, res, started, LOOKUP_ROUTES[kind], () => {
      guard(req, req.url!, res);
      const found = lookups[kind].find(names);
      if (found instanceof Promise) return found.then((f) => sendLookup(req, res, kind, names, f));
      sendLookup(req, res, kind, names, found);
    });

  /**
   * Answers the plain lookups of a turn together, once the event loop has
   * read every request that was ready (setImmediate runs after the poll
   * phase). Answering each as soon as it was read ran at about two thirds of
   * the rate, pinned (see Performance).
   */
  const answerPending = () => {
    const ofThisTurn = pending;
    pending = [];
    for (const lookup of ofThisTurn) answerLookup(lookup);
  };

  /**
   * Players look up their resume point one request at a time, so these
   * lookups skip polka's routing when the path is plain (no query, no
   * trailing slash) and its names decode and pass the rules; it returns
   * false for anything else, which takes the ordinary routes: they answer it
   * the same way and give every invalid path its full answer.
   */
  const plainLookup = (req: IncomingMessage, res: ServerResponse, started: number): boolean => {
    const match = LOOKUP_PATH.exec(req.url ?? '');
    if (!match) return false;
    const [, movieSlug, user, pairSlug] = match;
    const kind: Lookup = movieSlug !== undefined ? 'movie' : pairSlug !== undefined ? 'pair' : 'user';
    const names = (kind === 'movie' ? [movieSlug] : kind === 'user' ? [user] : [user, pairSlug]).map(plainName);
    if (names.includes(undefined)) return false;
    if (pending.length === 0) setImmediate(answerPending);
    pending.push({ req, res, kind, names: names as string[], started });
    return true;
  };

  on('GET', '/users/:user/movies', async (req, res) => {
    const user = nameParam(req, 'user');
    const { limit, offset } = pageParams(req);
    const page = await store.userMovies(user, limit, offset);
    if (!page) throw notFound(nothingFor.user(user));
    sendJson(res, 200, { user, items: page.items, ...pageLinks(req, limit, offset, page.more) });
  });

  on('GET', '/movies', async (req, res) => {
    const { limit, offset } = pageParams(req);
    const page = await store.topMovies(limit, offset);
    sendJson(res, 200, { items: page.items, ...pageLinks(req, limit, offset, page.more) });
  });

  const record = (req: IncomingMessage, res: ServerResponse, started: number, route?: string) =>
    metrics?.answered(route ?? routeOf(req.url ?? ''), req.method ?? '', res.statusCode, (performance.now() - started) / 1000);

  /**
   * Runs what answers a request (ingest, a plain lookup), answers its failure
   * as a problem, and counts the answer once `work` settles, by which time it
   * has been written: a 'finish' listener a request cost a few percent.
   */
  const answerThen = (req: IncomingMessage, res: ServerResponse, started: number, route: string, work: () => void | Promise<void>) => {
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

  /** Ingest on the fast path, a write its connection waits for (tracked). */
  const write = (req: IncomingMessage, res: ServerResponse, started: number) =>
    answerThen(req, res, started, req.url!, () =>
      tracked(req, () => {
        guard(req, req.url!, res);
        return ingest(req, res);
      }),
    );

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
