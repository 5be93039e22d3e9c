// Simulated players, the event source in miniature: users who pick movies,
// play (a position heartbeat every few seconds), pause, seek, rewind, stop
// and switch. Seeded, so that a run can be replayed.
import { credit, type AccountingRule } from '../accounting.ts';
import type { WatchEvent } from '../event.ts';

/** mulberry32: a small, fast, seeded source of numbers in [0, 1). */
export function seededRandom(seed: number): () => number {
  let state = seed | 0;
  return () => {
    state = (state + 0x6d2b79f5) | 0;
    let t = Math.imul(state ^ (state >>> 15), 1 | state);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const ALPHABET = '0123456789abcdefghijklmnopqrstuvwxyz';

export interface SimulationOptions {
  users: number;
  movies: number;
  seed: number;
  /** Seconds of the show between two heartbeats while playing. */
  heartbeat?: number;
}

interface Player {
  user: string;
  movie: number;
  /** The resume point of each movie this user started. */
  positions: Map<number, number>;
  paused: boolean;
}

export class Simulation {
  readonly movies: { slug: string; length: number }[];
  private readonly players: Player[];
  private readonly random: () => number;
  private readonly heartbeat: number;

  constructor(options: SimulationOptions) {
    this.random = seededRandom(options.seed);
    this.heartbeat = options.heartbeat ?? 5;
    // Names like the real source's: 13 base-36 characters, different for each seed.
    const name = () => Array.from({ length: 13 }, () => ALPHABET[Math.floor(this.random() * 36)]).join('');
    this.movies = Array.from({ length: options.movies }, () => ({
      slug: name(),
      length: 1200 + Math.floor(this.random() * 9600), // 20 minutes to 3 hours
    }));
    this.players = Array.from({ length: options.users }, () => ({
      user: name(),
      movie: this.pickMovie(),
      positions: new Map(),
      paused: false,
    }));
  }

  get userCount(): number {
    return this.players.length;
  }

  private pickMovie(): number {
    return Math.floor(this.random() * this.movies.length);
  }

  /** The next heartbeat of one user's player. */
  next(userIndex: number): WatchEvent {
    const player = this.players[userIndex];
    let at = player.positions.get(player.movie) ?? 0;
    const roll = this.random();
    if (roll < 0.02 || at >= this.movies[player.movie].length) {
      // Stop, and start another movie: from its resume point, or now and then from the start.
      player.movie = this.pickMovie();
      at = this.random() < 0.2 ? 0 : (player.positions.get(player.movie) ?? 0);
      player.paused = false;
    } else if (roll < 0.05) {
      at = Math.min(this.movies[player.movie].length, at + 150 + Math.floor(this.random() * 1200)); // seek forward
    } else if (roll < 0.08) {
      at = Math.max(0, at - 10 - Math.floor(this.random() * 300)); // rewind
    } else if (roll < 0.14) {
      player.paused = !player.paused;
    } else if (!player.paused) {
      at += this.heartbeat - 1 + Math.floor(this.random() * 3); // players' clocks drift a little
    }
    player.positions.set(player.movie, at);
    return { user: player.user, slug: this.movies[player.movie].slug, at };
  }
}

export interface ExpectedPair {
  user: string;
  slug: string;
  latestMoment: number;
  watchTime: number;
  events: number;
}

export interface ExpectedTotal {
  watchTime: number;
  events: number;
  /** movies for a user, viewers for a movie */
  pairs: number;
}

/** What the server should answer after these events, under the rule. */
export class ExpectedTotals {
  readonly pairs = new Map<string, ExpectedPair>();
  readonly users = new Map<string, ExpectedTotal>();
  readonly movies = new Map<string, ExpectedTotal>();

  constructor(private readonly rule: AccountingRule) {}

  /** Applies events the server acknowledged, in the order it received them for each pair. */
  apply(event: WatchEvent): void {
    const key = JSON.stringify([event.user, event.slug]);
    let pair = this.pairs.get(key);
    const isNew = pair === undefined;
    pair ??= { user: event.user, slug: event.slug, latestMoment: 0, watchTime: 0, events: 0 };
    const credited = credit(this.rule, pair.latestMoment, event.at);
    pair.latestMoment = event.at;
    pair.watchTime += credited;
    pair.events += 1;
    this.pairs.set(key, pair);
    for (const [totals, name] of [[this.users, event.user], [this.movies, event.slug]] as const) {
      const total = totals.get(name) ?? { watchTime: 0, events: 0, pairs: 0 };
      total.watchTime += credited;
      total.events += 1;
      if (isNew) total.pairs += 1;
      totals.set(name, total);
    }
  }
}
