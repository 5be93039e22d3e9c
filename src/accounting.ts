// The watch-time rule (SPEC section 2): how much one event credits.

export type AccountingMode = 'progress' | 'sum';

export interface AccountingRule {
  accounting: AccountingMode;
  /** progress only: a larger forward step is a seek, not watching. */
  maxStep: number;
}

export const DEFAULT_RULE: AccountingRule = { accounting: 'progress', maxStep: 120 };

export const ACCOUNTING_MODES: readonly AccountingMode[] = ['progress', 'sum'];

/**
 * Seconds credited for an event at `at` when the pair's position was `prev`
 * (0 for a new pair). The pair's position then becomes `at` in both modes.
 */
export function credit(rule: AccountingRule, prev: number, at: number): number {
  if (rule.accounting === 'sum') return at;
  const step = at - prev;
  // 0: a pause or a repeat; negative: a rewind; over maxStep: a seek forward.
  return step > 0 && step <= rule.maxStep ? step : 0;
}

/** The rule asked for differs from the one the database was computed with; the message says what to do. */
export class SettingsMismatchError extends Error {}

export function sameRule(a: AccountingRule, b: AccountingRule): boolean {
  if (a.accounting !== b.accounting) return false;
  return a.accounting === 'sum' || a.maxStep === b.maxStep;
}

export function describeRule(rule: AccountingRule): string {
  return rule.accounting === 'sum' ? 'sum' : `progress with --max-step ${rule.maxStep}`;
}

/** What was asked for on the command line; unset parts keep the stored rule. */
export type RequestedRule = Partial<AccountingRule>;

/** The rule asked for, completed from the stored rule or, for a new database, the defaults. */
export function resolveRule(stored: AccountingRule | undefined, requested: RequestedRule): AccountingRule {
  const base = stored ?? DEFAULT_RULE;
  return { accounting: requested.accounting ?? base.accounting, maxStep: requested.maxStep ?? base.maxStep };
}
