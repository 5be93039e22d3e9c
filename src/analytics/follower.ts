// The analytics follower: off the ingest path, it reads the stored events by
// number after its cursor and writes what they add, with the new cursor, in
// one transaction a round (the store's followRound). A full round is followed
// at once by the next, yielding to the event loop between them so that
// ingest's flushes interleave; an empty or partial one waits `idleMs`.
import type { AnalyticsStore } from '../store/analytics-rows.ts';
import { StoreBusyError } from '../store/store.ts';
import { followChunk } from './follow.ts';

/**
 * Events a round takes at most. On SQLite a round runs on the writer's
 * event loop: 5,000 events are about 15 ms of it, short beside a flush's
 * wait for the disk.
 */
export const ROUND_EVENTS = 5_000;
/** How long an idle follower waits before it looks again: the analytics' lag under a light load. */
export const IDLE_MS = 100;
/** After a failed round (not a busy database), before the next. */
const FAILED_MS = 1_000;

export interface FollowerOptions {
  roundEvents?: number;
  idleMs?: number;
  onError?: (error: unknown) => void;
}

export class Follower {
  /** Events applied by this process's follower, all time. */
  applied = 0;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private stopped = false;

  constructor(
    private readonly store: AnalyticsStore,
    private readonly options: FollowerOptions = {},
  ) {}

  start(): this {
    this.schedule(0);
    return this;
  }

  private schedule(ms: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => (this.running = this.round()), ms);
  }

  private async round(): Promise<void> {
    const limit = this.options.roundEvents ?? ROUND_EVENTS;
    let wait = this.options.idleMs ?? IDLE_MS;
    try {
      const applied = await this.store.followRound(limit, followChunk);
      this.applied += applied;
      if (applied === limit) wait = 0;
    } catch (error) {
      // Busy: a rebuild or a backup holds the write lock; the next round tries again.
      if (!(error instanceof StoreBusyError)) {
        this.options.onError?.(error);
        wait = FAILED_MS;
      }
    }
    this.schedule(wait);
  }

  /** Follows every event stored now, then returns how many it applied (the command line's rebuild, the tests). */
  async catchUp(): Promise<number> {
    const limit = this.options.roundEvents ?? ROUND_EVENTS;
    let total = 0;
    for (let applied = limit; applied === limit; total += applied) applied = await this.store.followRound(limit, followChunk);
    this.applied += total;
    return total;
  }

  /** Stops after the round under way, if any. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.running;
  }
}
