// One serving process per SQLite file (SPEC section 4): two servers would
// each apply the rule from pair states they remember and the other changed.
//
// The lock is a small SQLite database beside the file, `${file}-lock`, in
// rollback-journal mode. Its owner writes its holder row in an EXCLUSIVE
// transaction, then keeps a read transaction open for its whole life: that
// SHARED lock makes every other starter's BEGIN EXCLUSIVE fail, and the OS
// drops it when the process ends, kill -9 included. SQLite keeps the locks of
// two connections of one process apart too, so two servers in one process
// are refused alike.
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import Database from 'better-sqlite3';

/** Another process serves the file, or the lock cannot be taken; the message says which. */
export class ServeLockError extends Error {}

/** Where the holder was asked to listen; port 0 is a port of its own choosing. */
export interface ServeAddress {
  host: string;
  port: number;
}

interface Holder {
  token: string;
  pid: number;
  host: string;
  startedAt: string;
  address: string;
}

/**
 * How long a starter waits for the lock: a refused starter reading the
 * holder row holds it for a moment, and must not make a rightful one fail.
 */
const TAKE_WAIT_MS = 250;
/** How long the holder row may take to read: another starter may be writing its own. */
const READ_WAIT_MS = 2_000;

const CREATE_HOLDER = `CREATE TABLE IF NOT EXISTS holder (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  token TEXT NOT NULL, pid INTEGER NOT NULL, host TEXT NOT NULL, startedAt TEXT NOT NULL, address TEXT NOT NULL
)`;

export class ServeLock {
  private constructor(private readonly db: Database.Database) {}

  /** Takes the lock of `file` for this server, or throws ServeLockError saying who holds it. */
  static take(file: string, address: ServeAddress): ServeLock {
    const lockFile = `${file}-lock`;
    let db: Database.Database;
    try {
      db = new Database(lockFile);
    } catch (error) {
      throw new ServeLockError(`cannot open the lock file ${lockFile}: ${(error as Error).message}`);
    }
    try {
      const me: Holder = {
        token: randomUUID(),
        pid: process.pid,
        host: hostname(),
        startedAt: new Date().toISOString(),
        address: address.port === 0 ? `${address.host}, on a port of its choosing` : `${address.host}:${address.port}`,
      };
      if (!claim(db, me)) throw new ServeLockError(heldMessage(file, readHolder(db)));
      // Held from here until close(): the read transaction's SHARED lock.
      db.exec('BEGIN');
      const seen = readHolder(db);
      // Another starter wrote its row between this one's commit and read: it holds the file now.
      if (seen?.token !== me.token) throw new ServeLockError(heldMessage(file, seen));
      return new ServeLock(db);
    } catch (error) {
      db.close();
      if (error instanceof ServeLockError) throw error;
      throw new ServeLockError(`cannot take the lock file ${lockFile}: ${(error as Error).message}`);
    }
  }

  /** Lets another server take the file. */
  release(): void {
    if (this.db.open) this.db.close();
  }
}

/** Writes `me` as the holder; false when another process holds the lock. */
function claim(db: Database.Database, me: Holder): boolean {
  db.pragma(`busy_timeout = ${TAKE_WAIT_MS}`);
  try {
    db.exec('BEGIN EXCLUSIVE');
  } catch (error) {
    if ((error as { code?: string }).code === 'SQLITE_BUSY') return false;
    throw error;
  }
  try {
    db.exec(CREATE_HOLDER);
    db.prepare(
      'INSERT OR REPLACE INTO holder (id, token, pid, host, startedAt, address) VALUES (1, :token, :pid, :host, :startedAt, :address)',
    ).run(me);
    db.exec('COMMIT');
  } catch (error) {
    if (db.inTransaction) db.exec('ROLLBACK');
    throw error;
  }
  db.pragma(`busy_timeout = ${READ_WAIT_MS}`);
  return true;
}

/** The holder row, or undefined when it cannot be read (the holder is still writing it). */
function readHolder(db: Database.Database): Holder | undefined {
  db.pragma(`busy_timeout = ${READ_WAIT_MS}`);
  try {
    return db.prepare('SELECT token, pid, host, startedAt, address FROM holder WHERE id = 1').get() as Holder | undefined;
  } catch {
    return undefined;
  }
}

function heldMessage(file: string, holder: Holder | undefined): string {
  const who = holder
    ? `pid ${holder.pid} on ${holder.host}, started ${holder.startedAt}, listening on ${holder.address}`
    : 'a process that is starting';
  return `${file} is already served by another watchtime (${who}); one server per SQLite file: stop that one first, or use PostgreSQL for several`;
}
