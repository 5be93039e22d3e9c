// The pages this server serves besides the API's JSON: the API reference
// (swagger-ui), a page a problem type, the dashboard's files and uPlot's. All
// from this process and node_modules: nothing is loaded from elsewhere.
import type { ServerResponse } from 'node:http';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const SWAGGER_UI = path.dirname(createRequire(import.meta.url).resolve('swagger-ui-dist/package.json'));
export const UPLOT = path.join(path.dirname(createRequire(import.meta.url).resolve('uplot/package.json')), 'dist');
/** The dashboard's files, next to the compiled code's source (dist/http -> src/web). */
export const DASHBOARD = fileURLToPath(new URL('../../src/web/', import.meta.url));

export const DOCS_PAGE = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>watchtime API</title><link rel="stylesheet" href="/docs/assets/swagger-ui.css"></head>
<body><div id="api"></div><script src="/docs/assets/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({ url: '/openapi.json', dom_id: '#api', deepLinking: true });</script></body></html>
`;

const escapeHtml = (text: string) => text.replace(/[&<>"]/g, (c) => `&#${c.charCodeAt(0)};`);

export function problemPage(kind: string, { status, title, explanation }: { status: number; title: string; explanation: string }): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(title)}</title></head>
<body><h1>${escapeHtml(title)}</h1><p>HTTP ${status}, <code>/problems/${escapeHtml(kind)}</code></p>
<p>${escapeHtml(explanation)}</p><p><a href="/docs">The API reference</a></p></body></html>
`;
}

export function sendHtml(res: ServerResponse, html: string): void {
  res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8', 'Content-Length': Buffer.byteLength(html) });
  res.end(html);
}
