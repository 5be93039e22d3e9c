// Rows as both stores read them, into the API's answers: times are kept as
// milliseconds since the epoch and answered as ISO 8601.
import type { Page } from './store.ts';

export type Row<T> = Omit<T, 'updatedAt'> & { updatedAt: number };

export function withIsoTime<T extends { updatedAt: string }>(row: Row<T>): T {
  return { ...row, updatedAt: new Date(row.updatedAt).toISOString() } as T;
}

/** A page of `limit` rows from `limit + 1` read: the extra one says whether more follow. */
export function page<T extends { updatedAt: string }>(rows: Row<T>[], limit: number): Page<T> {
  return { items: rows.slice(0, limit).map(withIsoTime<T>), more: rows.length > limit };
}
