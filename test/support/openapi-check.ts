// Checks an answer of the API against the OpenAPI document's response schema
// for its method, path and status. The shared request helper calls it, so
// every answer of the API tests is checked.
import Value from 'typebox/value';
import { openApiDocument, SCHEMAS } from '../../src/http/openapi.ts';

type Content = { schema?: { $ref?: string; oneOf?: { $ref: string }[] } };
type Operation = { responses: Record<string, { content?: Record<string, Content> }> };

const document = openApiDocument();
const operations = Object.entries(document.paths as Record<string, Record<string, Operation>>).map(([template, ops]) => ({
  pattern: new RegExp(`^${template.replace(/\{[^}]+\}/g, '[^/]+')}$`),
  ops,
}));

/** The TypeBox schemas a content entry names, by `$ref` or by `oneOf` of `$ref`s. */
export function schemasOf(content: Content) {
  const refs = content.schema?.$ref ? [content.schema.$ref] : (content.schema?.oneOf ?? []).map((s) => s.$ref);
  return refs.map((r) => SCHEMAS[r.split('/').pop()!]);
}

/** Throws when a JSON answer does not match the document; other media types are not checked. */
export function checkAnswer(method: string, url: string, status: number, contentType: string | null, body: unknown): void {
  const pathname = new URL(url).pathname;
  const found = operations.find((o) => o.pattern.test(pathname))?.ops[method.toLowerCase()];
  if (!found) return; // not an API route (an unknown path: its 404 is checked by the route test)
  const response = found.responses[String(status)];
  if (!response) throw new Error(`the OpenAPI document has no ${status} answer for ${method} ${pathname}`);
  const mediaType = (contentType ?? '').split(';')[0];
  if (!mediaType.includes('json')) return;
  const content = response.content?.[mediaType];
  if (!content) throw new Error(`the OpenAPI document has no ${mediaType} for ${status} of ${method} ${pathname}`);
  const schemas = schemasOf(content);
  if (schemas.length > 0 && !schemas.some((s) => Value.Check(s, body))) {
    throw new Error(`${method} ${pathname} answered ${status} with a body its schema refuses: ${JSON.stringify(body).slice(0, 300)}`);
  }
}
