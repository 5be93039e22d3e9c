// The interval arithmetic of SPEC section 7 (src/analytics/coverage.ts)
// against brute force: a set of seconds per pair, and a count per second;
// and the time series' UTC buckets (src/analytics/buckets.ts).
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { bucketStart, bucketStarts, MAX_BUCKETS, type RangeProblem } from '../src/analytics/buckets.ts';
import { cover, coveredBy, coveredSeconds, Retention, samplePoints, type Coverage } from '../src/analytics/coverage.ts';

const interval = fc.tuple(fc.integer({ min: 0, max: 120 }), fc.integer({ min: 0, max: 120 }));

/** The seconds of flattened [start, end) intervals. */
function secondsOf(intervals: number[]): number[] {
  const seconds: number[] = [];
  for (let k = 0; k < intervals.length; k += 2) for (let s = intervals[k]; s < intervals[k + 1]; s++) seconds.push(s);
  return seconds;
}

describe('coverage', () => {
  test('cover keeps sorted intervals that neither overlap nor touch, holding exactly the seconds added, and says which are new', () => {
    fc.assert(
      fc.property(fc.array(interval, { maxLength: 40 }), (intervals) => {
        const coverage: Coverage = [];
        const brute = new Set<number>();
        for (const [from, to] of intervals) {
          const before = new Set(brute);
          for (let s = from; s < to; s++) brute.add(s);
          const added = cover(coverage, from, to);
          assert.deepEqual(secondsOf(added), [...brute].filter((s) => !before.has(s)).sort((a, b) => a - b), 'the new seconds, in order');
          for (let k = 0; k < coverage.length; k += 2) {
            assert.ok(coverage[k] < coverage[k + 1], 'no empty interval');
            if (k > 0) assert.ok(coverage[k - 1] < coverage[k], 'apart from the one before');
          }
          assert.deepEqual(secondsOf(coverage), [...brute].sort((a, b) => a - b));
          assert.equal(coveredSeconds(coverage), brute.size);
        }
      }),
      { numRuns: 500 },
    );
  });

  test('retention at a second counts the pairs that cover it', () => {
    fc.assert(
      fc.property(fc.array(fc.array(interval, { maxLength: 12 }), { maxLength: 8 }), fc.integer({ min: 1, max: 50 }), (pairs, points) => {
        const retention = new Retention();
        const perSecond = new Array<number>(121).fill(0);
        for (const intervals of pairs) {
          const coverage: Coverage = [];
          for (const [from, to] of intervals) retention.add(cover(coverage, from, to));
          for (const s of secondsOf(coverage)) perSecond[s] += 1;
        }
        const every = Array.from({ length: 121 }, (_, s) => s);
        assert.deepEqual(retention.at(every), perSecond);
        const sampled = samplePoints(120, points);
        assert.deepEqual(retention.at([...sampled].reverse()), sampled.map((s) => perSecond[s]).reverse(), 'in any order');
      }),
      { numRuns: 300 },
    );
  });

  test('an event covers [prev, at) only when progress credits its step', () => {
    const progress = { accounting: 'progress', maxStep: 120 } as const;
    assert.deepEqual(coveredBy(progress, 0, 60), [0, 60]);
    assert.deepEqual(coveredBy(progress, 60, 180), [60, 180], 'a step of maxStep is watching');
    assert.equal(coveredBy(progress, 60, 181), undefined, 'a longer step is a seek');
    assert.equal(coveredBy(progress, 60, 60), undefined, 'a pause');
    assert.equal(coveredBy(progress, 60, 30), undefined, 'a rewind');
    assert.equal(coveredBy({ accounting: 'sum', maxStep: 120 }, 0, 60), undefined, 'sum covers no interval');
  });

  test('a curve of P points samples floor(i * duration / P)', () => {
    assert.deepEqual(samplePoints(10, 4), [0, 2, 5, 7]);
    assert.deepEqual(samplePoints(3, 5), [0, 0, 1, 1, 2]);
    assert.deepEqual(samplePoints(7200, 1), [0]);
  });
});

describe('time-series buckets', () => {
  const at = (iso: string) => Date.parse(iso);

  test('a bucket is its UTC minute, hour or day', () => {
    assert.equal(bucketStart(at('2026-03-29T01:30:59.999Z'), 'minute'), at('2026-03-29T01:30:00Z'));
    assert.equal(bucketStart(at('2026-03-29T01:30:59.999Z'), 'hour'), at('2026-03-29T01:00:00Z'));
    // The night clocks move in Europe: a UTC day is still 24 hours.
    assert.equal(bucketStart(at('2026-03-29T23:59:59Z'), 'day'), at('2026-03-29T00:00:00Z'));
    assert.equal(bucketStart(at('1969-12-31T23:59:00Z'), 'day'), at('1969-12-31T00:00:00Z'), 'before the epoch too');
  });

  test('by default the last 48 buckets, the current one included', () => {
    const { from, to, starts } = bucketStarts('hour', {}, at('2026-11-30T09:25:00Z'));
    assert.equal(to, at('2026-11-30T10:00:00Z'));
    assert.equal(from, at('2026-11-28T10:00:00Z'));
    assert.equal(starts.length, 48);
    assert.equal(starts.at(-1), at('2026-11-30T09:00:00Z'));
  });

  test('[from, to) from the bucket holding from; a bad or too large range names the parameter and the limit', () => {
    const { starts } = bucketStarts('day', { from: at('2026-11-01T12:00:00Z'), to: at('2026-11-03T00:00:01Z') }, 0);
    assert.deepEqual(starts, [at('2026-11-01T00:00:00Z'), at('2026-11-02T00:00:00Z'), at('2026-11-03T00:00:00Z')]);
    assert.throws(() => bucketStarts('hour', { from: at('2026-11-02T00:00:00Z'), to: at('2026-11-01T00:00:00Z') }, 0), (e: RangeProblem) => e.parameter === 'to');
    assert.throws(
      () => bucketStarts('minute', { from: 0, to: (MAX_BUCKETS + 1) * 60_000 }, 0),
      (e: RangeProblem) => e.parameter === 'to' && e.message.includes(`at most ${MAX_BUCKETS}`),
    );
    assert.equal(bucketStarts('minute', { from: 0, to: MAX_BUCKETS * 60_000 }, 0).starts.length, MAX_BUCKETS);
  });
});
