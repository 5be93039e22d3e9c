// Every rule of SPEC section 1, through the real server: the answer names the
// field and the rule, and nothing of a rejected request is stored.
import assert from 'node:assert/strict';
import path from 'node:path';
import { before, describe, test } from 'node:test';
import Database from 'better-sqlite3';
import { cleanupAfter, post, serve, tempDir } from './helpers.ts';

const valid = { user: 'u', slug: 'm', at: 10 };
const long = 'x'.repeat(201);

const rejected: [string, unknown, string, string][] = [
  ['user missing', { slug: 'm', at: 1 }, '/user', 'user is required'],
  ['user not a string', { ...valid, user: 42 }, '/user', 'user must be a string'],
  ['user empty', { ...valid, user: '' }, '/user', 'user must be at least 1 character long'],
  ['user over 200 characters', { ...valid, user: long }, '/user', 'user must be at most 200 characters long'],
  ['user with NUL', { ...valid, user: 'a\u0000b' }, '/user', 'user must not contain control characters or unpaired surrogates'],
  ['user with a newline', { ...valid, user: 'a\nb' }, '/user', 'user must not contain control characters or unpaired surrogates'],
  ['user with DEL', { ...valid, user: 'a\u007f' }, '/user', 'user must not contain control characters or unpaired surrogates'],
  ['user with a C1 control', { ...valid, user: 'a\u0085' }, '/user', 'user must not contain control characters or unpaired surrogates'],
  ['user with an unpaired surrogate', { ...valid, user: 'a\ud800b' }, '/user', 'user must not contain control characters or unpaired surrogates'],
  ['slug missing', { user: 'u', at: 1 }, '/slug', 'slug is required'],
  ['slug not a string', { ...valid, slug: ['m'] }, '/slug', 'slug must be a string'],
  ['slug empty', { ...valid, slug: '' }, '/slug', 'slug must be at least 1 character long'],
  ['slug over 200 characters', { ...valid, slug: long }, '/slug', 'slug must be at most 200 characters long'],
  ['slug with a tab', { ...valid, slug: 'a\tb' }, '/slug', 'slug must not contain control characters or unpaired surrogates'],
  ['at missing', { user: 'u', slug: 'm' }, '/at', 'at is required'],
  ['at a string', { ...valid, at: '10' }, '/at', 'at must be an integer (whole seconds)'],
  ['at fractional', { ...valid, at: 1.5 }, '/at', 'at must be an integer (whole seconds)'],
  ['at null', { ...valid, at: null }, '/at', 'at must be an integer (whole seconds)'],
  ['at negative', { ...valid, at: -1 }, '/at', 'at must be at least 0'],
  ['at over 2147483647', { ...valid, at: 2147483648 }, '/at', 'at must be at most 2147483647'],
  ['id empty', { ...valid, id: '' }, '/id', 'id must be at least 1 character long'],
  ['id over 200 characters', { ...valid, id: long }, '/id', 'id must be at most 200 characters long'],
  ['id a number', { ...valid, id: 7 }, '/id', 'id must be a string'],
];

describe('event validation', () => {
  let base: string;
  let db: string;
  const storedEvents = () => {
    const conn = new Database(db, { readonly: true });
    try {
      return conn.prepare('SELECT count(*) FROM events').pluck().get() as number;
    } finally {
      conn.close();
    }
  };

  const cleanup = cleanupAfter();
  before(async () => {
    db = path.join(tempDir(cleanup), 'w.db');
    base = (await serve(cleanup, db)).url;
  });

  for (const [name, event, pointer, message] of rejected) {
    test(`rejects ${name}`, async () => {
      const res = await post(base, event);
      assert.equal(res.status, 400);
      assert.equal(res.headers.get('content-type'), 'application/problem+json');
      assert.equal(res.body.type, '/problems/invalid-event');
      assert.equal(res.body.detail, 'the event is invalid; nothing was stored');
      assert.deepEqual(res.body.errors, [{ pointer, message }]);
      assert.equal(storedEvents(), 0);
    });
  }

  test('names every missing field, not only the first', async () => {
    const res = await post(base, { at: 1 });
    assert.equal(res.status, 400);
    assert.deepEqual(res.body.errors, [
      { pointer: '/user', message: 'user is required' },
      { pointer: '/slug', message: 'slug is required' },
    ]);
    const empty = await post(base, [{}]);
    assert.deepEqual(empty.body.errors.map((e: { pointer: string }) => e.pointer), ['/0/user', '/0/slug', '/0/at']);
    assert.equal(storedEvents(), 0);
  });

  test('lists every problem of every bad event in a batch, by index', async () => {
    const res = await post(base, [valid, { user: '', slug: 'm', at: 1.5 }, valid, 5, { slug: 'm', at: 1 }]);
    assert.equal(res.status, 400);
    assert.equal(res.body.detail, '3 of 5 events are invalid; nothing was stored');
    assert.deepEqual(res.body.errors, [
      { pointer: '/1/user', message: 'user must be at least 1 character long' },
      { pointer: '/1/at', message: 'at must be an integer (whole seconds)' },
      { pointer: '/3', message: 'event must be an object' },
      { pointer: '/4/user', message: 'user is required' },
    ]);
    assert.equal(storedEvents(), 0, 'a batch is all or nothing');
  });

  test('accepts the edges of every rule, and ignores other fields', async () => {
    const edges = [
      { user: 'x'.repeat(200), slug: 's'.repeat(200), at: 0 },
      { user: 'été 🎬', slug: 'a/b c%d', at: 2147483647, id: 'i'.repeat(200) },
      { ...valid, id: 'x', extra: { nested: true }, device: 'tv' },
    ];
    const res = await post(base, edges);
    assert.equal(res.status, 200);
    assert.deepEqual(res.body, { accepted: 3, duplicates: 0 });
    assert.equal(storedEvents(), 3);
  });
});
