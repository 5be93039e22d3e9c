// What `watchtime serve` takes, once its options are read.
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import type { RequestedRule } from './accounting.ts';
import type { EpisodeTiming } from './log.ts';

export interface ServerConfig {
  host: string;
  port: number;
  db: string;
  /** Only what the operator asked for; the rest comes from the database. */
  rule: RequestedRule;
  ingestToken?: string;
  readToken?: string;
  flushMs: number;
  batchSize: number;
  queueSize: number;
  /** Most bytes of request bodies being read at once, per process that serves HTTP (default 64 MiB). */
  bodyMemory?: number;
  /**
   * Processes that serve HTTP. 1: one process serves and writes. More: that
   * many workers read, check and answer requests, and one writer process
   * commits their events (see src/workers/).
   */
  workers?: number;
  /** Slow clients are cut off: headers must arrive within headersMs, the whole request within requestMs. */
  timeouts?: { headersMs: number; requestMs: number };
  /**
   * Shutdown's lame duck: how long /readyz answers 503 while requests are
   * still served, so that a load balancer sees the server leave. Only when
   * something probed /readyz in the last minute: with nobody watching there
   * is nobody to tell, and the server stops at once.
   */
  drainMs?: number;
  /** Shutdown: how long open requests may take once the queue is flushed. */
  closeGraceMs?: number;
  /** How long an idle keep-alive connection is kept: longer than a load balancer's own idle timeout (60 s for most). */
  keepAliveMs?: number;
  /** How faults that repeat are summed up in the log (tests shorten it). */
  episodes?: EpisodeTiming;
}

export const LIFECYCLE_DEFAULTS = { drainMs: 5_000, closeGraceMs: 5_000, keepAliveMs: 65_000 } as const;
/** A readiness probe this recent means a load balancer is watching, and the shutdown drains for it. */
export const PROBED_WITHIN_MS = 60_000;
/** A 10,000-event batch of 200-character names fits with room to spare. */
export const BODY_LIMIT = 16 * 1024 * 1024;

/** What the HTTP app takes of the configuration, in one process or in each worker. */
export const httpSettings = (config: ServerConfig) => ({
  ingestToken: config.ingestToken,
  readToken: config.readToken,
  bodyLimit: BODY_LIMIT,
  bodyMemory: config.bodyMemory,
});

/**
 * --workers auto: one process that serves and writes on one or two cores;
 * beyond, a core for the writer and an HTTP worker for each other core.
 * On two cores, two workers beside the writer served more requests at 256
 * connections (1.1 to 1.4 times) but fewer at 32, with a worse p99 and 2.5
 * times the memory (docs/performance.md): three processes share two cores.
 * The cores are those this process may run on and, in a container, its CPU
 * quota: Node 20 counts the first only, and a container given 1 CPU on a
 * 64-core host would start 63 workers.
 */
export function autoWorkers(cores = Math.min(availableParallelism(), cpuQuota() ?? Infinity)): number {
  return cores > 2 ? cores - 1 : 1;
}

/** The cgroup's CPU quota in whole cores (rounded up), if one is set: v2's cpu.max, or v1's CFS quota. */
export function cpuQuota(read = (file: string) => readFileSync(file, 'utf8')): number | undefined {
  const cores = (quota: number, period: number) => (quota > 0 && period > 0 ? Math.max(1, Math.ceil(quota / period)) : undefined);
  try {
    const [quota, period] = read('/sys/fs/cgroup/cpu.max').trim().split(/\s+/);
    return quota === 'max' ? undefined : cores(Number(quota), Number(period));
  } catch {
    // not cgroup v2
  }
  try {
    return cores(Number(read('/sys/fs/cgroup/cpu/cpu.cfs_quota_us')), Number(read('/sys/fs/cgroup/cpu/cpu.cfs_period_us')));
  } catch {
    return undefined; // no cgroup, or not Linux
  }
}
