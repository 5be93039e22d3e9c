// The time series' buckets (SPEC section 7): UTC minutes, hours or days of the
// events' receive time. A query names an interval and a range [from, to); by
// default the last 48 buckets, the current one included.

export const INTERVALS = ['minute', 'hour', 'day'] as const;
export type Interval = (typeof INTERVALS)[number];

/** A bucket's length in milliseconds: UTC has no daylight saving, so a day is always 24 hours. */
export const BUCKET_MS: Record<Interval, number> = { minute: 60_000, hour: 3_600_000, day: 86_400_000 };

/** Buckets a query answers when it names no range. */
export const DEFAULT_BUCKETS = 48;
/** Buckets a query may ask for at once: a month by the minute, or 27 years by the day. */
export const MAX_BUCKETS = 44_640;

/** The range answered stays within ISO 8601's four-digit years, which the answers' date-times can write. */
const FIRST_MS = Date.parse('0000-01-01T00:00:00Z');
const END_MS = new Date(0).setUTCFullYear(10_000, 0, 1);
/** The start of the bucket that holds this time, in milliseconds since the epoch. */
export function bucketStart(ms: number, interval: Interval): number {
  return Math.floor(ms / BUCKET_MS[interval]) * BUCKET_MS[interval];
}

/** A query's range that cannot be answered, with the parameter it is about. */
export class RangeProblem extends Error {
  constructor(
    readonly parameter: 'from' | 'to',
    message: string,
  ) {
    super(message);
  }
}

/**
 * The buckets' starts for [from, to): the bucket holding `from` first, each
 * bucket that starts before `to` after it, whole: the range answered runs
 * from the first bucket's start to the last one's end. Missing ends default
 * to the last DEFAULT_BUCKETS buckets up to the one holding `now`.
 */
export function bucketStarts(interval: Interval, range: { from?: number; to?: number }, now: number): { from: number; to: number; starts: number[] } {
  const size = BUCKET_MS[interval];
  // A problem of the range is about the end the client gave: `to`, unless only `from` was given.
  const about = range.to === undefined ? 'from' : 'to';
  if (range.from !== undefined && range.to !== undefined && range.to <= range.from) throw new RangeProblem('to', 'must be later than from');
  const to = range.to === undefined ? bucketStart(now, interval) + size : Math.ceil(range.to / size) * size;
  const from = bucketStart(range.from ?? to - DEFAULT_BUCKETS * size, interval);
  if (from >= to) throw new RangeProblem('from', 'must be earlier than to (by default the end of the current bucket)');
  if (from < FIRST_MS || to >= END_MS) throw new RangeProblem(about, 'must keep the range within the years 0000 to 9999');
  const count = Math.ceil((to - from) / size);
  if (count > MAX_BUCKETS) {
    throw new RangeProblem(about, `must keep the range within the buckets answered at once: it holds ${count} ${interval} buckets; at most ${MAX_BUCKETS} are answered at once`);
  }
  return { from, to, starts: Array.from({ length: count }, (_, i) => from + i * size) };
}
