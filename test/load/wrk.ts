// wrk, pinned: the benchmarks' load tool. A server runs on core 0 and wrk on
// core 1, so that a rate measures the server's own cost per request rather
// than how it shares the cores with the load tool.
import { execFile, spawnSync } from 'node:child_process';
import { cpus } from 'node:os';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { childServer } from '../helpers.ts';

export const WRK_DIR = fileURLToPath(new URL('./wrk/', import.meta.url));

/** Exits with how to install a tool the benchmark needs. */
export function need(command: string, packageName: string) {
  if (spawnSync(command, ['--version']).error) {
    console.error(`this benchmark needs ${command}: apt-get install ${packageName}`);
    process.exit(2);
  }
}

export const pinned = cpus().length >= 2;
/** Servers on core 0, the load tool on core 1; unpinned on a single core. */
export const onCore = (core: number, command: string, args: string[]): [string, string[]] =>
  pinned ? ['taskset', ['-c', String(core), command, ...args]] : [command, args];

/** A server started on core 0, once it listens. */
export async function startPinned(command: string, args: string[], env: Record<string, string> = {}) {
  const server = childServer(...onCore(0, command, args), env);
  return { ...server, url: await server.listening };
}

export const median = (values: number[]) => {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
};

export interface WrkResult {
  requests: number;
  durationUs: number;
  p50Us: number;
  p99Us: number;
  socketErrors: number;
  non2xx: number;
}

/** One wrk run on core 1, with one of the scripts in wrk/ and its arguments. */
export async function wrk(url: string, script: string, scriptArgs: string[], clients: number, seconds: number): Promise<WrkResult> {
  const [command, args] = onCore(1, 'wrk', [
    '-t1', `-c${clients}`, `-d${seconds}s`, '--timeout', '10s', '-s', `${WRK_DIR}${script}`, url,
    ...(scriptArgs.length > 0 ? ['--', ...scriptArgs] : []),
  ]);
  const { stdout } = await promisify(execFile)(command, args, { env: { ...process.env, WRK_REPORT: `${WRK_DIR}report.lua` }, encoding: 'utf8' });
  const line = /WRK_RESULT (.*)/.exec(stdout);
  if (!line) throw new Error(`wrk printed no result:\n${stdout}`);
  return JSON.parse(line[1]) as WrkResult;
}
