// The short version of `npm run bench:scale`: the same work on a database with
// more users than the store's caches hold and on a small one, compared as a
// ratio in one run. The bounds are generous, for noisy machines: they catch a
// cost that grows with the data (the collapse this guards against was a
// factor of ten), not a few percent.
import assert from 'node:assert/strict';
import path from 'node:path';
import { describe, test } from 'node:test';
import { SqliteStore } from '../src/store/sqlite.ts';
import { cleanupAfter, tempDir } from './helpers.ts';
import { heartbeats, population, writePopulation, type Population } from './load/population.ts';

const BATCHES = 40;
const BATCH = 1_000;

/** Events a second through the store: rebuild, then 1,000-event batches, then lookups. */
function rates(file: string, p: Population) {
  writePopulation(file, p);
  const store = new SqliteStore(file);
  try {
    let started = performance.now();
    store.rebuild({ accounting: 'progress', maxStep: 120 });
    const rebuild = p.events / (performance.now() - started);
    const next = heartbeats(p, 5);
    started = performance.now();
    for (let b = 0; b < BATCHES; b++) {
      const receivedAt = Date.now();
      store.ingest(Array.from({ length: BATCH }, () => ({ ...next(), receivedAt })));
    }
    const ingest = (BATCHES * BATCH) / (performance.now() - started);
    started = performance.now();
    for (let i = 0; i < 20_000; i++) {
      const { user, slug } = next();
      store.user(user);
      store.pair(user, slug);
    }
    const lookups = 20_000 / (performance.now() - started);
    return { rebuild, ingest, lookups };
  } finally {
    store.close();
  }
}

describe('cost at scale', () => {
  test('ingest, rebuild and lookups over 300,000 users keep pace with 1,000 users', (t) => {
    const dir = tempDir(cleanupAfter(t));
    // Six times the 50,000 entries each cache holds.
    const large = rates(path.join(dir, 'large.db'), population(300_000, 300_000));
    const small = rates(path.join(dir, 'small.db'), population(300_000, 1_000));
    const ratios = Object.fromEntries(
      (['rebuild', 'ingest', 'lookups'] as const).map((k) => [k, Number((large[k] / small[k]).toFixed(2))]),
    );
    t.diagnostic(`large/small: ${JSON.stringify(ratios)}`);
    // Per event, and the large database has ten times the pairs to write: about 0.3 here.
    assert.ok(ratios.rebuild >= 0.15, `rebuild at scale ${ratios.rebuild} of small`);
    // The small database's lookups all come from the answers kept in memory, the large one's mostly
    // from SQLite: 0.3 to 0.6 here, and once 0.28 inside a whole `npm test`. A tenfold collapse gives 0.05.
    assert.ok(ratios.lookups >= 0.15, `lookups at scale ${ratios.lookups} of small`);
    // About 0.5 here; the eviction this guards against gave under 0.1.
    assert.ok(ratios.ingest >= 0.2, `batch ingest at scale ${ratios.ingest} of small`);
  });
});
