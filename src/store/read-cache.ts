// The answers of recent lookups, kept by the process that writes the
// database, so that a hot lookup costs no SQLite call. They stay exact: after
// each commit the batch's changes are added to the answers it touched, and
// the store drops them all when another connection (a rebuild) commits.
import { LRUCache } from 'lru-cache';
import type { Tally, TotalDelta } from './tally.ts';
import type { MovieTotals, PairTotals, UserTotals } from './store.ts';

/** A name the database has no events for: remembered too, so that a 404 costs no more than a 200. */
export const UNKNOWN = false;
type Answer<T> = T | typeof UNKNOWN;

/**
 * Answers kept at most, per kind. An answer takes about 250 bytes with its
 * key, so the three together stay near 15 MB: with a million users a server
 * stays under 200 MB of RSS.
 */
const ANSWERS = 20_000;

const iso = (ms: number) => new Date(ms).toISOString();
export const pairAnswerKey = (user: string, slug: string) => `${user}\n${slug}`; // names hold no control characters

export class ReadCache {
  readonly movies = new LRUCache<string, Answer<MovieTotals>>({ max: ANSWERS });
  readonly users = new LRUCache<string, Answer<UserTotals>>({ max: ANSWERS });
  readonly pairs = new LRUCache<string, Answer<PairTotals>>({ max: ANSWERS });

  clear(): void {
    this.movies.clear();
    this.users.clear();
    this.pairs.clear();
  }

  /**
   * Brings the answers a committed batch touched up to date. Only answers
   * already kept are changed, so names that are written and never read take
   * no room; an unknown name that the batch created is dropped, to be read afresh.
   */
  update(tally: Tally, userIds: Map<string, number>, movieIds: Map<string, number>): void {
    const userNames = addDeltas(this.users, userIds, tally.users, 'movies');
    const slugs = addDeltas(this.movies, movieIds, tally.movies, 'viewers');
    for (const p of tally.pairs.values()) {
      const user = userNames.get(p.userId)!;
      const slug = slugs.get(p.movieId)!;
      const key = pairAnswerKey(user, slug);
      if (this.pairs.peek(key) === undefined) continue;
      // The tally holds the pair's whole state, not a change: no need to read what was kept.
      this.pairs.set(key, {
        user,
        slug,
        latestMoment: p.position,
        watchTime: p.watched,
        events: p.events,
        updatedAt: iso(p.updatedAt),
      });
    }
  }
}

/**
 * Adds a batch's deltas to the kept totals of the names it touched (a new
 * pair counts as one more of `pairsField`); returns the names by id.
 */
function addDeltas<T extends { watchTime: number; events: number; updatedAt: string }>(
  answers: LRUCache<string, Answer<T>>,
  ids: Map<string, number>,
  deltas: Map<number, TotalDelta>,
  pairsField: keyof T & ('movies' | 'viewers'),
): Map<number, string> {
  const names = new Map<number, string>();
  for (const [name, id] of ids) {
    names.set(id, name);
    const kept = answers.peek(name);
    if (kept === undefined) continue;
    if (kept === UNKNOWN) {
      answers.delete(name);
      continue;
    }
    const d = deltas.get(id)!;
    answers.set(name, {
      ...kept,
      watchTime: kept.watchTime + d.watched,
      [pairsField]: (kept[pairsField] as number) + d.pairs,
      events: kept.events + d.events,
      updatedAt: iso(d.updatedAt),
    });
  }
  return names;
}
