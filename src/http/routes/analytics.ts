// The analytics routes of SPEC section 7: a movie's stats and retention, the
// time series of the service, a movie and a user, viewers now, and a movie's
// duration (PUT, guarded as ingest is).
import type { ServerResponse } from 'node:http';
import type { Request } from 'polka';
import { Compile } from 'typebox/compile';
import {
  movieStats,
  NoCoverageError,
  retentionCurve,
  SetDuration,
  timeSeries,
  viewersNow,
} from '../../analytics/answers.ts';
import { RangeProblem } from '../../analytics/buckets.ts';
import { ParameterError, parseInterval, parsePoints, parseTime, rangeError } from '../../analytics/params.ts';
import type { EventSink } from '../../ingest/sink.ts';
import type { SeriesScope } from '../../store/analytics-rows.ts';
import { nothingFor, type Store } from '../../store/store.ts';
import type { On } from '../answering.ts';
import { contentType, readBody, type BodyLimits } from '../body.ts';
import { tracked } from '../connection-order.ts';
import { nameParam } from '../params.ts';
import { badRequest, HttpProblem, notFound, sendJson } from '../problem.ts';

export interface AnalyticsRouteOptions {
  store: Store;
  sink: EventSink;
  bodyLimits: BodyLimits;
}

/** A duration's body is one small object. */
const DURATION_BODY_BYTES = 1024;
const durationValidator = Compile(SetDuration);

/** A duration's body is JSON: no Content-Type at all is read as JSON, as for events. */
function isJson(header: string | undefined): boolean {
  if (header === undefined) return true;
  const { mediaType, utf8 } = contentType(header);
  return mediaType === 'application/json' && utf8;
}

/** A parameter of the query string, parsed as the command line parses its option: 400 naming it and its rule. */
function queryParam<T>(req: Request, name: string, parse: (raw: unknown) => T): T {
  try {
    return parse(req.query[name]);
  } catch (error) {
    if (!(error instanceof ParameterError)) throw error;
    throw invalidParameter(error);
  }
}

const invalidParameter = ({ parameter, message }: ParameterError) =>
  badRequest(`invalid query parameter ${parameter}`, [{ pointer: `/${parameter}`, message }]);

const noCoverage = (error: NoCoverageError) => new HttpProblem(409, 'coverage-needs-progress', 'No coverage under sum accounting', error.message);

/** The figures of a movie that need coverage: 404 for a movie never seen, 409 under sum accounting. */
async function coverageAnswer<T>(slug: string, answer: () => Promise<T | undefined>): Promise<T> {
  let found: T | undefined;
  try {
    found = await answer();
  } catch (error) {
    throw error instanceof NoCoverageError ? noCoverage(error) : error;
  }
  if (found === undefined) throw notFound(nothingFor.movie(slug));
  return found;
}

export function analyticsRoutes(on: On, { store, sink, bodyLimits }: AnalyticsRouteOptions): void {
  const analytics = store.analytics;

  on('GET', '/movies/:slug/stats', async (req, res) => {
    const slug = nameParam(req, 'slug');
    sendJson(res, 200, await coverageAnswer(slug, () => movieStats(analytics, slug)));
  });

  on('GET', '/movies/:slug/retention', async (req, res) => {
    const slug = nameParam(req, 'slug');
    const points = queryParam(req, 'points', parsePoints);
    sendJson(res, 200, await coverageAnswer(slug, () => retentionCurve(analytics, slug, points)));
  });

  const series = (scopeOf: (req: Request) => SeriesScope) => async (req: Request, res: ServerResponse) => {
    const scope = scopeOf(req);
    const interval = queryParam(req, 'interval', parseInterval);
    const range = { from: queryParam(req, 'from', (raw) => parseTime('from', raw)), to: queryParam(req, 'to', (raw) => parseTime('to', raw)) };
    let answer;
    try {
      answer = await timeSeries(analytics, scope, interval, range);
    } catch (error) {
      if (!(error instanceof RangeProblem)) throw error;
      throw invalidParameter(rangeError(error));
    }
    if (answer === undefined) throw notFound(scope.kind === 'movie' ? nothingFor.movie(scope.slug) : nothingFor.user((scope as { user: string }).user));
    sendJson(res, 200, answer);
  };
  on('GET', '/timeseries', series(() => ({ kind: 'service' })));
  on('GET', '/movies/:slug/timeseries', series((req) => ({ kind: 'movie', slug: nameParam(req, 'slug') })));
  on('GET', '/users/:user/timeseries', series((req) => ({ kind: 'user', user: nameParam(req, 'user') })));

  on('GET', '/viewers', async (_req, res) => sendJson(res, 200, await viewersNow(analytics)));

  // A write: a request pipelined behind it on its connection waits for its answer (read your writes), as ingest's do.
  on('PUT', '/movies/:slug', (req, res) => tracked(req, () => putDuration(req, res)));
  const putDuration = async (req: Request, res: ServerResponse) => {
    const slug = nameParam(req, 'slug');
    if (!isJson(req.headers['content-type'])) {
      throw new HttpProblem(415, 'unsupported-media-type', 'Unsupported media type', `Content-Type must be application/json in UTF-8, not ${JSON.stringify(req.headers['content-type'])}`);
    }
    const text = await readBody(req, { ...bodyLimits, maxBytes: DURATION_BODY_BYTES });
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      throw new HttpProblem(400, 'invalid-body', 'Invalid body', 'the body is not JSON');
    }
    if (!durationValidator.Check(body)) {
      const found = (body as { duration?: unknown } | null)?.duration;
      const rule = 'duration must be a positive whole number of seconds, at most 2147483647';
      const message = typeof body !== 'object' || body === null || Array.isArray(body) ? 'the body must be an object {"duration": seconds}' : found === undefined ? 'duration is required' : rule;
      const pointer = message.startsWith('the body') ? '' : '/duration';
      throw badRequest('invalid duration; nothing was stored', [{ pointer, message }]);
    }
    const { duration } = body as { duration: number };
    await sink.setDuration(slug, duration);
    sendJson(res, 200, { slug, duration });
  };
}
