// What the API answers, as TypeBox schemas, which the OpenAPI document
// (openapi.ts) publishes as they are. The totals themselves are the domain's
// (../totals.ts), shared with the store; the pages, health and problems are
// the API's own.
import Type from 'typebox';
import { UserName } from '../event.ts';
import { count, MovieTotals, PairTotals, UserMovie, UserTotals } from '../totals.ts';

export { MovieTotals, PairTotals, UserMovie, UserTotals };

const pageFields = {
  limit: Type.Integer({ minimum: 1 }),
  offset: Type.Integer({ minimum: 0 }),
  next: Type.Union([Type.String(), Type.Null()], { description: 'The next page, or null on the last.' }),
};
export const UserMoviesPage = Type.Object({ user: UserName, items: Type.Array(UserMovie), ...pageFields }, { additionalProperties: false });
export const MoviesPage = Type.Object({ items: Type.Array(MovieTotals), ...pageFields }, { additionalProperties: false });

export const IngestResult = Type.Object({
  accepted: count('Events stored and applied.'),
  duplicates: count('Events whose id was already stored: acknowledged, not applied again.'),
}, { additionalProperties: false });

const AccountingRule = Type.Object({
  accounting: Type.Union([Type.Literal('progress'), Type.Literal('sum')]),
  maxStep: Type.Integer({ minimum: 1 }),
});
const QueueState = Type.Object({ depth: count('Events queued.'), capacity: count('Most events queued.') });

export const Live = Type.Object({ status: Type.Literal('live') });
export const Ready = Type.Object({
  status: Type.Union([Type.Literal('ready'), Type.Literal('degraded')], {
    description: '`degraded`: serving, but the database cannot be written now (`database` says why); events are refused with 503 meanwhile.',
  }),
  queue: QueueState,
  database: Type.String({ description: '`writable`, `locked by another writer …`, `not writable: …`, or `a flush failed in the last seconds: …`.' }),
  accounting: Type.Optional(AccountingRule),
});

export const Stats = Type.Object({
  eventsStored: count('Events in the database, all time, from every server.'),
  eventsCommitted: count('Events this server committed since it started.'),
  duplicates: count('Duplicates this server acknowledged since it started.'),
  queue: QueueState,
  accounting: Type.Optional(AccountingRule),
  time: Type.String({ format: 'date-time' }),
});

export const Problem = Type.Object({
  type: Type.String({ description: 'A URI reference, /problems/<kind>, that explains the problem.' }),
  title: Type.String(),
  status: Type.Integer({ minimum: 400, maximum: 599 }),
  detail: Type.String(),
  instance: Type.Optional(Type.String({ description: 'The request id, as in the X-Request-Id header and the log.' })),
  errors: Type.Optional(
    Type.Array(Type.Object({ pointer: Type.String({ description: 'JSON Pointer into the body or the path.' }), message: Type.String() })),
  ),
}, { description: 'RFC 9457 problem details; /readyz adds queue, database and accounting.' });


// The analytics answers (SPEC section 7) and a movie's duration: their shapes
// are the analytics' own, made and answered by src/analytics/answers.ts for
// the API and the command line alike.
export { DurationSet, MovieStats, RetentionCurve, SetDuration, TimeSeries, ViewersNow } from '../analytics/answers.ts';
