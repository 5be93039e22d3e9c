// The analytics follower: off the ingest path, it reads the stored events by
// number after its cursor and writes what they add, with the new cursor, in
// one transaction a round (the store's followRound). A full round is followed
// at once by the next, yielding to the event loop between them so that
// ingest's flushes interleave; an empty or partial one waits `idleMs`.
import type { AnalyticsStore } from '../store/analytics-rows.ts';
import { StoreBusyError, type Awaitable } from '../store/store.ts';
import { startRound } from './follow.ts';

/**
 * Events a round takes at most, in the writer's process (PostgreSQL). It
 * reads them a thousand at a time, its arithmetic between reads holding the
 * event loop about a millisecond; the larger a round, the fewer rows it
 * writes an event (follower-thread.ts says why), but the longer its last
 * step, sorting and sending the round's rows, holds the loop.
 */
const ROUND_EVENTS = 20_000;
/**
 * Between full rounds: a pause, so that another process that waits for the
 * write lock (a rebuild, which sleeps between tries) finds it free.
 */
const BETWEEN_ROUNDS_MS = 2;
/**
 * While ingest has events waiting, a full round is followed by a pause four
 * times as long as it took: the follower takes at most a fifth of the event
 * loop from ingest, and catches up once the load eases.
 */
const BUSY_PAUSE_FACTOR = 4;
/** How long an idle follower waits before it looks again: the analytics' lag under a light load. */
const IDLE_MS = 100;
/** After a failed round (not a busy database), before the next. */
const FAILED_MS = 1_000;

export interface FollowerOptions {
  roundEvents?: number;
  idleMs?: number;
  /** Whether ingest has nothing waiting now; the follower yields to it otherwise. */
  ingestIdle?: () => boolean;
  /** Whether a rebuild is running: its swap starts the analytics again, so following meanwhile would be lost work. */
  rebuilding?: () => Awaitable<boolean>;
  onError?: (error: unknown) => void;
  /** After a failed round (not a busy database), before the next. */
  failedMs?: number;
}

/** A follower at work, in this process or on a thread of its own (follower-thread.ts). */
export interface RunningFollower {
  /** Settles once it may follow: its files open (a thread's), at once in this process. */
  ready: Promise<void>;
  /** Events it applied, all time. */
  applied(): number;
  /** Stops after the round under way, if any. */
  stop(): Promise<void>;
}

export class Follower implements RunningFollower {
  readonly ready = Promise.resolve();
  private appliedEvents = 0;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private stopped = false;

  constructor(
    private readonly store: Pick<AnalyticsStore, 'followRound'>,
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
    const started = performance.now();
    try {
      if (await this.options.rebuilding?.()) {
        this.schedule(wait);
        return;
      }
      const { applied, full } = await this.store.followRound(limit, startRound);
      this.appliedEvents += applied;
      const busy = this.options.ingestIdle ? !this.options.ingestIdle() : false;
      if (full) wait = busy ? Math.max(BETWEEN_ROUNDS_MS, BUSY_PAUSE_FACTOR * (performance.now() - started)) : BETWEEN_ROUNDS_MS;
    } catch (error) {
      // Busy: a rebuild or a backup holds the write lock; the next round tries again.
      if (!(error instanceof StoreBusyError)) {
        this.options.onError?.(error);
        wait = this.options.failedMs ?? FAILED_MS;
      }
    }
    this.schedule(wait);
  }

  applied(): number {
    return this.appliedEvents;
  }

  /** Follows every event stored now, then returns how many it applied (the benchmark's follower rate). */
  async catchUp(): Promise<number> {
    const limit = this.options.roundEvents ?? ROUND_EVENTS;
    let total = 0;
    for (let full = true; full; ) {
      const round = await this.store.followRound(limit, startRound);
      total += round.applied;
      full = round.full;
    }
    this.appliedEvents += total;
    return total;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.running;
  }
}
