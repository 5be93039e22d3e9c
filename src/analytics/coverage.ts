// The interval arithmetic of SPEC section 7. A pair's credited events cover
// half-open intervals of seconds, [prev, at); its coverage is their union,
// kept as sorted intervals that neither overlap nor touch. Adding an interval
// says which seconds are new to the pair: a movie's retention at a second
// counts the pairs that cover it, so it changes only where a pair's coverage
// grows.
import type { AccountingRule } from '../accounting.ts';

/** [start, end) intervals flattened as [s0, e0, s1, e1, ...]: sorted, and e_k < s_k+1 (neither overlapping nor touching). */
export type Coverage = number[];

/** The seconds an event covers under the rule: [prev, at) when its step is credited under progress, else none. */
export function coveredBy(rule: AccountingRule, prev: number, at: number): [number, number] | undefined {
  if (rule.accounting !== 'progress') return undefined;
  const step = at - prev;
  return step > 0 && step <= rule.maxStep ? [prev, at] : undefined;
}

/** How many distinct seconds the coverage holds. */
export function coveredSeconds(coverage: Coverage): number {
  let seconds = 0;
  for (let k = 0; k < coverage.length; k += 2) seconds += coverage[k + 1] - coverage[k];
  return seconds;
}

/** The index (even) of the first interval that ends at or after `second`: the first that [second, ...) may touch. */
function firstReaching(coverage: Coverage, second: number): number {
  let low = 0;
  let high = coverage.length / 2;
  while (low < high) {
    const mid = (low + high) >> 1;
    if (coverage[2 * mid + 1] < second) low = mid + 1;
    else high = mid;
  }
  return 2 * low;
}

/**
 * Adds [from, to) to the coverage, in place. Returns the seconds it newly
 * covers as flattened [start, end) intervals, in order (none if it held them
 * all, or if the interval is empty).
 */
export function cover(coverage: Coverage, from: number, to: number): number[] {
  if (from >= to) return [];
  const first = firstReaching(coverage, from);
  if (first < coverage.length && coverage[first] <= from && (first + 2 >= coverage.length || coverage[first + 2] > to)) {
    // The common case, a player going on from where it was: one interval grows (or holds it all), none merge.
    const end = coverage[first + 1];
    if (to <= end) return [];
    coverage[first + 1] = to;
    return [end, to];
  }
  let last = first;
  const added: number[] = [];
  let cursor = from;
  // Every interval that overlaps or touches [from, to) merges into one.
  while (last < coverage.length && coverage[last] <= to) {
    if (coverage[last] > cursor) added.push(cursor, coverage[last]);
    cursor = Math.max(cursor, coverage[last + 1]);
    last += 2;
  }
  if (cursor < to) added.push(cursor, to);
  const start = last > first ? Math.min(from, coverage[first]) : from;
  const end = last > first ? Math.max(to, coverage[last - 1]) : to;
  coverage.splice(first, last - first, start, end);
  return added;
}

/**
 * A movie's retention as the changes in how many pairs cover a second: +1
 * where a piece of a pair's new coverage starts, -1 where it ends.
 */
export class Retention {
  readonly changes = new Map<number, number>();

  /** Counts the pieces a pair newly covers (what cover() returned). */
  add(pieces: number[]): void {
    for (let k = 0; k < pieces.length; k += 2) {
      this.shift(pieces[k], 1);
      this.shift(pieces[k + 1], -1);
    }
  }

  private shift(second: number, by: number): void {
    const next = (this.changes.get(second) ?? 0) + by;
    if (next === 0) this.changes.delete(second);
    else this.changes.set(second, next);
  }

  /** How many pairs cover each of these seconds (in any order). */
  at(seconds: number[]): number[] {
    const marks = [...this.changes].sort((a, b) => a[0] - b[0]);
    const order = seconds.map((second, i) => [second, i] as const).sort((a, b) => a[0] - b[0]);
    const counts = new Array<number>(seconds.length);
    let covering = 0;
    let m = 0;
    for (const [second, i] of order) {
      while (m < marks.length && marks[m][0] <= second) covering += marks[m++][1];
      counts[i] = covering;
    }
    return counts;
  }
}

/** The seconds a retention curve of `points` points samples over `duration`: floor(i * duration / points), i = 0..points-1. */
export function samplePoints(duration: number, points: number): number[] {
  return Array.from({ length: points }, (_, i) => Math.floor((i * duration) / points));
}
