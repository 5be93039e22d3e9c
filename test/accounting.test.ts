import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { credit, DEFAULT_RULE, resolveRule, sameRule, type AccountingRule } from '../src/accounting.ts';

/** Applies events to one pair as the store does: credit, then position = at. */
function replay(rule: AccountingRule, ats: number[]) {
  let position = 0;
  let watched = 0;
  return ats.map((at) => {
    const step = at - position;
    const credited = credit(rule, position, at);
    position = at;
    watched += credited;
    return { at, step, credit: credited, position, watched };
  });
}

describe('progress accounting', () => {
  test('the worked example of the spec, row by row', () => {
    const rows = replay(DEFAULT_RULE, [10, 20, 20, 900, 910, 300, 330]);
    assert.deepEqual(rows, [
      { at: 10, step: 10, credit: 10, position: 10, watched: 10 },
      { at: 20, step: 10, credit: 10, position: 20, watched: 20 },
      { at: 20, step: 0, credit: 0, position: 20, watched: 20 },
      { at: 900, step: 880, credit: 0, position: 900, watched: 20 },
      { at: 910, step: 10, credit: 10, position: 910, watched: 30 },
      { at: 300, step: -610, credit: 0, position: 300, watched: 30 },
      { at: 330, step: 30, credit: 30, position: 330, watched: 60 },
    ]);
  });

  test('a step of exactly maxStep is watching; one more second is a seek', () => {
    const rule = { accounting: 'progress', maxStep: 120 } as const;
    assert.equal(credit(rule, 100, 220), 120);
    assert.equal(credit(rule, 100, 221), 0);
  });

  test('the first event of a pair counts from 0', () => {
    assert.equal(credit(DEFAULT_RULE, 0, 45), 45);
    assert.equal(credit(DEFAULT_RULE, 0, 4500), 0, 'a first event deep into a show is a resume, not 4500 s watched');
    assert.equal(credit(DEFAULT_RULE, 0, 0), 0);
  });

  test('maxStep changes what counts as a seek', () => {
    assert.equal(credit({ accounting: 'progress', maxStep: 5 }, 10, 20), 0);
    assert.equal(credit({ accounting: 'progress', maxStep: 10 }, 10, 20), 10);
  });
});

describe('sum accounting', () => {
  test('credits at itself whatever the position', () => {
    const rows = replay({ accounting: 'sum', maxStep: 120 }, [10, 20, 20, 900, 300]);
    assert.deepEqual(rows.map((r) => r.credit), [10, 20, 20, 900, 300]);
    assert.equal(rows.at(-1)!.watched, 1250);
    assert.equal(rows.at(-1)!.position, 300, 'the position is still the latest at');
  });
});

describe('rules', () => {
  test('sum ignores maxStep when comparing', () => {
    assert.ok(sameRule({ accounting: 'sum', maxStep: 1 }, { accounting: 'sum', maxStep: 999 }));
    assert.ok(!sameRule({ accounting: 'progress', maxStep: 1 }, { accounting: 'progress', maxStep: 2 }));
    assert.ok(!sameRule({ accounting: 'progress', maxStep: 1 }, { accounting: 'sum', maxStep: 1 }));
  });

  test('unset parts keep the stored rule, or the default for a new database', () => {
    assert.deepEqual(resolveRule(undefined, {}), DEFAULT_RULE);
    assert.deepEqual(resolveRule({ accounting: 'sum', maxStep: 60 }, {}), { accounting: 'sum', maxStep: 60 });
    assert.deepEqual(resolveRule({ accounting: 'sum', maxStep: 60 }, { accounting: 'progress' }), {
      accounting: 'progress',
      maxStep: 60,
    });
    assert.deepEqual(resolveRule(undefined, { maxStep: 30 }), { accounting: 'progress', maxStep: 30 });
  });
});
