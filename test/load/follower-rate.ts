// The analytics follower's own rate (SPEC section 7): how fast it derives the
// analytics of events already stored, as it does after a rebuild or when it
// has fallen behind, with the CPU it takes an event and the bytes it adds.
import { readFileSync, statSync } from 'node:fs';
import { Follower } from '../../src/analytics/follower.ts';
import { THREAD_ROUND_EVENTS } from '../../src/analytics/follower-thread.ts';
import { analyticsFileOf } from '../../src/store/sqlite-analytics.ts';
import { SqliteStore } from '../../src/store/sqlite.ts';

export interface FollowerFigures {
  events: number;
  rate: number;
  cpuUs: number;
  bytesPerEvent: number;
  /** Bytes this process had the kernel write to disk an event: the WAL's frames and the checkpoints' pages. */
  writtenPerEvent: number;
}

/** Bytes this process caused to be written to storage (Linux's /proc/self/io). */
const writtenBytes = () => Number(/^write_bytes: (\d+)$/m.exec(readFileSync('/proc/self/io', 'utf8'))?.[1] ?? 0);

/** Follows every event of the SQLite file from where its follower is, in the server's rounds. */
export async function followAll(file: string): Promise<FollowerFigures> {
  const store = new SqliteStore(file);
  try {
    store.checkpoint();
    const analyticsFile = analyticsFileOf(store.real);
    const before = statSync(file).size + (statSync(analyticsFile, { throwIfNoEntry: false })?.size ?? 0);
    const written = writtenBytes();
    const cpu = process.cpuUsage();
    const started = performance.now();
    const events = await new Follower(store.analytics, { roundEvents: THREAD_ROUND_EVENTS }).catchUp();
    const seconds = (performance.now() - started) / 1000;
    const used = process.cpuUsage(cpu);
    store.close();
    // Closing the follower's connection folds its WAL into the analytics file.
    const after = statSync(file).size + statSync(analyticsFile).size;
    return {
      events,
      rate: events / seconds,
      cpuUs: (used.user + used.system) / events,
      bytesPerEvent: (after - before) / events,
      writtenPerEvent: (writtenBytes() - written) / events,
    };
  } finally {
    store.close();
  }
}

/**
 * A database of `events` heartbeats from `players` concurrent players over
 * `movies` movies, each 5 s further than its last, written through the store
 * in 1,000-event batches as the server writes them; with that ingest's rate
 * and CPU an event, the baseline of the follower's.
 */
export function heartbeatDatabase(file: string, events: number, players = 100_000, movies = 500): { rate: number; cpuUs: number } {
  const store = new SqliteStore(file);
  try {
    store.initSettings({ accounting: 'progress', maxStep: 120 });
    let n = 0;
    const cpu = process.cpuUsage();
    const started = performance.now();
    for (let done = 0; done < events; done += 1000) {
      const receivedAt = Date.now();
      store.ingest(
        Array.from({ length: Math.min(1000, events - done) }, () => {
          const player = n % players;
          return { user: `user-${player}`, slug: `movie-${(player * 7) % movies}`, at: Math.floor(n++ / players) * 5, receivedAt };
        }),
      );
    }
    const seconds = (performance.now() - started) / 1000;
    const used = process.cpuUsage(cpu);
    return { rate: events / seconds, cpuUs: (used.user + used.system) / events };
  } finally {
    store.close();
  }
}

export const followerLine = (label: string, f: FollowerFigures) =>
  `${label}: ${Math.round(f.rate).toLocaleString('en')} events/s over ${f.events.toLocaleString('en')} events, ` +
  `CPU ${f.cpuUs.toFixed(1)} µs an event, ${f.bytesPerEvent.toFixed(1)} bytes on disk an event, ${Math.round(f.writtenPerEvent)} bytes written an event`;
