// One place that turns --db into a store: a postgres:// or postgresql:// URL
// is PostgreSQL, anything else a SQLite file. Either applies the migrations
// the database lacks as it opens (unless read-only), telling onMigration of each.
import { SqliteStore, type SqliteOptions } from './sqlite.ts';
import type { Store } from './store.ts';

export const isPostgresUrl = (db: string) => /^postgres(ql)?:\/\//i.test(db);

export async function openStore(db: string, options: SqliteOptions = {}): Promise<Store> {
  if (isPostgresUrl(db)) {
    // Loaded only when asked for: the SQLite server and CLI neither wait for pg nor hold it in memory.
    const { PostgresStore } = await import('./postgres.ts');
    // No serve lock: several servers sharing one PostgreSQL database is what it is for.
    return PostgresStore.open(db, { readonly: options.readonly, onMigration: options.onMigration });
  }
  return new SqliteStore(db, options);
}

/** --db as it may be shown: a URL without its password. */
export function describeDb(db: string): string {
  if (!isPostgresUrl(db)) return db;
  const url = new URL(db);
  if (url.password) url.password = '***';
  // libpq takes a password in the query string too.
  for (const key of ['password', 'sslpassword']) if (url.searchParams.has(key)) url.searchParams.set(key, '***');
  return url.toString();
}
