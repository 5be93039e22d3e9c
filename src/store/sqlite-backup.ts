// An online, consistent copy of a SQLite database that a server may be
// writing to, for `watchtime backup`.
//
// The copy is made by `VACUUM INTO` from a read-only connection: one read
// transaction, so the copy is the database as it stood at one commit (the
// WAL's committed frames included, which a plain `cp` of the file misses),
// written compacted into a new file. In WAL mode that reader blocks nobody:
// the server goes on committing, and its checkpoints only wait to reset the
// WAL until the copy is done. SQLite's backup API was the other way; it
// copies the pages a few at a time and starts over whenever another
// connection writes, which against a server committing every few
// milliseconds may never end (or, copying every page in one step, it gives
// the same snapshot as VACUUM INTO, uncompacted).
//
// The copy goes to a temporary file beside the target, is checked, synced
// (VACUUM INTO does not sync what it writes), and only then renamed to the
// target name and the directory synced: a crash or a full disk never leaves
// a half copy under that name. The server's serve lock is not touched.
import { accessSync, closeSync, constants, existsSync, fsyncSync, linkSync, openSync, realpathSync, renameSync, rmSync, statSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { openProblem, schemaOf } from './sqlite.ts';

/** The copy cannot be made; the message says why, in one line. */
export class BackupError extends Error {}

export interface BackupResult {
  /** Where the copy is, as given. */
  file: string;
  /** Events in the copy. */
  events: number;
  /** The copy's size. */
  bytes: number;
  /** The copy's schema version (PRAGMA user_version): the watchtime version that can serve it. */
  schemaVersion: number;
  seconds: number;
}

/** Left by a rebuild that was running when the copy was taken: half built, of no use in the copy. */
const REBUILD_TABLES = ['next_user_movies', 'next_user_totals', 'next_movie_totals'];
/** Files SQLite keeps beside a database, and the serve lock (./serve-lock.ts). */
const COMPANIONS = ['-wal', '-shm', '-journal', '-lock'];
/** How long the copy's read transaction waits for a moment when the WAL is being reset or recovered. */
const BUSY_TIMEOUT_MS = 5_000;
/** The reading connection's page cache, in KiB. */
const CACHE_KIB = 16 * 1024;

/**
 * Copies the watchtime database `source` to `target`. Refuses a target that
 * exists (unless `force`), that is the source or one of its companion files,
 * or that a stale -wal or -journal beside it would corrupt once renamed in.
 */
export function backupSqlite(source: string, target: string, options: { force?: boolean } = {}): BackupResult {
  const started = process.hrtime.bigint();
  checkSource(source);
  checkTarget(source, target, options.force ?? false);

  // Beside the target, so that the rename stays on one file system; named after
  // it, so that one left by a process killed mid-copy says what it was.
  const temp = `${target}.partial-${process.pid}`;
  rmSync(temp, { force: true }); // VACUUM INTO writes only a new or empty file
  try {
    const db = openSource(source);
    try {
      checkOurs(db, source);
      db.prepare('VACUUM INTO ?').run(temp);
    } catch (error) {
      throw failed(error, source, target);
    } finally {
      db.close(); // ends the read transaction at once: the server's checkpoints go on
    }
    const copy = finish(temp, source, target);
    syncFile(temp);
    place(temp, target, options.force ?? false);
    syncDirectory(path.dirname(path.resolve(target)));
    return {
      file: target,
      ...copy,
      bytes: statSync(target).size,
      seconds: Number(process.hrtime.bigint() - started) / 1e9,
    };
  } finally {
    rmSync(temp, { force: true });
    rmSync(`${temp}-journal`, { force: true });
  }
}

function checkSource(source: string): void {
  let stat;
  try {
    stat = statSync(source);
  } catch {
    throw new BackupError(`no database at ${source} (pass --db or set WATCHTIME_DB)`);
  }
  if (!stat.isFile()) throw new BackupError(`${source} is not a file (pass --db the database file)`);
}

function checkTarget(source: string, target: string, force: boolean): void {
  if (/[\\/]$/.test(target)) {
    throw new BackupError(`--to ${target} names a directory; name the file, e.g. ${path.join(target, `watchtime-${today()}.db`)}`);
  }
  const dir = path.dirname(path.resolve(target));
  if (!existsSync(dir)) throw new BackupError(`cannot write the backup ${target}: no directory ${dir}`);
  try {
    accessSync(dir, constants.W_OK);
  } catch {
    throw new BackupError(`cannot write the backup ${target}: this user may not write in ${dir}`);
  }
  const into = path.join(realpathSync(dir), path.basename(target));
  const from = realpathSync(source);
  if (into === from || sameFile(source, target)) {
    throw new BackupError(`--to ${target} is the database itself (--db ${source}); give the backup a file of its own`);
  }
  for (const suffix of COMPANIONS) {
    if (into === `${from}${suffix}`) {
      throw new BackupError(`--to ${target} is SQLite's ${suffix} file of the database ${source}; give the backup a file of its own`);
    }
  }
  const stat = statSync(target, { throwIfNoEntry: false });
  if (stat?.isDirectory()) {
    throw new BackupError(`--to ${target} is a directory; name the file, e.g. ${path.join(target, `watchtime-${today()}.db`)}`);
  }
  if (stat && !force) throw new BackupError(`${target} exists; pass --force to replace it, or choose another name`);
  // Renamed in beside a stale WAL or hot journal, the copy would be opened with
  // that old database's pages laid over it.
  for (const suffix of ['-wal', '-journal']) {
    if (existsSync(`${target}${suffix}`)) {
      throw new BackupError(
        `${target}${suffix} exists: ${target} is in use, or was not closed cleanly; ` +
          'stop what uses it, and remove its -wal, -shm and -journal files before writing a backup there',
      );
    }
  }
}

/** Two names of one file (a hard link, a bind mount). */
function sameFile(a: string, b: string): boolean {
  const sa = statSync(a, { throwIfNoEntry: false });
  const sb = statSync(b, { throwIfNoEntry: false });
  return sa !== undefined && sb !== undefined && sa.dev === sb.dev && sa.ino === sb.ino;
}

const today = () => new Date().toISOString().slice(0, 10);

function openSource(source: string): Database.Database {
  let db: Database.Database | undefined;
  try {
    // Read-only: nothing is written to the source, no migration, no serve lock.
    db = new Database(source, { readonly: true, fileMustExist: true });
    db.pragma(`busy_timeout = ${BUSY_TIMEOUT_MS}`);
    db.pragma(`cache_size = -${CACHE_KIB}`);
    return db;
  } catch (error) {
    db?.close();
    throw explain(error, source);
  }
}

/** Refuses a file that is not a watchtime database, of whatever schema version (a backup before an upgrade is one). */
function checkOurs(db: Database.Database, source: string): void {
  const { objects, ours } = schemaOf(db);
  if (!ours) {
    const tables = objects.filter((o) => o.type === 'table').map((o) => o.name);
    const holds = tables.length === 0 ? 'it is empty' : `it holds ${tables.slice(0, 5).join(', ')}`;
    throw new BackupError(`${source} is not a watchtime database (${holds}); nothing was copied`);
  }
}

/** Drops what a running rebuild had half built, and reads what the copy holds. */
function finish(temp: string, source: string, target: string): { events: number; schemaVersion: number } {
  const copy = new Database(temp, { fileMustExist: true });
  try {
    const tables = copy.prepare("SELECT name FROM sqlite_schema WHERE type = 'table'").pluck().all() as string[];
    const leftovers = REBUILD_TABLES.filter((name) => tables.includes(name));
    if (leftovers.length > 0) {
      copy.exec(leftovers.map((name) => `DROP TABLE ${name};`).join('\n'));
      // Nor the rebuild's start: on the copy no rebuild is running (schema 4 records it).
      if ((copy.pragma('user_version', { simple: true }) as number) >= 4) copy.exec('UPDATE settings SET rebuild_started_at = NULL');
      copy.exec('VACUUM'); // gives their pages back
    }
    return {
      events: copy.prepare('SELECT count(*) FROM events').pluck().get() as number,
      schemaVersion: copy.pragma('user_version', { simple: true }) as number,
    };
  } catch (error) {
    throw failed(error, source, target);
  } finally {
    copy.close();
  }
}

/**
 * Puts the finished copy under the target name at once. Without --force a
 * hard link, which fails rather than replace a file that appeared meanwhile.
 */
function place(temp: string, target: string, force: boolean): void {
  if (!force) {
    try {
      linkSync(temp, target);
      rmSync(temp);
      return;
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'EEXIST') throw new BackupError(`${target} appeared while the copy was made; pass --force to replace it, or choose another name`);
      // A file system without hard links: checked above that nothing is there.
      if (code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'EOPNOTSUPP' && code !== 'EXDEV') throw error;
    }
  }
  renameSync(temp, target);
}

function syncFile(file: string): void {
  const fd = openSync(file, 'r+');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Makes the rename itself durable. */
function syncDirectory(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } catch {
    // Some file systems cannot sync a directory; the rename is still atomic.
  } finally {
    closeSync(fd);
  }
}

/** An error of opening or reading the source as one line that says which file; others as they are. */
function explain(error: unknown, source: string): unknown {
  if (error instanceof BackupError || !(error instanceof Database.SqliteError)) return error;
  const known = openProblem(source, error);
  return new BackupError(known ? `${known}; nothing was copied` : `cannot read ${source}: ${error.message} (${error.code})`);
}

/** An error of making the copy, as one line; nothing is left under the target name. */
function failed(error: unknown, source: string, target: string): unknown {
  if (error instanceof BackupError || !(error instanceof Database.SqliteError)) return error;
  if (error.code === 'SQLITE_NOTADB') return explain(error, source);
  const why = error.code === 'SQLITE_FULL' ? 'the disk is full' : `${error.message} (${error.code})`;
  return new BackupError(`backup of ${source} to ${target} failed: ${why}; nothing was left under that name`);
}
