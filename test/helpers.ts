// Real parts for tests: a temporary folder, the server on an ephemeral port,
// the CLI as a child process.
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after } from 'node:test';
import Database from 'better-sqlite3';
import { fileURLToPath } from 'node:url';
import { silentLogger } from '../src/log.ts';
import { checkAnswer } from './support/openapi-check.ts';
import { SERVER_DEFAULTS } from '../src/cli/options.ts';
import { migrations } from '../src/store/sql-files.ts';
import { startServer, type RunningServer, type ServerConfig } from '../src/server.ts';

export const BIN = fileURLToPath(new URL('../bin/watchtime', import.meta.url));

/** Registers clean-up work; it runs last-registered first. */
export type Cleanup = (fn: () => unknown) => void;

/**
 * A Cleanup that runs after a test (pass its context) or, called in a describe
 * body with no argument, after the suite.
 */
export function cleanupAfter(t?: { after: (fn: () => Promise<void>) => void }): Cleanup {
  const fns: (() => unknown)[] = [];
  const runAll = async () => {
    for (const fn of fns.reverse()) await fn();
  };
  if (t) t.after(runAll);
  else after(runAll);
  return (fn) => void fns.push(fn);
}

/** A fresh folder, removed at clean-up. */
export function tempDir(cleanup: Cleanup): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'watchtime-test-'));
  cleanup(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** The server in this process on an ephemeral port, closed at clean-up. */
export async function serve(
  cleanup: Cleanup,
  db: string,
  config: Partial<ServerConfig> = {},
): Promise<RunningServer> {
  // No lame duck unless a test asks for one: a test that probed /readyz would otherwise wait it out at clean-up.
  const server = await startServer(
    { ...SERVER_DEFAULTS, host: '127.0.0.1', port: 0, db, rule: {}, drainMs: 0, ...config },
    silentLogger,
  );
  cleanup(() => server.close());
  return server;
}

export interface Answer {
  status: number;
  headers: Headers;
  body: any;
}

/** A request to the API; its answer must match the OpenAPI document (test/support/openapi-check.ts). */
export async function request(url: string, init: RequestInit = {}): Promise<Answer> {
  const res = await fetch(url, init);
  const text = await res.text();
  const type = res.headers.get('content-type') ?? '';
  const body = type.includes('json') ? JSON.parse(text) : text;
  checkAnswer(init.method ?? 'GET', url, res.status, type, body);
  return { status: res.status, headers: res.headers, body };
}

export function post(base: string, body: unknown, contentType = 'application/json', headers: Record<string, string> = {}) {
  return request(`${base}/events`, {
    method: 'POST',
    headers: { 'content-type': contentType, ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
}

export const get = (base: string, pathname: string, headers: Record<string, string> = {}) =>
  request(`${base}${pathname}`, { headers });

export interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs bin/watchtime to its end. */
export function cli(args: string[], env: Record<string, string> = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, ...env } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
}

/** Every aggregate row, straight from the file; a user's totals summed from its pairs, as SQLite reads them. */
export function snapshot(db: string) {
  const conn = new Database(db, { readonly: true });
  try {
    return {
      // Not the generation: it counts rebuilds, and says nothing of the totals.
      settings: conn.prepare('SELECT id, accounting, max_step FROM settings').all(),
      users: conn
        .prepare(
          'SELECT name, sum(watched) AS watched, count(*) AS movies, sum(events) AS events, max(last_seq) AS last_seq ' +
            'FROM users JOIN user_movies ON user_id = id GROUP BY id ORDER BY id',
        )
        .all(),
      movies: conn
        .prepare('SELECT slug, watched, viewers, events, last_seq FROM movies JOIN movie_totals ON movie_id = id ORDER BY id')
        .all(),
      pairs: conn.prepare('SELECT * FROM user_movies ORDER BY user_id, movie_id').all(),
    };
  } finally {
    conn.close();
  }
}

/** The arguments to node of `watchtime serve` on 127.0.0.1 (port 0 and no lame duck unless args say otherwise). */
export const serveArgs = (args: string[]) => [BIN, 'serve', '--host', '127.0.0.1', '--port', '0', '--drain-ms', '0', ...args];

/** `watchtime serve` as a child process on 127.0.0.1 (port 0 unless args say otherwise). */
export const serverProcess = (args: string[], env: Record<string, string> = {}) => childServer(process.execPath, serveArgs(args), env);

/** A server process that says "listening on 127.0.0.1:PORT" on stderr once it listens. */
export function childServer(command: string, args: string[], env: Record<string, string> = {}) {
  const child = spawn(command, args, { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ...env } });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const listening = new Promise<string>((resolve, reject) => {
    child.stderr.on('data', () => {
      const match = /listening on 127\.0\.0\.1:(\d+)/.exec(stderr);
      if (match) resolve(`http://127.0.0.1:${match[1]}`);
    });
    child.on('exit', () => reject(new Error(`server exited early: ${stderr}`)));
  });
  return { child, listening, exited, stderr: () => stderr };
}

/** A port nothing listens on now, for a server that must keep its port across restarts. */
export function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const probe = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as net.AddressInfo;
      probe.close(() => resolve(port));
    });
  });
}

/**
 * A database as watchtime's first schema left it, with one pair's two events
 * (ann watched heat: at 10, then 40) and its totals; `extra` SQL runs after.
 */
export function schemaOneDatabase(file: string, extra = ''): void {
  const old = new Database(file);
  old.exec(migrations('sqlite')[0].sql);
  old.exec(`
    PRAGMA user_version = 1;
    INSERT INTO settings VALUES (1, 'progress', 120);
    INSERT INTO users VALUES (1, 'ann', 30, 1, 2, 2);
    INSERT INTO movies VALUES (1, 'heat', 30, 1, 2, 2);
    INSERT INTO user_movies VALUES (1, 1, 40, 30, 2, 2);
    INSERT INTO events VALUES (1, 1, 1, 10, 1700000000000, NULL), (2, 1, 1, 40, 1700000005000, 'x');
    ${extra}`);
  old.close();
}

/**
 * The fields of /proc/PID/stat after the command's name: [0] the state, [1]
 * the parent, [11] and [12] its own CPU ticks (user, system), [13] and [14]
 * those of its children that ended and were waited for. Throws once it is gone.
 */
export function procStat(pid: number | string): string[] {
  return readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
}

/** The children of a process: a server's HTTP workers (serve --workers). */
export function childrenOf(pid: number): number[] {
  return readdirSync('/proc')
    .filter((name) => /^\d+$/.test(name))
    .filter((name) => {
      try {
        return Number(procStat(name)[1]) === pid;
      } catch {
        return false; // gone meanwhile
      }
    })
    .map(Number);
}

/** An answer read by `connection`, on its own keep-alive connection. */
export interface ConnectionAnswer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: any;
}

/**
 * A client with one keep-alive connection of its own: node:cluster gives each
 * connection to one worker. A body that is a string is sent as it is, any
 * other as JSON.
 */
export function connection(base: string) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const send = (method: string, pathname: string, body?: unknown) =>
    new Promise<ConnectionAnswer>((resolve, reject) => {
      const req = http.request(`${base}${pathname}`, { method, agent, headers: { 'content-type': 'application/json' } }, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d) => (text += d));
        res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: text.startsWith('{') ? JSON.parse(text) : text }));
      });
      req.on('error', reject);
      req.end(body === undefined || typeof body === 'string' ? body : JSON.stringify(body));
    });
  return {
    get: (pathname: string) => send('GET', pathname),
    post: (body: unknown) => send('POST', '/events', body),
    put: (pathname: string, body: string) => send('PUT', pathname, body),
    close: () => agent.destroy(),
  };
}
