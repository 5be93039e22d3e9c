// wrk, pinned: the benchmarks' load tool. A server runs on core 0 and wrk on
// core 1, so that a rate measures the server's own cost per request rather
// than how it shares the cores with the load tool. Unpinned, server and wrk
// share every core, as on a real machine, for servers of several processes.
import { execFile, spawnSync } from 'node:child_process';
import { cpus } from 'node:os';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { childrenOf, childServer, procStat } from '../helpers.ts';

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

async function listening(server: ReturnType<typeof childServer>) {
  return { ...server, url: await server.listening };
}

/** A server started on core 0, once it listens. */
export const startPinned = (command: string, args: string[], env: Record<string, string> = {}) =>
  listening(childServer(...onCore(0, command, args), env));

/** A server free to run on every core, once it listens. */
export const startUnpinned = (command: string, args: string[], env: Record<string, string> = {}) =>
  listening(childServer(command, args, env));

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
  /** wrk's own CPU seconds: beside an unpinned server, whether it had a core to spare. */
  cpuSeconds: number;
}

/** CPU seconds of a process's children (by default this one's) that have ended and been waited for (cutime and cstime). */
export function endedChildrenCpu(pid: number | 'self' = 'self'): number {
  const fields = procStat(pid);
  return (Number(fields[13]) + Number(fields[14])) / 100;
}

/** One wrk run on core 1 (on any core with `unpinned`), with one of the scripts in wrk/ and its arguments. */
export async function wrk(url: string, script: string, scriptArgs: string[], clients: number, seconds: number, unpinned = false): Promise<WrkResult> {
  const wrkArgs = [
    '-t1', `-c${clients}`, `-d${seconds}s`, '--timeout', '10s', '-s', `${WRK_DIR}${script}`, url,
    ...(scriptArgs.length > 0 ? ['--', ...scriptArgs] : []),
  ];
  const [command, args] = unpinned ? ['wrk', wrkArgs] : onCore(1, 'wrk', wrkArgs);
  const before = endedChildrenCpu();
  const { stdout } = await promisify(execFile)(command, args, { env: { ...process.env, WRK_REPORT: `${WRK_DIR}report.lua` }, encoding: 'utf8' });
  const line = /WRK_RESULT (.*)/.exec(stdout);
  if (!line) throw new Error(`wrk printed no result:\n${stdout}`);
  // Children ending meanwhile (a server stopped) count too: only the runs one at a time read this.
  return { ...(JSON.parse(line[1]) as Omit<WrkResult, 'cpuSeconds'>), cpuSeconds: endedChildrenCpu() - before };
}

/** CPU seconds used so far by these processes (user and system). */
export function cpuSeconds(pids: number[]): number {
  let ticks = 0;
  for (const pid of pids) {
    try {
      const fields = procStat(pid);
      ticks += Number(fields[11]) + Number(fields[12]);
    } catch {
      // gone meanwhile
    }
  }
  return ticks / 100;
}

/** A process and its descendants (tsx runs the bare server in a child process). */
export function processTree(root: number): number[] {
  const tree = [root];
  for (const pid of tree) tree.push(...childrenOf(pid));
  return tree;
}
