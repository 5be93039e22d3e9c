// The analytics queries' parameters (SPEC section 7), checked the same way
// for the API's query string and the command line's options: each parser
// returns the value, or throws a ParameterError that names the parameter and
// the rule it breaks, which the API answers as a 400 and the CLI as exit 2.
import { DEFAULT_POINTS, MAX_POINTS } from './answers.ts';
import { INTERVALS, RangeProblem, type Interval } from './buckets.ts';

/** A parameter that breaks its rule: `rule` reads after the parameter's name ("from must be …"). */
export class ParameterError extends Error {
  constructor(
    readonly parameter: string,
    readonly rule: string,
  ) {
    super(`${parameter} ${rule}`);
  }
}

/** Absent: not given, or given empty (an unset shell variable, `?from=`). */
const absent = (raw: unknown): raw is undefined | '' => raw === undefined || raw === '';

/** ISO 8601: a date, or a date and time; a time without an offset is UTC. */
const ISO_8601 = /^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})?)?$/i;

export const TIME_RULE = 'must be an ISO 8601 date or date-time, such as 2026-11-30 or 2026-11-30T12:00:00Z';
export const INTERVAL_RULE = `must be one of ${INTERVALS.join(', ')}`;
export const POINTS_RULE = `must be an integer from 1 to ${MAX_POINTS}`;

/** Whether the date part names a day of the calendar: Date.parse takes 2026-02-30 for 2026-03-02. */
function realDate(text: string): boolean {
  const [year, month, day] = text.slice(0, 10).split('-').map(Number);
  const date = new Date(Date.UTC(2000, month - 1, day));
  date.setUTCFullYear(year);
  return date.getUTCMonth() === month - 1 && date.getUTCDate() === day;
}

/** `from` or `to`: milliseconds since the epoch, or undefined when absent (the default range). */
export function parseTime(name: 'from' | 'to', raw: unknown): number | undefined {
  if (absent(raw)) return undefined;
  const text = String(raw);
  const match = ISO_8601.exec(text);
  const ms = match ? Date.parse(match[1] === undefined && text.length > 10 ? `${text}Z` : text) : NaN;
  if (Number.isNaN(ms) || !realDate(text)) throw new ParameterError(name, TIME_RULE);
  return ms;
}

/** `interval`: hour when absent. */
export function parseInterval(raw: unknown): Interval {
  if (absent(raw)) return 'hour';
  if (!(INTERVALS as readonly unknown[]).includes(raw)) throw new ParameterError('interval', INTERVAL_RULE);
  return raw as Interval;
}

/** `points` of a retention curve: DEFAULT_POINTS when absent. */
export function parsePoints(raw: unknown): number {
  if (absent(raw)) return DEFAULT_POINTS;
  const text = String(raw);
  const value = Number(text);
  if (!/^\d+$/.test(text) || value < 1 || value > MAX_POINTS) throw new ParameterError('points', POINTS_RULE);
  return value;
}

/** A range that bucketStarts refused (a `to` not after `from`, too many buckets) as the parameter it is about. */
export const rangeError = (problem: RangeProblem) => new ParameterError(problem.parameter, problem.message);
