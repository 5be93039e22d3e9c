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
import { DEFAULT_POINTS, MAX_POINTS } from '../src/analytics/answers.ts';
import { INTERVALS, MAX_BUCKETS } from '../src/analytics/buckets.ts';
import { openApiDocument, PROBLEM_TYPES, SCHEMAS } from '../src/http/openapi.ts';
import { IngestQueue } from '../src/ingest/queue.ts';
import { silentLogger } from '../src/log.ts';
import { SqliteStore } from '../src/store/sqlite.ts';
import { cleanupAfter, get, post, request, serve, tempDir } from './helpers.ts';
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

  test('every analytics route answers, on a server with data, as the document says: each status documented, each body its schema\'s', async (t) => {
    const cleanup = cleanupAfter(t);
    const dir = tempDir(cleanup);
    const tokens = { ingestToken: 'write-token', readToken: 'read-token' };
    const base = (await serve(cleanup, path.join(dir, 'w.db'), tokens)).url;
    const read = { authorization: `Bearer ${tokens.readToken}` };
    const write = { authorization: `Bearer ${tokens.ingestToken}`, 'content-type': 'application/json' };
    const document = openApiDocument();
    const exercised = new Set<string>();

    /** A request whose answer the shared helper checks against the document (a status it does not list throws), and here against the named schema. */
    const check = async (method: 'GET' | 'PUT', pathname: string, status: number, schema: string, init: RequestInit = {}): Promise<any> => {
      const answer = await request(`${base}${pathname}`, { method, headers: method === 'GET' ? read : write, ...init });
      assert.equal(answer.status, status, `${method} ${pathname}: ${JSON.stringify(answer.body)}`);
      assert.ok(Value.Check(SCHEMAS[schema], answer.body), `${method} ${pathname} ${status}: ${JSON.stringify(answer.body)} is not a ${schema}`);
      const template = Object.keys(document.paths).find((p) => new RegExp(`^${p.replace(/\{[^}]+\}/g, '[^/]+')}$`).test(pathname.split('?')[0]))!;
      const documented = (document.paths as Record<string, Record<string, { responses: Record<string, unknown> }>>)[template][method.toLowerCase()];
      assert.ok(documented.responses[String(status)], `${method} ${template} does not list ${status}`);
      exercised.add(`${method} ${template} ${status}`);
      return answer.body;
    };

    assert.equal((await post(base, [
      { user: 'ann', slug: 'alien', at: 30 }, { user: 'ann', slug: 'alien', at: 90 }, { user: 'bob', slug: 'alien', at: 50 },
    ], 'application/json', { authorization: write.authorization })).status, 200);
    await check('PUT', '/movies/alien', 200, 'DurationSet', { body: JSON.stringify({ duration: 100 }) });
    for (const body of ['{"duration":0}', '{"duration":-5}', '{"duration":1.5}', '{"duration":"100"}', '{}', '[]']) {
      await check('PUT', '/movies/alien', 400, 'Problem', { body });
    }
    assert.equal((await check('PUT', '/movies/alien', 400, 'Problem', { body: 'duration=100' })).type, '/problems/invalid-body');
    await check('PUT', '/movies/alien', 413, 'Problem', { body: JSON.stringify({ duration: 100, pad: 'x'.repeat(2000) }) });
    await check('PUT', '/movies/alien', 415, 'Problem', { headers: { ...write, 'content-type': 'text/plain' }, body: '{"duration":100}' });
    assert.equal((await check('PUT', '/movies/alien', 401, 'Problem', { headers: { 'content-type': 'application/json' }, body: '{"duration":100}' })).type, '/problems/unauthorized');
    for (let tries = 0; (await check('GET', '/viewers', 200, 'ViewersNow')).lagEvents > 0; tries++) {
      assert.ok(tries < 200, 'the analytics do not catch up');
      await new Promise((resolve) => setTimeout(resolve, 25));
    }

    const stats = await check('GET', '/movies/alien/stats', 200, 'MovieStats');
    assert.deepEqual([stats.duration, stats.durationSource, stats.viewers, stats.coverage, stats.completed], [100, 'set', 2, 140, 1]);
    const retention = await check('GET', '/movies/alien/retention?points=4', 200, 'RetentionCurve');
    assert.deepEqual(retention.points.map((p: { viewers: number }) => p.viewers), [2, 2, 1, 1]);
    await check('GET', '/movies/alien/retention', 200, 'RetentionCurve');
    const from = new Date(Date.now() - 3_600_000).toISOString();
    for (const pathname of ['/timeseries', '/movies/alien/timeseries', '/users/ann/timeseries']) {
      for (const interval of ['minute', 'hour', 'day']) await check('GET', `${pathname}?interval=${interval}&from=${from}`, 200, 'TimeSeries');
      await check('GET', pathname, 200, 'TimeSeries');
      for (const query of ['interval=week', 'from=soon', 'to=2026-02-30T99:00Z', 'from=2026-02-01&to=2026-01-01', 'interval=minute&from=2000-01-01']) {
        await check('GET', `${pathname}?${query}`, 400, 'Problem');
      }
      await check('GET', pathname, 401, 'Problem', { headers: {} });
    }
    const viewers = await check('GET', '/viewers', 200, 'ViewersNow');
    assert.deepEqual([viewers.viewers, viewers.movies], [2, [{ slug: 'alien', viewers: 2 }]]);
    for (const pathname of ['/movies/nobody/stats', '/movies/nobody/retention', '/movies/nobody/timeseries', '/users/nobody/timeseries']) {
      await check('GET', pathname, 404, 'Problem');
      await check('GET', pathname, 401, 'Problem', { headers: {} });
    }
    for (const pathname of ['/movies/alien/retention?points=0', '/movies/alien/retention?points=1001', '/movies/%01/stats']) {
      await check('GET', pathname, 400, 'Problem');
    }
    await check('GET', '/viewers', 401, 'Problem', { headers: {} });

    // Under sum accounting: 409 for what needs coverage, a time series and viewers now still.
    const sumBase = (await serve(cleanup, path.join(dir, 'sum.db'), { rule: { accounting: 'sum' } })).url;
    assert.equal((await post(sumBase, { user: 'ann', slug: 'alien', at: 30 })).status, 200);
    for (const pathname of ['/movies/alien/stats', '/movies/alien/retention']) {
      const problem = (await request(`${sumBase}${pathname}`)).body;
      assert.equal(problem.status, 409);
      assert.equal(problem.type, '/problems/coverage-needs-progress');
      assert.ok(Value.Check(SCHEMAS.Problem, problem));
      exercised.add(`GET ${pathname.replace('alien', '{slug}')} 409`);
    }
    assert.equal((await request(`${sumBase}/timeseries`)).status, 200);
    assert.equal((await request(`${sumBase}/viewers`)).status, 200);

    const routes = ['PUT /movies/{slug}', 'GET /movies/{slug}/stats', 'GET /movies/{slug}/retention', 'GET /timeseries',
      'GET /movies/{slug}/timeseries', 'GET /users/{user}/timeseries', 'GET /viewers'];
    for (const route of routes) assert.ok(exercised.has(`${route} 200`), `${route} was not answered 200`);
    t.diagnostic(`${exercised.size} route and status pairs answered as documented`);

    // The document's parameters and limits are the server's.
    const operation = (pathname: string, method = 'get') => (document.paths as Record<string, any>)[pathname][method];
    const points = operation('/movies/{slug}/retention').parameters.find((p: { name: string }) => p.name === 'points');
    assert.deepEqual(points.schema, { type: 'integer', minimum: 1, maximum: MAX_POINTS, default: DEFAULT_POINTS });
    for (const pathname of ['/timeseries', '/movies/{slug}/timeseries', '/users/{user}/timeseries']) {
      const parameters = operation(pathname).parameters as { name: string; schema: { enum?: string[] } }[];
      assert.deepEqual(parameters.find((p) => p.name === 'interval')!.schema.enum, [...INTERVALS]);
      assert.deepEqual(parameters.filter((p) => p.name === 'from' || p.name === 'to').map((p) => p.schema), [
        { type: 'string', format: 'date-time' }, { type: 'string', format: 'date-time' }]);
      assert.match(JSON.stringify(operation(pathname).responses[400]), new RegExp(`at most ${MAX_BUCKETS} are answered`));
    }
    for (const pathname of ['/movies/{slug}/stats', '/movies/{slug}/retention']) assert.ok(operation(pathname).responses[409], pathname);
    assert.equal(operation('/movies/{slug}', 'put').requestBody.content['application/json'].schema.$ref, '#/components/schemas/SetDuration');
    for (const name of ['MovieStats', 'RetentionCurve', 'TimeSeries', 'ViewersNow', 'SetDuration', 'DurationSet']) {
      assert.ok(document.components.schemas[name as keyof typeof document.components.schemas], name);
    }
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
