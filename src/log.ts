// Structured logs with pino: JSON lines on stderr for machines, or pino-pretty's
// readable lines on a terminal when it is installed (a development package).
// One line at start with the settings in force, none an accepted event; a
// fault that repeats is logged as an episode, not a line a request.
import { writeSync } from 'node:fs';
import { createRequire } from 'node:module';
import pino from 'pino';

export type Logger = pino.Logger;
export type LogLevel = pino.LevelWithSilent;

/** Lines this process could not write (a full disk, /dev/full, a closed pipe): dropped, and counted in /metrics. */
export const droppedLogLines = { count: 0 };

/**
 * stderr that cannot kill the server: pino's own destination throws on a
 * failed write, and an uncaught throw ends the process. A line that cannot
 * be written whole is dropped and counted instead.
 */
const tolerantStderr: pino.DestinationStream = {
  write(line: string) {
    try {
      let bytes = Buffer.from(line);
      while (bytes.length > 0) bytes = bytes.subarray(writeSync(2, bytes));
    } catch {
      droppedLogLines.count += 1;
    }
  },
};

const hasPretty = () => {
  try {
    createRequire(import.meta.url).resolve('pino-pretty');
    return true;
  } catch {
    return false;
  }
};

export function createLogger(level: LogLevel = 'info'): Logger {
  if (process.stderr.isTTY && hasPretty()) {
    return pino({ level, transport: { target: 'pino-pretty', options: { destination: 2, translateTime: 'SYS:HH:MM:ss.l' } } });
  }
  return pino({ level, base: undefined }, tolerantStderr);
}

export const silentLogger: Logger = pino({ level: 'silent' });

export interface EpisodeTiming {
  /** How often a summary of the repeats is written while they go on. */
  summaryMs: number;
  /** How long without a repeat before the episode is said to have ended. */
  quietMs: number;
}

interface Episode {
  level: 'error' | 'warn';
  started: number;
  last: number;
  total: number;
  sinceSummary: number;
  timer: NodeJS.Timeout;
}

/**
 * A fault that repeats (a full disk refusing every request for a minute),
 * logged as an episode: its first occurrence in full, then a line of counts
 * at most every `summaryMs` while it goes on, and one when it has been quiet
 * for `quietMs`. The metrics count every occurrence; the log tells the story.
 */
export class EpisodeLog {
  private readonly open = new Map<string, Episode>();

  constructor(
    private readonly log: Logger,
    private readonly timing: EpisodeTiming = { summaryMs: 5_000, quietMs: 5_000 },
  ) {}

  occurred(key: string, level: 'error' | 'warn', fields: object, msg: string): void {
    const now = Date.now();
    const episode = this.open.get(key);
    if (episode) {
      episode.total += 1;
      episode.sinceSummary += 1;
      episode.last = now;
      return;
    }
    this.log[level]({ ...fields, episode: key }, msg);
    const timer = setInterval(() => this.tick(key), Math.min(this.timing.summaryMs, this.timing.quietMs));
    timer.unref();
    this.open.set(key, { level, started: now, last: now, total: 1, sinceSummary: 0, timer });
  }

  private tick(key: string): void {
    const episode = this.open.get(key)!;
    const now = Date.now();
    if (now - episode.last >= this.timing.quietMs) return this.end(key, episode, now);
    if (episode.sinceSummary > 0 && now - episode.started >= this.timing.summaryMs) {
      this.log[episode.level](
        { episode: key, repeats: episode.sinceSummary, total: episode.total },
        `${key}: ${episode.sinceSummary} more since the last line, ${episode.total} since it began`,
      );
      episode.sinceSummary = 0;
    }
  }

  private end(key: string, episode: Episode, now: number): void {
    clearInterval(episode.timer);
    this.open.delete(key);
    const seconds = Math.round((episode.last - episode.started) / 100) / 10;
    // At the episode's own level, so that whoever saw it begin sees it end.
    this.log[episode.level](
      { episode: key, total: episode.total, seconds, quietMs: now - episode.last },
      `${key}: ended; ${episode.total} in ${seconds} s`,
    );
  }

  /** Ends every open episode now, with its line (at shutdown). */
  close(): void {
    const now = Date.now();
    for (const [key, episode] of this.open) this.end(key, episode, now);
  }
}
