// Property-based fuzzing of the real server with fast-check: whatever arrives,
// the server answers 200 or a 4xx problem+json that names the problem, stores
// nothing of what it refused, and keeps running.
//   FUZZ_RUNS=5000 npm run fuzz   (npm test runs a few hundred of each)
import assert from 'node:assert/strict';
import path from 'node:path';
import { before, describe, test } from 'node:test';
import Database from 'better-sqlite3';
import fc from 'fast-check';
import { cleanupAfter, get, request, serve, tempDir } from './helpers.ts';

const RUNS = Number(process.env.FUZZ_RUNS ?? 300);

const awkwardString = fc.oneof(
  fc.string({ maxLength: 30 }),
  fc.string({ unit: 'binary', maxLength: 30 }),
  fc.string({ unit: 'grapheme', maxLength: 30 }),
  fc.string({ minLength: 195, maxLength: 210 }),
  fc.constantFrom('', ' ', '\u0000', 'a\nb', '\t', '\u007f', '\u0085', '\ud800', 'x\udfffy', 'é', '🎬', '%2F', '../..', '\ufeff'),
);
const awkwardNumber = fc.oneof(
  fc.integer(),
  fc.integer({ min: 0, max: 2147483647 }),
  fc.double(),
  fc.constantFrom(0, -0, -1, 1.5, 2147483647, 2147483648, Number.MAX_SAFE_INTEGER, 1e308, 5e-324),
);
const anyJson = fc.jsonValue({ maxDepth: 3 });
const field = fc.oneof(awkwardString, awkwardNumber, fc.boolean(), fc.constant(null), anyJson);
const validName = fc.string({ minLength: 1, maxLength: 20 }).filter((s) => !/[\u0000-\u001f\u007f-\u009f]/.test(s));
const validEvent = fc.record({ user: validName, slug: validName, at: fc.integer({ min: 0, max: 100_000 }) });
const eventLike = fc.record(
  { user: fc.oneof(awkwardString, field), slug: fc.oneof(awkwardString, field), at: fc.oneof(awkwardNumber, field), id: field },
  { requiredKeys: [] },
);
const someEvent = fc.oneof(validEvent, eventLike, field);

const body: fc.Arbitrary<string | Uint8Array> = fc.oneof(
  someEvent.map((e) => JSON.stringify(e) ?? ''),
  fc.array(someEvent, { maxLength: 20 }).map((a) => JSON.stringify(a)),
  fc.array(validEvent, { minLength: 1, maxLength: 20 }).map((a) => JSON.stringify(a)),
  fc.array(someEvent, { maxLength: 10 }).map((a) => a.map((e) => JSON.stringify(e)).join('\n')),
  fc.array(validEvent, { minLength: 1, maxLength: 10 }).map((a) => a.map((e) => JSON.stringify(e)).join('\n') + '\n'),
  anyJson.map((v) => JSON.stringify(v)),
  fc.tuple(fc.array(validEvent, { maxLength: 5 }), fc.nat()).map(([a, cut]) => {
    const text = JSON.stringify(a);
    return text.slice(0, cut % (text.length + 1)); // truncated
  }),
  fc.uint8Array({ maxLength: 300 }), // random bytes, often not UTF-8
  fc.integer({ min: 1, max: 100_000 }).map((n) => '['.repeat(n) + ']'.repeat(n)), // deep nesting
  fc.integer({ min: 1, max: 100_000 }).map((n) => '{"a":'.repeat(n)), // deep and unterminated
  fc.integer({ min: 300, max: 1000 }).map((n) => `{"user":"u","slug":"m","at":${'9'.repeat(n)}}`), // huge number
);
const contentType = fc.oneof(
  fc.constantFrom(
    'application/json', 'application/x-ndjson', 'application/ndjson', 'application/json; charset=utf-8',
    'APPLICATION/JSON', 'text/plain', 'application/json; charset=latin1', '', 'application/x-www-form-urlencoded',
    'multipart/form-data; boundary=x', 'application/jsonx',
  ),
  fc.string({ maxLength: 40 }),
);

describe('fuzz', () => {
  const cleanup = cleanupAfter();
  let base: string;
  let db: Database.Database;
  const stored = () => db.prepare('SELECT count(*) FROM events').pluck().get() as number;

  before(async () => {
    const file = path.join(tempDir(cleanup), 'w.db');
    base = (await serve(cleanup, file)).url;
    db = new Database(file, { readonly: true });
    cleanup(() => db.close());
  });

  const assertProblem = (res: Awaited<ReturnType<typeof request>>) => {
    assert.equal(res.headers.get('content-type'), 'application/problem+json');
    assert.equal(res.body.status, res.status);
    assert.match(res.body.type, /^\/problems\/[a-z-]+$/);
    assert.ok(res.body.title.length > 0);
    assert.ok(res.body.detail.length > 0);
    for (const error of res.body.errors ?? []) {
      assert.equal(typeof error.pointer, 'string');
      assert.ok(error.message.length > 0);
    }
  };

  test(`${RUNS} random and malformed bodies`, { timeout: 600_000 }, async () => {
    await fc.assert(
      fc.asyncProperty(body, contentType, async (payload, type) => {
        const before = stored();
        let res;
        try {
          res = await request(`${base}/events`, {
            method: 'POST',
            headers: type === '' ? {} : { 'content-type': type },
            body: typeof payload === 'string' ? payload : Buffer.from(payload),
          });
        } catch (error) {
          // fetch refuses some header values itself; the server never saw those.
          if (/Headers|header/i.test(String((error as Error).message))) return;
          throw error;
        }
        if (res.status === 200) {
          assert.equal(stored(), before + res.body.accepted);
          return;
        }
        assert.ok([400, 413, 415].includes(res.status), `status ${res.status}: ${JSON.stringify(res.body)}`);
        assertProblem(res);
        assert.equal(stored(), before, 'a refused request stored something');
      }),
      { numRuns: RUNS },
    );
  });

  test(`${RUNS} random names and raw paths on the read side`, { timeout: 600_000 }, async () => {
    const rawSegment = fc.oneof(
      awkwardString.map((s) => encodeURIComponent(s.replace(/[\ud800-\udfff]/g, 'x'))),
      fc.stringMatching(/^[%0-9A-Fa-f/.a-z]{0,12}$/), // raw, often broken, percent-escapes
    );
    const pathname = fc.oneof(
      rawSegment.map((s) => `/users/${s}/watch-time`),
      rawSegment.map((s) => `/movies/${s}/watch-time`),
      fc.tuple(rawSegment, rawSegment).map(([u, m]) => `/users/${u}/movies/${m}/latest-moment`),
      fc.tuple(rawSegment, fc.string({ maxLength: 8 })).map(([u, l]) => `/users/${u}/movies?limit=${encodeURIComponent(l)}`),
      fc.string({ maxLength: 8 }).map((l) => `/movies?limit=${encodeURIComponent(l)}&offset=${encodeURIComponent(l)}`),
    );
    await fc.assert(
      fc.asyncProperty(pathname, async (p) => {
        const res = await get(base, p);
        assert.ok([200, 400, 404].includes(res.status), `${p}: ${res.status}`);
        if (res.status !== 200) assertProblem(res);
      }),
      { numRuns: RUNS },
    );
    assert.equal((await get(base, '/livez')).status, 200);
  });
});
