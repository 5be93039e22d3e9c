// SQL lives in sql/<dialect>/: numbered migrations and named queries.
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const SQL_ROOT = fileURLToPath(new URL('../../sql/', import.meta.url));

export interface Migration {
  version: number;
  name: string;
  sql: string;
}

/** `NNN_name.sql` files, in version order. */
export function migrations(dialect: string): Migration[] {
  const dir = path.join(SQL_ROOT, dialect);
  return readdirSync(dir)
    .map((file) => /^(\d+)_(.+)\.sql$/.exec(file))
    .filter((match) => match !== null)
    .map((match) => ({
      version: Number(match[1]),
      name: match[2],
      sql: readFileSync(path.join(dir, match[0]), 'utf8'),
    }))
    .sort((a, b) => a.version - b.version);
}

/** The `-- name: X` blocks of a file of named queries (`queries.sql` unless told). */
export function namedQueries<Name extends string>(
  dialect: string,
  names: readonly Name[],
  file = 'queries.sql',
): Record<Name, string> {
  const text = readFileSync(path.join(SQL_ROOT, dialect, file), 'utf8');
  const found = new Map<string, string>();
  for (const block of text.split(/^-- name: */m).slice(1)) {
    const newline = block.indexOf('\n');
    found.set(block.slice(0, newline).trim(), block.slice(newline + 1).trim());
  }
  const queries = {} as Record<Name, string>;
  for (const name of names) {
    const sql = found.get(name);
    if (sql === undefined) throw new Error(`sql/${dialect}/${file} has no query named ${name}`);
    queries[name] = sql;
  }
  return queries;
}
