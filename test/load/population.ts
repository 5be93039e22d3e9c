// A watchtime database with a platform's population, made fast: users, movies
// and events written straight as SQL, then the totals computed by `watchtime
// rebuild`, the same code that recomputes them in production.
//   pair p (0 <= p < pairs): user-(p % users) watching movie-((p + p / users) % movies),
//   so a user's pairs are distinct movies;
//   event i goes to pair (i * 7919) % pairs, so consecutive events hit pairs
//   far apart, and each pair moves forward 5 s every time it comes round.
import Database from 'better-sqlite3';
import { SqliteStore } from '../../src/store/sqlite.ts';

export interface Population {
  events: number;
  users: number;
  movies: number;
  /** Distinct (user, movie) pairs: at most users × movies, and a multiple of users here. */
  pairs: number;
}

/** A population of `events` events from `users` users, ten events a pair on average. */
export function population(events: number, users: number, movies = 10_000): Population {
  const pairs = Math.max(users, Math.min(users * movies, Math.round(events / 10 / users) * users));
  return { events, users, movies, pairs };
}

/** Writes the population's users, movies and events into a new database at `file` (totals not yet computed). */
export function writePopulation(file: string, p: Population): void {
  new SqliteStore(file).close(); // migrations
  const db = new Database(file);
  try {
    db.pragma('synchronous = OFF');
    db.transaction(() => {
      db.prepare("INSERT INTO settings (id, accounting, max_step) VALUES (1, 'progress', 120)").run();
      db.exec(`WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < ${p.users - 1})
               INSERT INTO users (id, name) SELECT i + 1, 'user-' || i FROM n`);
      db.exec(`WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < ${p.movies - 1})
               INSERT INTO movies (id, slug) SELECT i + 1, 'movie-' || i FROM n`);
      // A permutation of the pairs every round: 7919 is a prime that divides no pair count used here.
      const start = Date.now() - p.events; // one event a millisecond, up to now
      db.exec(`WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < ${p.events - 1})
               INSERT INTO events (seq, user_id, movie_id, at, received_at)
               SELECT i + 1, (i * 7919 % ${p.pairs}) % ${p.users} + 1, ((i * 7919 % ${p.pairs}) + (i * 7919 % ${p.pairs}) / ${p.users}) % ${p.movies} + 1,
                      (i / ${p.pairs}) * 5 + 5, ${start} + i
               FROM n`);
    })();
    db.pragma('wal_checkpoint(TRUNCATE)');
  } finally {
    db.close();
  }
}

/** Pair numbers of the population drawn at random, the same ones in every run for a seed (xorshift32). */
export function randomPairs(p: Population, seed = 1): () => number {
  let state = seed >>> 0 || 1;
  return () => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return Math.floor(((state >>> 0) / 2 ** 32) * p.pairs);
  };
}

/** A pair's user and movie, as numbered in names (`user-N`, `movie-N`); their ids are one more. */
export function pairMembers(p: Population, pair: number): { user: number; movie: number } {
  return { user: pair % p.users, movie: (pair + Math.floor(pair / p.users)) % p.movies };
}

/** The next heartbeat of a random pair of the population, moving on from where the stored events left it. */
export function heartbeats(p: Population, seed = 1) {
  const nextPair = randomPairs(p, seed);
  const rounds = Math.ceil(p.events / p.pairs);
  const moved = new Map<number, number>();
  return () => {
    const pair = nextPair();
    const step = (moved.get(pair) ?? 0) + 1;
    if (moved.size < 1_000_000) moved.set(pair, step);
    const { user, movie } = pairMembers(p, pair);
    return { user: `user-${user}`, slug: `movie-${movie}`, at: (rounds + step) * 5 };
  };
}
