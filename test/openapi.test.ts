// GET /openapi.json and /docs: a valid OpenAPI 3.1 document, made of the
// server's own schemas, that has every route, whose examples hold, and whose
// problem types resolve. (Every answer of the API tests is checked against it
// by the shared request helper.)
import assert from 'node:assert/strict';
import path from 'node:path';
import { describe, test } from 'node:test';
import { Validator } from '@seriousme/openapi-schema-validator';
import Value from 'typebox/value';
import { createApp } from '../src/http/app.ts';
import { PROBLEM_TYPES } from '../src/http/openapi.ts';
import { IngestQueue } from '../src/ingest/queue.ts';
import { silentLogger } from '../src/log.ts';
import { SqliteStore } from '../src/store/sqlite.ts';
import { cleanupAfter, get, request, serve, tempDir } from './helpers.ts';
import { schemasOf } from './support/openapi-check.ts';

describe('OpenAPI', () => {
  test('the document is valid OpenAPI 3.1, has every route, and every example holds', async (t) => {
    const cleanup = cleanupAfter(t);
    const dir = tempDir(cleanup);
    const base = (await serve(cleanup, path.join(dir, 'w.db'))).url;
    const answer = await get(base, '/openapi.json');
    assert.equal(answer.status, 200);
    const document = answer.body;

    const validator = new Validator();
    const result = await validator.validate(document);
    assert.equal(validator.version, '3.1');
    assert.ok(result.valid, JSON.stringify(result.errors, null, 2));

    // The routes the server registers, against the document's paths.
    const store = new SqliteStore(path.join(dir, 'routes.db'));
    cleanup(() => store.close());
    const app = createApp({
      store,
      sink: new IngestQueue(store, { batchSize: 1, queueSize: 1, flushMs: 1, lockWaitMs: 1 }),
      bodyLimit: 1,
      isClosing: () => false,
      log: silentLogger,
    });
    for (const route of app.routes) {
      const [method, template] = route.split(' ');
      const documented = template.replace(/:(\w+)/g, '{$1}');
      assert.ok(document.paths[documented]?.[method.toLowerCase()], `${route} is not in the document`);
    }

    let examples = 0;
    for (const [pathname, operations] of Object.entries<Record<string, any>>(document.paths)) {
      for (const [method, operation] of Object.entries<any>(operations)) {
        const contents = [operation.requestBody?.content, ...Object.values<any>(operation.responses).map((r) => r.content)];
        for (const content of contents.filter(Boolean)) {
          for (const [mediaType, entry] of Object.entries<any>(content)) {
            const schemas = schemasOf(entry);
            for (const [name, example] of Object.entries<any>(entry.examples ?? {})) {
              examples += 1;
              if (schemas.length === 0) continue; // text: nothing to check
              assert.ok(schemas.some((s) => Value.Check(s, example.value)), `${method} ${pathname} ${mediaType} example ${name}`);
            }
          }
        }
        for (const parameter of operation.parameters ?? []) assert.ok('example' in parameter, `${method} ${pathname} ${parameter.name}`);
      }
    }
    t.diagnostic(`${examples} examples checked`);
    for (const kind of Object.keys(PROBLEM_TYPES)) {
      const page = await request(`${base}/problems/${kind}`);
      assert.equal(page.status, 200, kind);
      assert.match(String(page.body), new RegExp(PROBLEM_TYPES[kind].title));
    }
    assert.equal((await get(base, '/problems/nonsense')).status, 404);
  });

  test('/docs renders the document with the reference page from node_modules, no network', async (t) => {
    const cleanup = cleanupAfter(t);
    const base = (await serve(cleanup, path.join(tempDir(cleanup), 'w.db'), { readToken: 'secret' })).url;
    const page = await request(`${base}/docs`);
    assert.equal(page.status, 200, 'public, even with a read token');
    assert.match(page.headers.get('content-type') ?? '', /^text\/html/);
    const assets = [...String(page.body).matchAll(/(?:src|href)="([^"]+)"/g)].map((m) => m[1]);
    assert.ok(assets.length >= 2);
    for (const asset of assets) {
      assert.ok(asset.startsWith('/'), `${asset} would leave this server`);
      assert.equal((await request(`${base}${asset}`)).status, 200, asset);
    }
    assert.equal((await get(base, '/openapi.json')).status, 200);
  });
});
