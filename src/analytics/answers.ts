// The analytics answers of SPEC section 7: their shapes, as TypeBox schemas
// that the API publishes, and how each is made from what the store read.
import Type, { type Static } from 'typebox';
import { MovieSlug, UserName } from '../event.ts';
import { INTERVAL_CODE, type AnalyticsSnapshot, type AnalyticsStore, type SeriesScope } from '../store/analytics-rows.ts';
import { count } from '../totals.ts';
import { BUCKET_MS, bucketStarts, type Interval } from './buckets.ts';
import { Retention, samplePoints } from './coverage.ts';
import { completedFrom } from './follow.ts';

/** How many of the movies with the most viewers now are answered. */
export const TOP_NOW = 10;
/** Viewers now: users with an event received in this many last seconds. */
export const WINDOW_SECONDS = 120;
export const MAX_POINTS = 1000;
export const DEFAULT_POINTS = 100;

const progressFields = {
  asOf: count('The number of the last event these figures include.'),
  lagEvents: count('Events stored after it, not yet included: the analytics follow ingest by about a second under steady load.'),
};

export const MovieStats = Type.Object({
  slug: MovieSlug,
  duration: count('Seconds: the one set by PUT /movies/{slug}, else the largest `at` among the movie\'s events.'),
  durationSource: Type.Union([Type.Literal('set'), Type.Literal('observed')]),
  watchTime: count('Seconds credited, all users together.'),
  viewers: count('Users who covered at least a second of the movie.'),
  coverage: count('Distinct seconds covered, summed over the users.'),
  rewatched: count('watchTime - coverage: seconds watched again.'),
  completed: count('Users who covered at least 90 % of the duration.'),
  completionRate: Type.Number({ minimum: 0, description: 'completed / viewers (0 without viewers).' }),
  averageCoverage: Type.Number({ minimum: 0, description: 'coverage / viewers, in seconds (0 without viewers).' }),
  ...progressFields,
}, { additionalProperties: false });

export const RetentionCurve = Type.Object({
  slug: MovieSlug,
  duration: count('The duration the points are spread over.'),
  viewers: count('Users who covered at least a second of the movie.'),
  points: Type.Array(Type.Object({
    second: count('floor(i * duration / points), for i = 0 .. points - 1.'),
    viewers: count('Users whose credited events cover this second.'),
    share: Type.Number({ minimum: 0, maximum: 1, description: 'viewers here / viewers (0 without viewers).' }),
  }, { additionalProperties: false })),
  ...progressFields,
}, { additionalProperties: false });

export const TimeSeries = Type.Object({
  interval: Type.Union([Type.Literal('minute'), Type.Literal('hour'), Type.Literal('day')]),
  from: Type.String({ format: 'date-time', description: 'The first bucket\'s start (UTC).' }),
  to: Type.String({ format: 'date-time', description: 'The end of the last bucket (UTC), excluded.' }),
  buckets: Type.Array(Type.Object({
    start: Type.String({ format: 'date-time' }),
    watchTime: count('Seconds credited by the events received in the bucket.'),
    viewers: count('Distinct users with a credited event received in the bucket.'),
    events: count('Events received in the bucket.'),
  }, { additionalProperties: false })),
  ...progressFields,
}, { additionalProperties: false });

export const ViewersNow = Type.Object({
  viewers: count('Distinct users with an event received in the window.'),
  windowSeconds: Type.Integer({ minimum: 1 }),
  movies: Type.Array(Type.Object({ slug: MovieSlug, viewers: count('Users with an event of the movie in the window.') }, { additionalProperties: false }), {
    description: `The ${TOP_NOW} movies with the most viewers now, most first.`,
  }),
  ...progressFields,
}, { additionalProperties: false });

export const SetDuration = Type.Object({
  duration: Type.Integer({ minimum: 1, maximum: 2147483647, description: 'The movie\'s length in seconds.' }),
}, { description: 'Other members are ignored.' });
export const DurationSet = Type.Object({ slug: MovieSlug, duration: count('Seconds.') }, { additionalProperties: false });

export { UserName };
export type MovieStats = Static<typeof MovieStats>;
export type RetentionCurve = Static<typeof RetentionCurve>;
export type TimeSeries = Static<typeof TimeSeries>;
export type ViewersNow = Static<typeof ViewersNow>;

/** The figures asked for need intervals of seconds, which `sum` accounting has none of. */
export class NoCoverageError extends Error {
  constructor() {
    super(
      'coverage, retention and completion need the seconds each event covers, and under sum accounting an event credits ' +
        'its at without covering any interval; time series and viewers now still answer (rebuild under progress accounting to have them)',
    );
  }
}

const progressOf = ({ asOf, lagEvents }: AnalyticsSnapshot) => ({ asOf, lagEvents });

/** A movie's stats, or undefined for a movie never seen. */
export async function movieStats(store: AnalyticsStore, slug: string): Promise<MovieStats | undefined> {
  const row = await store.movie(slug, completedFrom, false);
  if (row === undefined) return undefined;
  if (row.rule.accounting === 'sum') throw new NoCoverageError();
  const { viewers, coverage, watched, completed } = row;
  return {
    slug,
    duration: row.durationSet ?? row.maxAt,
    durationSource: row.durationSet === null ? 'observed' : 'set',
    watchTime: watched,
    viewers,
    coverage,
    rewatched: watched - coverage,
    completed,
    completionRate: viewers === 0 ? 0 : completed / viewers,
    averageCoverage: viewers === 0 ? 0 : coverage / viewers,
    ...progressOf(row),
  };
}

/** A movie's retention curve at `points` seconds, or undefined for a movie never seen. */
export async function retentionCurve(store: AnalyticsStore, slug: string, points: number): Promise<RetentionCurve | undefined> {
  const row = await store.movie(slug, completedFrom, true);
  if (row === undefined) return undefined;
  if (row.rule.accounting === 'sum') throw new NoCoverageError();
  const duration = row.durationSet ?? row.maxAt;
  const retention = new Retention();
  for (const [second, delta] of row.retention ?? []) retention.changes.set(second, delta);
  const seconds = samplePoints(duration, points);
  const counts = retention.at(seconds);
  return {
    slug,
    duration,
    viewers: row.viewers,
    points: seconds.map((second, i) => ({ second, viewers: counts[i], share: row.viewers === 0 ? 0 : counts[i] / row.viewers })),
    ...progressOf(row),
  };
}

/** A scope's time series: every bucket of the range, empty ones included; undefined for an unknown movie or user. */
export async function timeSeries(
  store: AnalyticsStore,
  scope: SeriesScope,
  interval: Interval,
  range: { from?: number; to?: number },
  now = Date.now(),
): Promise<TimeSeries | undefined> {
  const { from, to, starts } = bucketStarts(interval, range, now);
  const found = await store.series(scope, INTERVAL_CODE[interval], BUCKET_MS[interval], from, to);
  if (found === undefined) return undefined;
  const byStart = new Map(found.rows.map((row) => [row.start, row]));
  return {
    interval,
    from: new Date(from).toISOString(),
    to: new Date(to).toISOString(),
    buckets: starts.map((start) => {
      const row = byStart.get(start);
      return { start: new Date(start).toISOString(), watchTime: row?.watched ?? 0, viewers: row?.viewers ?? 0, events: row?.events ?? 0 };
    }),
    ...progressOf(found),
  };
}

/** Who is watching now: the users with an event in the last WINDOW_SECONDS, and the movies with the most of them. */
export async function viewersNow(store: AnalyticsStore, now = Date.now()): Promise<ViewersNow> {
  const { viewers, movies, asOf, lagEvents } = await store.viewersSince(now - WINDOW_SECONDS * 1000, TOP_NOW);
  return { viewers, windowSeconds: WINDOW_SECONDS, movies, asOf, lagEvents };
}
