// The OpenAPI 3.1 description of the API, built from the very TypeBox schemas
// the server validates with (src/event.ts) and answers with (schemas.ts), with
// an example for each operation and each problem type.
import { readFileSync } from 'node:fs';
import type { TSchema } from 'typebox';
import Type from 'typebox';
import { DEFAULT_POINTS, MAX_POINTS, NoCoverageError, TOP_NOW, WINDOW_SECONDS } from '../analytics/answers.ts';
import { DEFAULT_BUCKETS, INTERVALS, MAX_BUCKETS } from '../analytics/buckets.ts';
import { INTERVAL_RULE, POINTS_RULE, TIME_RULE } from '../analytics/params.ts';
import { MAX_BATCH_EVENTS, WatchEvent } from '../event.ts';
import {
  DurationSet,
  IngestResult,
  Live,
  MoviesPage,
  MovieStats,
  MovieTotals,
  PairTotals,
  Problem,
  Ready,
  RetentionCurve,
  SetDuration,
  Stats,
  TimeSeries,
  UserMoviesPage,
  UserTotals,
  ViewersNow,
} from './schemas.ts';

const VERSION = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;

/** Every problem type the server answers with: `/problems/<kind>` explains it. */
export const PROBLEM_TYPES: Record<string, { status: number; title: string; explanation: string }> = {
  'invalid-event': { status: 400, title: 'Invalid event', explanation: 'An event breaks a rule of the event schema; `errors` names each field and rule. Nothing of the request was stored.' },
  'invalid-body': { status: 400, title: 'Invalid body', explanation: 'The body is not JSON, or not UTF-8. Nothing was stored.' },
  'invalid-request': { status: 400, title: 'Invalid request', explanation: `An empty or over-long batch, an NDJSON line that is not JSON, a name in the path that breaks the rules, bad percent-encoding, a bad query parameter (a time series range of more than ${MAX_BUCKETS} buckets among them), or a movie's duration that is not a positive whole number of seconds. \`errors\` names the parameter or member and its rule.` },
  unauthorized: { status: 401, title: 'Unauthorized', explanation: 'The server requires `Authorization: Bearer <token>` for this request, and it is missing or wrong.' },
  'not-found': { status: 404, title: 'Not found', explanation: 'No events for this user, movie or pair; or no such route.' },
  'not-acceptable': { status: 406, title: 'Not acceptable', explanation: 'GET / is the dashboard, for a browser (Accept: text/html); events go to POST /.' },
  'coverage-needs-progress': { status: 409, title: 'No coverage under sum accounting', explanation: 'Coverage, retention and completion count the seconds each event covers, [prev, at), and an event covers seconds only under `progress` accounting; under `sum` it credits its `at` and covers none. Time series and viewers now still answer. `watchtime rebuild --accounting progress` recomputes the database under the rule that has them.' },
  'method-not-allowed': { status: 405, title: 'Method not allowed', explanation: 'The ingest paths take POST only; `Allow` says so.' },
  'body-too-large': { status: 413, title: 'Body too large', explanation: 'The body, once decoded, is larger than the server reads (16 MiB; 1 KiB for a movie\'s duration). The server answers as soon as it knows, then reads and drops the rest for a few seconds so that the client can read the answer. Nothing was stored.' },
  'unsupported-media-type': { status: 415, title: 'Unsupported media type', explanation: 'A Content-Type other than JSON or NDJSON, a charset other than UTF-8, or a Content-Encoding other than gzip or identity (`Accept-Encoding` says which). No Content-Type at all is read as JSON.' },
  'queue-full': { status: 503, title: 'Ingest queue full', explanation: 'The server holds as many events as it may; retry after `Retry-After` seconds. Nothing of the request was stored.' },
  'busy-reading': { status: 503, title: 'Busy reading other bodies', explanation: 'The request bodies the server is reading at once hold as many bytes as it allows (`--body-memory`); retry after `Retry-After` seconds. Nothing of the request was read or stored.' },
  'shutting-down': { status: 503, title: 'Shutting down', explanation: 'The server is stopping; retry on another server or later.' },
  'storage-unavailable': { status: 503, title: 'Storage unavailable', explanation: 'The events could not be committed (a full disk, a database that is away), or a lookup could not reach a database that is away (PostgreSQL). Retry with the same ids: nothing is counted twice.' },
  'not-ready': { status: 503, title: 'Not ready', explanation: '/readyz: this server should get no traffic now: it is draining before it stops, shutting down, or its ingest queue is full. The answer says which. A database that cannot be written is not a reason (the answer is 200 `degraded`): every server would say the same.' },
  internal: { status: 500, title: 'Internal error', explanation: 'The server failed to answer; its log has the request id and the stack.' },
};

const plain = (schema: TSchema) => JSON.parse(JSON.stringify(schema)) as object;
const ref = (name: string) => ({ $ref: `#/components/schemas/${name}` });

/** The named schemas of the document, as TypeBox objects (tests validate examples and answers with them). */
export const SCHEMAS: Record<string, TSchema> = {
  WatchEvent,
  WatchEventBatch: Type.Array(WatchEvent, { minItems: 1, maxItems: MAX_BATCH_EVENTS }),
  IngestResult,
  MovieTotals,
  UserTotals,
  PairTotals,
  UserMoviesPage,
  MoviesPage,
  Live,
  Ready,
  Stats,
  MovieStats,
  RetentionCurve,
  TimeSeries,
  ViewersNow,
  SetDuration,
  DurationSet,
  Problem,
};

const now = '2026-11-25T21:04:05.123Z';
const problemExample = (kind: string, detail: string, extra: object = {}) => ({
  type: `/problems/${kind}`,
  title: PROBLEM_TYPES[kind].title,
  status: PROBLEM_TYPES[kind].status,
  detail,
  instance: 'k2x9f1-4c',
  ...extra,
});

/** Examples of a problem kind as this operation answers it, by name; its explanation is the example otherwise. */
type ProblemExamples = Record<string, Record<string, ReturnType<typeof problemExample>>>;

function problems(...kinds: (string | ProblemExamples)[]) {
  const own = Object.assign({}, ...kinds.filter((k) => typeof k === 'object')) as ProblemExamples;
  const byStatus = new Map<number, string[]>();
  for (const kind of kinds.filter((k) => typeof k === 'string')) {
    byStatus.set(PROBLEM_TYPES[kind].status, [...(byStatus.get(PROBLEM_TYPES[kind].status) ?? []), kind]);
  }
  const examplesOf = (kind: string) =>
    Object.keys(own[kind] ?? {}).length > 0
      ? Object.entries(own[kind]).map(([name, value]) => [name, { value }])
      : [[kind, { value: problemExample(kind, PROBLEM_TYPES[kind].explanation) }]];
  return Object.fromEntries(
    [...byStatus].map(([status, list]) => [
      String(status),
      {
        description: list.map((k) => PROBLEM_TYPES[k].title).join(', '),
        content: {
          'application/problem+json': {
            schema: ref('Problem'),
            examples: Object.fromEntries(list.flatMap(examplesOf)),
          },
        },
      },
    ]),
  );
}

const json = (schema: string, example: unknown, description: string) => ({
  description,
  content: { 'application/json': { schema: ref(schema), examples: { example: { value: example } } } },
});

const nameParameter = (name: 'user' | 'slug') => ({
  name,
  in: 'path',
  required: true,
  description: `${name === 'user' ? 'The user' : 'The movie'}, percent-encoded; compared byte for byte.`,
  schema: plain(WatchEvent.properties[name]),
  example: name === 'user' ? '3h2srcrl5ufy4' : '1dpi4qtavjwtr',
});
const pageParameters = [
  { name: 'limit', in: 'query', schema: { type: 'integer', minimum: 1, maximum: 1000, default: 20 }, example: 20 },
  { name: 'offset', in: 'query', schema: { type: 'integer', minimum: 0, default: 0 }, example: 0 },
];

const movieExample = { slug: '1dpi4qtavjwtr', watchTime: 98_120, viewers: 41, events: 9_870, updatedAt: now };
const userExample = { user: '3h2srcrl5ufy4', watchTime: 12_400, movies: 3, events: 1_250, updatedAt: now };
const userMovieExample = { slug: '1dpi4qtavjwtr', latestMoment: 4500, watchTime: 4210, events: 902, updatedAt: now };

function ingestOperation(operationId: string, summary: string) {
  const event = { user: '3h2srcrl5ufy4', slug: '1dpi4qtavjwtr', at: 4500 };
  return {
    operationId,
    summary,
    description:
      'One event (a JSON object), a batch (a JSON array, or NDJSON: one object a line), at most ' +
      `${MAX_BATCH_EVENTS} events. All or nothing: one invalid event refuses the request. Answered once the events ` +
      'are committed to disk. An event with an `id` already stored is acknowledged as a duplicate and not applied again. ' +
      'A body may be sent with `Content-Encoding: gzip`; the size limit applies once it is decoded.',
    security: [{}, { bearer: [] }],
    requestBody: {
      required: true,
      content: {
        'application/json': {
          schema: { oneOf: [ref('WatchEvent'), ref('WatchEventBatch')] },
          examples: { event: { value: event }, batch: { value: [{ ...event, id: 'e-1' }, { ...event, at: 4505, id: 'e-2' }] } },
        },
        'application/x-ndjson': { schema: { type: 'string' }, examples: { batch: { value: `${JSON.stringify(event)}\n` } } },
      },
    },
    responses: {
      200: json('IngestResult', { accepted: 2, duplicates: 0 }, 'Stored: how many events were applied, and how many were duplicates.'),
      ...problems('invalid-event', 'invalid-body', 'invalid-request', 'unauthorized', 'body-too-large', 'unsupported-media-type',
        'queue-full', 'busy-reading', 'shutting-down', 'storage-unavailable', 'internal'),
    },
  };
}

function lookup(operationId: string, summary: string, parameters: object[], schema: string, example: unknown, extra: object = {}) {
  return {
    operationId,
    summary,
    security: [{}, { bearer: [] }],
    parameters,
    responses: {
      200: json(schema, example, summary),
      ...problems('invalid-request', 'unauthorized', 'not-found', 'storage-unavailable', 'internal'),
    },
    ...extra,
  };
}

// The analytics of SPEC section 7.

const progressNote =
  ' Every answer says how far the analytics have got: `asOf`, the number of the last event included, and `lagEvents`, ' +
  'the events stored after it (the analytics follow ingest off its path, by about a second under steady load).';
const noCoverageExample = problemExample('coverage-needs-progress', new NoCoverageError().message);
const invalidParameterExample = (parameter: string, message: string) =>
  problemExample('invalid-request', `invalid query parameter ${parameter}`, { errors: [{ pointer: `/${parameter}`, message }] });

/** A GET of the analytics: `kinds` are the problems it answers besides 401, 503 and 500; `invalid`, its 400's examples. */
function analyticsRead(operationId: string, summary: string, description: string, parameters: object[], schema: string, example: unknown,
  kinds: string[], invalid: Record<string, ReturnType<typeof problemExample>>) {
  return {
    operationId,
    summary,
    description: description + progressNote,
    security: [{}, { bearer: [] }],
    parameters,
    responses: {
      200: json(schema, example, summary),
      ...problems(...kinds, 'unauthorized', 'storage-unavailable', 'internal', {
        'invalid-request': invalid,
        ...(kinds.includes('coverage-needs-progress') ? { 'coverage-needs-progress': { 'sum-accounting': noCoverageExample } } : {}),
      }),
    },
  };
}

const exampleSlug = '1dpi4qtavjwtr';
const progressExample = { asOf: 125_000, lagEvents: 12 };
const statsExample = {
  slug: exampleSlug, duration: 5400, durationSource: 'set', watchTime: 98_120, viewers: 41, coverage: 91_200, rewatched: 98_120 - 91_200,
  completed: 12, completionRate: 12 / 41, averageCoverage: 91_200 / 41, ...progressExample,
};
const retentionExample = {
  slug: exampleSlug, duration: 5400, viewers: 41,
  points: [[0, 41], [1350, 30], [2700, 22], [4050, 14]].map(([second, viewers]) => ({ second, viewers, share: viewers / 41 })),
  ...progressExample,
};
const seriesExample = {
  interval: 'hour', from: '2026-11-25T19:00:00.000Z', to: '2026-11-25T22:00:00.000Z',
  buckets: [
    { start: '2026-11-25T19:00:00.000Z', watchTime: 0, viewers: 0, events: 0 },
    { start: '2026-11-25T20:00:00.000Z', watchTime: 41_250, viewers: 17, events: 4_130 },
    { start: '2026-11-25T21:00:00.000Z', watchTime: 56_870, viewers: 24, events: 5_740 },
  ],
  ...progressExample,
};
const viewersExample = {
  viewers: 37, windowSeconds: WINDOW_SECONDS, movies: [{ slug: exampleSlug, viewers: 12 }, { slug: '8kq2zr0bmw1te', viewers: 9 }], ...progressExample,
};

const pointsParameter = {
  name: 'points',
  in: 'query',
  description: 'How many seconds of the movie to answer, spread evenly over its duration: floor(i * duration / points) for i = 0 .. points - 1.',
  schema: { type: 'integer', minimum: 1, maximum: MAX_POINTS, default: DEFAULT_POINTS },
  example: DEFAULT_POINTS,
};
const seriesParameters = [
  {
    name: 'interval',
    in: 'query',
    description: 'The buckets: UTC minutes, hours or days of the events\' receive time.',
    schema: { type: 'string', enum: [...INTERVALS], default: 'hour' },
    example: 'hour',
  },
  {
    name: 'from',
    in: 'query',
    description: 'ISO 8601; a date alone is its midnight, a time without an offset is UTC. The first bucket is the one that holds it. ' +
      `Default: ${DEFAULT_BUCKETS} buckets before \`to\`.`,
    schema: { type: 'string', format: 'date-time' },
    example: '2026-11-25T19:00:00Z',
  },
  {
    name: 'to',
    in: 'query',
    description: 'ISO 8601, excluded: the last bucket is the last one that starts before it. Default: the end of the bucket that holds now. ' +
      `At most ${MAX_BUCKETS} buckets are answered at once.`,
    schema: { type: 'string', format: 'date-time' },
    example: '2026-11-25T22:00:00Z',
  },
];
const seriesInvalid = {
  'too-many-buckets': invalidParameterExample('to', `to must keep the range within the buckets answered at once: it holds ${MAX_BUCKETS + 1} minute buckets; at most ${MAX_BUCKETS} are answered at once`),
  'bad-interval': invalidParameterExample('interval', `interval ${INTERVAL_RULE}`),
  'bad-time': invalidParameterExample('from', `from ${TIME_RULE}`),
};
const seriesDescription =
  'Every bucket of [from, to), empty ones included: `watchTime`, the seconds credited by the events received in it; `viewers`, ' +
  `the distinct users with a credited event in it; \`events\`, the events received in it. More than ${MAX_BUCKETS} buckets at once is a 400 that says the limit.`;
const series = (operationId: string, summary: string, scope: object[], kinds: string[], note = '') =>
  analyticsRead(operationId, summary, seriesDescription + note, [...scope, ...seriesParameters], 'TimeSeries', seriesExample, kinds, seriesInvalid);

/** PUT /movies/{slug}: a write, guarded by the ingest token as POST is. */
const setDurationOperation = {
  operationId: 'setDuration',
  summary: "Set a movie's duration",
  description:
    'The duration that stats, completion and retention use, in place of the largest `at` among the movie\'s events; kept across ' +
    '`watchtime rebuild`. Adds the movie if it has no events yet. Needs the ingest token when the server has one. A body over 1 KiB is 413.',
  security: [{}, { bearer: [] }],
  parameters: [nameParameter('slug')],
  requestBody: {
    required: true,
    content: { 'application/json': { schema: ref('SetDuration'), examples: { duration: { value: { duration: 5400 } } } } },
  },
  responses: {
    200: json('DurationSet', { slug: exampleSlug, duration: 5400 }, 'Set, and on disk.'),
    ...problems('invalid-request', 'invalid-body', 'unauthorized', 'body-too-large', 'unsupported-media-type', 'busy-reading',
      'storage-unavailable', 'internal', {
        'invalid-request': {
          'not-positive': problemExample('invalid-request', 'invalid duration; nothing was stored', {
            errors: [{ pointer: '/duration', message: 'duration must be a positive whole number of seconds, at most 2147483647' }],
          }),
          missing: problemExample('invalid-request', 'invalid duration; nothing was stored', { errors: [{ pointer: '/duration', message: 'duration is required' }] }),
        },
        'invalid-body': { 'not-json': problemExample('invalid-body', 'the body is not JSON') },
      }),
  },
};

export function openApiDocument() {
  return {
    openapi: '3.1.0',
    info: {
      title: 'watchtime',
      version: VERSION,
      description:
        'Ingests video watch-progress events and answers, at any moment, the watch time of each movie, of each ' +
        'user, and the latest moment each user reached in each movie; and, from the same events, each movie\'s coverage, ' +
        'completion and retention, watch time over time, and who is watching now. Errors are RFC 9457 problem details; ' +
        'every problem answer carries an X-Request-Id.',
    },
    paths: {
      '/': {
        post: ingestOperation('ingestRoot', 'Send watch-progress events (the event generator posts here)'),
        get: {
          operationId: 'dashboard',
          summary: 'The dashboard, for a browser: redirects to /dashboard/',
          responses: { 302: { description: 'To /dashboard/' }, ...problems('not-acceptable') },
        },
      },
      '/stats': {
        get: {
          operationId: 'stats',
          summary: "What the dashboard polls: events stored, this server's commits, queue, rule",
          security: [{}, { bearer: [] }],
          responses: {
            200: json('Stats', { eventsStored: 125_000, eventsCommitted: 9_870, duplicates: 3, queue: { depth: 0, capacity: 100_000 },
              accounting: { accounting: 'progress', maxStep: 120 }, time: now }, 'Counters'),
            ...problems('unauthorized', 'internal'),
          },
        },
      },
      '/events': { post: ingestOperation('ingestEvents', 'Send watch-progress events') },
      '/movies/{slug}/watch-time': {
        get: lookup('movieWatchTime', "A movie's total watch time", [nameParameter('slug')], 'MovieTotals', movieExample),
      },
      '/users/{user}/watch-time': {
        get: lookup('userWatchTime', "A user's total watch time across movies", [nameParameter('user')], 'UserTotals', userExample),
      },
      '/users/{user}/movies/{slug}/latest-moment': {
        get: lookup('latestMoment', 'The latest moment a user reached in a movie: where to resume', [nameParameter('user'), nameParameter('slug')],
          'PairTotals', { user: '3h2srcrl5ufy4', ...userMovieExample }),
      },
      '/users/{user}/movies': {
        get: lookup('userMovies', "A user's movies, most recently watched first", [nameParameter('user'), ...pageParameters], 'UserMoviesPage',
          { user: '3h2srcrl5ufy4', items: [userMovieExample], limit: 20, offset: 0, next: null }),
      },
      '/movies': {
        get: lookup('topMovies', 'Movies by total watch time, largest first', pageParameters, 'MoviesPage',
          { items: [movieExample], limit: 1, offset: 0, next: '/movies?limit=1&offset=1' }),
      },
      '/movies/{slug}': { put: setDurationOperation },
      '/movies/{slug}/stats': {
        get: analyticsRead('movieStats', "A movie's duration, coverage, rewatching and completion",
          'A pair (user, movie) covers the distinct seconds [prev, at) of its credited events. `coverage` and `rewatched` ' +
            '(watchTime - coverage) are summed over the movie\'s pairs; `viewers` are its pairs with coverage, `completed` those that ' +
            'covered at least 90 % of the duration. Under `sum` accounting an event covers nothing: 409.',
          [nameParameter('slug')], 'MovieStats', statsExample, ['invalid-request', 'not-found', 'coverage-needs-progress'], {}),
      },
      '/movies/{slug}/retention': {
        get: analyticsRead('movieRetention', "A movie's retention curve: how many viewers each moment kept",
          'At each of `points` seconds of the duration, how many of the movie\'s pairs cover it, and their share of its viewers. ' +
            'Under `sum` accounting an event covers nothing: 409.',
          [nameParameter('slug'), pointsParameter], 'RetentionCurve', retentionExample, ['invalid-request', 'not-found', 'coverage-needs-progress'],
          { 'bad-points': invalidParameterExample('points', `points ${POINTS_RULE}`) }),
      },
      '/timeseries': { get: series('serviceTimeSeries', "The service's watch time, viewers and events over time", [], ['invalid-request']) },
      '/movies/{slug}/timeseries': {
        get: series('movieTimeSeries', "A movie's watch time, viewers and events over time", [nameParameter('slug')], ['invalid-request', 'not-found']),
      },
      '/users/{user}/timeseries': {
        get: series('userTimeSeries', "A user's watch time and events over time", [nameParameter('user')], ['invalid-request', 'not-found'],
          ' For a user, `viewers` is 1 in a bucket where they were credited, else 0.'),
      },
      '/viewers': {
        get: analyticsRead('viewersNow', 'Who is watching now',
          `The distinct users with an event received in the last ${WINDOW_SECONDS} seconds, and the ${TOP_NOW} movies with the most of them.`,
          [], 'ViewersNow', viewersExample, [], {}),
      },
      '/livez': { get: { operationId: 'livez', summary: 'The process is up', responses: { 200: json('Live', { status: 'live' }, 'Live') } } },
      '/readyz': {
        get: {
          operationId: 'readyz',
          summary: 'Whether a load balancer should send this server traffic now',
          responses: {
            200: json('Ready', { status: 'ready', queue: { depth: 0, capacity: 100_000 }, database: 'writable', accounting: { accounting: 'progress', maxStep: 120 } }, 'Ready'),
            ...problems('not-ready'),
          },
        },
      },
      '/metrics': {
        get: {
          operationId: 'metrics',
          summary: "Prometheus's text format",
          security: [{}, { bearer: [] }],
          responses: {
            200: { description: 'Metrics', content: { 'text/plain': { schema: { type: 'string' }, examples: { metric: { value: 'watchtime_events_accepted_total 1250\n' } } } } },
            ...problems('unauthorized'),
          },
        },
      },
      '/openapi.json': {
        get: { operationId: 'openapi', summary: 'This document', responses: { 200: { description: 'OpenAPI 3.1', content: { 'application/json': { schema: { type: 'object' } } } } } },
      },
      '/docs': { get: { operationId: 'docs', summary: 'This document as a reference page', responses: { 200: { description: 'HTML', content: { 'text/html': { schema: { type: 'string' } } } } } } },
      '/problems/{kind}': {
        get: {
          operationId: 'problemType',
          summary: 'What a problem type means',
          parameters: [{ name: 'kind', in: 'path', required: true, schema: { type: 'string', enum: Object.keys(PROBLEM_TYPES) }, example: 'invalid-event' }],
          responses: {
            200: { description: 'The explanation', content: { 'text/html': { schema: { type: 'string' } } } },
            ...problems('not-found'),
          },
        },
      },
    },
    components: {
      schemas: Object.fromEntries(Object.entries(SCHEMAS).map(([name, schema]) => [name, plain(schema)])),
      securitySchemes: { bearer: { type: 'http', scheme: 'bearer', description: 'Only when the server is started with --ingest-token or --read-token.' } },
    },
  };
}
