// One place that turns --db into a store: a postgres:// or postgresql:// URL
// is PostgreSQL, anything else a SQLite file.
import { PostgresStore, isPostgresUrl } from './postgres.ts';
import { SqliteStore, type SqliteOptions } from './sqlite.ts';
import type { Store } from './store.ts';

export { isPostgresUrl };

export async function openStore(db: string, options: SqliteOptions = {}): Promise<Store> {
  if (isPostgresUrl(db)) return PostgresStore.open(db, { readonly: options.readonly });
  return new SqliteStore(db, options);
}

/** --db as it may be shown: a URL without its password. */
export function describeDb(db: string): string {
  if (!isPostgresUrl(db)) return db;
  const url = new URL(db);
  if (url.password) url.password = '***';
  return url.toString();
}
